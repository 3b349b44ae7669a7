//! A writable layer of limited size (`--disk`): an ext4 file system in an image file, attached
//! to a loop device and mounted in the jail's own mount namespace, so it goes away with the
//! sandbox (the loop device detaches itself once unmounted: `LO_FLAGS_AUTOCLEAR`).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, Mode, OFlags, openat};
use rustix::mount::MountAttrFlags;

use super::{Failure, Layer};

const LAYER: &str = "disk limit";
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_config` of linux/loop.h (Linux 5.8).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// `struct loop_info64` of linux/loop.h.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// Attaches `image` to a free loop device that detaches itself when no longer used.
fn attach_loop(image: &File) -> Result<(OwnedFd, String), Failure> {
    let control = File::options()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .layer(LAYER, "cannot open /dev/loop-control")?;
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(Failure::new(
                LAYER,
                format!("no free loop device: {}", std::io::Error::last_os_error()),
            ));
        }
        let path = format!("/dev/loop{n}");
        let dev: OwnedFd = File::options()
            .read(true)
            .write(true)
            .open(&path)
            .layer(LAYER, &format!("cannot open {path}"))?
            .into();
        // One LOOP_CONFIGURE where the kernel has it: it attaches and sets the flags in one
        // step (LOOP_SET_FD then LOOP_SET_STATUS64 cost 25-30 ms here, it ~11).
        // SAFETY: all-zero is a valid loop_config.
        let mut config: LoopConfig = unsafe { std::mem::zeroed() };
        config.fd = image.as_raw_fd() as u32;
        config.info.flags = LO_FLAGS_AUTOCLEAR;
        // SAFETY: LOOP_CONFIGURE reads a loop_config, which `config` is, for the call; the
        // backing file's descriptor in it is valid for the call.
        if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &config) } == 0 {
            return Ok((dev, path));
        }
        match std::io::Error::last_os_error().raw_os_error() {
            // Taken by someone else in the meantime: ask again.
            Some(libc::EBUSY) => continue,
            // An older kernel: the two-step way below.
            Some(libc::EINVAL | libc::ENOTTY) => {}
            _ => {
                return Err(Failure::new(
                    LAYER,
                    format!(
                        "cannot attach the layer to {path}: {}",
                        std::io::Error::last_os_error()
                    ),
                ));
            }
        }
        // SAFETY: LOOP_SET_FD takes the backing file's descriptor, valid for the call.
        if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD, image.as_raw_fd()) } != 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EBUSY) {
                // Taken by someone else in the meantime: ask again.
                continue;
            }
            return Err(Failure::new(
                LAYER,
                format!(
                    "cannot attach the layer to {path}: {}",
                    std::io::Error::last_os_error()
                ),
            ));
        }
        // SAFETY: all-zero is a valid loop_info64.
        let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
        info.flags = LO_FLAGS_AUTOCLEAR;
        // SAFETY: LOOP_SET_STATUS64 reads a loop_info64, which `info` is, for the call.
        if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_STATUS64, &info) } != 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: LOOP_CLR_FD takes no argument.
            unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD) };
            return Err(Failure::new(LAYER, format!("cannot configure {path}: {e}")));
        }
        return Ok((dev, path));
    }
    Err(Failure::new(LAYER, "every loop device was taken"))
}

/// The layer image as a detached mount (attached nowhere yet) whose root holds `upper` and
/// `work`, owned by the sandbox's root (`base`). `volatile`: the layer is thrown away after this
/// run; its file system sends no flushes (`nobarrier`), so ending the sandbox does not make the
/// host sync the image. The loop device detaches itself once the mount is gone.
pub fn mount_detached(image: &Path, base: u32, volatile: bool) -> Result<OwnedFd, Failure> {
    let file = File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(image)
        .layer(LAYER, &format!("cannot open {}", image.display()))?;
    let (dev, path) = attach_loop(&file)?;
    let fs = super::mounts::new_fs(
        "ext4",
        &[("source", path.as_str())],
        if volatile { &["nobarrier"] } else { &[] },
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
    )?;
    // The mount holds the device from here; closing ours lets it detach when unmounted.
    drop(dev);
    for sub in ["upper", "work"] {
        match rustix::fs::mkdirat(&fs, sub, Mode::from_raw_mode(0o755)) {
            Ok(()) => rustix::fs::chownat(
                &fs,
                sub,
                Some(rustix::fs::Uid::from_raw(base)),
                Some(rustix::fs::Gid::from_raw(base)),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .layer(LAYER, &format!("cannot set the owner of the layer's {sub}"))?,
            Err(rustix::io::Errno::EXIST) => {}
            Err(e) => {
                return Err(Failure::new(
                    LAYER,
                    format!("cannot create the layer's {sub}: {e}"),
                ));
            }
        }
    }
    Ok(fs)
}

/// Mounts the layer image at `at` (host root, in the jail's own mount namespace) and returns
/// its `upper` and `work` directories ([`mount_detached`]).
pub fn mount(
    image: &Path,
    at: &Path,
    base: u32,
    volatile: bool,
) -> Result<(PathBuf, PathBuf), Failure> {
    let fs = mount_detached(image, base, volatile)?;
    let point = openat(
        CWD,
        at,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .layer(LAYER, "cannot open the layer's mount point")?;
    super::mounts::attach(fs.as_fd(), point.as_fd(), "cannot mount the layer")?;
    Ok((at.join("upper"), at.join("work")))
}
