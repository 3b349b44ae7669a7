//! `Host::parse` and `split_host_port` on arbitrary text.
//!
//! Properties:
//! - parsing is idempotent: a parsed host's text (and its bracketed authority form, split again
//!   with `split_host_port`) parses to the same host;
//! - a parsed name is lower-case ASCII letters, digits, '-' and '.', with no empty, over-long or
//!   hyphen-edged label, no trailing dot, at most 253 bytes, and is not an IPv4 spelling;
//! - whatever std reads as an IP address is that address (IPv4-mapped IPv6 as IPv4);
//! - for ASCII text, case and one trailing dot do not change the host;
//! - `split_host_port` returns a prefix of its input and the port that follows it.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use paddock_policy::net::{Host, canonical_ip, parse_ipv4_any, split_host_port};

fn check_name(raw: &str, n: &str) {
    assert!(!n.is_empty(), "{raw:?}: empty name");
    assert!(n.len() <= 253, "{raw:?}: name of {} bytes", n.len());
    assert!(
        n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'),
        "{raw:?}: name {n:?} has a character outside [a-z0-9.-]"
    );
    assert!(!n.ends_with('.'), "{raw:?}: name {n:?} ends with a dot");
    for label in n.split('.') {
        assert!(!label.is_empty(), "{raw:?}: name {n:?} has an empty label");
        assert!(
            label.len() <= 63,
            "{raw:?}: name {n:?} has a label over 63 bytes"
        );
        assert!(
            !label.starts_with('-') && !label.ends_with('-'),
            "{raw:?}: name {n:?} has a hyphen-edged label"
        );
    }
    assert!(
        parse_ipv4_any(n).is_none(),
        "{raw:?}: name {n:?} is an IPv4 spelling"
    );
    assert!(
        n.parse::<IpAddr>().is_err(),
        "{raw:?}: name {n:?} is an IP address"
    );
}

fn check_host(raw: &str) {
    let parsed = Host::parse(raw);
    if let Ok(a) = raw.parse::<IpAddr>() {
        assert_eq!(
            parsed,
            Ok(Host::Ip(canonical_ip(a))),
            "{raw:?}: std reads {a}"
        );
    }
    let Ok(h) = parsed else { return };
    if let Host::Name(n) = &h {
        check_name(raw, n);
    }
    if let Host::Ip(a) = h {
        assert_eq!(a, canonical_ip(a), "{raw:?}: {a} is not canonical");
    }
    let text = h.to_string();
    assert_eq!(
        Host::parse(&text),
        Ok(h.clone()),
        "{raw:?}: Display {text:?} reads differently"
    );

    for port in [1, 80, 65535] {
        let auth = h.authority(port);
        let (hs, p) = split_host_port(&auth).unwrap_or_else(|e| panic!("{auth:?}: {e}"));
        assert_eq!(p, Some(port), "{auth:?}: port");
        assert_eq!(
            Host::parse(hs),
            Ok(h.clone()),
            "{raw:?}: authority {auth:?}"
        );
    }
    if let Host::Ip(IpAddr::V6(a)) = h {
        assert_eq!(
            Host::parse(&format!("[{a}]")),
            Ok(h.clone()),
            "{raw:?}: bracketed"
        );
    }

    if raw.is_ascii() {
        let upper = raw.to_ascii_uppercase();
        assert_eq!(
            Host::parse(&upper),
            Ok(h.clone()),
            "{raw:?}: upper case {upper:?}"
        );
        if !raw.contains(':') && !raw.ends_with('.') {
            let dotted = format!("{raw}.");
            assert_eq!(Host::parse(&dotted), Ok(h.clone()), "{raw:?}: trailing dot");
        }
    }
}

fn check_split(raw: &str) {
    let Ok((h, port)) = split_host_port(raw) else {
        return;
    };
    assert!(raw.starts_with(h), "{raw:?}: host {h:?} is not a prefix");
    match port {
        None => assert_eq!(h, raw, "{raw:?}: no port but the host is not all of it"),
        Some(p) => {
            assert_ne!(p, 0, "{raw:?}: port 0");
            let text = &raw[h.len()..];
            let digits = text
                .strip_prefix(':')
                .unwrap_or_else(|| panic!("{raw:?}: no ':'"));
            assert!(
                digits.bytes().all(|b| b.is_ascii_digit()),
                "{raw:?}: port {digits:?}"
            );
            assert_eq!(
                digits.parse::<u16>().ok(),
                Some(p),
                "{raw:?}: port {digits:?}"
            );
        }
    }
    // What the proxy does with an authority: split, then read the host.
    if let Ok(host) = Host::parse(h) {
        let p = port.unwrap_or(80);
        assert_eq!(
            split_host_port(&host.authority(p)).map(|(s, q)| (Host::parse(s), q)),
            Ok((Ok(host.clone()), Some(p))),
            "{raw:?}"
        );
    }
}

fuzz_target!(|raw: &str| {
    check_host(raw);
    check_split(raw);
});
