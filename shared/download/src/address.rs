//! Which addresses a download may reach: every address a name resolves
//! to, and every redirect's, is checked against the deny and allow lists,
//! also when an IPv6 address carries an IPv4 one.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use ipnet::IpNet;
use sluice_messages::Invalid;

/// What downloads never connect to unless `SLUICE_ALLOW_NETWORKS` says so:
/// this host, private and shared address space, link-local (cloud metadata
/// at 169.254.169.254 and fd00:ec2::254), benchmarking, multicast and
/// reserved ranges. The same choices GitLab and Gitea make for URLs their
/// users supply.
pub const DEFAULT_DENY: &str = "0.0.0.0/8,10.0.0.0/8,100.64.0.0/10,127.0.0.0/8,169.254.0.0/16,\
172.16.0.0/12,192.168.0.0/16,198.18.0.0/15,224.0.0.0/3,::/128,::1/128,64:ff9b:1::/48,fc00::/7,fe80::/10,ff00::/8";

/// A comma-separated list of networks, `169.254.0.0/16,fe80::/10`; a bare
/// address is a network of one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(pub Vec<IpNet>);

impl Networks {
    /// A comma-separated list of networks (`10.0.0.0/8`) and addresses.
    pub fn parse(text: &str) -> Result<Networks, Invalid> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|e| {
                        let message =
                            format!("{s:?} is not a network like 10.0.0.0/8 or an address");
                        Invalid::caused_by(message, e)
                    })
            })
            .collect::<Result<_, _>>()
            .map(Networks)
    }

    fn find(&self, ip: IpAddr) -> Option<&IpNet> {
        self.0.iter().find(|net| net.contains(&ip))
    }
}

impl fmt::Display for Networks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&list.join(","))
    }
}

/// Which addresses downloads may connect to: anything outside `deny`, and
/// anything inside `allow` even if denied.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    pub deny: Networks,
    pub allow: Networks,
}

/// A download refused because of where it would connect.
#[derive(Debug, Clone, thiserror::Error)]
#[error("address {ip} is in the denied network {network} (SLUICE_DENY_NETWORKS; SLUICE_ALLOW_NETWORKS makes exceptions)")]
pub struct AddressRefused {
    pub ip: IpAddr,
    pub network: IpNet,
}

impl AddressPolicy {
    pub fn check(&self, ip: IpAddr) -> Result<(), AddressRefused> {
        // `::ffff:169.254.169.254` is the same host as `169.254.169.254`.
        let ip = ip.to_canonical();
        for candidate in std::iter::once(ip).chain(embedded_ipv4(ip).map(IpAddr::V4)) {
            if let Some(network) = self.deny.find(candidate) {
                if self.allow.find(candidate).is_none() {
                    return Err(AddressRefused {
                        ip,
                        network: *network,
                    });
                }
            }
        }
        Ok(())
    }
}

/// The IPv4 address an IPv6 one carries and routes to: IPv4-compatible
/// (`::a.b.c.d`), SIIT's IPv4-translated (`::ffff:0:a.b.c.d`), NAT64
/// (`64:ff9b::a.b.c.d`) and 6to4 (`2002:aabb:ccdd::`). (IPv4-mapped
/// addresses are canonicalised before; the local-use NAT64 prefix
/// `64:ff9b:1::/48`, whose layout each site chooses, is denied whole.)
fn embedded_ipv4(ip: IpAddr) -> Option<std::net::Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    let s = v6.segments();
    let low = std::net::Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // IPv4-compatible `::a.b.c.d`, except `::` and `::1`, which are
        // IPv6's own unspecified and loopback addresses (and listed as such).
        [0, 0, 0, 0, 0, 0, _, _] if s[6] != 0 || s[7] > 1 => Some(low),
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, a, b, ..] => Some(std::net::Ipv4Addr::new(
            (a >> 8) as u8,
            a as u8,
            (b >> 8) as u8,
            b as u8,
        )),
        _ => None,
    }
}

/// Resolves host names and drops denied addresses, so the check holds for
/// the address actually connected to (no second lookup to race with DNS).
pub(crate) struct GuardedResolver {
    pub policy: Arc<AddressPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| match policy.check(addr.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        refused = Some(e);
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), refused) {
                (true, Some(refused)) => {
                    Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>)
                }
                _ => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

/// Whether an HTTP client error was our resolver refusing an address.
pub(crate) fn refusal_in(e: &(dyn std::error::Error + 'static)) -> Option<AddressRefused> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(refused) = err.downcast_ref::<AddressRefused>() {
            return Some(refused.clone());
        }
        next = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_and_link_local_addresses_are_refused_unless_allowed() {
        let mut policy = AddressPolicy {
            deny: Networks::parse("169.254.0.0/16, fe80::/10").unwrap(),
            allow: Networks::default(),
        };
        for ip in ["169.254.169.254", "::ffff:169.254.169.254", "fe80::1"] {
            assert!(policy.check(ip.parse().unwrap()).is_err(), "{ip}");
        }
        for ip in ["127.0.0.1", "10.1.2.3", "::1", "2001:db8::1"] {
            assert!(policy.check(ip.parse().unwrap()).is_ok(), "{ip}");
        }
        policy.allow = Networks::parse("169.254.10.0/24").unwrap();
        assert!(policy.check("169.254.10.7".parse().unwrap()).is_ok());
        assert!(policy.check("169.254.11.7".parse().unwrap()).is_err());
        assert!(Networks::parse("10.0.0.0/33").is_err());
        assert_eq!(Networks::parse("").unwrap(), Networks::default());
    }

    #[test]
    fn internal_networks_are_refused_by_default_in_every_spelling() {
        let policy = AddressPolicy {
            deny: Networks::parse(DEFAULT_DENY).unwrap(),
            allow: Networks::default(),
        };
        for ip in [
            "0.0.0.0",
            "10.1.2.3",
            "100.100.100.200",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "192.168.1.1",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "::169.254.169.254",
            "::ff00",
            "64:ff9b::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "::ffff:0:7f00:1",
            "::ffff:0:10.0.0.1",
            "64:ff9b:1::7f00:1",
            "64:ff9b:1:7f00:0:100::",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
        ] {
            let refused = policy.check(ip.parse().unwrap());
            assert!(refused.is_err(), "{ip} must be refused");
            assert!(refused
                .unwrap_err()
                .to_string()
                .contains("SLUICE_ALLOW_NETWORKS"));
        }
        for ip in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "64:ff9b::101:101",
            "::ffff:0:101:101",
            "2002:101:101::",
        ] {
            assert!(policy.check(ip.parse().unwrap()).is_ok(), "{ip} is public");
        }
        let loopback_allowed = AddressPolicy {
            allow: Networks::parse("127.0.0.0/8,::1").unwrap(),
            ..policy
        };
        assert!(loopback_allowed.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(loopback_allowed.check("::1".parse().unwrap()).is_ok());
        assert!(loopback_allowed.check("10.0.0.1".parse().unwrap()).is_err());
    }
}
