//! Which addresses a webhook may connect to. A room's webhook URL is chosen by
//! a customer, so without this check it could point the server at its own
//! loopback services, the cloud metadata endpoint (169.254.169.254) or the
//! private network behind it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why `ip` must not be reached by a webhook, or `None` if it is a public
/// address.
///
/// IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4)
/// are judged by that address: `::ffff:127.0.0.1` is loopback.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let reason = match (a, b, c) {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_broadcast() => "broadcast",
        (0, _, _) => "this network (0.0.0.0/8)",
        (127, _, _) => "loopback",
        (10, _, _) => "private",
        (172, 16..=31, _) => "private",
        (192, 168, _) => "private",
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "shared address space (100.64.0.0/10)",
        (192, 0, 0) => "ietf protocol assignments (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 88, 99) => "6to4 relay anycast (192.88.99.0/24)",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved (240.0.0.0/4)",
        _ => return None,
    };
    Some(reason)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    let octets = ip.octets();
    let embedded_v4 =
        |at: usize| Ipv4Addr::new(octets[at], octets[at + 1], octets[at + 2], octets[at + 3]);

    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // Forms that carry an IPv4 address: reaching them reaches that address
    // (directly, or through a translator or tunnel on the path).
    match segments {
        // ::ffff:a.b.c.d, IPv4-mapped.
        [0, 0, 0, 0, 0, 0xffff, _, _] => return forbidden_v4(embedded_v4(12)),
        // ::ffff:0:a.b.c.d, IPv4-translated (SIIT).
        [0, 0, 0, 0, 0xffff, 0, _, _] => return forbidden_v4(embedded_v4(12)),
        // ::a.b.c.d, IPv4-compatible (deprecated, but still parsed and routed by some stacks).
        [0, 0, 0, 0, 0, 0, _, _] => return forbidden_v4(embedded_v4(12)),
        // 64:ff9b::a.b.c.d, the well-known NAT64 prefix.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => return forbidden_v4(embedded_v4(12)),
        // 2002:aabb:ccdd::/48, 6to4.
        [0x2002, ..] => return forbidden_v4(embedded_v4(2)),
        _ => {}
    }
    let reason = match segments {
        [0x64, 0xff9b, 1, ..] => "local-use nat64 (64:ff9b:1::/48)",
        [0x100, 0, 0, 0, ..] => "discard-only (100::/64)",
        [0x2001, 0, ..] => "teredo (2001::/32)",
        [0x2001, 2, 0, ..] => "benchmarking (2001:2::/48)",
        [0x2001, 0..=0x01ff, ..] => "ietf protocol assignments (2001::/23)",
        [0x2001, 0x0db8, ..] => "documentation",
        [0x3fff, 0..=0x0fff, ..] => "documentation",
        [0x5f00, ..] => "segment routing (5f00::/16)",
        [0xfc00..=0xfdff, ..] => "unique local",
        [0xfe80..=0xfebf, ..] => "link-local",
        [0xfec0..=0xfeff, ..] => "site-local (fec0::/10)",
        [0xff00..=0xffff, ..] => "multicast",
        // Only 2000::/3 is allocated for global unicast; the rest is reserved.
        [first, ..] if first & 0xe000 != 0x2000 => "reserved (outside 2000::/3)",
        _ => return None,
    };
    Some(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_judged() {
        let cases: &[(&str, Option<&str>)] = &[
            // IPv4, public.
            ("1.1.1.1", None),
            ("8.8.8.8", None),
            ("93.184.216.34", None),
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("169.253.255.255", None),
            ("192.0.1.1", None),
            ("198.17.255.255", None),
            ("198.20.0.0", None),
            ("223.255.255.255", None),
            // IPv4, forbidden.
            ("0.0.0.0", Some("unspecified")),
            ("0.1.2.3", Some("this network (0.0.0.0/8)")),
            ("127.0.0.1", Some("loopback")),
            ("127.255.255.254", Some("loopback")),
            ("10.0.0.1", Some("private")),
            ("172.16.0.1", Some("private")),
            ("172.31.255.255", Some("private")),
            ("192.168.1.1", Some("private")),
            ("169.254.169.254", Some("link-local")),
            ("100.64.0.1", Some("shared address space (100.64.0.0/10)")),
            (
                "100.127.255.255",
                Some("shared address space (100.64.0.0/10)"),
            ),
            (
                "192.0.0.8",
                Some("ietf protocol assignments (192.0.0.0/24)"),
            ),
            ("192.0.2.1", Some("documentation")),
            ("198.51.100.7", Some("documentation")),
            ("203.0.113.9", Some("documentation")),
            ("192.88.99.1", Some("6to4 relay anycast (192.88.99.0/24)")),
            ("198.18.0.1", Some("benchmarking (198.18.0.0/15)")),
            ("198.19.255.255", Some("benchmarking (198.18.0.0/15)")),
            ("224.0.0.1", Some("multicast")),
            ("239.255.255.250", Some("multicast")),
            ("240.0.0.1", Some("reserved (240.0.0.0/4)")),
            ("255.255.255.254", Some("reserved (240.0.0.0/4)")),
            ("255.255.255.255", Some("broadcast")),
            // IPv6, public.
            ("2606:4700:4700::1111", None),
            ("2001:4860:4860::8888", None),
            ("2a00:1450:4001:80b::200e", None),
            ("2001:200::1", None),
            // IPv6, forbidden.
            ("::", Some("unspecified")),
            ("::1", Some("loopback")),
            ("fe80::1", Some("link-local")),
            ("febf::1", Some("link-local")),
            ("fec0::1", Some("site-local (fec0::/10)")),
            ("fc00::1", Some("unique local")),
            ("fd12:3456:789a::1", Some("unique local")),
            ("ff02::1", Some("multicast")),
            ("ff0e::1", Some("multicast")),
            ("2001:db8::1", Some("documentation")),
            ("3fff::1", Some("documentation")),
            ("2001::1", Some("teredo (2001::/32)")),
            ("2001:2::1", Some("benchmarking (2001:2::/48)")),
            ("2001:10::1", Some("ietf protocol assignments (2001::/23)")),
            ("100::1", Some("discard-only (100::/64)")),
            ("5f00::1", Some("segment routing (5f00::/16)")),
            ("64:ff9b:1::1", Some("local-use nat64 (64:ff9b:1::/48)")),
            ("4000::1", Some("reserved (outside 2000::/3)")),
            ("1::1", Some("reserved (outside 2000::/3)")),
            // IPv6 carrying IPv4: judged by the IPv4 address.
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:10.1.2.3", Some("private")),
            ("::ffff:169.254.169.254", Some("link-local")),
            ("::ffff:8.8.8.8", None),
            ("::ffff:0:127.0.0.1", Some("loopback")),
            ("::ffff:0:8.8.8.8", None),
            ("::127.0.0.1", Some("loopback")),
            ("::192.168.0.1", Some("private")),
            ("::8.8.8.8", None),
            ("64:ff9b::127.0.0.1", Some("loopback")),
            ("64:ff9b::10.0.0.1", Some("private")),
            ("64:ff9b::a9fe:a9fe", Some("link-local")),
            ("64:ff9b::8.8.8.8", None),
            ("2002:7f00:1::", Some("loopback")),
            ("2002:a00:1::1", Some("private")),
            ("2002:c0a8:101::1", Some("private")),
            ("2002:808:808::1", None),
        ];
        let mut wrong = Vec::new();
        for &(text, expected) in cases {
            let ip: IpAddr = text.parse().unwrap();
            let got = forbidden_reason(ip);
            if got != expected {
                wrong.push(format!("{text}: expected {expected:?}, got {got:?}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
