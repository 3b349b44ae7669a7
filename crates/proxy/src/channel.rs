//! The channel between the proxy process and the privileged part that started it.
//!
//! The proxy parses bytes the sandbox controls, so it runs in a process of its own that holds
//! no privilege and opens no file of Paddock's state (the supervisor's `egress_worker`). It asks
//! the privileged part for the sandbox's rules and sends it the audit records. Unix streams:
//!
//! - the control stream: the worker's settings (one frame, [`Settings`] inside the
//!   supervisor's own message), the listener (one byte naming its kind, the descriptor
//!   attached), the worker's [`Status`] (one frame); then rule requests, each the generation the
//!   worker holds (8 bytes) answered by a [`RulesReply`] frame;
//! - the audit stream, one way: [`AuditEvent`] frames;
//! - the asks stream: the requests an `ask` rule holds, and their answers ([`crate::ask`]).
//!
//! A frame is a 4-byte little-endian length and that many bytes of JSON. The privileged part
//! trusts nothing it reads here: frames are bounded, a rule request names only a generation,
//! and each audit record is stamped with the sandbox and a key of the receiving side, so a
//! compromised proxy can write only its own sandbox's rows, and only new ones.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Listener;
use crate::audit::{AuditSink, Finish, Msg, Record};
use crate::rules::{RuleRow, RuleRows};

/// The largest frame the privileged part reads (audit records, the status).
pub const MAX_UNTRUSTED_FRAME: usize = 64 << 10;
/// The largest frame the proxy process reads (its settings, the rules).
pub const MAX_FRAME: usize = 64 << 20;

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| io::Error::other("frame too large"))?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(body);
    w.write_all(&buf)
}

/// Reads one frame of at most `max` bytes; `None` at the end of the stream.
pub fn read_frame(r: &mut impl Read, max: usize) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes (at most {max})"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(Some(body))
}

/// Writes `value` as one frame.
pub fn send<T: Serialize>(w: &mut impl Write, value: &T) -> io::Result<()> {
    write_frame(w, &serde_json::to_vec(value).map_err(io::Error::other)?)
}

/// Reads one frame of at most `max` bytes as a `T`; an error at the end of the stream.
pub fn receive<T: for<'de> Deserialize<'de>>(r: &mut impl Read, max: usize) -> io::Result<T> {
    let body = read_frame(r, max)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the other side closed the channel",
        )
    })?;
    serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// What the proxy process needs to serve one sandbox.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The sandbox (for the audit records; the receiving side stamps its own).
    pub sandbox: String,
    /// How long a connection to an upstream may take.
    pub connect_timeout_ms: u64,
    /// The credentials to inject, and the CA to intercept with.
    pub credentials: Option<CredentialSettings>,
    /// The host network's own proxy, if allowed connections go through one.
    #[serde(default)]
    pub upstream: Option<paddock_policy::net::UpstreamProxy>,
    /// How long requests an `ask` rule holds wait, and how many may.
    #[serde(default)]
    pub ask: crate::ask::AskSettings,
}

/// The sandbox's CA and the credentials bound to its hosts: all the proxy process gets of the
/// secrets store (plain bindings; the proxy never reads the store).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSettings {
    /// The CA's private key (PEM).
    pub ca_key_pem: String,
    /// The credentials that apply to the sandbox, one per host they are bound to.
    pub bindings: Vec<crate::intercept::Binding>,
}

impl std::fmt::Debug for CredentialSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialSettings")
            .field("bindings", &self.bindings.len())
            .finish_non_exhaustive()
    }
}

/// The proxy process's answer once it serves, or why it cannot.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    /// Why it stopped, if it did.
    pub error: Option<String>,
}

/// Sends `listener` over `stream`: one byte naming its kind, the descriptor with it.
pub fn send_listener(stream: &UnixStream, listener: &Listener) -> io::Result<()> {
    let (kind, fd) = match listener {
        Listener::Tcp(l) => (b't', l.as_fd()),
        Listener::Unix(l) => (b'u', l.as_fd()),
    };
    paddock_wire::send_byte(stream.as_fd(), kind, Some(fd))
}

/// Receives the listener [`send_listener`] sent.
pub fn receive_listener(stream: &UnixStream) -> io::Result<Listener> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let (kind, fd) = paddock_wire::recv_byte(stream.as_fd())?
        .ok_or_else(|| bad("the supervisor closed the channel".into()))?;
    let fd = fd.ok_or_else(|| bad("no listener came with the message".into()))?;
    match kind {
        b't' => Ok(Listener::Tcp(std::net::TcpListener::from(fd))),
        b'u' => Ok(Listener::Unix(std::os::unix::net::UnixListener::from(fd))),
        other => Err(bad(format!("unknown listener kind {other}"))),
    }
}

/// The answer to a rule request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesReply {
    /// The generation now.
    pub generation: i64,
    /// The rules of that generation; none when the asker already has it.
    pub rows: Option<Vec<RuleRow>>,
}

/// Answers the rule requests of one proxy process for `sandbox` from `rules` (the state
/// store) until the process closes `stream`.
pub fn serve_rules<R: RuleRows>(
    mut stream: UnixStream,
    rules: &R,
    sandbox: &str,
) -> io::Result<()> {
    let mut have = [0u8; 8];
    loop {
        match stream.read_exact(&mut have) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let have = i64::from_le_bytes(have);
        let generation = rules.generation().map_err(io::Error::other)?;
        let rows = if generation == have {
            None
        } else {
            Some(rules.rule_rows(sandbox).map_err(io::Error::other)?)
        };
        send(&mut stream, &RulesReply { generation, rows })?;
    }
}

/// One audit message from the proxy process.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
enum AuditEvent<R> {
    Decision { key: String, record: R },
    Finish { key: String, finish: Finish },
}

/// A record as it arrives: every field the sender's own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArrivingRecord {
    #[allow(dead_code)]
    sandbox: String,
    client: String,
    method: String,
    host: String,
    port: Option<u16>,
    path: Option<String>,
    action: String,
    rule: String,
    reason: String,
    status: Option<u16>,
}

/// The proxy process's end of the audit stream: a sink whose records a thread of its own
/// writes to the stream.
#[derive(Debug)]
pub struct AuditForwarder {
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl AuditForwarder {
    /// Starts forwarding to `stream`.
    pub fn start(stream: UnixStream) -> io::Result<(AuditForwarder, AuditSink)> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("paddock-audit".into())
            .spawn(move || forward(stream, &rx, &stopping))?;
        Ok((
            AuditForwarder {
                thread: Some(thread),
                stop,
            },
            AuditSink::to_channel(tx, "w"),
        ))
    }

    /// Sends what is queued and stops (records sent after this are lost).
    pub fn close(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn forward(stream: UnixStream, rx: &mpsc::Receiver<Msg>, stop: &AtomicBool) {
    let mut out = io::BufWriter::new(stream);
    let encode = |m: Msg| match m {
        Msg::Insert(key, _, record) => serde_json::to_vec(&AuditEvent::Decision { key, record }),
        Msg::Finish(key, finish) => {
            serde_json::to_vec(&AuditEvent::<Record>::Finish { key, finish })
        }
    };
    loop {
        let first = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(m) => m,
            Err(mpsc::RecvTimeoutError::Timeout) if !stop.load(Ordering::Relaxed) => continue,
            // Every sink is gone, or asked to stop with nothing queued.
            Err(_) => break,
        };
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        for m in batch {
            let Ok(body) = encode(m) else { continue };
            if write_frame(&mut out, &body).is_err() {
                return;
            }
        }
        if out.flush().is_err() {
            return;
        }
    }
    let _ = out.flush();
}

/// Writes what one proxy process of `sandbox` sends on `stream` to `sink`, until it closes the
/// stream. Each record gets `sandbox` and a key of `sink`'s, whatever the sender wrote; a
/// malformed message is dropped. `seen` is shown each record as it is written (the supervisor
/// tells the user of denials).
pub fn receive_audit(
    stream: UnixStream,
    sink: &AuditSink,
    sandbox: &str,
    seen: &dyn Fn(&Record),
) -> io::Result<()> {
    let mut input = io::BufReader::new(stream);
    // Keys name this sink's rows only: its prefix, then what the sender called it (kept short
    // and plain).
    let key = |k: &str| {
        let k: String = k
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(32)
            .collect();
        format!("{}-{k}", sink.prefix)
    };
    while let Some(body) = read_frame(&mut input, MAX_UNTRUSTED_FRAME)? {
        let Ok(event) = serde_json::from_slice::<AuditEvent<ArrivingRecord>>(&body) else {
            tracing::warn!("a malformed audit message from the proxy process, dropped");
            continue;
        };
        let msg = match event {
            AuditEvent::Decision { key: k, record: r } => {
                let action = match r.action.as_str() {
                    "allow" => "allow",
                    "deny" => "deny",
                    "fail" => "fail",
                    _ => continue,
                };
                let record = Record {
                    sandbox: sandbox.to_owned(),
                    client: r.client,
                    method: r.method,
                    host: r.host,
                    port: r.port,
                    path: r.path,
                    action,
                    rule: r.rule,
                    reason: r.reason,
                    status: r.status,
                };
                seen(&record);
                Msg::Insert(key(&k), crate::audit::now_ms(), record)
            }
            AuditEvent::Finish { key: k, finish } => Msg::Finish(key(&k), finish),
        };
        if sink.tx.send(msg).is_err() {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Cursor;
    use std::sync::Mutex;

    use super::*;
    use crate::audit::{AuditChange, AuditLog, AuditWriter};
    use crate::rules::RuleSource;

    #[test]
    fn frames_round_trip_and_are_bounded() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").unwrap();
        write_frame(&mut buf, b"").unwrap();
        let mut r = Cursor::new(buf.clone());
        assert_eq!(read_frame(&mut r, 5).unwrap(), Some(b"hello".to_vec()));
        assert_eq!(read_frame(&mut r, 5).unwrap(), Some(Vec::new()));
        assert_eq!(read_frame(&mut r, 5).unwrap(), None);
        let e = read_frame(&mut Cursor::new(buf), 4).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // A length that claims more than follows is an error, not a short frame.
        let e = read_frame(&mut Cursor::new(vec![9, 0, 0, 0, 1]), 64).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn the_listener_crosses_with_its_kind() {
        let (a, b) = UnixStream::pair().unwrap();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        send_listener(&a, &Listener::Tcp(tcp)).unwrap();
        let Listener::Tcp(got) = receive_listener(&b).unwrap() else {
            panic!("not a TCP listener");
        };
        assert_eq!(got.local_addr().unwrap(), addr);
        // A message without a descriptor is refused.
        rustix::io::write(&a, b"t").unwrap();
        assert!(receive_listener(&b).is_err());
    }

    /// Rules as a store would keep them: a generation and every sandbox's rows.
    #[derive(Default)]
    struct Rules(Mutex<(i64, Vec<RuleRow>)>);

    impl Rules {
        fn add(&self, sandbox: Option<&str>, action: &str, host: &str) {
            let mut t = self.0.lock().unwrap();
            t.0 += 1;
            let id = t.1.len() as i64 + 1;
            t.1.push(RuleRow {
                id,
                sandbox: sandbox.map(str::to_owned),
                action: action.into(),
                host: host.into(),
                port: "default".into(),
                method: None,
                path: None,
                source: "user".into(),
                private_address: false,
                preset: None,
            });
        }
    }

    impl RuleRows for Rules {
        type Error = io::Error;

        fn generation(&self) -> io::Result<i64> {
            Ok(self.0.lock().unwrap().0)
        }

        fn rule_rows(&self, sandbox: &str) -> io::Result<Vec<RuleRow>> {
            let t = self.0.lock().unwrap();
            let mine = |r: &&RuleRow| r.sandbox.as_deref().is_none_or(|s| s == sandbox);
            Ok(t.1.iter().filter(mine).cloned().collect())
        }
    }

    #[test]
    fn remote_rules_follow_the_store() {
        let rules = Arc::new(Rules::default());
        rules.add(None, "allow", "example.com");
        rules.add(Some("b"), "allow", "b.example");
        let (worker, parent) = UnixStream::pair().unwrap();
        let served = {
            let rules = rules.clone();
            std::thread::spawn(move || serve_rules(parent, &*rules, "a"))
        };
        let source = RuleSource::remote(worker);
        let hosts = |s: &RuleSource| -> Vec<String> {
            s.current()
                .iter()
                .map(|r| r.rule.host.to_string())
                .collect()
        };
        assert_eq!(hosts(&source), ["example.com"]);
        rules.add(Some("a"), "deny", "example.com");
        assert_eq!(hosts(&source), ["example.com", "example.com"]);
        assert_eq!(
            source.current()[1].rule.action,
            paddock_policy::net::Action::Deny
        );
        // A row that does not parse: no rules at all, and none trusted from then on.
        rules.add(None, "maybe", "example.com");
        assert_eq!(hosts(&source), Vec::<String>::new());
        drop(source);
        served.join().unwrap().unwrap();
    }

    /// A row of [`Log`]: key, sandbox, host, bytes down.
    type Row = (String, String, String, u64);

    /// An audit log as a store would keep it.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<Row>>>);

    impl AuditLog for Log {
        type Error = io::Error;

        fn prune(&mut self, _now_ms: i64) -> io::Result<usize> {
            Ok(0)
        }

        fn write(&mut self, changes: &[AuditChange<'_>]) -> io::Result<()> {
            let mut rows = self.0.lock().unwrap();
            for c in changes {
                match c {
                    AuditChange::Decision {
                        key, record, end, ..
                    } => rows.push((
                        key.to_string(),
                        record.sandbox.clone(),
                        record.host.clone(),
                        end.map_or(0, |f| f.bytes_down),
                    )),
                    AuditChange::End { key, finish } => {
                        for row in rows.iter_mut().filter(|r| r.0 == *key) {
                            row.3 = finish.bytes_down;
                        }
                    }
                }
            }
            Ok(())
        }
    }

    #[test]
    fn audit_records_get_the_receivers_sandbox_and_keys() {
        let log = Log::default();
        let (writer, sink) = AuditWriter::start(log.clone()).unwrap();
        let (worker, parent) = UnixStream::pair().unwrap();
        let received = {
            let sink = sink.clone();
            std::thread::spawn(move || receive_audit(parent, &sink, "mine", &|_| {}))
        };
        let (forwarder, wsink) = AuditForwarder::start(worker.try_clone().unwrap()).unwrap();
        let record = |sandbox: &str, host: &str| Record {
            sandbox: sandbox.into(),
            client: "c".into(),
            method: "GET".into(),
            host: host.into(),
            port: Some(80),
            path: Some("/".into()),
            action: "allow",
            rule: "1".into(),
            reason: "r".into(),
            status: Some(200),
        };
        // A sender that claims another sandbox.
        let e = wsink.record(record("someone-else", "a.example"));
        wsink.finish(
            &e,
            Finish {
                bytes_up: 1,
                bytes_down: 2,
                duration_ms: 3,
                status: None,
            },
        );
        drop(wsink);
        forwarder.close();
        // Hand-made messages: one with an action the log does not know, one malformed.
        let mut w = worker;
        let odd = serde_json::json!({"event": "decision", "key": "x", "record": {
            "sandbox": "s", "client": "c", "method": "GET", "host": "b.example", "port": 80,
            "path": null, "action": "maybe", "rule": "1", "reason": "r", "status": null}});
        write_frame(&mut w, odd.to_string().as_bytes()).unwrap();
        write_frame(&mut w, b"{not json").unwrap();
        drop(w);
        received.join().unwrap().unwrap();
        let prefix = sink.prefix.to_string();
        drop(sink);
        writer.close();
        let rows = log.0.lock().unwrap().clone();
        assert_eq!(rows.len(), 1, "{rows:?}");
        let (key, sandbox, host, down) = &rows[0];
        assert!(key.starts_with(&format!("{prefix}-")), "{key}");
        assert_eq!(
            (sandbox.as_str(), host.as_str(), *down),
            ("mine", "a.example", 2)
        );
    }
}
