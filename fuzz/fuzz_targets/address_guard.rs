//! The address guard on any address: it refuses exactly what a plain
//! reading of the rule refuses: the address, or an IPv4 it carries (mapped,
//! compatible, SIIT-translated, NAT64, 6to4), in a denied network and not in
//! an allowed one.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use sluice_download::{AddressPolicy, Networks};

const DEFAULT_DENY: &str = "0.0.0.0/8,10.0.0.0/8,100.64.0.0/10,127.0.0.0/8,169.254.0.0/16,\
172.16.0.0/12,192.168.0.0/16,198.18.0.0/15,224.0.0.0/3,::/128,::1/128,64:ff9b:1::/48,fc00::/7,fe80::/10,ff00::/8";

fn carried_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = ip.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    let own = ip == Ipv6Addr::UNSPECIFIED || ip == Ipv6Addr::LOCALHOST;
    if o[..10] == [0; 10] && (o[10..12] == [0xff, 0xff] || (o[10..12] == [0, 0] && !own)) {
        return Some(tail);
    }
    // SIIT's IPv4-translated form, ::ffff:0:a.b.c.d.
    if o[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0] {
        return Some(tail);
    }
    if o[..12] == [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0] {
        return Some(tail);
    }
    if o[..2] == [0x20, 0x02] {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

fuzz_target!(|input: (u8, [u8; 16], u8)| {
    let (kind, bytes, allow_bits) = input;
    let ip = if kind % 2 == 0 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(bytes))
    };
    let allow = Networks::parse(&format!("10.0.0.0/{}", allow_bits % 33)).unwrap();
    let deny = Networks::parse(DEFAULT_DENY).unwrap();
    let policy = AddressPolicy {
        deny: deny.clone(),
        allow: allow.clone(),
    };
    let mut candidates = vec![ip];
    if let IpAddr::V6(v6) = ip {
        candidates.extend(carried_v4(v6).map(IpAddr::V4));
    }
    let refused = candidates.iter().any(|c| {
        deny.0.iter().any(|n| n.contains(c)) && !allow.0.iter().any(|n| n.contains(c))
    });
    assert_eq!(policy.check(ip).is_err(), refused, "{ip} with allow {allow}");
});
