//! An upstream proxy (the host network's own) with a real `curl`, a real origin and a small
//! recording proxy on loopback: what goes through it, what never reaches it, and what the
//! sandbox hears when it refuses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use paddock_policy::net::UpstreamProxy;
use support::{Ending, Proxy, Setup, allow, credentials, deny, http_origin, pattern, tls_origin};

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// What the recording proxy saw of one request: its request line and Proxy-Authorization.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A minimal upstream proxy: CONNECT and absolute-form requests, names resolved by its own
/// `names`. It refuses CONNECT to the hosts in `refuse` (403) and answers absolute-form
/// requests for them with 407.
fn recording_proxy(names: &[&str], refuse: &[&str]) -> (SocketAddr, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let refuse: Vec<String> = refuse.iter().map(|n| n.to_string()).collect();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut client) = s else { continue };
            let (log, names, refuse) = (log.clone(), names.clone(), refuse.clone());
            std::thread::spawn(move || {
                let Some(head) = support::read_head(&mut client) else {
                    return;
                };
                let line = head.lines().next().unwrap_or("").to_owned();
                let auth = head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("proxy-authorization")
                        .then(|| v.trim().to_owned())
                });
                log.lock().unwrap().push((line.clone(), auth));
                let mut words = line.split(' ');
                let (method, target) = (words.next().unwrap(), words.next().unwrap());
                let connect = method == "CONNECT";
                let authority = if connect {
                    target
                } else {
                    let rest = target.strip_prefix("http://").unwrap();
                    rest.split('/').next().unwrap()
                };
                let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "80"));
                if refuse.iter().any(|r| r == host) {
                    let answer = if connect {
                        "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"
                    } else {
                        "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"corp\"\r\nContent-Length: 0\r\n\r\n"
                    };
                    let _ = client.write_all(answer.as_bytes());
                    return;
                }
                let ip: IpAddr = if names.iter().any(|n| n == host) {
                    LOOPBACK
                } else {
                    host.parse().unwrap()
                };
                let Ok(mut origin) = TcpStream::connect((ip, port.parse::<u16>().unwrap())) else {
                    let _ =
                        client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
                    return;
                };
                if connect {
                    client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .unwrap();
                } else {
                    // On to the origin in origin form, as a proxy does.
                    let origin_form = head.replacen(&format!("http://{authority}"), "", 1);
                    origin.write_all(origin_form.as_bytes()).unwrap();
                }
                relay(client, origin);
            });
        }
    });
    (addr, seen)
}

/// Copies both ways until either side ends.
fn relay(a: TcpStream, b: TcpStream) {
    let pump = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        })
    };
    let t1 = pump(a.try_clone().unwrap(), b.try_clone().unwrap());
    let t2 = pump(b, a);
    let _ = (t1.join(), t2.join());
}

/// `--upstream-proxy URL` with `no_proxy` as the host's `NO_PROXY`.
fn upstream(url: &str, no_proxy: &str) -> UpstreamProxy {
    let no_proxy = no_proxy.to_owned();
    UpstreamProxy::from_flag(url, move |k| (k == "NO_PROXY").then(|| no_proxy.clone()))
        .unwrap()
        .unwrap()
}

fn start(
    dir: &std::path::Path,
    rules: &[(paddock_policy::net::Action, String)],
    names: &[(&str, IpAddr)],
    creds: Option<Arc<paddock_proxy::intercept::Credentials>>,
    up: UpstreamProxy,
) -> Proxy {
    Proxy::start_with(
        Setup {
            dir,
            rules,
            names,
            credentials: creds,
        },
        |cfg| cfg.upstream = Some(up),
    )
}

/// "alice:s3cret" in base64.
const ALICE: &str = "Basic YWxpY2U6czNjcmV0";

#[test]
fn tunnels_plain_http_and_interception_go_through_the_upstream_with_its_login() {
    support::curl_with_http2();
    let dir = tempfile::tempdir().unwrap();
    let (origin, origin_seen) = http_origin();
    let tls = support::TestTls::new(dir.path(), &["secure.test"]);
    let (secure, secure_seen) = tls_origin(&tls, Ending::Close, 5000);
    let (creds, sandbox_ca) = credentials(dir.path(), "secure.test", &tls.ca_pem);
    let (up, up_seen) = recording_proxy(&["origin.test", "secure.test"], &[]);
    let (p, s) = (origin.port(), secure.port());
    // No rule for loopback, and no local answer for the names: the upstream resolves them.
    let proxy = start(
        dir.path(),
        &[
            allow(format!("origin.test:{p}")),
            allow(format!("secure.test:{s}")),
        ],
        &[],
        Some(creds),
        upstream(&format!("http://alice:s3cret@127.0.0.1:{}", up.port()), ""),
    );
    let (code, body, err) = proxy.curl(&["-p", &format!("http://origin.test:{p}/tunnel")]);
    assert_eq!(
        (code, body.as_str()),
        (0, "origin saw: GET /tunnel HTTP/1.1\n"),
        "{err}"
    );
    let (code, body, err) = proxy.curl(&[&format!("http://origin.test:{p}/plain")]);
    assert_eq!(
        (code, body.as_str()),
        (0, "origin saw: GET /plain HTTP/1.1\n"),
        "{err}"
    );
    let out = dir.path().join("secure-body");
    let (code, _, err) = proxy.curl(&[
        "--http2",
        "--cacert",
        sandbox_ca.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        &format!("https://secure.test:{s}/x"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::read(&out).unwrap() == pattern(5000));
    // The intercepted request got its credential, through the upstream's tunnel.
    let secure_seen = secure_seen.lock().unwrap().clone();
    assert!(
        secure_seen[0].to_ascii_lowercase().contains(&format!(
            "{}: {}",
            support::SECRET_HEADER,
            support::SECRET_VALUE
        )),
        "{secure_seen:?}"
    );
    assert_eq!(origin_seen.lock().unwrap().len(), 2);
    let login = Some(ALICE.to_owned());
    assert_eq!(
        *up_seen.lock().unwrap(),
        vec![
            (format!("CONNECT origin.test:{p} HTTP/1.1"), login.clone()),
            (
                format!("GET http://origin.test:{p}/plain HTTP/1.1"),
                login.clone()
            ),
            (format!("CONNECT secure.test:{s} HTTP/1.1"), login),
        ]
    );
    let rows = proxy.audit();
    let via = format!(
        "through the upstream proxy http://alice:***@127.0.0.1:{}",
        up.port()
    );
    let allowed: Vec<_> = rows
        .iter()
        .filter(|r| r.method != "GET" || r.host != "secure.test")
        .collect();
    assert_eq!(allowed.len(), 3, "{rows:#?}");
    assert!(
        allowed
            .iter()
            .all(|r| r.action == "allow" && r.reason.contains(&via)),
        "{rows:#?}"
    );
    assert!(!format!("{rows:?}").contains("s3cret"), "{rows:#?}");
}

#[test]
fn denied_hosts_and_unchecked_addresses_never_reach_the_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, _) = http_origin();
    let (up, up_seen) = recording_proxy(&["origin.test", "other.test"], &[]);
    let p = origin.port();
    // Every name on every port, but other.test; loopback has no address rule.
    let proxy = start(
        dir.path(),
        &[allow("**:any"), deny("other.test:any")],
        &[],
        None,
        upstream(&format!("http://127.0.0.1:{}", up.port()), ""),
    );
    for args in [
        vec![format!("http://other.test:{p}/")],
        vec!["-p".into(), format!("http://other.test:{p}/")],
        vec![format!("http://127.0.0.1:{p}/")],
        vec!["-p".into(), format!("http://127.0.0.1:{p}/")],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, body, err) = proxy.curl(&[&["-i"], &args[..]].concat());
        assert!(
            body.contains("HTTP/1.1 403 Forbidden"),
            "{args:?}: {code} {body} {err}"
        );
    }
    // A name goes to the upstream unresolved here (loopback there is its business).
    let (code, body, err) = proxy.curl(&[&format!("http://origin.test:{p}/ok")]);
    assert_eq!((code, body.contains("/ok")), (0, true), "{body} {err}");
    assert_eq!(
        *up_seen.lock().unwrap(),
        vec![(format!("GET http://origin.test:{p}/ok HTTP/1.1"), None)]
    );
    let rows = proxy.audit();
    let denied: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| r.action == "deny")
        .map(|r| (r.host.as_str(), r.rule.as_str()))
        .collect();
    assert_eq!(
        denied,
        [
            ("other.test", "2"),
            ("other.test", "2"),
            ("127.0.0.1", "address"),
            ("127.0.0.1", "address"),
        ]
    );
}

#[test]
fn no_proxy_destinations_go_direct() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, origin_seen) = http_origin();
    let (up, up_seen) = recording_proxy(&["origin.test"], &[]);
    let p = origin.port();
    let proxy = start(
        dir.path(),
        &[
            allow(format!("direct.test:{p}")),
            allow(format!("origin.test:{p}")),
            allow("127.0.0.1"),
        ],
        &[("direct.test", LOOPBACK)],
        None,
        upstream(
            &format!("http://127.0.0.1:{}", up.port()),
            "localhost,.direct.test",
        ),
    );
    let (code, body, err) = proxy.curl(&[&format!("http://direct.test:{p}/plain")]);
    assert_eq!(
        (code, body.as_str()),
        (0, "origin saw: GET /plain HTTP/1.1\n"),
        "{err}"
    );
    let (code, body, err) = proxy.curl(&["-p", &format!("http://direct.test:{p}/tunnel")]);
    assert_eq!(
        (code, body.as_str()),
        (0, "origin saw: GET /tunnel HTTP/1.1\n"),
        "{err}"
    );
    assert!(up_seen.lock().unwrap().is_empty());
    let (code, _, err) = proxy.curl(&[&format!("http://origin.test:{p}/via")]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(up_seen.lock().unwrap().len(), 1);
    assert_eq!(origin_seen.lock().unwrap().len(), 3);
}

#[test]
fn an_upstream_that_refuses_or_cannot_be_reached_is_a_502_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, _) = http_origin();
    let (up, _) = recording_proxy(&["origin.test"], &["refuse.test", "secure.test"]);
    let tls = support::TestTls::new(dir.path(), &["secure.test"]);
    let (creds, sandbox_ca) = credentials(dir.path(), "secure.test", &tls.ca_pem);
    let rules = [
        allow("refuse.test:any"),
        allow("origin.test:any"),
        allow("secure.test"),
    ];
    let proxy = start(
        dir.path(),
        &rules,
        &[],
        Some(creds),
        upstream(&format!("http://alice:s3cret@127.0.0.1:{}", up.port()), ""),
    );
    let r = proxy.raw(b"CONNECT refuse.test:443 HTTP/1.1\r\nHost: refuse.test:443\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 502"), "{r}");
    let why = format!(
        "the upstream proxy http://alice:***@127.0.0.1:{} refused CONNECT refuse.test:443: HTTP/1.1 403 Forbidden",
        up.port()
    );
    assert!(r.contains(&why), "{r}");
    // Plain HTTP that the upstream wants a login for: the sandbox is not asked for one.
    let (_, body, _) = proxy.curl(&["-i", "http://refuse.test/"]);
    assert!(
        body.starts_with("HTTP/1.1 502") && body.contains("wants a login (407)"),
        "{body}"
    );
    assert!(
        !body.to_ascii_lowercase().contains("proxy-authenticate"),
        "{body}"
    );
    // An intercepted host: the tunnel is answered, the request inside gets the 502.
    let (code, body, err) = proxy.curl(&[
        "-i",
        "--cacert",
        sandbox_ca.to_str().unwrap(),
        "https://secure.test/",
    ]);
    let secure_why = why.replace("refuse.test", "secure.test");
    assert!(
        code == 0 && body.contains("HTTP/2 502") && body.contains(&secure_why),
        "{code} {body} {err}"
    );
    let rows = proxy.audit();
    let row = |method: &str, host: &str| {
        rows.iter()
            .find(|r| r.method == method && r.host == host)
            .unwrap()
    };
    let connect = row("CONNECT", "refuse.test");
    assert_eq!(connect.status, Some(502));
    assert!(connect.reason.contains(&why), "{connect:?}");
    assert_eq!(row("GET", "refuse.test").status, Some(502));
    let inside = row("GET", "secure.test");
    assert_eq!(inside.status, Some(502));
    assert!(inside.reason.contains(&secure_why), "{inside:?}");

    // An upstream proxy nothing listens on.
    let gone = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(
        dir.path(),
        &rules,
        &[],
        None,
        upstream(&format!("http://{gone}"), ""),
    );
    let why = format!("cannot reach the upstream proxy http://{gone}");
    let (_, body, _) = proxy.curl(&["-i", &format!("http://origin.test:{}/", origin.port())]);
    assert!(
        body.starts_with("HTTP/1.1 502") && body.contains(&why),
        "{body}"
    );
    let r = proxy.raw(b"CONNECT origin.test:443 HTTP/1.1\r\nHost: origin.test:443\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 502") && r.contains(&why), "{r}");
    let rows = proxy.audit();
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert!(
        rows.iter()
            .all(|r| r.status == Some(502) && r.reason.contains(&why)),
        "{rows:#?}"
    );
}
