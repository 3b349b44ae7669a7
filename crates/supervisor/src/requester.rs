//! Which process of an ns sandbox made a request the proxy holds: the client's port, as the
//! proxy saw it, names a socket in the sandbox's network namespace (`/proc/PID/net/tcp`), the
//! socket's inode names the process that holds it (`/proc/*/fd`), and that process's command
//! line is what the user is shown.
//!
//! A command line is the sandbox's own word (its processes write theirs), so it is shown as
//! such, cut short and without control characters. It is looked up only where the supervisor
//! holds no privilege: in user mode it is the user, who owns the sandbox's user namespace and
//! may therefore look at its processes; as root it would read bytes the sandbox controls with
//! privileges, and does not look.

use std::net::SocketAddr;
use std::path::Path;

/// The longest command line shown, in characters.
const MAX_SHOWN: usize = 300;

/// The command line of the process of the sandbox whose init is `pid` that holds the TCP
/// connection from `client` (`127.0.0.1:41234`), if it can be found.
pub fn command_of(pid: i32, client: &str) -> Option<String> {
    let client: SocketAddr = client.parse().ok()?;
    let proc = Path::new("/proc");
    let sandbox = proc.join(pid.to_string());
    let inode = ["net/tcp", "net/tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(sandbox.join(t)).ok())
        .find_map(|table| socket_inode(&table, client.port()))?;
    let netns = std::fs::read_link(sandbox.join("ns/net")).ok()?;
    let want = format!("socket:[{inode}]");
    for entry in std::fs::read_dir(proc).ok()?.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let p = entry.path();
        // Only the sandbox's processes: those in its network namespace.
        if std::fs::read_link(p.join("ns/net")).ok().as_ref() != Some(&netns) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.join("fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()));
        if holds {
            return std::fs::read(p.join("cmdline"))
                .ok()
                .and_then(|c| shown(&c));
        }
    }
    None
}

/// The inode of the socket whose local port is `port`, from a `/proc/net/tcp` table.
fn socket_inode(table: &str, port: u16) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local = f.get(1)?;
        let (_, p) = local.rsplit_once(':')?;
        let inode: u64 = f.get(9)?.parse().ok()?;
        (u16::from_str_radix(p, 16).ok()? == port && inode != 0).then_some(inode)
    })
}

/// A command line (NUL-separated arguments) as shown: arguments joined by spaces, control
/// characters dropped, cut at [`MAX_SHOWN`] characters.
fn shown(cmdline: &[u8]) -> Option<String> {
    let words: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| {
            String::from_utf8_lossy(a)
                .chars()
                .filter(|c| !c.is_control())
                .collect()
        })
        .collect();
    let line = words.join(" ");
    if line.is_empty() {
        return None;
    }
    Some(match line.char_indices().nth(MAX_SHOWN) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_names_its_socket_and_a_command_line_is_shown_plainly() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0C38 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 5551 1 0 100 0 0 10 0
   1: 0100007F:A0B2 0100007F:0C38 01 00000000:00000000 00:00000000 00000000  1000        0 7777 1 0 20 4 30 10 -1
";
        assert_eq!(socket_inode(table, 0xA0B2), Some(7777));
        assert_eq!(socket_inode(table, 3128), Some(5551));
        assert_eq!(socket_inode(table, 1), None);
        assert_eq!(
            shown(b"curl\0-sS\0http://up.test/\x1b[2Jx\0").as_deref(),
            Some("curl -sS http://up.test/[2Jx")
        );
        assert_eq!(shown(b"\0\0"), None);
        let long = shown(&[b'a'; 400]).unwrap();
        assert_eq!(long.chars().count(), MAX_SHOWN + 1);
    }

    #[test]
    fn this_process_is_found_by_its_own_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let conn = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let client = conn.local_addr().unwrap().to_string();
        let me = std::process::id() as i32;
        let found = command_of(me, &client).unwrap();
        let exe = std::env::args().next().unwrap();
        assert!(found.starts_with(&exe), "{found:?} {exe:?}");
        drop(listener);
    }
}
