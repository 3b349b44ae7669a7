//! Intercepted TLS (a credential bound to the host) with a real `curl` and a real HTTPS origin
//! on loopback: bodies whose end only the connection's end marks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;

use support::{Ending, Proxy, Setup, allow, credentials, pattern, tls_origin};

const NAME: &str = "origin.test";

struct Case {
    proxy: Proxy,
    origin: SocketAddr,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    sandbox_ca: std::path::PathBuf,
    dir: tempfile::TempDir,
}

fn case(ending: Ending, len: usize) -> Case {
    support::curl_with_http2();
    let dir = tempfile::tempdir().unwrap();
    let tls = support::TestTls::new(dir.path(), &[NAME]);
    let (origin, seen) = tls_origin(&tls, ending, len);
    let (creds, sandbox_ca) = credentials(dir.path(), NAME, &tls.ca_pem);
    let rules = [
        allow(format!("{NAME}:{}", origin.port())),
        allow("127.0.0.1"),
    ];
    let proxy = Proxy::start(Setup {
        dir: dir.path(),
        rules: &rules,
        names: &[(NAME, "127.0.0.1".parse().unwrap())],
        credentials: Some(creds),
    });
    Case {
        proxy,
        origin,
        seen,
        sandbox_ca,
        dir,
    }
}

impl Case {
    /// curl with `version` (`--http2`, `--http1.1`): (exit code, body, HTTP version, stderr).
    fn get(&self, version: &str) -> (i32, Vec<u8>, String, String) {
        let out = self.dir.path().join(format!("body{version}"));
        let url = format!("https://{NAME}:{}/file", self.origin.port());
        let (code, written, err) = self.proxy.curl(&[
            version,
            "--cacert",
            self.sandbox_ca.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "-w",
            "%{http_version}",
            &url,
        ]);
        let body = std::fs::read(&out).unwrap_or_default();
        (code, body, written, err)
    }
}

#[test]
fn a_close_delimited_body_arrives_whole_over_http2_and_http1() {
    let len = 300_000;
    let c = case(Ending::Close, len);
    let (code, body, version, err) = c.get("--http2");
    assert_eq!((code, version.as_str()), (0, "2"), "{err}");
    assert!(
        body == pattern(len),
        "{} of {len} bytes arrived",
        body.len()
    );
    let (code, body, version, err) = c.get("--http1.1");
    assert_eq!((code, version.as_str()), (0, "1.1"), "{err}");
    assert!(
        body == pattern(len),
        "{} of {len} bytes arrived",
        body.len()
    );
    // Both went through the interception: the credential was injected.
    let seen = c.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen.iter()
            .all(|h| h.to_ascii_lowercase().contains(&format!(
                "{}: {}",
                support::SECRET_HEADER,
                support::SECRET_VALUE
            ))),
        "{seen:?}"
    );
    let rows = c.proxy.audit();
    let gets: Vec<_> = rows.iter().filter(|r| r.method == "GET").collect();
    assert_eq!(gets.len(), 2, "{rows:#?}");
    assert!(
        gets.iter()
            .all(|r| r.status == Some(200) && r.bytes_down == len as i64),
        "{gets:#?}"
    );
}

#[test]
fn an_end_without_close_notify_is_the_end_of_a_close_delimited_body() {
    // As curl and browsers read it: many servers close without TLS's close_notify.
    let len = 100_000;
    let c = case(Ending::CloseWithoutNotify, len);
    for v in ["--http2", "--http1.1"] {
        let (code, body, _, err) = c.get(v);
        assert_eq!(code, 0, "{v}: {err}");
        assert!(body == pattern(len), "{v}: {} of {len} bytes", body.len());
    }
}

#[test]
fn a_body_cut_short_is_an_error_not_a_truncation() {
    // A Content-Length the origin does not fill, and a connection reset mid-body.
    for ending in [Ending::Short, Ending::Reset] {
        let c = case(ending, 100_000);
        for v in ["--http2", "--http1.1"] {
            let (code, body, _, err) = c.get(v);
            assert_ne!(code, 0, "{ending:?} {v}: {} bytes, {err}", body.len());
        }
    }
}

/// A refused tunnel explains itself over TLS to a client that trusts the sandbox's CA: the
/// body and the status line's phrase name the reason and the command that allows it. A client
/// that refuses that certificate gets a 403 to its CONNECT on its next try.
#[test]
fn a_refused_tunnel_explains_itself_to_a_client_that_trusts_the_sandbox_ca() {
    let c = case(Ending::Close, 10);
    let denied = "denied.test";
    let url = format!("https://{denied}/v1/x");
    for version in ["--http1.1", "--http2"] {
        let (code, out, err) = c.proxy.curl(&[
            version,
            "--cacert",
            c.sandbox_ca.to_str().unwrap(),
            "-w",
            "status=%{http_code}",
            &url,
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            out,
            "paddock: GET https://denied.test:443/v1/x denied: no rule allows this host and port \
             (deny by default)\nto allow it: paddock policy allow denied.test --sandbox t\nstatus=403",
            "{version}"
        );
    }
    // With headers: the decision header and, over HTTP/1.1, the phrase.
    let (_, out, _) = c.proxy.curl(&[
        "--http1.1",
        "--cacert",
        c.sandbox_ca.to_str().unwrap(),
        "-s",
        "-o",
        "/dev/null",
        "-D",
        "-",
        &url,
    ]);
    assert!(
        out.contains(
            "HTTP/1.1 403 Forbidden by Paddock (rule=default); to allow it: paddock policy allow denied.test --sandbox t"
        ) && out.contains("x-paddock-decision: deny; rule=default"),
        "{out}"
    );
    assert!(c.seen.lock().unwrap().is_empty(), "nothing went upstream");
    // A client that trusts only its own CA refuses the certificate...
    let other_ca = c.dir.path().join("upstream-ca.pem");
    let (code, _, err) = c
        .proxy
        .curl(&["--cacert", other_ca.to_str().unwrap(), &url]);
    assert_eq!(code, 60, "{err}");
    // ...and then gets the refusal as the answer to its CONNECT, the phrase saying what to do.
    let (code, _, err) = c
        .proxy
        .curl(&["--cacert", other_ca.to_str().unwrap(), &url]);
    assert_eq!(code, 56, "{err}");
    assert!(err.contains("CONNECT tunnel failed, response 403"), "{err}");
    let raw = c
        .proxy
        .raw(b"CONNECT denied.test:443 HTTP/1.1\r\nHost: denied.test:443\r\n\r\n");
    assert!(
        raw.starts_with(
            "HTTP/1.1 403 Forbidden by Paddock (rule=default); to allow it: paddock policy allow denied.test --sandbox t\r\n"
        ),
        "{raw}"
    );
}
