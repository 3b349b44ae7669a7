//! Egress proxy benchmark: added latency of plain-HTTP GETs and CONNECT tunnel throughput,
//! paddock's proxy against a direct connection and against other proxies already running on
//! loopback (`--peer NAME=ADDR[/HOST]`, started by `scripts/bench-proxy.sh`).
//!
//! Everything stays on 127.0.0.1. The upstream runs in this process on plain OS threads (one per
//! connection), apart from the proxy's own tokio runtime. The client is a minimal blocking
//! HTTP/1.1 client over `TcpStream`: keep-alive, absolute-form requests to a proxy, origin-form
//! direct, reconnecting only when the other side closes.
//!
//! Arguments (after `cargo bench -p paddock-proxy --bench egress --`):
//! `--peer NAME=ADDR[/HOST]` another proxy to measure, asked for the upstream as HOST
//! (default `bench.test`); `--skip NAME=REASON` a row for a proxy that could not be run;
//! `--upstream-port P` (default: any free port; the peers' configs need it fixed);
//! `--requests N` (5000), `--warmup N` (500), `--rounds N` (5), `--bytes N` (1 GiB),
//! `--runs N` (3), `--threads N` (paddock's worker threads; 2, as the supervisor starts it).
//! Some may also be given in the environment: `EGRESS_BENCH_PEERS` (space separated),
//! `EGRESS_BENCH_REQUESTS`, `EGRESS_BENCH_BYTES`, `EGRESS_BENCH_THREADS`. Run without `--bench`
//! (as `cargo test --benches` does) it only smoke-tests with a few requests and a few MiB.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use paddock_policy::net::{Action, Rule, Scope, StoredRule};
use paddock_proxy::audit::{AuditSink, AuditWriter};
use paddock_proxy::channel::{self, AuditForwarder};
use paddock_proxy::resolve::Resolver;
use paddock_proxy::rules::RuleSource;
use paddock_proxy::{ProxyConfig, ProxyHandle};
use paddock_store::{AuditQuery, Store};

/// The name the upstream is asked for (paddock resolves it by override, squid by a hosts file).
const NAME: &str = "bench.test";
/// The sandbox name the paddock rules and audit rows belong to.
const SANDBOX: &str = "bench";
/// Size of the small answer.
const SMALL: usize = 100;
const CHUNK: usize = 256 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Options

struct Peer {
    name: String,
    addr: SocketAddr,
    host: String,
}

struct Opts {
    peers: Vec<Peer>,
    skipped: Vec<(String, String)>,
    upstream_port: u16,
    requests: usize,
    warmup: usize,
    rounds: usize,
    bytes: u64,
    runs: usize,
    threads: usize,
    full: bool,
}

fn parse_peer(spec: &str) -> Peer {
    let (name, rest) = spec
        .split_once('=')
        .unwrap_or_else(|| panic!("--peer {spec:?}: expected NAME=ADDR[/HOST]"));
    let (addr, host) = rest.split_once('/').unwrap_or((rest, NAME));
    Peer {
        name: name.to_owned(),
        addr: addr
            .parse()
            .unwrap_or_else(|e| panic!("--peer {spec:?}: {e}")),
        host: host.to_owned(),
    }
}

fn parse_num<T: std::str::FromStr>(what: &str, v: &str) -> T {
    v.parse()
        .unwrap_or_else(|_| panic!("{what}: {v:?} is not a number"))
}

fn opts() -> Opts {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let mut o = Opts {
        peers: Vec::new(),
        skipped: Vec::new(),
        upstream_port: 0,
        requests: env("EGRESS_BENCH_REQUESTS").map_or(5000, |v| parse_num("requests", &v)),
        warmup: 500,
        rounds: 5,
        bytes: env("EGRESS_BENCH_BYTES").map_or(1 << 30, |v| parse_num("bytes", &v)),
        runs: 3,
        threads: env("EGRESS_BENCH_THREADS").map_or(2, |v| parse_num("threads", &v)),
        full: false,
    };
    if let Some(p) = env("EGRESS_BENCH_PEERS") {
        o.peers.extend(p.split_whitespace().map(parse_peer));
    }
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--bench" => o.full = true,
            "--peer" => o.peers.push(parse_peer(&val())),
            "--skip" => {
                let v = val();
                let (n, why) = v.split_once('=').unwrap_or((&v, "not run"));
                o.skipped.push((n.to_owned(), why.to_owned()));
            }
            "--upstream-port" => o.upstream_port = parse_num(&a, &val()),
            "--requests" => o.requests = parse_num(&a, &val()),
            "--warmup" => o.warmup = parse_num(&a, &val()),
            "--rounds" => o.rounds = parse_num(&a, &val()),
            "--bytes" => o.bytes = parse_num(&a, &val()),
            "--runs" => o.runs = parse_num(&a, &val()),
            "--threads" => o.threads = parse_num(&a, &val()),
            // libtest-style flags cargo may pass; nothing to filter here.
            s if s.starts_with('-') => {}
            _ => {}
        }
    }
    if !o.full {
        // `cargo test --benches`: a smoke test, not a measurement.
        o.requests = 50;
        o.warmup = 5;
        o.rounds = 1;
        o.bytes = 8 << 20;
        o.runs = 1;
    }
    o.rounds = o.rounds.clamp(1, o.requests.max(1));
    o.runs = o.runs.max(1);
    o
}

// ---------------------------------------------------------------------------------------------
// Upstream: HTTP/1.1 keep-alive, one OS thread per connection.

fn upstream(port: u16) -> SocketAddr {
    let l = TcpListener::bind(("127.0.0.1", port)).expect("bind the upstream");
    let addr = l.local_addr().unwrap();
    std::thread::Builder::new()
        .name("upstream-accept".into())
        .spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                let _ = std::thread::Builder::new()
                    .name("upstream".into())
                    .spawn(move || {
                        let _ = serve_upstream(s);
                    });
            }
        })
        .unwrap();
    addr
}

fn serve_upstream(mut s: TcpStream) -> io::Result<()> {
    s.set_nodelay(true)?;
    let small = {
        let body = "x".repeat(SMALL - 1) + "\n";
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {SMALL}\r\n\r\n{body}"
        )
        .into_bytes()
    };
    let chunk = vec![b'z'; CHUNK];
    let mut buf = Vec::with_capacity(8192);
    let mut b = [0u8; 8192];
    loop {
        let end = loop {
            if let Some(end) = find_head_end(&buf) {
                break end;
            }
            let n = s.read(&mut b)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&b[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let target = head.split(' ').nth(1).unwrap_or("/");
        let close = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("connection:") && l.contains("close")
        });
        if let Some(n) = target
            .split_once("/stream?bytes=")
            .map(|(_, n)| n.parse::<u64>().unwrap_or(0))
        {
            s.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n\r\n"
                )
                .as_bytes(),
            )?;
            let mut left = n;
            while left > 0 {
                let k = left.min(CHUNK as u64) as usize;
                s.write_all(&chunk[..k])?;
                left -= k as u64;
            }
        } else {
            s.write_all(&small)?;
        }
        if close {
            return Ok(());
        }
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

// ---------------------------------------------------------------------------------------------
// Client

/// One way to reach the upstream: directly, or through a proxy that is asked for `host`.
#[derive(Clone)]
struct Route {
    label: String,
    proxy: Option<SocketAddr>,
    host: String,
    up: SocketAddr,
}

impl Route {
    fn authority(&self) -> String {
        format!("{}:{}", self.host, self.up.port())
    }

    fn request(&self, path: &str) -> Vec<u8> {
        let auth = self.authority();
        match self.proxy {
            Some(_) => format!("GET http://{auth}{path} HTTP/1.1\r\nHost: {auth}\r\n\r\n"),
            None => format!("GET {path} HTTP/1.1\r\nHost: {auth}\r\n\r\n"),
        }
        .into_bytes()
    }

    fn dial(&self) -> io::Result<TcpStream> {
        let s = TcpStream::connect(self.proxy.unwrap_or(self.up))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(s)
    }
}

struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

struct Head {
    status: u16,
    length: Option<u64>,
    chunked: bool,
    close: bool,
}

impl Conn {
    fn new(s: TcpStream) -> Conn {
        Conn {
            s,
            buf: Vec::with_capacity(16 * 1024),
        }
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut b = [0u8; 16 * 1024];
        let n = self.s.read(&mut b)?;
        self.buf.extend_from_slice(&b[..n]);
        Ok(n)
    }

    /// Reads a response head. `Ok(None)`: the connection closed before any byte of it.
    fn head(&mut self) -> io::Result<Option<Head>> {
        let end = loop {
            if let Some(e) = find_head_end(&self.buf) {
                break e;
            }
            if self.fill()? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed inside a response head",
                ));
            }
        };
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut hs);
        r.parse(&self.buf[..end])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut h = Head {
            status: r.code.unwrap_or(0),
            length: None,
            chunked: false,
            close: r.version == Some(0),
        };
        for hd in r.headers.iter() {
            let v = String::from_utf8_lossy(hd.value).to_ascii_lowercase();
            if hd.name.eq_ignore_ascii_case("content-length") {
                h.length = v.trim().parse().ok();
            } else if hd.name.eq_ignore_ascii_case("transfer-encoding") {
                h.chunked = v.contains("chunked");
            } else if hd.name.eq_ignore_ascii_case("connection")
                || hd.name.eq_ignore_ascii_case("proxy-connection")
            {
                if v.contains("close") {
                    h.close = true;
                } else if v.contains("keep-alive") {
                    h.close = false;
                }
            }
        }
        self.buf.drain(..end);
        Ok(Some(h))
    }

    /// Reads and drops `n` body bytes.
    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        let have = (self.buf.len() as u64).min(n);
        self.buf.drain(..have as usize);
        n -= have;
        if n > 0 {
            let mut b = vec![0u8; CHUNK];
            while n > 0 {
                let want = n.min(CHUNK as u64) as usize;
                let got = self.s.read(&mut b[..want])?;
                if got == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body"));
                }
                n -= got as u64;
            }
        }
        Ok(())
    }

    fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let l = String::from_utf8_lossy(&self.buf[..p]).into_owned();
                self.buf.drain(..p + 2);
                return Ok(l);
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short chunk"));
            }
        }
    }

    /// Reads the body `h` announces; returns its length and whether the connection is done.
    fn body(&mut self, h: &Head) -> io::Result<(u64, bool)> {
        if h.chunked {
            let mut total = 0;
            loop {
                let size = self.line()?;
                let size = u64::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                if size == 0 {
                    while !self.line()?.is_empty() {}
                    return Ok((total, h.close));
                }
                self.skip(size)?;
                self.line()?;
                total += size;
            }
        }
        match h.length {
            Some(n) => {
                self.skip(n)?;
                Ok((n, h.close))
            }
            None => {
                // Delimited by close.
                let mut total = self.buf.len() as u64;
                self.buf.clear();
                let mut b = vec![0u8; CHUNK];
                loop {
                    let n = self.s.read(&mut b)?;
                    if n == 0 {
                        return Ok((total, true));
                    }
                    total += n as u64;
                }
            }
        }
    }
}

/// A keep-alive client on one route.
struct Client {
    route: Route,
    conn: Option<Conn>,
    connects: usize,
}

impl Client {
    fn new(route: Route) -> Client {
        Client {
            route,
            conn: None,
            connects: 0,
        }
    }

    /// One GET; returns the status. Retries once on a kept-alive connection the other side
    /// closed while idle, as clients do.
    fn get(&mut self, req: &[u8]) -> io::Result<u16> {
        for attempt in 0..2 {
            let reused = self.conn.is_some();
            if self.conn.is_none() {
                self.conn = Some(Conn::new(self.route.dial()?));
                self.connects += 1;
            }
            let c = self.conn.as_mut().unwrap();
            let sent = c.s.write_all(req);
            let head = match sent.and_then(|()| c.head()) {
                Ok(Some(h)) => h,
                Ok(None) | Err(_) if reused && attempt == 0 => {
                    self.conn = None;
                    continue;
                }
                Ok(None) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed without answering",
                    ));
                }
                Err(e) => return Err(e),
            };
            let (_, close) = c.body(&head)?;
            if close {
                self.conn = None;
            }
            return Ok(head.status);
        }
        unreachable!()
    }
}

/// Opens a connection that carries bytes to the upstream: a CONNECT tunnel through the proxy,
/// or a plain connection. Returns the connection and the CONNECT status (200 direct).
fn tunnel(route: &Route, port: u16) -> io::Result<(Conn, u16)> {
    let mut c = Conn::new(route.dial()?);
    if route.proxy.is_none() {
        return Ok((c, 200));
    }
    let auth = format!("{}:{port}", route.host);
    c.s.write_all(format!("CONNECT {auth} HTTP/1.1\r\nHost: {auth}\r\n\r\n").as_bytes())?;
    let h = c
        .head()?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no CONNECT answer"))?;
    Ok((c, h.status))
}

// ---------------------------------------------------------------------------------------------
// Measurements

#[derive(Default)]
struct Row {
    label: String,
    lat: Vec<Duration>,
    connects: usize,
    mbps: Vec<f64>,
    denies: Option<bool>,
    note: String,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// Streams `bytes` from the upstream over `route`, in MB/s (10^6 bytes per second).
fn throughput(route: &Route, bytes: u64) -> io::Result<f64> {
    let (mut c, status) = tunnel(route, route.up.port())?;
    if status != 200 {
        return Err(io::Error::other(format!("CONNECT answered {status}")));
    }
    let auth = route.authority();
    let started = Instant::now();
    c.s.write_all(
        format!("GET /stream?bytes={bytes} HTTP/1.1\r\nHost: {auth}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )?;
    let h = c
        .head()?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no answer in the tunnel"))?;
    let (got, _) = c.body(&h)?;
    let secs = started.elapsed().as_secs_f64();
    if got != bytes {
        return Err(io::Error::other(format!("got {got} of {bytes} bytes")));
    }
    Ok(bytes as f64 / secs / 1e6)
}

/// Whether the proxy refuses what the allow-list does not name: another host, and a CONNECT to
/// another port.
fn denies_off_list(route: &Route) -> io::Result<bool> {
    let other = Route {
        host: "other.test".into(),
        ..route.clone()
    };
    let mut c = Client::new(other);
    let plain = c.get(&c.route.request("/"))?;
    let (_, connect) = tunnel(route, route.up.port().wrapping_add(1).max(1))?;
    Ok(!(200..300).contains(&plain) && !(200..300).contains(&connect))
}

// ---------------------------------------------------------------------------------------------
// Paddock's proxy

struct Paddock {
    addr: SocketAddr,
    handle: Option<ProxyHandle>,
    writer: Option<AuditWriter>,
    /// The proxy's end of the audit channel and the threads of the supervisor's end.
    channel: Option<(AuditForwarder, Vec<std::thread::JoinHandle<()>>)>,
    db: std::path::PathBuf,
}

impl Paddock {
    /// Started as the supervisor starts it (rules asked for and audit records sent over the
    /// channel the proxy process has with the supervisor, which reads and writes the state
    /// database; 2 worker threads unless told otherwise), or with fixed rules and the audit
    /// writer in the same process.
    fn start(dir: &Path, up: SocketAddr, live: bool, threads: usize) -> Paddock {
        let rules = vec![
            Rule::parse_target(Action::Allow, &format!("{NAME}:{}", up.port())).unwrap(),
            Rule::parse_target(Action::Allow, "127.0.0.1").unwrap(),
        ];
        let db = dir.join(if live { "live.db" } else { "fixed.db" });
        let scope = Scope::Sandbox(SANDBOX.into());
        let (writer, sink): (AuditWriter, AuditSink) =
            AuditWriter::start(Store::open(&db).unwrap()).unwrap();
        let (source, audit, channel) = if live {
            let store = Store::open(&db).unwrap();
            store.add(&scope, &rules, "user").unwrap();
            let (worker, supervisor) = UnixStream::pair().unwrap();
            let served = std::thread::spawn(move || {
                let _ = channel::serve_rules(supervisor, &store, SANDBOX);
            });
            let (worker_audit, supervisor_audit) = UnixStream::pair().unwrap();
            let received = std::thread::spawn(move || {
                let _ = channel::receive_audit(supervisor_audit, &sink, SANDBOX, &|_| {});
            });
            let (forwarder, audit) = AuditForwarder::start(worker_audit).unwrap();
            (
                RuleSource::remote(worker),
                audit,
                Some((forwarder, vec![served, received])),
            )
        } else {
            let source = RuleSource::fixed(
                rules
                    .into_iter()
                    .enumerate()
                    .map(|(i, rule)| StoredRule {
                        id: i as i64 + 1,
                        scope: scope.clone(),
                        source: "user".into(),
                        rule,
                    })
                    .collect(),
            );
            (source, sink, None)
        };
        let over: HashMap<String, Vec<IpAddr>> =
            HashMap::from([(NAME.to_owned(), vec![IpAddr::from([127, 0, 0, 1])])]);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let handle = paddock_proxy::start(
            ProxyConfig {
                sandbox: SANDBOX.into(),
                rules: source,
                audit,
                resolver: Resolver::with_overrides(over),
                connect_timeout: Duration::from_secs(15),
                credentials: None,
                upstream: None,
                asks: None,
            },
            vec![paddock_proxy::Listener::Tcp(l)],
            threads,
        )
        .unwrap();
        Paddock {
            addr,
            handle: Some(handle),
            writer: Some(writer),
            channel,
            db,
        }
    }

    /// Stops the proxy, waits for the audit log and returns how many rows it holds.
    fn stop(mut self) -> i64 {
        if let Some(h) = self.handle.take() {
            h.stop();
        }
        if let Some((forwarder, threads)) = self.channel.take() {
            forwarder.close();
            for t in threads {
                t.join().unwrap();
            }
        }
        if let Some(w) = self.writer.take() {
            w.close();
        }
        let store = Store::open(&self.db).unwrap();
        store.audit_rows(&AuditQuery::default()).unwrap().len() as i64
    }
}

// ---------------------------------------------------------------------------------------------

fn ms(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.3}")
    }
}

fn main() {
    let o = opts();
    let up = upstream(o.upstream_port);
    let dir = tempfile::tempdir().unwrap();
    let paddock = Paddock::start(dir.path(), up, true, o.threads);
    let fixed = Paddock::start(dir.path(), up, false, o.threads);

    let mut routes = vec![
        Route {
            label: "direct".into(),
            proxy: None,
            host: NAME.into(),
            up,
        },
        Route {
            label: "paddock".into(),
            proxy: Some(paddock.addr),
            host: NAME.into(),
            up,
        },
        Route {
            label: "paddock, fixed rules".into(),
            proxy: Some(fixed.addr),
            host: NAME.into(),
            up,
        },
    ];
    for p in &o.peers {
        routes.push(Route {
            label: p.name.clone(),
            proxy: Some(p.addr),
            host: p.host.clone(),
            up,
        });
    }
    eprintln!(
        "upstream 127.0.0.1:{}; {} requests ({} warm-up) in {} rounds; {} bytes x {} runs{}",
        up.port(),
        o.requests,
        o.warmup,
        o.rounds,
        o.bytes,
        o.runs,
        if o.full { "" } else { " (smoke test)" }
    );

    let mut rows: Vec<Row> = routes
        .iter()
        .map(|r| Row {
            label: r.label.clone(),
            ..Row::default()
        })
        .collect();
    let mut clients: Vec<Option<Client>> = routes
        .iter()
        .map(|r| Some(Client::new(r.clone())))
        .collect();
    let reqs: Vec<Vec<u8>> = routes.iter().map(|r| r.request("/small")).collect();

    // Latency: warm up, then rounds taken in turn so drift hits every route alike.
    for (i, c) in clients.iter_mut().enumerate() {
        let Some(cl) = c else { continue };
        for _ in 0..o.warmup {
            match cl.get(&reqs[i]) {
                Ok(200) => {}
                other => {
                    rows[i].note = format!("warm-up failed: {other:?}");
                    *c = None;
                    break;
                }
            }
        }
        if let Some(cl) = c {
            cl.connects = 0;
        }
    }
    let per_round = o.requests.div_ceil(o.rounds);
    for round in 0..o.rounds {
        let n = per_round.min(o.requests - round * per_round);
        for (i, c) in clients.iter_mut().enumerate() {
            let Some(cl) = c else { continue };
            for _ in 0..n {
                let t = Instant::now();
                match cl.get(&reqs[i]) {
                    Ok(200) => rows[i].lat.push(t.elapsed()),
                    other => {
                        rows[i].note = format!("request failed: {other:?}");
                        *c = None;
                        break;
                    }
                }
            }
        }
    }
    for (i, c) in clients.into_iter().enumerate() {
        if let Some(c) = c {
            rows[i].connects = c.connects;
        }
    }

    // Throughput, runs taken in turn.
    for _ in 0..o.runs {
        for (i, r) in routes.iter().enumerate() {
            match throughput(r, o.bytes) {
                Ok(v) => rows[i].mbps.push(v),
                Err(e) => {
                    if !rows[i].note.is_empty() {
                        rows[i].note.push_str("; ");
                    }
                    rows[i]
                        .note
                        .push_str(&format!("CONNECT stream failed: {e}"));
                }
            }
        }
    }
    for (i, r) in routes.iter().enumerate().skip(1) {
        match denies_off_list(r) {
            Ok(d) => rows[i].denies = Some(d),
            Err(e) => {
                if !rows[i].note.is_empty() {
                    rows[i].note.push_str("; ");
                }
                rows[i].note.push_str(&format!("deny check failed: {e}"));
            }
        }
    }

    let audited = paddock.stop();
    let audited_fixed = fixed.stop();

    // Table.
    let stat = |r: &Row| {
        let mut l = r.lat.clone();
        l.sort();
        (percentile(&l, 0.5), percentile(&l, 0.99), median(&r.mbps))
    };
    let (d50, d99, dmb) = stat(&rows[0]);
    println!();
    println!(
        "| route | p50 ms | p99 ms | p50 added ms | p99 added ms | CONNECT MB/s | ratio to direct | refuses off-list | notes |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|:---:|---|");
    let mut summary = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        let (p50, p99, mb) = stat(r);
        let mut notes = Vec::new();
        if !r.note.is_empty() {
            notes.push(r.note.clone());
        }
        if r.connects > 1 {
            notes.push(format!(
                "{} client connections for {} requests",
                r.connects,
                r.lat.len()
            ));
        }
        if r.label == "paddock" {
            notes.push(format!(
                "live rules + audit (as the supervisor runs it); {audited} audit rows"
            ));
        } else if r.label == "paddock, fixed rules" {
            notes.push(format!("{audited_fixed} audit rows"));
        }
        let added = |v: f64, d: f64| if i == 0 { "–".into() } else { ms(v - d) };
        let (mbs, ratio) = if mb.is_nan() {
            ("–".to_owned(), "–".to_owned())
        } else {
            (format!("{mb:.0}"), format!("{:.2}", mb / dmb))
        };
        let denies = match (i, r.denies) {
            (0, _) => "–",
            (_, Some(true)) => "yes",
            (_, Some(false)) => "NO",
            (_, None) => "?",
        };
        println!(
            "| {} | {} | {} | {} | {} | {mbs} | {ratio} | {denies} | {} |",
            r.label,
            ms(p50),
            ms(p99),
            added(p50, d50),
            added(p99, d99),
            notes.join("; ")
        );
        summary.insert(r.label.clone(), (p50 - d50, p99 - d99, mb / dmb));
    }
    for (name, why) in &o.skipped {
        println!("| {name} | – | – | – | – | – | – | – | not measured: {why} |");
    }
    println!();
    println!(
        "p50/p99: one keep-alive GET of a {SMALL}-byte answer, {} requests per route; added = \
         route minus direct at the same percentile. CONNECT: {} MiB streamed through one tunnel, \
         median of {} runs; MB = 10^6 bytes.",
        o.requests,
        o.bytes >> 20,
        o.runs
    );

    // Targets.
    if let Some(&(a50, _, ratio)) = summary.get("paddock") {
        println!();
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        println!(
            "- p50 added ≤ 0.2 ms: {:.3} ms — {}",
            a50,
            verdict(a50 <= 0.2)
        );
        println!(
            "- CONNECT ≥ 0.8× direct: {ratio:.2}× — {}",
            verdict(ratio >= 0.8)
        );
        for p in &o.peers {
            if let Some(&(b50, _, pr)) = summary.get(&p.name) {
                println!(
                    "- ahead of {}: latency {} ({:.3} vs {:.3} ms added), throughput {} ({:.2}× vs {:.2}×)",
                    p.name,
                    if a50 < b50 { "yes" } else { "no" },
                    a50,
                    b50,
                    if ratio > pr { "yes" } else { "no" },
                    ratio,
                    pr
                );
            }
        }
    }
    if !o.full {
        assert!(
            rows.iter()
                .take(3)
                .all(|r| r.note.is_empty() && !r.lat.is_empty() && !r.mbps.is_empty()),
            "the smoke test failed"
        );
    }
}
