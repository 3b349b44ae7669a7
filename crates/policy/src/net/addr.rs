//! Address classes: which addresses the proxy refuses unless a rule names them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What kind of address this is, as far as egress is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrClass {
    /// Reachable on the internet.
    Public,
    /// 0.0.0.0/8, `::`.
    Unspecified,
    /// 127.0.0.0/8, `::1`.
    Loopback,
    /// RFC 1918, IPv6 unique-local (fc00::/7), site-local (fec0::/10), local-use NAT64.
    Private,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// 100.64.0.0/10 (carrier-grade NAT).
    Cgnat,
    /// 224.0.0.0/4, 255.255.255.255, ff00::/8.
    Multicast,
    /// Cloud metadata endpoints (169.254.169.254, fd00:ec2::254, 100.100.100.200, ...).
    Metadata,
    /// Everything else that is not routable on the internet: benchmarking, documentation,
    /// protocol-assignment and reserved (240/4) ranges, IPv6 discard and documentation.
    Reserved,
}

impl fmt::Display for AddrClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddrClass::Public => "public",
            AddrClass::Unspecified => "unspecified",
            AddrClass::Loopback => "loopback",
            AddrClass::Private => "private",
            AddrClass::LinkLocal => "link-local",
            AddrClass::Cgnat => "carrier-grade NAT",
            AddrClass::Multicast => "multicast",
            AddrClass::Metadata => "cloud metadata",
            AddrClass::Reserved => "reserved",
        })
    }
}

impl AddrClass {
    /// Whether an allow rule naming a host may let that host resolve to an address of this
    /// class (a mirror on a company network): private, reserved and CGNAT addresses may;
    /// loopback, link-local, metadata, multicast and unspecified ones only by address.
    pub fn may_be_named_private(self) -> bool {
        matches!(
            self,
            AddrClass::Private | AddrClass::Reserved | AddrClass::Cgnat
        )
    }
}

/// Classifies an address. IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64,
/// 6to4) are classified by the IPv4 address they reach.
pub fn classify(addr: IpAddr) -> AddrClass {
    match addr {
        IpAddr::V4(a) => classify_v4(a),
        IpAddr::V6(a) => classify_v6(a),
    }
}

fn classify_v4(a: Ipv4Addr) -> AddrClass {
    let o = a.octets();
    let in_net = |base: [u8; 4], len: u32| {
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        (u32::from(a) & mask) == (u32::from(Ipv4Addr::from(base)) & mask)
    };
    if a == Ipv4Addr::new(169, 254, 169, 254)
        || a == Ipv4Addr::new(169, 254, 170, 2)
        || a == Ipv4Addr::new(100, 100, 100, 200)
        || a == Ipv4Addr::new(192, 0, 0, 192)
    {
        return AddrClass::Metadata;
    }
    if o[0] == 0 {
        AddrClass::Unspecified
    } else if o[0] == 127 {
        AddrClass::Loopback
    } else if o[0] == 10 || in_net([172, 16, 0, 0], 12) || in_net([192, 168, 0, 0], 16) {
        AddrClass::Private
    } else if in_net([169, 254, 0, 0], 16) {
        AddrClass::LinkLocal
    } else if in_net([100, 64, 0, 0], 10) {
        AddrClass::Cgnat
    } else if in_net([224, 0, 0, 0], 4) {
        AddrClass::Multicast
    } else if in_net([240, 0, 0, 0], 4)
        || in_net([192, 0, 0, 0], 24)
        || in_net([192, 0, 2, 0], 24)
        || in_net([198, 51, 100, 0], 24)
        || in_net([203, 0, 113, 0], 24)
        || in_net([198, 18, 0, 0], 15)
        || in_net([192, 88, 99, 0], 24)
    {
        AddrClass::Reserved
    } else {
        AddrClass::Public
    }
}

fn classify_v6(a: Ipv6Addr) -> AddrClass {
    let s = a.segments();
    let embedded_tail =
        || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if a.is_unspecified() {
        return AddrClass::Unspecified;
    }
    if a.is_loopback() {
        return AddrClass::Loopback;
    }
    if let Some(v4) = a.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    // IPv4-compatible (deprecated) ::a.b.c.d
    if s[..6] == [0; 6] {
        return classify_v4(embedded_tail());
    }
    // NAT64 well-known prefix 64:ff9b::/96 reaches the embedded IPv4 address.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(embedded_tail());
    }
    // 6to4 2002:AABB:CCDD::/48 reaches AA.BB.CC.DD.
    if s[0] == 0x2002 {
        return classify_v4(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    if a == "fd00:ec2::254"
        .parse::<Ipv6Addr>()
        .unwrap_or(Ipv6Addr::UNSPECIFIED)
    {
        return AddrClass::Metadata;
    }
    // Local-use NAT64 64:ff9b:1::/48, unique local fc00::/7, site-local fec0::/10.
    if (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfec0
    {
        return AddrClass::Private;
    }
    if (s[0] & 0xffc0) == 0xfe80 {
        return AddrClass::LinkLocal;
    }
    if (s[0] & 0xff00) == 0xff00 {
        return AddrClass::Multicast;
    }
    // Teredo 2001::/32 tunnels to an obfuscated IPv4 address; documentation 2001:db8::/32;
    // discard 100::/64; ORCHID and benchmarking 2001:2::/48 and 2001:10::/28.
    if (s[0] == 0x2001 && (s[1] == 0 || s[1] == 0xdb8 || s[1] == 2 || (s[1] & 0xfff0) == 0x10))
        || s[..4] == [0x100, 0, 0, 0]
        || (s[0] & 0xe000) != 0x2000
    {
        return AddrClass::Reserved;
    }
    AddrClass::Public
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let cases = [
            ("8.8.8.8", AddrClass::Public),
            ("1.1.1.1", AddrClass::Public),
            ("0.0.0.0", AddrClass::Unspecified),
            ("127.0.0.1", AddrClass::Loopback),
            ("127.255.0.9", AddrClass::Loopback),
            ("10.1.2.3", AddrClass::Private),
            ("172.16.0.1", AddrClass::Private),
            ("172.31.255.255", AddrClass::Private),
            ("172.32.0.1", AddrClass::Public),
            ("192.168.1.1", AddrClass::Private),
            ("169.254.1.1", AddrClass::LinkLocal),
            ("169.254.169.254", AddrClass::Metadata),
            ("100.100.100.200", AddrClass::Metadata),
            ("100.64.0.1", AddrClass::Cgnat),
            ("100.127.255.255", AddrClass::Cgnat),
            ("100.128.0.1", AddrClass::Public),
            ("224.0.0.1", AddrClass::Multicast),
            ("255.255.255.255", AddrClass::Reserved),
            ("198.18.0.1", AddrClass::Reserved),
            ("::", AddrClass::Unspecified),
            ("::1", AddrClass::Loopback),
            ("::ffff:127.0.0.1", AddrClass::Loopback),
            ("::ffff:10.0.0.1", AddrClass::Private),
            ("::ffff:8.8.8.8", AddrClass::Public),
            ("::127.0.0.1", AddrClass::Loopback),
            ("64:ff9b::7f00:1", AddrClass::Loopback),
            ("64:ff9b::a9fe:a9fe", AddrClass::Metadata),
            ("64:ff9b::808:808", AddrClass::Public),
            ("64:ff9b:1::1", AddrClass::Private),
            ("2002:7f00:1::1", AddrClass::Loopback),
            ("2002:0808:0808::1", AddrClass::Public),
            ("fc00::1", AddrClass::Private),
            ("fd12:3456::1", AddrClass::Private),
            ("fd00:ec2::254", AddrClass::Metadata),
            ("fec0::1", AddrClass::Private),
            ("fe80::1", AddrClass::LinkLocal),
            ("ff02::1", AddrClass::Multicast),
            ("2001:db8::1", AddrClass::Reserved),
            ("2001::1", AddrClass::Reserved),
            ("2606:4700::1111", AddrClass::Public),
            ("2a00:1450::1", AddrClass::Public),
        ];
        for (a, want) in cases {
            assert_eq!(classify(a.parse().unwrap()), want, "{a}");
        }
    }
}
