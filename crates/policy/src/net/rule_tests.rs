use std::net::IpAddr;

use super::*;

// ----- helpers -------------------------------------------------------------------------------

fn host(s: &str) -> Host {
    Host::parse(s).unwrap()
}

fn net(s: &str) -> HostPattern {
    HostPattern::Net(s.parse().unwrap())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn exact(s: &str) -> HostPattern {
    HostPattern::Exact(s.into())
}

fn one(s: &str) -> HostPattern {
    HostPattern::OneLabel(s.into())
}

fn deep(s: &str) -> HostPattern {
    HostPattern::AnyDepth(s.into())
}

/// A stored rule from rule text, global.
fn rule(id: i64, action: Action, target: &str) -> StoredRule {
    StoredRule {
        id,
        scope: Scope::Global,
        source: "user".into(),
        rule: Rule::parse_target(action, target).unwrap(),
    }
}

fn allow(id: i64, target: &str) -> StoredRule {
    rule(id, Action::Allow, target)
}

fn deny(id: i64, target: &str) -> StoredRule {
    rule(id, Action::Deny, target)
}

/// The same rule, for one sandbox.
fn in_sandbox(mut r: StoredRule, name: &str) -> StoredRule {
    r.scope = Scope::Sandbox(name.into());
    r
}

/// The same rule, limited to a method and/or a path.
fn limited(mut r: StoredRule, method: Option<&str>, path: Option<&str>) -> StoredRule {
    r.rule.method = method.map(|m| parse_method(m).unwrap());
    r.rule.path = path.map(|p| PathGlob::parse(p).unwrap());
    r
}

fn get() -> Kind {
    http("GET", "/")
}

fn http(method: &str, path: &str) -> Kind {
    Kind::Http {
        method: method.into(),
        path: path.into(),
    }
}

fn to(h: &str, port: u16, kind: Kind) -> Target {
    Target {
        host: host(h),
        port,
        kind,
    }
}

fn allowed(id: Option<i64>, reason: &str) -> Decision {
    Decision {
        action: Action::Allow,
        rule: id,
        reason: reason.into(),
    }
}

fn denied(id: Option<i64>, reason: &str) -> Decision {
    Decision {
        action: Action::Deny,
        rule: id,
        reason: reason.into(),
    }
}

const DEFAULT_DENY: &str = "no rule allows this host and port (deny by default)";

fn default_deny() -> Decision {
    denied(None, DEFAULT_DENY)
}

/// The default deny for a request an allow rule names the host of but limits otherwise.
fn not_as_limited(request: &str, id: i64, limits: &str) -> Decision {
    denied(
        None,
        &format!(
            "{request} is not what rule {id} (global) allows on this host: {limits} (deny by default)"
        ),
    )
}

fn by(id: i64, scope: &str) -> Decision {
    allowed(Some(id), &format!("allowed by rule {id} ({scope})"))
}

fn denied_by(id: i64, scope: &str) -> Decision {
    denied(Some(id), &format!("denied by rule {id} ({scope})"))
}

fn tunnel_refused(id: i64, scope: &str) -> Decision {
    denied(
        Some(id),
        &format!(
            "rule {id} ({scope}) denies some methods or paths on this host, which an opaque \
             CONNECT tunnel cannot honour"
        ),
    )
}

// ----- host patterns -------------------------------------------------------------------------

#[test]
fn pattern_parse_accepts() {
    let cases = [
        ("example.com", exact("example.com")),
        ("Example.COM.", exact("example.com")),
        ("localhost", exact("localhost")),
        ("bücher.example", exact("xn--bcher-kva.example")),
        ("*.example.com", one("example.com")),
        ("*.EXAMPLE.com.", one("example.com")),
        ("*.co.uk", one("co.uk")),
        ("*.bücher.example", one("xn--bcher-kva.example")),
        ("**.example.com", deep("example.com")),
        ("**.a.b.example.com", deep("a.b.example.com")),
        ("**", HostPattern::Any),
        ("*", HostPattern::Any),
        ("10.0.0.0/8", net("10.0.0.0/8")),
        // host bits are dropped
        ("10.1.2.3/8", net("10.0.0.0/8")),
        ("0.0.0.0/0", net("0.0.0.0/0")),
        ("192.168.1.7/32", net("192.168.1.7/32")),
        ("127.0.0.1", net("127.0.0.1/32")),
        // any IPv4 spelling is the address
        ("0x7f000001", net("127.0.0.1/32")),
        ("127.1", net("127.0.0.1/32")),
        ("0x0a000000/8", net("10.0.0.0/8")),
        ("::1", net("::1/128")),
        ("[::1]", net("::1/128")),
        ("[::1]/128", net("::1/128")),
        ("fd00::/8", net("fd00::/8")),
        ("[fd00::]/8", net("fd00::/8")),
        ("::/0", net("::/0")),
        // IPv4-mapped IPv6 is the IPv4 address, and a mapped range the IPv4 range
        ("::ffff:127.0.0.1", net("127.0.0.1/32")),
        ("[::ffff:7f00:1]", net("127.0.0.1/32")),
        ("::ffff:10.0.0.0/104", net("10.0.0.0/8")),
        ("::ffff:0:0/96", net("0.0.0.0/0")),
    ];
    for (raw, want) in cases {
        assert_eq!(HostPattern::parse(raw), Ok(want), "{raw:?}");
    }
}

#[test]
fn pattern_parse_refuses() {
    for raw in [
        "",
        "*example.com",
        "*-example.com",
        "a.*.com",
        "example.*",
        "a*.example.com",
        "***.example.com",
        "**.*.example.com",
        "*.*.example.com",
        // a wildcard needs a suffix of at least two labels
        "*.com",
        "**.com",
        "*.localhost",
        "**.",
        "*.",
        "*..example.com",
        "**..example.com",
        // wildcards apply to names only
        "*.10.0.0.1",
        "**.127.0.0.1",
        "*.[::1]",
        "*.10.0.0.0/8",
        "10.0.0.0/33",
        "10.0.0.0/",
        "10.0.0.0/x",
        "10.0.0.0/+8",
        "10.0.0.0/-1",
        "10.0.0.0/0008",
        "10.0.0.0/8/8",
        "::/129",
        "256.0.0.0/8",
        "example.com/8",
        "/8",
        // a mapped range shorter than /96 is not a range of IPv4 addresses
        "::ffff:0:0/95",
        "::ffff:10.0.0.0/8",
        "exa mple.com",
        "example.com:80",
        "-a.example.com",
        "*.-a.example.com",
        "a_b.example.com",
        "user@example.com",
        "[::1",
        "[1.2.3.4]",
        "[example.com]",
        "1.2.3.4.5",
        "example.123",
    ] {
        let got = HostPattern::parse(raw);
        assert!(
            matches!(&got, Err(RuleError::Pattern { pattern, .. }) if pattern == raw),
            "{raw:?} gave {got:?}"
        );
    }
}

#[test]
fn pattern_display_round_trips() {
    for raw in [
        "example.com",
        "*.example.com",
        "**.example.com",
        "**",
        "10.0.0.0/8",
        "127.0.0.1",
        "::1",
        "fd00::/8",
        "::ffff:10.0.0.0/104",
        "*.bücher.example",
    ] {
        let p = HostPattern::parse(raw).unwrap();
        assert_eq!(
            HostPattern::parse(&p.to_string()),
            Ok(p.clone()),
            "{raw:?} -> {p}"
        );
    }
    assert_eq!(net("127.0.0.1/32").to_string(), "127.0.0.1");
    assert_eq!(net("::1/128").to_string(), "::1");
    assert_eq!(net("10.0.0.0/8").to_string(), "10.0.0.0/8");
    assert_eq!(one("example.com").to_string(), "*.example.com");
    assert_eq!(deep("example.com").to_string(), "**.example.com");
    assert_eq!(HostPattern::Any.to_string(), "**");
}

#[test]
fn pattern_matching() {
    // (pattern, host as a client would send it, covered)
    let cases: &[(&str, &str, bool)] = &[
        ("example.com", "example.com", true),
        ("example.com", "EXAMPLE.com.", true),
        ("example.com", "a.example.com", false),
        ("example.com", "example.co", false),
        ("example.com", "xexample.com", false),
        ("example.com", "example.com.evil.test", false),
        ("*.example.com", "example.com", false),
        ("*.example.com", "a.example.com", true),
        ("*.example.com", "A.Example.COM.", true),
        ("*.example.com", "a-b.example.com", true),
        ("*.example.com", "a.b.example.com", false),
        ("*.example.com", "evil-example.com", false),
        ("*.example.com", "xexample.com", false),
        ("*.example.com", "example.com.evil.test", false),
        ("*.example.com", "a.example.com.evil.test", false),
        ("*.example.com", "a.example.co", false),
        ("**.example.com", "example.com", true),
        ("**.example.com", "Example.Com.", true),
        ("**.example.com", "a.example.com", true),
        ("**.example.com", "a.b.example.com", true),
        ("**.example.com", "a.b.c.d.example.com", true),
        ("**.example.com", "evil-example.com", false),
        ("**.example.com", "xexample.com", false),
        ("**.example.com", "example.com.evil.test", false),
        ("**.example.com", "a.example.com.evil.test", false),
        ("**.example.com", "le.com", false),
        ("**.example.com", "com", false),
        ("*.bücher.example", "www.xn--bcher-kva.example", true),
        ("*.xn--bcher-kva.example", "www.bücher.example", true),
        ("**", "anything.test", true),
        ("**", "localhost", true),
        ("**", "10.0.0.1", true),
        ("**", "[::1]", true),
        ("10.0.0.0/8", "10.255.0.1", true),
        ("10.0.0.0/8", "0x0a000001", true),
        ("10.0.0.0/8", "11.0.0.1", false),
        ("10.0.0.0/8", "[::ffff:10.0.0.1]", true),
        ("127.0.0.1", "127.0.0.1", true),
        ("127.0.0.1", "2130706433", true),
        ("127.0.0.1", "127.1", true),
        ("127.0.0.1", "0177.0.0.1", true),
        ("127.0.0.1", "127.0.0.2", false),
        ("::1", "[::1]", true),
        ("::1", "127.0.0.1", false),
        ("fd00::/8", "[fd12::1]", true),
        ("fd00::/8", "[fe80::1]", false),
        // address patterns never match names, name patterns never match addresses
        ("127.0.0.1", "localhost", false),
        ("example.com", "93.184.216.34", false),
        ("**.example.com", "10.0.0.1", false),
    ];
    for (p, h, want) in cases {
        let pat = HostPattern::parse(p).unwrap();
        assert_eq!(pat.matches(&host(h)), *want, "{p:?} vs {h:?}");
    }
}

#[test]
fn net_pattern_matches_a_mapped_address_built_by_hand() {
    // Host::parse already folds mapped addresses; a Host built directly must not slip past.
    let mapped = Host::Ip(ip("::ffff:127.0.0.1"));
    assert!(net("127.0.0.0/8").matches(&mapped));
    assert!(!net("::ffff:0:0/96").matches(&mapped));
}

// ----- ports, paths, methods -----------------------------------------------------------------

#[test]
fn port_spec_parse() {
    let cases = [
        ("any", Ok(PortSpec::Any)),
        ("*", Ok(PortSpec::Any)),
        ("default", Ok(PortSpec::Default)),
        ("", Ok(PortSpec::Default)),
        ("1", Ok(PortSpec::Port(1))),
        ("443", Ok(PortSpec::Port(443))),
        ("65535", Ok(PortSpec::Port(65535))),
        ("0", Err(RuleError::Port("0".into()))),
        ("65536", Err(RuleError::Port("65536".into()))),
        ("+80", Err(RuleError::Port("+80".into()))),
        ("-1", Err(RuleError::Port("-1".into()))),
        (" 80", Err(RuleError::Port(" 80".into()))),
        ("http", Err(RuleError::Port("http".into()))),
        ("ANY", Err(RuleError::Port("ANY".into()))),
        ("0000080", Err(RuleError::Port("0000080".into()))),
    ];
    for (raw, want) in cases {
        assert_eq!(PortSpec::parse(raw), want, "{raw:?}");
    }
    for p in [PortSpec::Any, PortSpec::Default, PortSpec::Port(8443)] {
        assert_eq!(PortSpec::parse(&p.to_string()), Ok(p));
    }
}

#[test]
fn port_spec_matches() {
    let (h, c) = (get(), Kind::Connect);
    let cases = [
        (PortSpec::Default, 80, &h, true),
        (PortSpec::Default, 443, &h, false),
        (PortSpec::Default, 443, &c, true),
        (PortSpec::Default, 80, &c, false),
        (PortSpec::Default, 8443, &c, false),
        (PortSpec::Any, 1, &c, true),
        (PortSpec::Any, 65535, &h, true),
        (PortSpec::Port(8443), 8443, &c, true),
        (PortSpec::Port(8443), 8443, &h, true),
        (PortSpec::Port(8443), 443, &c, false),
    ];
    for (spec, port, kind, want) in cases {
        assert_eq!(spec.matches(port, kind), want, "{spec} {port} {kind:?}");
    }
}

#[test]
fn path_globs() {
    let cases: &[(&str, &str, bool)] = &[
        ("/", "/", true),
        ("/", "/a", false),
        ("/*", "/", true),
        ("/*", "/a/b/c", true),
        ("/api/*", "/api/", true),
        ("/api/*", "/api/v1/users", true),
        ("/api/*", "/api", false),
        ("/api/*", "/apix", false),
        ("/api/*", "/API/x", false),
        ("/a*c", "/abc", true),
        ("/a*c", "/ac", true),
        ("/a*c", "/abcd", false),
        ("/a*b*c", "/axxbyyc", true),
        ("/a*b*c", "/axxcyyb", false),
        ("/*.json", "/x/y.json", true),
        ("/*.json", "/x/y.json5", false),
        ("/**", "/anything", true),
        ("/exact", "/exact", true),
        ("/exact", "/exact/", false),
    ];
    for (p, s, want) in cases {
        assert_eq!(
            PathGlob::parse(p).unwrap().matches(s),
            *want,
            "{p:?} vs {s:?}"
        );
    }
    for bad in ["", "api", "*", "/a b", "/a\nb", "/a\0"] {
        assert_eq!(
            PathGlob::parse(bad),
            Err(RuleError::Path(bad.into())),
            "{bad:?}"
        );
    }
    assert_eq!(PathGlob::parse("/x*").unwrap().as_str(), "/x*");
    // no exponential blow-up on a hostile pattern
    let p = PathGlob::parse(&format!("/{}b", "*a".repeat(50))).unwrap();
    assert!(!p.matches(&format!("/{}", "a".repeat(5000))));
}

#[test]
fn methods() {
    let cases = [
        ("GET", Ok("GET".to_owned())),
        ("post", Ok("POST".to_owned())),
        ("Delete", Ok("DELETE".to_owned())),
        ("", Err(RuleError::Method(String::new()))),
        ("GET ", Err(RuleError::Method("GET ".into()))),
        ("M-SEARCH", Err(RuleError::Method("M-SEARCH".into()))),
        ("G3T", Err(RuleError::Method("G3T".into()))),
    ];
    for (raw, want) in cases {
        assert_eq!(parse_method(raw), want, "{raw:?}");
    }
    let long = "A".repeat(21);
    assert_eq!(parse_method(&long), Err(RuleError::Method(long.clone())));
}

// ----- Rule::parse_target --------------------------------------------------------------------

#[test]
fn parse_target_accepts() {
    let cases = [
        ("example.com", exact("example.com"), PortSpec::Default),
        (
            "example.com:8443",
            exact("example.com"),
            PortSpec::Port(8443),
        ),
        ("example.com:any", exact("example.com"), PortSpec::Any),
        (
            "example.com:default",
            exact("example.com"),
            PortSpec::Default,
        ),
        ("Example.COM.:80", exact("example.com"), PortSpec::Port(80)),
        ("*.example.com", one("example.com"), PortSpec::Default),
        (
            "*.example.com:8443",
            one("example.com"),
            PortSpec::Port(8443),
        ),
        ("**.example.com:any", deep("example.com"), PortSpec::Any),
        (
            "**.example.com:443",
            deep("example.com"),
            PortSpec::Port(443),
        ),
        ("**", HostPattern::Any, PortSpec::Default),
        ("**:any", HostPattern::Any, PortSpec::Any),
        ("*:22", HostPattern::Any, PortSpec::Port(22)),
        ("10.0.0.0/8", net("10.0.0.0/8"), PortSpec::Default),
        ("10.0.0.0/8:5432", net("10.0.0.0/8"), PortSpec::Port(5432)),
        ("10.0.0.0/8:any", net("10.0.0.0/8"), PortSpec::Any),
        ("fd00::/8", net("fd00::/8"), PortSpec::Default),
        ("fd00::/8:443", net("fd00::/8"), PortSpec::Port(443)),
        ("[fd00::]/8", net("fd00::/8"), PortSpec::Default),
        ("[fd00::]/8:443", net("fd00::/8"), PortSpec::Port(443)),
        ("127.0.0.1", net("127.0.0.1/32"), PortSpec::Default),
        ("127.0.0.1:3000", net("127.0.0.1/32"), PortSpec::Port(3000)),
        ("[::1]", net("::1/128"), PortSpec::Default),
        ("[::1]:8080", net("::1/128"), PortSpec::Port(8080)),
        ("[::1]:any", net("::1/128"), PortSpec::Any),
        // without brackets every ':' belongs to the address
        ("::1", net("::1/128"), PortSpec::Default),
        ("fe80::1:80", net("fe80::1:80/128"), PortSpec::Default),
        (
            "[::ffff:127.0.0.1]:80",
            net("127.0.0.1/32"),
            PortSpec::Port(80),
        ),
    ];
    for (raw, host, port) in cases {
        for action in [Action::Allow, Action::Deny] {
            assert_eq!(
                Rule::parse_target(action, raw),
                Ok(Rule {
                    action,
                    host: host.clone(),
                    port,
                    method: None,
                    path: None,
                    private_address: false,
                }),
                "{raw:?}"
            );
        }
    }
}

#[test]
fn parse_target_refuses() {
    let cases = [
        ("example.com:", RuleError::Port(String::new())),
        ("*.example.com:", RuleError::Port(String::new())),
        ("10.0.0.0/8:", RuleError::Port(String::new())),
        ("[::1]:", RuleError::Port(String::new())),
        ("example.com:0", RuleError::Port("0".into())),
        ("example.com:65536", RuleError::Port("65536".into())),
        ("example.com:+80", RuleError::Port("+80".into())),
        ("example.com:http", RuleError::Port("http".into())),
        ("*.example.com:x", RuleError::Port("x".into())),
        ("[::1]:0", RuleError::Port("0".into())),
        ("fd00::/8:0", RuleError::Port("0".into())),
    ];
    for (raw, want) in cases {
        assert_eq!(Rule::parse_target(Action::Allow, raw), Err(want), "{raw:?}");
    }
    for raw in [
        "",
        "*.com:443",
        "*example.com:443",
        "exa mple.com:80",
        "example.com:80:90",
        "[::1",
        "[::1]x",
        "[::1]80",
        "[example.com]:80",
        "10.0.0.0/33",
        "10.0.0.0/33:80",
        "example.com/8:80",
        "*.example.com/x",
        "http://example.com",
    ] {
        let got = Rule::parse_target(Action::Allow, raw);
        assert!(
            matches!(got, Err(RuleError::Pattern { .. })),
            "{raw:?} gave {got:?}"
        );
    }
}

// ----- decide --------------------------------------------------------------------------------

#[test]
fn decide_with_no_rules_denies() {
    for t in [
        to("example.com", 80, get()),
        to("example.com", 443, Kind::Connect),
        to("10.0.0.1", 80, get()),
    ] {
        assert_eq!(decide(&[], &t), default_deny(), "{t:?}");
    }
}

#[test]
fn decide_default_port() {
    let rules = [allow(1, "example.com")];
    let cases = [
        (to("example.com", 80, get()), by(1, "global")),
        (to("EXAMPLE.com.", 80, get()), by(1, "global")),
        (to("example.com", 443, Kind::Connect), by(1, "global")),
        (to("example.com", 8443, Kind::Connect), default_deny()),
        (to("example.com", 80, Kind::Connect), default_deny()),
        (to("example.com", 443, get()), default_deny()),
        (to("www.example.com", 443, Kind::Connect), default_deny()),
        (to("example.org", 80, get()), default_deny()),
    ];
    for (t, want) in cases {
        assert_eq!(decide(&rules, &t), want, "{t:?}");
    }
    // naming the port allows it
    let rules = [allow(1, "example.com"), allow(2, "example.com:8443")];
    assert_eq!(
        decide(&rules, &to("example.com", 8443, Kind::Connect)),
        by(2, "global")
    );
    assert_eq!(
        decide(&rules, &to("example.com", 443, Kind::Connect)),
        by(1, "global")
    );
    let rules = [allow(1, "example.com:any")];
    for port in [1, 22, 80, 443, 8443, 65535] {
        assert_eq!(
            decide(&rules, &to("example.com", port, Kind::Connect)),
            by(1, "global")
        );
    }
}

#[test]
fn decide_wildcards() {
    let rules = [allow(1, "*.example.com"), allow(2, "**.example.org")];
    let cases = [
        (to("api.example.com", 443, Kind::Connect), by(1, "global")),
        (to("example.com", 443, Kind::Connect), default_deny()),
        (to("a.b.example.com", 443, Kind::Connect), default_deny()),
        (to("evil-example.com", 443, Kind::Connect), default_deny()),
        (
            to("example.com.evil.test", 443, Kind::Connect),
            default_deny(),
        ),
        (to("example.org", 443, Kind::Connect), by(2, "global")),
        (to("a.b.example.org", 80, get()), by(2, "global")),
        (to("xexample.org", 80, get()), default_deny()),
    ];
    for (t, want) in cases {
        assert_eq!(decide(&rules, &t), want, "{t:?}");
    }
}

#[test]
fn explicit_deny_beats_allow_in_any_order() {
    let t = to("api.example.com", 443, Kind::Connect);
    let orders = [
        vec![allow(1, "api.example.com"), deny(2, "api.example.com")],
        vec![deny(2, "api.example.com"), allow(1, "api.example.com")],
        vec![allow(1, "**"), deny(2, "**.example.com")],
        vec![
            deny(2, "*.example.com:any"),
            allow(1, "api.example.com:443"),
        ],
    ];
    for rules in orders {
        assert_eq!(decide(&rules, &t), denied_by(2, "global"), "{rules:?}");
    }
    // a deny on another port does not touch this one
    let rules = [allow(1, "api.example.com"), deny(2, "api.example.com:8443")];
    assert_eq!(decide(&rules, &t), by(1, "global"));
    assert_eq!(
        decide(&rules, &to("api.example.com", 8443, Kind::Connect)),
        denied_by(2, "global")
    );
}

#[test]
fn the_reported_rule_is_the_deciding_one() {
    let rules = [
        allow(1, "example.org"),
        allow(2, "**.example.com"),
        allow(3, "api.example.com"),
        deny(4, "other.example.com"),
        deny(5, "**.other.example.com"),
    ];
    let cases = [
        // first matching allow, in order
        (to("api.example.com", 443, Kind::Connect), by(2, "global")),
        (to("example.org", 443, Kind::Connect), by(1, "global")),
        // first matching deny, even after an allow that matched
        (
            to("other.example.com", 443, Kind::Connect),
            denied_by(4, "global"),
        ),
        (
            to("x.other.example.com", 443, Kind::Connect),
            denied_by(5, "global"),
        ),
        (to("example.net", 443, Kind::Connect), default_deny()),
    ];
    for (t, want) in cases {
        assert_eq!(decide(&rules, &t), want, "{t:?}");
    }
}

#[test]
fn global_and_sandbox_rules_mixed() {
    let rules = [
        allow(1, "**.example.com"),
        in_sandbox(deny(2, "secret.example.com"), "web"),
        in_sandbox(allow(3, "pypi.org"), "web"),
        deny(4, "pypi.org:8443"),
        in_sandbox(allow(5, "pypi.org:any"), "web"),
    ];
    let cases = [
        (to("www.example.com", 443, Kind::Connect), by(1, "global")),
        (
            to("secret.example.com", 443, Kind::Connect),
            denied_by(2, "web"),
        ),
        (to("pypi.org", 443, Kind::Connect), by(3, "web")),
        (to("pypi.org", 22, Kind::Connect), by(5, "web")),
        (to("pypi.org", 8443, Kind::Connect), denied_by(4, "global")),
        (
            to("files.pythonhosted.org", 443, Kind::Connect),
            default_deny(),
        ),
    ];
    for (t, want) in cases {
        assert_eq!(decide(&rules, &t), want, "{t:?}");
    }
}

#[test]
fn method_and_path_allow_rules_on_plain_http() {
    let rules = [limited(
        allow(1, "api.example.com"),
        Some("get"),
        Some("/v1/*"),
    )];
    let cases = [
        (
            to("api.example.com", 80, http("GET", "/v1/users")),
            by(1, "global"),
        ),
        (
            to("api.example.com", 80, http("GET", "/v1/")),
            by(1, "global"),
        ),
        (
            to("api.example.com", 80, http("POST", "/v1/users")),
            not_as_limited("POST /v1/users", 1, "GET /v1/*"),
        ),
        (
            to("api.example.com", 80, http("GET", "/v2/users")),
            not_as_limited("GET /v2/users", 1, "GET /v1/*"),
        ),
        (
            to("api.example.com", 80, http("GET", "/v1")),
            not_as_limited("GET /v1", 1, "GET /v1/*"),
        ),
        (
            to("api.example.com", 8080, http("GET", "/v1/users")),
            default_deny(),
        ),
        (
            to("www.example.com", 80, http("GET", "/v1/users")),
            default_deny(),
        ),
    ];
    for (t, want) in cases {
        assert_eq!(decide(&rules, &t), want, "{t:?}");
    }
    // method only, path only
    let rules = [
        limited(allow(1, "a.test"), Some("HEAD"), None),
        limited(allow(2, "b.test"), None, Some("/public/*")),
    ];
    let cases = [
        (to("a.test", 80, http("HEAD", "/anything")), by(1, "global")),
        (
            to("a.test", 80, http("GET", "/anything")),
            not_as_limited("GET /anything", 1, "HEAD on any path"),
        ),
        (to("b.test", 80, http("PUT", "/public/x")), by(2, "global")),
        (
            to("b.test", 80, http("PUT", "/private/x")),
            not_as_limited("PUT /private/x", 2, "any method on /public/*"),
        ),
    ];
    for (t, want) in cases {
        assert_eq!(decide(&rules, &t), want, "{t:?}");
    }
}

#[test]
fn method_and_path_deny_rules_on_plain_http() {
    let rules = [
        allow(1, "api.example.com"),
        limited(deny(2, "api.example.com"), Some("DELETE"), None),
        limited(deny(3, "api.example.com"), None, Some("/admin*")),
    ];
    let cases = [
        (to("api.example.com", 80, http("GET", "/")), by(1, "global")),
        (
            to("api.example.com", 80, http("DELETE", "/x")),
            denied_by(2, "global"),
        ),
        // methods compare without case, so a lower-case spelling does not slip past a deny
        (
            to("api.example.com", 80, http("delete", "/x")),
            denied_by(2, "global"),
        ),
        (
            to("api.example.com", 80, http("Delete", "/x")),
            denied_by(2, "global"),
        ),
        (
            to("api.example.com", 80, http("GET", "/admin")),
            denied_by(3, "global"),
        ),
        (
            to("api.example.com", 80, http("GET", "/admin/users")),
            denied_by(3, "global"),
        ),
        (
            to("api.example.com", 80, http("DELETE", "/admin")),
            denied_by(2, "global"),
        ),
        (
            to("api.example.com", 80, http("GET", "/public/admin")),
            by(1, "global"),
        ),
    ];
    for (t, want) in cases {
        assert_eq!(decide(&rules, &t), want, "{t:?}");
    }
}

#[test]
fn an_allow_with_method_or_path_does_not_allow_a_tunnel() {
    let t = to("api.example.com", 443, Kind::Connect);
    let hidden = |limits: &str| {
        denied(
            None,
            &format!(
                "rule 1 (global) allows only {limits} on this host, which an opaque CONNECT \
                 tunnel does not show (deny by default)"
            ),
        )
    };
    let rules = [limited(allow(1, "api.example.com"), Some("GET"), None)];
    assert_eq!(decide(&rules, &t), hidden("GET on any path"));
    let rules = [limited(allow(1, "api.example.com"), None, Some("/*"))];
    assert_eq!(decide(&rules, &t), hidden("any method on /*"));
    // a plain allow for the same host still does
    let rules = [
        limited(allow(1, "api.example.com"), Some("GET"), None),
        allow(2, "api.example.com"),
    ];
    assert_eq!(decide(&rules, &t), by(2, "global"));
}

#[test]
fn a_deny_with_method_or_path_refuses_a_tunnel() {
    let rules = [
        allow(1, "**.example.com:any"),
        limited(deny(2, "api.example.com"), None, Some("/admin/*")),
        limited(
            in_sandbox(deny(3, "*.example.com:8443"), "web"),
            Some("POST"),
            None,
        ),
    ];
    let cases = [
        (
            to("api.example.com", 443, Kind::Connect),
            tunnel_refused(2, "global"),
        ),
        (
            to("x.example.com", 8443, Kind::Connect),
            tunnel_refused(3, "web"),
        ),
        (
            to("api.example.com", 8443, Kind::Connect),
            tunnel_refused(3, "web"),
        ),
        // other hosts and ports are untouched
        (to("api.example.com", 22, Kind::Connect), by(1, "global")),
        (to("www.example.com", 443, Kind::Connect), by(1, "global")),
        // a plain request is checked for real
        (
            to("api.example.com", 80, http("GET", "/x")),
            by(1, "global"),
        ),
        (
            to("api.example.com", 80, http("GET", "/admin/x")),
            denied_by(2, "global"),
        ),
    ];
    for (t, want) in cases {
        assert_eq!(decide(&rules, &t), want, "{t:?}");
    }
    // the first matching deny decides, whether it matched outright or failed closed
    let t = to("api.example.com", 443, Kind::Connect);
    let plain = deny(2, "api.example.com");
    let put = limited(deny(3, "api.example.com"), Some("PUT"), None);
    let rules = [allow(1, "api.example.com"), plain.clone(), put.clone()];
    assert_eq!(decide(&rules, &t), denied_by(2, "global"));
    let rules = [allow(1, "api.example.com"), put, plain];
    assert_eq!(decide(&rules, &t), tunnel_refused(3, "global"));
}

#[test]
fn decide_on_address_targets() {
    let rules = [
        allow(1, "10.0.0.0/8:any"),
        allow(2, "[::1]:8080"),
        deny(3, "10.9.0.0/16:any"),
    ];
    let cases = [
        (to("10.1.2.3", 80, get()), by(1, "global")),
        (to("0x0a010203", 22, Kind::Connect), by(1, "global")),
        (to("[::ffff:10.1.2.3]", 22, Kind::Connect), by(1, "global")),
        (to("10.9.1.1", 80, get()), denied_by(3, "global")),
        (to("11.0.0.1", 80, get()), default_deny()),
        (to("[::1]", 8080, get()), by(2, "global")),
        (to("::1", 8081, get()), default_deny()),
    ];
    for (t, want) in cases {
        assert_eq!(decide(&rules, &t), want, "{t:?}");
    }
}

#[test]
fn decision_header() {
    assert_eq!(by(7, "global").header(), "allow; rule=7");
    assert_eq!(denied_by(3, "web").header(), "deny; rule=3");
    assert_eq!(default_deny().header(), "deny; rule=default");
}

// ----- decide_address ------------------------------------------------------------------------

fn public(a: &str) -> Decision {
    allowed(None, &format!("{a} is a public address"))
}

fn refused_class(a: &str, class: &str) -> Decision {
    denied(
        None,
        &format!("{a} is a {class} address; only a rule naming it allows it"),
    )
}

fn address_allowed(class: &str, a: &str, id: i64) -> Decision {
    allowed(
        Some(id),
        &format!("{class} address {a} allowed by rule {id}"),
    )
}

fn address_denied(a: &str, id: i64) -> Decision {
    denied(Some(id), &format!("address {a} denied by rule {id}"))
}

#[test]
fn rules_a_user_writes_are_vetted() {
    let vet = |action, t: &str| Rule::parse_target(action, t).unwrap().vet();
    for t in ["*", "**", "**:any", "0.0.0.0/0", "::/0", "[::]/0:443"] {
        assert!(
            matches!(vet(Action::Allow, t), Err(RuleError::AllowsEverything(_))),
            "{t}"
        );
        // Denying everything is fine.
        assert_eq!(vet(Action::Deny, t), Ok(None), "{t}");
    }
    for (t, class, example) in [
        ("10.0.0.0/8", AddrClass::Private, "10.0.0.1"),
        ("127.0.0.0/8", AddrClass::Loopback, "127.0.0.1"),
        ("169.254.0.0/16", AddrClass::LinkLocal, "169.254.0.1"),
        ("0.0.0.0/1", AddrClass::Unspecified, "0.0.0.0"),
        ("128.0.0.0/1", AddrClass::LinkLocal, "169.254.0.0"),
        ("10.1.2.0/24", AddrClass::Private, "10.1.2.0"),
        ("fd00::/8", AddrClass::Private, "fd00::"),
        ("::ffff:10.0.0.0/104", AddrClass::Private, "10.0.0.0"),
        ("2002:0a00::/24", AddrClass::Private, "2002:a00::"),
    ] {
        match vet(Action::Allow, t) {
            Err(RuleError::RangeOpensReserved {
                class: c,
                example: e,
                ..
            }) => {
                assert_eq!(c, class, "{t}");
                assert!(
                    e == ip(example) || classify(e) == class,
                    "{t}: {e} is not {class}"
                );
            }
            other => panic!("{t}: {other:?}"),
        }
    }
    // A public range, and names, pass without a word.
    for t in [
        "8.8.8.0/24",
        "2606:4700::/32",
        "example.com",
        "*.example.com",
        "8.8.8.8",
    ] {
        assert_eq!(vet(Action::Allow, t), Ok(None), "{t}");
    }
    // A non-public address named exactly passes, with a warning that says what it is.
    for (t, says) in [
        (
            "127.0.0.1",
            "loopback address: the sandbox may reach services listening on this host's loopback",
        ),
        ("169.254.169.254", "cloud metadata address"),
        ("10.1.2.3:5432", "private address"),
        ("[::1]:8080", "loopback"),
    ] {
        let w = vet(Action::Allow, t).unwrap().unwrap();
        assert!(w.contains(says), "{t}: {w}");
    }
}

#[test]
fn public_addresses_pass_without_a_rule() {
    for a in [
        "8.8.8.8",
        "93.184.216.34",
        "2606:4700::1111",
        "::ffff:1.1.1.1",
    ] {
        let want = public(&canonical_ip(ip(a)).to_string());
        assert_eq!(
            decide_address(&[], None, ip(a), 443, &Kind::Connect),
            want,
            "{a}"
        );
        assert_eq!(decide_address(&[], None, ip(a), 80, &get()), want, "{a}");
    }
}

#[test]
fn non_public_addresses_need_an_address_rule() {
    let cases = [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("fd00::1", "private"),
    ];
    // name rules, `**` and rules for other addresses do not count
    let rules = [
        allow(1, "**:any"),
        allow(2, "localhost:any"),
        allow(3, "*.internal.example:any"),
        allow(4, "8.8.8.8:any"),
    ];
    for (a, class) in cases {
        for rules in [&rules[..], &[][..]] {
            assert_eq!(
                decide_address(rules, None, ip(a), 443, &Kind::Connect),
                refused_class(a, class),
                "{a}"
            );
        }
    }
}

#[test]
fn loopback_is_allowed_only_by_a_rule_covering_it() {
    let rules = [allow(1, "127.0.0.1")];
    let cases = [
        (
            ip("127.0.0.1"),
            443,
            Kind::Connect,
            address_allowed("loopback", "127.0.0.1", 1),
        ),
        (
            ip("127.0.0.1"),
            80,
            get(),
            address_allowed("loopback", "127.0.0.1", 1),
        ),
        (
            ip("127.0.0.2"),
            443,
            Kind::Connect,
            refused_class("127.0.0.2", "loopback"),
        ),
        // an address rule's default port covers every port: the name's rule decides the port
        (
            ip("127.0.0.1"),
            22,
            Kind::Connect,
            address_allowed("loopback", "127.0.0.1", 1),
        ),
        (
            ip("127.0.0.1"),
            443,
            get(),
            address_allowed("loopback", "127.0.0.1", 1),
        ),
    ];
    for (a, port, kind, want) in cases {
        assert_eq!(
            decide_address(&rules, None, a, port, &kind),
            want,
            "{a} {port} {kind:?}"
        );
    }
    // Never through a range (a rule stored before ranges were refused, say), nor `**`.
    for rules in [
        [allow(1, "127.0.0.0/8:any")],
        [allow(1, "0.0.0.0/0:any")],
        [allow(1, "**:any")],
    ] {
        assert_eq!(
            decide_address(&rules, None, ip("127.9.9.9"), 22, &Kind::Connect),
            refused_class("127.9.9.9", "loopback")
        );
    }
    let rules = [allow(2, "[::1]:any")];
    assert_eq!(
        decide_address(&rules, None, ip("::1"), 5000, &Kind::Connect),
        address_allowed("loopback", "::1", 2)
    );
}

#[test]
fn a_deny_address_rule_refuses_a_public_range() {
    let rules = [allow(1, "**:any"), deny(2, "93.184.216.0/24")];
    let cases = [
        (
            ip("93.184.216.34"),
            443,
            Kind::Connect,
            address_denied("93.184.216.34", 2),
        ),
        // a deny with the default port covers every port of the address
        (
            ip("93.184.216.34"),
            8443,
            Kind::Connect,
            address_denied("93.184.216.34", 2),
        ),
        (
            ip("93.184.216.34"),
            80,
            get(),
            address_denied("93.184.216.34", 2),
        ),
        (
            ip("::ffff:93.184.216.1"),
            443,
            Kind::Connect,
            address_denied("93.184.216.1", 2),
        ),
        (
            ip("93.184.217.1"),
            443,
            Kind::Connect,
            public("93.184.217.1"),
        ),
    ];
    for (a, port, kind, want) in cases {
        assert_eq!(
            decide_address(&rules, None, a, port, &kind),
            want,
            "{a} {port}"
        );
    }
}

#[test]
fn deny_beats_allow_for_addresses() {
    let rules = [
        allow(1, "10.0.0.0/8:any"),
        deny(2, "10.0.0.5"),
        allow(3, "10.0.0.5:any"),
    ];
    let cases = [
        (ip("10.0.0.5"), 22, address_denied("10.0.0.5", 2)),
        (ip("10.0.0.6"), 22, refused_class("10.0.0.6", "private")),
    ];
    for (a, port, want) in cases {
        assert_eq!(
            decide_address(&rules, None, a, port, &Kind::Connect),
            want,
            "{a}"
        );
    }
}

#[test]
fn mapped_ipv6_is_the_ipv4_address() {
    let rules = [allow(1, "127.0.0.1:any"), deny(2, "8.8.8.0/24:any")];
    let cases = [
        (
            "::ffff:127.0.0.1",
            address_allowed("loopback", "127.0.0.1", 1),
        ),
        ("::ffff:7f00:2", refused_class("127.0.0.2", "loopback")),
        ("::ffff:10.0.0.1", refused_class("10.0.0.1", "private")),
        (
            "::ffff:169.254.169.254",
            refused_class("169.254.169.254", "cloud metadata"),
        ),
        ("::ffff:8.8.8.8", address_denied("8.8.8.8", 2)),
        ("::ffff:8.8.4.4", public("8.8.4.4")),
    ];
    for (a, want) in cases {
        assert_eq!(
            decide_address(&rules, None, ip(a), 443, &Kind::Connect),
            want,
            "{a}"
        );
    }
    // a rule written in the mapped form covers the plain IPv4 address too
    let rules = [allow(1, "::ffff:127.0.0.1")];
    assert_eq!(
        decide_address(&rules, None, ip("127.0.0.1"), 443, &Kind::Connect),
        address_allowed("loopback", "127.0.0.1", 1)
    );
}

#[test]
fn port_limited_address_rules() {
    let rules = [allow(1, "10.0.0.5:5432"), deny(2, "8.8.8.8:53")];
    let cases = [
        (
            ip("10.0.0.5"),
            5432,
            Kind::Connect,
            address_allowed("private", "10.0.0.5", 1),
        ),
        (
            ip("10.0.0.5"),
            5432,
            get(),
            address_allowed("private", "10.0.0.5", 1),
        ),
        (
            ip("10.0.0.5"),
            5433,
            Kind::Connect,
            refused_class("10.0.0.5", "private"),
        ),
        (
            ip("10.0.0.5"),
            443,
            Kind::Connect,
            refused_class("10.0.0.5", "private"),
        ),
        (
            ip("8.8.8.8"),
            53,
            Kind::Connect,
            address_denied("8.8.8.8", 2),
        ),
        (ip("8.8.8.8"), 443, Kind::Connect, public("8.8.8.8")),
    ];
    for (a, port, kind, want) in cases {
        assert_eq!(
            decide_address(&rules, None, a, port, &kind),
            want,
            "{a} {port}"
        );
    }
}

#[test]
fn address_rules_with_method_or_path() {
    let rules = [
        limited(allow(1, "127.0.0.1:8080"), Some("GET"), Some("/health")),
        limited(deny(2, "93.184.216.34"), Some("DELETE"), None),
    ];
    let fail_closed = denied(
        Some(2),
        "rule 2 denies some methods or paths on address 93.184.216.34, which an opaque CONNECT \
         tunnel cannot honour",
    );
    let lo = ip("127.0.0.1");
    let pub_ = ip("93.184.216.34");
    let cases = [
        (
            lo,
            8080,
            http("GET", "/health"),
            address_allowed("loopback", "127.0.0.1", 1),
        ),
        (
            lo,
            8080,
            http("get", "/health"),
            address_allowed("loopback", "127.0.0.1", 1),
        ),
        (
            lo,
            8080,
            http("POST", "/health"),
            refused_class("127.0.0.1", "loopback"),
        ),
        (
            lo,
            8080,
            http("GET", "/admin"),
            refused_class("127.0.0.1", "loopback"),
        ),
        // a tunnel hides the request, so a limited allow rule does not open the address
        (
            lo,
            8080,
            Kind::Connect,
            refused_class("127.0.0.1", "loopback"),
        ),
        (
            pub_,
            80,
            http("DELETE", "/x"),
            address_denied("93.184.216.34", 2),
        ),
        (
            pub_,
            80,
            http("delete", "/x"),
            address_denied("93.184.216.34", 2),
        ),
        (pub_, 80, http("GET", "/x"), public("93.184.216.34")),
        // and a limited deny rule refuses the tunnel (fail closed)
        (pub_, 443, Kind::Connect, fail_closed.clone()),
        (pub_, 8443, Kind::Connect, fail_closed),
    ];
    for (a, port, kind, want) in cases {
        assert_eq!(
            decide_address(&rules, None, a, port, &kind),
            want,
            "{a} {port} {kind:?}"
        );
    }
}

#[test]
fn paths_are_normalized_before_matching() {
    for (raw, want) in [
        ("/admin", "/admin"),
        ("//admin", "/admin"),
        ("/%61dmin", "/admin"),
        ("/x/../admin", "/admin"),
        ("/./admin/", "/admin/"),
        ("/a%2fb", "/a%2Fb"),
        ("/a?x=/admin", "/a"),
        ("/../../admin", "/admin"),
        ("", "/"),
        ("/%", "/%"),
    ] {
        assert_eq!(normalize_path(raw), want, "{raw}");
    }
}

#[test]
fn a_named_host_may_be_allowed_a_private_address() {
    let mirror = |id, target: &str| {
        let mut r = allow(id, target);
        r.rule.private_address = true;
        r
    };
    let rules = [
        mirror(1, "mirror.corp.test"),
        mirror(2, "pkgs.corp.test:8080"),
        allow(3, "plain.corp.test"),
        deny(4, "10.9.9.9"),
    ];
    let name = |n: &str| Host::parse(n).unwrap();
    let private_for = |class: &str, addr: &str, host: &str, id| Decision {
        action: Action::Allow,
        rule: Some(id),
        reason: format!("{class} address {addr} allowed for {host} by rule {id}"),
    };
    let unnamed = |n: &str, addr: &str, class: &str| Decision {
        action: Action::Deny,
        rule: None,
        reason: format!(
            "{n} resolved to {addr}, a {class} address; allow it with a rule naming {n} with a private address allowed (--allow-private-address {n}), or naming {addr}"
        ),
    };
    let cases = [
        // private, reserved (documentation) and CGNAT addresses, for the named host and port
        (
            "mirror.corp.test",
            "10.1.2.3",
            443,
            private_for("private", "10.1.2.3", "mirror.corp.test", 1),
        ),
        (
            "mirror.corp.test",
            "203.0.113.80",
            443,
            private_for("reserved", "203.0.113.80", "mirror.corp.test", 1),
        ),
        (
            "mirror.corp.test",
            "100.64.1.1",
            443,
            private_for("carrier-grade NAT", "100.64.1.1", "mirror.corp.test", 1),
        ),
        (
            "mirror.corp.test",
            "fd00::5",
            443,
            private_for("private", "fd00::5", "mirror.corp.test", 1),
        ),
        (
            "pkgs.corp.test",
            "10.1.2.3",
            8080,
            private_for("private", "10.1.2.3", "pkgs.corp.test", 2),
        ),
        // another port of the host is not allowed
        (
            "pkgs.corp.test",
            "10.1.2.3",
            443,
            unnamed("pkgs.corp.test", "10.1.2.3", "private"),
        ),
        // never loopback, link-local, metadata, multicast or unspecified
        (
            "mirror.corp.test",
            "127.0.0.1",
            443,
            refused_class("127.0.0.1", "loopback"),
        ),
        (
            "mirror.corp.test",
            "169.254.1.1",
            443,
            refused_class("169.254.1.1", "link-local"),
        ),
        (
            "mirror.corp.test",
            "169.254.169.254",
            443,
            refused_class("169.254.169.254", "cloud metadata"),
        ),
        (
            "mirror.corp.test",
            "224.0.0.1",
            443,
            refused_class("224.0.0.1", "multicast"),
        ),
        (
            "mirror.corp.test",
            "0.0.0.0",
            443,
            refused_class("0.0.0.0", "unspecified"),
        ),
        // an ordinary allow rule does not open a private address
        (
            "plain.corp.test",
            "10.1.2.3",
            443,
            unnamed("plain.corp.test", "10.1.2.3", "private"),
        ),
        // a name the rule does not name
        (
            "other.corp.test",
            "10.1.2.3",
            443,
            unnamed("other.corp.test", "10.1.2.3", "private"),
        ),
        // an address deny still wins
        (
            "mirror.corp.test",
            "10.9.9.9",
            443,
            address_denied("10.9.9.9", 4),
        ),
        // public addresses pass as always
        ("mirror.corp.test", "8.8.8.8", 443, public("8.8.8.8")),
    ];
    for (host, a, port, want) in cases {
        assert_eq!(
            decide_address(&rules, Some(&name(host)), ip(a), port, &Kind::Connect),
            want,
            "{host} {a}:{port}"
        );
    }
    // without a name (an IP literal), the private allowance does not apply
    assert_eq!(
        decide_address(&rules, None, ip("10.1.2.3"), 443, &Kind::Connect),
        refused_class("10.1.2.3", "private")
    );
}

#[test]
fn a_private_address_allowance_needs_one_named_allow() {
    for (action, target, ok) in [
        (Action::Allow, "mirror.corp.test", true),
        (Action::Allow, "mirror.corp.test:8443", true),
        (Action::Allow, "*.corp.test", false),
        (Action::Allow, "**.corp.test", false),
        (Action::Allow, "10.0.0.1", false),
        (Action::Deny, "mirror.corp.test", false),
    ] {
        let mut r = Rule::parse_target(action, target).unwrap();
        r.private_address = true;
        assert_eq!(r.vet().is_ok(), ok, "{action} {target}: {:?}", r.vet());
    }
}

fn ask(id: i64, target: &str) -> StoredRule {
    rule(id, Action::Ask, target)
}

fn asked_by(id: i64, scope: &str) -> Decision {
    Decision {
        action: Action::Ask,
        rule: Some(id),
        reason: format!("rule {id} ({scope}) asks the user"),
    }
}

#[test]
fn a_deny_beats_an_allow_which_beats_an_ask() {
    let get = || to("api.example.com", 80, http("GET", "/v1/x"));
    let tunnel = || to("api.example.com", 443, Kind::Connect);
    let cases: Vec<(Vec<StoredRule>, Target, Decision)> = vec![
        // an ask alone asks, for plain requests and tunnels alike
        (vec![ask(1, "**")], get(), asked_by(1, "global")),
        (vec![ask(1, "**")], tunnel(), asked_by(1, "global")),
        // an allow (what an approval makes) wins over the ask, in either order
        (
            vec![ask(1, "**"), allow(2, "api.example.com")],
            get(),
            by(2, "global"),
        ),
        (
            vec![allow(1, "api.example.com"), ask(2, "api.example.com")],
            get(),
            by(1, "global"),
        ),
        // a deny wins over both
        (
            vec![
                ask(1, "**"),
                allow(2, "api.example.com"),
                deny(3, "*.example.com"),
            ],
            get(),
            denied_by(3, "global"),
        ),
        // an allow limited to other paths leaves the request to the ask
        (
            vec![
                limited(allow(1, "api.example.com"), None, Some("/v2/*")),
                ask(2, "**"),
            ],
            get(),
            asked_by(2, "global"),
        ),
        // a path-limited ask asks only about what it names; a tunnel hides the path, so the
        // whole tunnel is asked about
        (
            vec![limited(ask(1, "api.example.com"), None, Some("/v1/*"))],
            get(),
            asked_by(1, "global"),
        ),
        (
            vec![limited(ask(1, "api.example.com"), None, Some("/v2/*"))],
            get(),
            default_deny(),
        ),
        (
            vec![limited(ask(1, "api.example.com"), None, Some("/v2/*"))],
            tunnel(),
            asked_by(1, "global"),
        ),
        // an ask on another port does not ask
        (vec![ask(1, "api.example.com:8080")], get(), default_deny()),
        // the first matching ask is the one reported
        (
            vec![in_sandbox(ask(1, "**"), "s"), ask(2, "api.example.com")],
            get(),
            asked_by(1, "s"),
        ),
    ];
    for (rules, t, want) in cases {
        assert_eq!(decide(&rules, &t), want, "{rules:?} {t:?}");
    }
}

#[test]
fn actions_read_and_print_alike() {
    for a in [Action::Allow, Action::Ask, Action::Deny] {
        assert_eq!(Action::parse(&a.to_string()), Some(a));
    }
    assert_eq!(Action::parse("permit"), None);
    // an ask for every host is not an allow for every host, so it needs no preset
    assert_eq!(
        Rule::parse_target(Action::Ask, "**").unwrap().vet(),
        Ok(None)
    );
    // and it cannot carry private_address, which only an allow naming a host may
    let mut r = Rule::parse_target(Action::Ask, "mirror.example").unwrap();
    r.private_address = true;
    assert!(r.vet().is_err());
}

#[test]
fn a_tunnel_is_opened_inspected_held_or_refused() {
    let t = || to("api.example.com", 443, Kind::Connect);
    let inspect_for = |id: i64, limits: &str| {
        Tunnel::Inspect(Decision {
            action: Action::Allow,
            rule: Some(id),
            reason: format!(
                "opened to decide each request inside: rule {id} (global) limits {limits} on this host"
            ),
        })
    };
    let cases: Vec<(Vec<StoredRule>, bool, Tunnel)> = vec![
        (
            vec![allow(1, "api.example.com")],
            true,
            Tunnel::Open(by(1, "global")),
        ),
        (vec![], true, Tunnel::Refuse(default_deny())),
        (vec![ask(1, "**")], true, Tunnel::Ask(asked_by(1, "global"))),
        // a path-limited allow: inspected with a CA, refused (whole) without one
        (
            vec![limited(
                allow(1, "api.example.com"),
                Some("GET"),
                Some("/v1/*"),
            )],
            true,
            inspect_for(1, "GET /v1/*"),
        ),
        (
            vec![limited(
                allow(1, "api.example.com"),
                Some("GET"),
                Some("/v1/*"),
            )],
            false,
            Tunnel::Refuse(denied(
                None,
                "rule 1 (global) allows only GET /v1/* on this host, which an opaque CONNECT \
                 tunnel does not show (deny by default)",
            )),
        ),
        // an allowed host with a path-limited deny: inspected, keeping the allow as the
        // tunnel's decision
        (
            vec![
                allow(1, "api.example.com"),
                limited(deny(2, "api.example.com"), None, Some("/admin*")),
            ],
            true,
            inspect_for(2, "any method on /admin*"),
        ),
        // a path-limited ask beside an unlimited one: inspected, so only what it names asks
        (
            vec![limited(ask(1, "api.example.com"), None, Some("/v1/*"))],
            true,
            inspect_for(1, "any method on /v1/*"),
        ),
        (
            vec![limited(ask(1, "api.example.com"), None, Some("/v1/*"))],
            false,
            Tunnel::Ask(asked_by(1, "global")),
        ),
        // an allow with a path-limited allow beside it: inspected as allowed
        (
            vec![
                allow(1, "api.example.com"),
                limited(allow(2, "api.example.com"), None, Some("/v1/*")),
            ],
            true,
            Tunnel::Inspect(by(1, "global")),
        ),
        // an explicit deny of the whole host is refused even with a CA: nothing is opened
        (
            vec![
                deny(1, "api.example.com"),
                limited(allow(2, "api.example.com"), None, Some("/v1/*")),
            ],
            true,
            Tunnel::Refuse(denied_by(1, "global")),
        ),
    ];
    for (rules, ca, want) in cases {
        assert_eq!(tunnel(&rules, &t(), ca), want, "{rules:?} ca={ca}");
    }
}
