//! Which peers the relay may send to. Safe by default: loopback, private, CGNAT,
//! link-local, multicast, reserved, documentation and unspecified ranges (the ranges
//! eturnal calls "recommended"; coturn's CVE-2020-26262 reached loopback through 0.0.0.0
//! and [::1]) are denied, including their IPv4-mapped and IPv4-compatible IPv6 forms.
//! Operators add allow and deny ranges; deny wins unless an address is explicitly
//! allowed, and the gateway's own media addresses are always allowed.

use std::net::IpAddr;

use ipnet::IpNet;

/// The ranges denied by default.
pub const DEFAULT_DENY: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::1/128",
    "::/128",
    "64:ff9b::/96",
    "100::/64",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// The peer filter.
#[derive(Debug, Clone)]
pub struct PeerFilter {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

/// IPv4-mapped (`::ffff:a.b.c.d`) and IPv4-compatible (`::a.b.c.d`) addresses are judged as
/// the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4() {
            // `::` and `::1` stay IPv6 (they are not IPv4 addresses in disguise).
            Some(v4) if !v6.is_loopback() && !v6.is_unspecified() => IpAddr::V4(v4),
            _ => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

impl PeerFilter {
    /// The default deny list plus `deny`, with `allow` (and the gateway's `own` addresses)
    /// explicitly allowed.
    pub fn new(allow: &[IpNet], deny: &[IpNet], own: &[IpAddr]) -> Self {
        let mut d: Vec<IpNet> = DEFAULT_DENY.iter().filter_map(|s| s.parse().ok()).collect();
        d.extend_from_slice(deny);
        let mut a = allow.to_vec();
        a.extend(own.iter().map(|ip| IpNet::from(canonical(*ip))));
        Self { allow: a, deny: d }
    }

    /// Whether relaying to `ip` is allowed.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.allow.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        !self.deny.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn dangerous_addresses_are_denied_by_default() {
        let f = PeerFilter::new(&[], &[], &[]);
        for bad in [
            "127.0.0.1",
            "10.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::127.0.0.1",
            "100.64.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "224.0.0.251",
            "255.255.255.255",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "64:ff9b::7f00:1",
        ] {
            assert!(!f.allows(ip(bad)), "{bad} should be denied");
        }
        for good in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "172.32.0.1",
        ] {
            assert!(f.allows(ip(good)), "{good} should be allowed");
        }
    }

    #[test]
    fn explicit_allows_win_and_extra_denies_apply() {
        let allow: Vec<IpNet> = vec!["127.0.0.1/32".parse().expect("net")];
        let deny: Vec<IpNet> = vec!["8.8.0.0/16".parse().expect("net")];
        let f = PeerFilter::new(&allow, &deny, &[ip("10.0.0.5")]);
        assert!(f.allows(ip("127.0.0.1")));
        assert!(f.allows(ip("::ffff:127.0.0.1")));
        assert!(!f.allows(ip("127.0.0.2")));
        assert!(f.allows(ip("10.0.0.5")), "the gateway's own media address");
        assert!(!f.allows(ip("10.0.0.6")));
        assert!(!f.allows(ip("8.8.8.8")));
    }
}
