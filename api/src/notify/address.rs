//! Where webhooks may go. A webhook URL is chosen by a client (a partner, too), and the
//! server POSTs to it from inside the operator's network: without a check, a URL such as
//! `http://169.254.169.254/latest/meta-data/` or `http://10.0.0.5:2113/` would make the
//! ledger a proxy into that network (server-side request forgery).
//!
//! So loopback, private, link-local, shared (CGNAT), cloud-metadata, unspecified,
//! multicast and broadcast addresses are refused, unless the operator allows a range with
//! `--webhook-allow-private CIDR`. The check runs twice: when a webhook is created (a
//! literal address, or every address its host resolves to), and when a delivery connects
//! (the [`Resolve`] below filters what DNS answers then), so that a name that resolved to
//! a public address at creation and to an internal one later (DNS rebinding) is still
//! refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// IPv4 ranges a webhook may not reach unless allowed.
const BLOCKED_V4: [(Ipv4Addr, u8); 9] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8),      // "this network", unspecified
    (Ipv4Addr::new(10, 0, 0, 0), 8),     // private
    (Ipv4Addr::new(100, 64, 0, 0), 10),  // shared address space (carrier-grade NAT)
    (Ipv4Addr::new(127, 0, 0, 0), 8),    // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16), // link-local, cloud metadata (169.254.169.254)
    (Ipv4Addr::new(172, 16, 0, 0), 12),  // private
    (Ipv4Addr::new(192, 168, 0, 0), 16), // private
    (Ipv4Addr::new(224, 0, 0, 0), 4),    // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4),    // reserved, and the broadcast address
];

/// IPv6 ranges a webhook may not reach unless allowed (mapped IPv4 addresses are checked
/// as the IPv4 address they carry).
const BLOCKED_V6: [(Ipv6Addr, u8); 5] = [
    (Ipv6Addr::UNSPECIFIED, 128),
    (Ipv6Addr::LOCALHOST, 128),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10), // link-local
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),  // unique local (private)
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),  // multicast
];

/// Which addresses webhooks may reach: every public one, and the blocked ones that the
/// operator allowed.
#[derive(Clone, Debug, Default)]
pub struct AddressPolicy {
    allowed: Vec<IpNet>,
}

impl AddressPolicy {
    pub fn new(allowed: Vec<IpNet>) -> AddressPolicy {
        AddressPolicy { allowed }
    }

    /// True when a webhook may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        !is_blocked(ip) || self.allowed.iter().any(|net| net.contains(&ip))
    }

    /// The client's resolver for deliveries: DNS answers less the refused addresses.
    pub fn resolver(&self) -> Arc<FilteringResolver> {
        Arc::new(FilteringResolver { policy: self.clone() })
    }
}

/// An IPv4 address carried in IPv6 (`::ffff:10.0.0.1`) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn is_blocked(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => BLOCKED_V4.iter().any(|(net, len)| in_v4(v4, *net, *len)),
        IpAddr::V6(v6) => BLOCKED_V6.iter().any(|(net, len)| in_v6(v6, *net, *len)),
    }
}

fn in_v4(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

/// Why a delivery's host gave no address it may connect to.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` resolves only to addresses webhooks may not reach")]
pub struct AddressNotAllowed(pub String);

/// Resolves a delivery's host name and keeps the addresses the policy permits; none left
/// fails the connection. A URL with a literal address does not come here: the worker
/// checks it before each attempt.
pub struct FilteringResolver {
    policy: AddressPolicy,
}

impl FilteringResolver {
    fn filter(&self, host: &str, addresses: impl Iterator<Item = SocketAddr>) -> Result<Addrs, AddressNotAllowed> {
        let permitted: Vec<SocketAddr> = addresses.filter(|a| self.policy.permits(a.ip())).collect();
        if permitted.is_empty() {
            return Err(AddressNotAllowed(host.to_owned()));
        }
        Ok(Box::new(permitted.into_iter()))
    }
}

impl Resolve for FilteringResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            // The port is the connector's to set; 0 here, as reqwest's own resolver does.
            let addresses = tokio::net::lookup_host((host.as_str(), 0)).await?;
            FilteringResolver { policy }.filter(&host, addresses).map_err(Into::into)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_refused_and_public_ones_permitted() {
        let policy = AddressPolicy::default();
        for blocked in [
            "127.0.0.1",
            "127.255.0.9",
            "::1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "100.64.0.1",
            "100.127.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
        ] {
            assert!(!policy.permits(ip(blocked)), "{blocked} must be refused");
        }
        for public in ["93.184.216.34", "8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(policy.permits(ip(public)), "{public} must be permitted");
        }
    }

    #[test]
    fn an_allowed_range_opens_only_that_range() {
        let policy = AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(policy.permits(ip("127.0.0.1")));
        assert!(policy.permits(ip("::ffff:127.0.0.1")), "the mapped form is the same address");
        assert!(!policy.permits(ip("::1")));
        assert!(!policy.permits(ip("10.0.0.1")));
        assert!(!policy.permits(ip("169.254.169.254")));
    }

    #[test]
    fn the_resolver_drops_refused_addresses_and_fails_when_none_is_left() {
        let resolver = AddressPolicy::default().resolver();
        let answer = |list: &[&str]| list.iter().map(|a| SocketAddr::new(ip(a), 0)).collect::<Vec<_>>();
        // A name that resolves to loopback (DNS rebinding included) connects nowhere.
        let refused = resolver.filter("localhost", answer(&["127.0.0.1", "::1"]).into_iter());
        assert!(refused.is_err());
        let mixed = resolver.filter("mixed.example", answer(&["10.0.0.7", "93.184.216.34"]).into_iter()).unwrap();
        assert_eq!(mixed.map(|a| a.ip()).collect::<Vec<_>>(), vec![ip("93.184.216.34")]);
    }

    #[tokio::test]
    async fn the_resolver_refuses_localhost_when_connecting() {
        let resolver = AddressPolicy::default().resolver();
        let name: Name = "localhost".parse().unwrap();
        assert!(resolver.resolve(name).await.is_err(), "localhost resolves to loopback only");
        let allowed = AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]).resolver();
        let addresses: Vec<SocketAddr> = allowed.resolve("localhost".parse().unwrap()).await.unwrap().collect();
        assert!(!addresses.is_empty() && addresses.iter().all(|a| a.ip().is_loopback()));
    }
}
