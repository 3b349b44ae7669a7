//! Property tests for canonical hosts and host-pattern matching.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use paddock_policy::net::{
    Action, Host, HostPattern, Kind, PortSpec, Rule, Scope, StoredRule, Target, decide,
};
use proptest::prelude::*;

/// Any valid DNS label (may be all digits or look like hex, which is fine below the top).
fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?"
}

/// A label that can end a name: starts with a letter, so it never reads as a number.
fn top_label() -> impl Strategy<Value = String> {
    "[a-z]([a-z0-9-]{0,6}[a-z0-9])?"
}

/// A canonical name of 2 to 5 labels (a valid wildcard suffix).
fn suffix() -> impl Strategy<Value = String> {
    (prop::collection::vec(label(), 1..4), top_label()).prop_map(|(mut ls, top)| {
        ls.push(top);
        ls.join(".")
    })
}

/// A canonical name of 1 to 5 labels.
fn name() -> impl Strategy<Value = String> {
    (prop::collection::vec(label(), 0..4), top_label()).prop_map(|(mut ls, top)| {
        ls.push(top);
        ls.join(".")
    })
}

fn host(s: &str) -> Host {
    Host::parse(s).unwrap()
}

fn pattern(s: &str) -> HostPattern {
    HostPattern::parse(s).unwrap()
}

/// Upper-cases the letters picked by `mask`.
fn mixed_case(s: &str, mask: &[bool]) -> String {
    s.chars()
        .zip(mask.iter().cycle())
        .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn one_label_wildcard_covers_exactly_one_more_label(
        s in suffix(), l in label(), l1 in label(), l2 in label(),
    ) {
        let p = pattern(&format!("*.{s}"));
        prop_assert_eq!(&p, &HostPattern::OneLabel(s.clone()));
        let (below, deeper) = (host(&format!("{l}.{s}")), host(&format!("{l1}.{l2}.{s}")));
        prop_assert!(p.matches(&below), "{p} vs {below}");
        prop_assert!(!p.matches(&host(&s)), "{p} vs {s}");
        prop_assert!(!p.matches(&deeper), "{p} vs {deeper}");
    }

    #[test]
    fn any_depth_wildcard_covers_the_suffix_and_everything_below(
        s in suffix(), ls in prop::collection::vec(label(), 0..6),
    ) {
        let p = pattern(&format!("**.{s}"));
        prop_assert_eq!(&p, &HostPattern::AnyDepth(s.clone()));
        let mut parts = ls;
        parts.push(s);
        prop_assert!(p.matches(&host(&parts.join("."))));
    }

    #[test]
    fn exact_pattern_matches_only_the_identical_name(a in name(), b in name()) {
        let p = pattern(&a);
        prop_assert_eq!(p.matches(&host(&b)), a == b);
        prop_assert!(p.matches(&host(&a)));
    }

    #[test]
    fn no_match_without_a_label_boundary(
        s in suffix(), junk in "[a-z0-9-]{1,8}", l in label(),
    ) {
        // "x" + S, "x-" + S, "l.x" + S: S is a string suffix but not a label suffix.
        for raw in [format!("{junk}{s}"), format!("{l}.{junk}{s}")] {
            let Ok(h) = Host::parse(&raw) else { continue };
            prop_assert!(!pattern(&format!("*.{s}")).matches(&h), "{raw} vs *.{s}");
            prop_assert!(!pattern(&format!("**.{s}")).matches(&h), "{raw} vs **.{s}");
            prop_assert!(!pattern(&s).matches(&h), "{raw} vs {s}");
        }
    }

    #[test]
    fn suffix_followed_by_more_labels_never_matches(s in suffix(), tail in suffix()) {
        // example.com.evil.test is not below example.com
        let name = format!("{s}.{tail}");
        // When the tail itself ends in the suffix (a.m.a.m under a.m), the name IS below it.
        prop_assume!(!name.ends_with(&format!(".{s}")));
        let h = host(&name);
        for p in [s.clone(), format!("*.{s}"), format!("**.{s}")] {
            prop_assert!(!pattern(&p).matches(&h), "{h} vs {p}");
        }
    }

    #[test]
    fn case_and_one_trailing_dot_do_not_change_the_host(
        n in name(), mask in prop::collection::vec(any::<bool>(), 1..16),
    ) {
        let want = Host::Name(n.clone());
        let upper = mixed_case(&n, &mask);
        prop_assert_eq!(Host::parse(&n), Ok(want.clone()));
        prop_assert_eq!(Host::parse(&upper), Ok(want.clone()));
        prop_assert_eq!(Host::parse(&format!("{upper}.")), Ok(want.clone()));
        prop_assert_eq!(Host::parse(&n.to_ascii_uppercase()), Ok(want));
        let two_dots = format!("{n}..");
        prop_assert!(Host::parse(&two_dots).is_err(), "{two_dots}");
    }

    #[test]
    fn patterns_are_case_and_trailing_dot_blind(
        s in suffix(), l in label(), mask in prop::collection::vec(any::<bool>(), 1..16),
    ) {
        let h = host(&format!("{l}.{s}"));
        let written = format!("{}.", mixed_case(&s, &mask));
        for p in [format!("*.{written}"), format!("**.{written}")] {
            prop_assert!(pattern(&p).matches(&h), "{p} vs {h}");
        }
        prop_assert!(pattern(&written).matches(&host(&s)), "{written} vs {s}");
    }

    #[test]
    fn parse_is_idempotent_on_host_like_text(raw in "[a-zA-Z0-9.:\\[\\]-]{0,24}") {
        if let Ok(h) = Host::parse(&raw) {
            prop_assert_eq!(Host::parse(&h.to_string()), Ok(h.clone()), "{:?}", raw);
        }
    }

    #[test]
    fn parse_is_idempotent_on_any_text(raw in any::<String>()) {
        if let Ok(h) = Host::parse(&raw) {
            prop_assert_eq!(Host::parse(&h.to_string()), Ok(h.clone()), "{:?}", raw);
        }
    }

    #[test]
    fn parse_is_idempotent_on_unicode_names(
        ls in prop::collection::vec("[a-zäöüßéñ0-9]{1,8}", 1..4), top in "[a-zäöüéñ]{2,6}",
    ) {
        let raw = format!("{}.{top}", ls.join("."));
        if let Ok(h) = Host::parse(&raw) {
            prop_assert!(h.to_string().is_ascii());
            prop_assert_eq!(Host::parse(&h.to_string()), Ok(h.clone()), "{:?}", raw);
        }
    }

    #[test]
    fn every_ipv4_spelling_is_the_same_host(n in any::<u32>()) {
        let a = Ipv4Addr::from(n);
        let want = Host::Ip(IpAddr::V4(a));
        let [o0, o1, o2, o3] = a.octets();
        let lo16 = n & 0xffff;
        let lo24 = n & 0xff_ffff;
        for raw in [
            format!("{n}"),
            format!("{n:#x}"),
            format!("0X{n:X}"),
            format!("0{n:o}"),
            format!("{a}"),
            format!("{a}."),
            format!("{o0:#x}.{o1:#x}.{o2:#x}.{o3:#x}"),
            format!("0{o0:o}.0{o1:o}.0{o2:o}.0{o3:o}"),
            format!("{o0}.{lo24}"),
            format!("{o0}.{o1}.{lo16}"),
            format!("{o0}.{o1}.{lo16:#x}"),
            format!("[::ffff:{a}]"),
            format!("::ffff:{:x}:{:x}", n >> 16, lo16),
        ] {
            prop_assert_eq!(Host::parse(&raw), Ok(want.clone()), "{}", raw);
        }
    }

    #[test]
    fn ipv4_out_of_range_is_refused(n in (1u64 << 32)..(1u64 << 40), o in 256u32..100_000) {
        for raw in [n.to_string(), format!("{n:#x}"), format!("1.2.3.{o}"), format!("{o}.2.3.4")] {
            prop_assert!(Host::parse(&raw).is_err(), "{raw} accepted");
        }
    }

    #[test]
    fn ipv6_is_parsed_with_or_without_brackets(seg in any::<[u16; 8]>()) {
        let a = Ipv6Addr::from(seg);
        let want = match a.to_ipv4_mapped() {
            Some(v4) => Host::Ip(IpAddr::V4(v4)),
            None => Host::Ip(IpAddr::V6(a)),
        };
        prop_assert_eq!(Host::parse(&a.to_string()), Ok(want.clone()));
        prop_assert_eq!(Host::parse(&format!("[{a}]")), Ok(want));
    }

    #[test]
    fn an_ipv4_range_covers_exactly_its_addresses(base in any::<u32>(), len in 0u8..=32, x in any::<u32>()) {
        let p = pattern(&format!("{}/{len}", Ipv4Addr::from(base)));
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
        let inside = Ipv4Addr::from((base & mask) | (x & !mask));
        prop_assert!(p.matches(&Host::Ip(IpAddr::V4(inside))));
        let other = Ipv4Addr::from(x);
        prop_assert_eq!(p.matches(&Host::Ip(IpAddr::V4(other))), (x & mask) == (base & mask));
        // the same address spelled as mapped IPv6 is covered the same way
        let mapped = Host::parse(&format!("[::ffff:{other}]")).unwrap();
        prop_assert_eq!(p.matches(&mapped), (x & mask) == (base & mask));
        // and a pattern never covers a name
        prop_assert!(!p.matches(&Host::Name("example.com".into())));
    }

    #[test]
    fn patterns_round_trip_through_display(s in suffix(), which in 0usize..4) {
        let raw = match which {
            0 => s,
            1 => format!("*.{s}"),
            2 => format!("**.{s}"),
            _ => "**".into(),
        };
        let p = pattern(&raw);
        prop_assert_eq!(p.to_string(), raw);
        prop_assert_eq!(HostPattern::parse(&p.to_string()), Ok(p));
    }

    #[test]
    fn decision_does_not_depend_on_rule_order(
        rules in prop::collection::vec(
            (any::<bool>(), 0usize..6, prop::option::of(443u16..445), any::<bool>()),
            0..8,
        ).prop_shuffle(),
        target in 0usize..4,
        seed in any::<u64>(),
    ) {
        let hosts = ["api.example.com", "*.example.com", "**.example.com", "**", "example.com", "other.test"];
        let rules: Vec<StoredRule> = rules
            .into_iter()
            .enumerate()
            .map(|(i, (allow, h, port, get_only))| {
                let mut rule = Rule::parse_target(
                    if allow { Action::Allow } else { Action::Deny },
                    hosts[h],
                )
                .unwrap();
                rule.port = port.map(PortSpec::Port).unwrap_or(PortSpec::Default);
                rule.method = get_only.then(|| "GET".to_owned());
                StoredRule { id: i as i64, scope: Scope::Global, source: "test".into(), rule }
            })
            .collect();
        let t = Target {
            host: host(["api.example.com", "example.com", "a.b.example.com", "other.test"][target]),
            port: 443,
            kind: if seed % 2 == 0 { Kind::Connect } else { Kind::Http { method: "GET".into(), path: "/".into() } },
        };
        let d = decide(&rules, &t);
        let mut reversed = rules.clone();
        reversed.reverse();
        let r = decide(&reversed, &t);
        prop_assert_eq!(d.action, r.action);
        // the deciding rule exists, matches the target and has the decided action
        if let Some(id) = d.rule {
            let rule = &rules.iter().find(|r| r.id == id).unwrap().rule;
            prop_assert_eq!(rule.action, d.action);
            prop_assert!(rule.host.matches(&t.host));
        } else {
            prop_assert_eq!(d.action, Action::Deny);
        }
        // any unconditional matching deny refuses
        let plain_deny = rules.iter().any(|r| {
            r.rule.action == Action::Deny
                && r.rule.method.is_none()
                && r.rule.host.matches(&t.host)
                && match r.rule.port {
                    PortSpec::Port(p) => p == t.port,
                    PortSpec::Default => t.kind.default_port() == t.port,
                    PortSpec::Any => true,
                }
        });
        if plain_deny {
            prop_assert_eq!(d.action, Action::Deny);
        }
    }
}
