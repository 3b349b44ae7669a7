//! `paddock-guest`: pid 1 of a Paddock VM, and of a gVisor sandbox (`paddock-guest gvisor`,
//! see [`gvisor`]).
//!
//! It is the initramfs's `/init`. It loads the virtio modules the guest kernel lacks built in,
//! opens the boot connection to the host over vsock, receives what to set up (root disk, shared
//! folders, host name, clock, pids limit, the proxy port), switches to the root disk, and then
//! serves exec connections from the host. It reaps every process in the guest and powers the
//! guest off when the host says so or the host side goes away.
//!
//! The guest has no network device: its only way out is this helper carrying connections to
//! `127.0.0.1:3128` over vsock to the host's egress proxy.

#[cfg(target_os = "linux")]
mod boot;
#[cfg(target_os = "linux")]
mod docker;
#[cfg(target_os = "linux")]
mod egress;
#[cfg(target_os = "linux")]
mod gvisor;
#[cfg(target_os = "linux")]
mod reaper;
#[cfg(target_os = "linux")]
mod session;
#[cfg(target_os = "linux")]
mod sudo;
#[cfg(target_os = "linux")]
mod vsock;

#[cfg(target_os = "linux")]
fn main() {
    let called = std::env::args_os().next().unwrap_or_default();
    if std::path::Path::new(&called).file_name() == Some(std::ffi::OsStr::new("sudo")) {
        sudo::shim();
    }
    if std::process::id() != 1 {
        eprintln!("paddock-guest is the init of a Paddock sandbox; it does nothing outside one");
        std::process::exit(2);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("gvisor") => gvisor::run(
            args.iter().any(|a| a == "--egress"),
            args.iter().any(|a| a == "--sudo"),
        ),
        _ => boot::run(),
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("paddock-guest runs only inside a Linux guest");
    std::process::exit(2);
}
