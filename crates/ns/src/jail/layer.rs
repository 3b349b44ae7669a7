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
const LO_FLAGS_AUTOCLEAR: u32 = 4;

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

/// Mounts the layer image at `at` (host root, before the sandbox's user namespace) and returns
/// its `upper` and `work` directories, made owned by the sandbox's root (`base`).
/// `volatile`: the layer is thrown away after this run; its file system sends no flushes
/// (`nobarrier`), so ending the sandbox does not make the host sync the image.
pub fn mount(
    image: &Path,
    at: &Path,
    base: u32,
    volatile: bool,
) -> Result<(PathBuf, PathBuf), Failure> {
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
    let point = openat(
        CWD,
        at,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .layer(LAYER, "cannot open the layer's mount point")?;
    super::mounts::attach(fs.as_fd(), point.as_fd(), "cannot mount the layer")?;
    // The mount holds the device from here; closing ours lets it detach when unmounted.
    drop(dev);
    let mut out = Vec::new();
    for sub in ["upper", "work"] {
        let d = at.join(sub);
        match std::fs::create_dir(&d) {
            Ok(()) => std::os::unix::fs::lchown(&d, Some(base), Some(base))
                .layer(LAYER, &format!("cannot set the owner of {}", d.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(Failure::new(
                    LAYER,
                    format!("cannot create {}: {e}", d.display()),
                ));
            }
        }
        out.push(d);
    }
    let work = out.pop().unwrap_or_default();
    let upper = out.pop().unwrap_or_default();
    Ok((upper, work))
}
