use std::collections::HashMap;

use super::*;

fn host(s: &str) -> Host {
    Host::parse(s).unwrap()
}

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let m: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| m.get(k).cloned()
}

#[test]
fn proxy_urls() {
    let u = ProxyUrl::parse("http://al%40ice:p%3Ass@Proxy.Corp:3128/").unwrap();
    assert_eq!(
        (u.host.clone(), u.port, u.login()),
        (host("proxy.corp"), 3128, Some(("al@ice", "p:ss")))
    );
    assert_eq!(u.redacted(), "http://al%40ice:***@proxy.corp:3128");
    assert!(!format!("{u:?}").contains("p:ss"));
    // The stored form reads back the same.
    let s: String = u.clone().into();
    assert_eq!(ProxyUrl::parse(&s).unwrap(), u);
    let bare = ProxyUrl::parse("10.0.0.1").unwrap();
    assert_eq!(
        (bare.authority(), bare.login()),
        ("10.0.0.1:1080".into(), None)
    );
    assert_eq!(
        ProxyUrl::parse("http://[::1]:8080").unwrap().authority(),
        "[::1]:8080"
    );
    for (bad, says) in [
        ("https://u:secret@proxy:443", "(https://) is not supported"),
        ("socks5://proxy:1080", "only http://"),
        ("http://proxy:3128/path", "no path"),
        ("http://u:secret@pro xy:3128", "contains"),
        ("http://proxy:99999", "not one"),
        ("http://:pw@proxy", "user is empty"),
    ] {
        let e = ProxyUrl::parse(bad).unwrap_err().to_string();
        assert!(e.contains(says), "{bad}: {e}");
        assert!(!e.contains("secret"), "the password shows: {e}");
    }
}

#[test]
fn no_proxy_entries() {
    let list = NoProxy::parse_list(
        "localhost, .corp.example,*.svc , 10.0.0.0/8 ,::1,git.example:8443,<local>",
    );
    let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "localhost",
            "corp.example",
            "svc",
            "10.0.0.0/8",
            "::1",
            "git.example:8443"
        ]
    );
    let direct = |h: &str, p: u16| list.iter().any(|n| n.matches(&host(h), p));
    let table = [
        ("localhost", 80, true),
        ("corp.example", 443, true),
        ("api.corp.example", 443, true),
        ("evilcorp.example", 443, false),
        ("a.svc", 80, true),
        ("10.2.3.4", 443, true),
        ("11.0.0.1", 443, false),
        ("[::1]", 443, true),
        ("git.example", 8443, true),
        ("git.example", 443, false),
        ("example.com", 443, false),
    ];
    for (h, p, want) in table {
        assert_eq!(direct(h, p), want, "{h}:{p}");
    }
    assert!(
        NoProxy::parse("*")
            .unwrap()
            .matches(&host("anything.example"), 1)
    );
}

#[test]
fn environment_and_flag() {
    assert_eq!(UpstreamProxy::from_env(env(&[])).unwrap(), None);
    // Lower case first, as curl reads them; an empty value is unset.
    let u = UpstreamProxy::from_env(env(&[
        ("https_proxy", "http://lower:3128"),
        ("HTTPS_PROXY", "http://upper:3128"),
        ("http_proxy", ""),
        ("HTTP_PROXY", "http://plain:8080"),
        ("NO_PROXY", "internal.example"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(
        u.to_string(),
        "https: http://lower:3128, http: http://plain:8080 (direct: internal.example)"
    );
    assert_eq!(
        u.route(&host("api.example"), 443, true)
            .map(ProxyUrl::authority),
        Some("lower:3128".into())
    );
    assert_eq!(
        u.route(&host("api.example"), 80, false)
            .map(ProxyUrl::authority),
        Some("plain:8080".into())
    );
    assert_eq!(u.route(&host("a.internal.example"), 443, true), None);
    // Only HTTPS_PROXY: plain HTTP goes direct.
    let only = UpstreamProxy::from_env(env(&[("HTTPS_PROXY", "http://p:1")]))
        .unwrap()
        .unwrap();
    assert_eq!(only.route(&host("x.example"), 80, false), None);
    assert!(
        UpstreamProxy::from_env(env(&[("https_proxy", "https://p:1")]))
            .unwrap_err()
            .to_string()
            .contains("not supported")
    );
    // The flag: one proxy for both, the host's NO_PROXY kept; `none` ignores the variables.
    let get = env(&[("HTTPS_PROXY", "http://env:1"), ("no_proxy", "*")]);
    let f = UpstreamProxy::from_flag("http://u:pw@flag:2", &get)
        .unwrap()
        .unwrap();
    assert_eq!(f.to_string(), "http://u:***@flag:2 (direct: *)");
    assert_eq!(UpstreamProxy::from_flag("none", &get).unwrap(), None);
    // The stored form reads back the same.
    let j = serde_json::to_string(&u).unwrap();
    assert_eq!(serde_json::from_str::<UpstreamProxy>(&j).unwrap(), u);
}
