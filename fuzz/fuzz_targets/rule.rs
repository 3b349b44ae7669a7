//! `Rule::parse_target` and `HostPattern::parse` on arbitrary text.
//!
//! Properties:
//! - a parsed pattern's text parses to the same pattern;
//! - a parsed rule written back as `host:port` (IPv6 addresses in brackets) is the same rule;
//! - a pattern covers what it names: an exact name, a suffix (and one more label for
//!   `**.`/`*.`), the network address of a range; `*.` does not cover the suffix itself.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use paddock_policy::net::{Action, Host, HostPattern, Rule, canonical_ip};

fn check_pattern(raw: &str, p: &HostPattern) {
    let text = p.to_string();
    assert_eq!(
        HostPattern::parse(&text),
        Ok(p.clone()),
        "{raw:?}: Display {text:?}"
    );
    match p {
        HostPattern::Exact(n) => {
            assert_eq!(
                Host::parse(n),
                Ok(Host::Name(n.clone())),
                "{raw:?}: exact {n:?}"
            );
            assert!(p.matches(&Host::Name(n.clone())), "{raw:?}");
        }
        HostPattern::OneLabel(s) => {
            assert!(s.contains('.'), "{raw:?}: one-label suffix {s:?}");
            assert!(p.matches(&Host::Name(format!("x.{s}"))), "{raw:?}");
            assert!(
                !p.matches(&Host::Name(s.clone())),
                "{raw:?}: *. covers its suffix"
            );
            assert!(
                !p.matches(&Host::Name(format!("x.y.{s}"))),
                "{raw:?}: two labels"
            );
            assert!(
                !p.matches(&Host::Name(format!("x{s}"))),
                "{raw:?}: not at a dot"
            );
        }
        HostPattern::AnyDepth(s) => {
            assert!(s.contains('.'), "{raw:?}: any-depth suffix {s:?}");
            assert!(p.matches(&Host::Name(s.clone())), "{raw:?}");
            assert!(p.matches(&Host::Name(format!("x.y.{s}"))), "{raw:?}");
            assert!(
                !p.matches(&Host::Name(format!("x{s}"))),
                "{raw:?}: not at a dot"
            );
        }
        HostPattern::Any => {}
        HostPattern::Net(n) => {
            assert_eq!(*n, n.trunc(), "{raw:?}: range {n} not truncated");
            // Hosts are canonical: an IPv4-mapped address is its IPv4 address, which no IPv6
            // range covers, so only canonical ends of the range are checked.
            for a in [n.network(), n.broadcast()] {
                if canonical_ip(a) == a {
                    assert!(p.matches(&Host::Ip(a)), "{raw:?}: {n} does not cover {a}");
                }
            }
            if let IpAddr::V6(a) = n.addr() {
                assert!(a.to_ipv4_mapped().is_none(), "{raw:?}: mapped range {n}");
            }
        }
    }
}

/// The rule as a user would write it.
fn target_text(r: &Rule) -> String {
    let host = match &r.host {
        HostPattern::Net(n) if n.addr().is_ipv6() && n.prefix_len() == n.max_prefix_len() => {
            format!("[{}]", n.addr())
        }
        p => p.to_string(),
    };
    format!("{host}:{}", r.port)
}

fuzz_target!(|raw: &str| {
    if let Ok(p) = HostPattern::parse(raw) {
        check_pattern(raw, &p);
    }
    for action in [Action::Allow, Action::Ask, Action::Deny] {
        let Ok(rule) = Rule::parse_target(action, raw) else {
            continue;
        };
        assert_eq!(rule.action, action);
        assert!(
            !rule.needs_request(),
            "{raw:?}: a target rule with method or path"
        );
        check_pattern(raw, &rule.host);
        let text = target_text(&rule);
        assert_eq!(
            Rule::parse_target(action, &text),
            Ok(rule.clone()),
            "{raw:?}: as {text:?}"
        );
    }
});
