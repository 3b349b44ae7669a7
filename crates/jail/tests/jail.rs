//! The jail binary refuses a malformed configuration with the setup-failure status and a
//! structured report naming the layer. (Also makes `cargo test` build the binary next to
//! `paddock`, where the namespace backend looks for it.)

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;

use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};

#[test]
fn malformed_config_fails_closed_with_a_report() {
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let (rr, tr) = (r.as_raw_fd(), theirs.as_raw_fd());
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_paddock-jail"));
    // SAFETY: only fcntl/dup2 in the child before exec.
    unsafe {
        cmd.pre_exec(move || {
            let a = libc::fcntl(rr, libc::F_DUPFD, 10);
            let b = libc::fcntl(tr, libc::F_DUPFD, 10);
            libc::dup2(a, 3);
            libc::dup2(b, 4);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(theirs);
    drop(r);
    let mut w = std::fs::File::from(w);
    w.write_all(b"{\"hostname\": 5, \"evil\": true}").unwrap();
    drop(w);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(paddock_wire::EXIT_SETUP_FAILED));
    let (report, _) = paddock_wire::recv_report(ours.as_fd()).unwrap().unwrap();
    match report {
        paddock_wire::Report::SetupFailed { layer, message } => {
            assert_eq!(layer, "config");
            assert!(message.starts_with("malformed configuration"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
}
