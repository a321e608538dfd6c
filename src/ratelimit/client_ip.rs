//! Who the client is, for rate limits: the TCP peer, or the address a
//! trusted proxy put in `X-Forwarded-For`. The header is ignored from any
//! other peer, since a client could otherwise pick a fresh address per
//! request and never be limited.

use std::net::IpAddr;

use actix_web::HttpRequest;
use ipnet::IpNet;

/// The configured `rate_limit.trusted_proxies`.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

/// An entry of `rate_limit.trusted_proxies` that is neither an IP nor a CIDR.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR")]
pub struct BadProxy(pub String);

impl TrustedProxies {
    /// Parses IPs (`10.0.0.1`, `::1`) and CIDRs (`10.0.0.0/8`).
    pub fn parse(list: &[String]) -> Result<Self, BadProxy> {
        let nets = list
            .iter()
            .map(|entry| {
                let entry = entry.trim();
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| BadProxy(entry.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { nets })
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request: walking `X-Forwarded-For` from the right
    /// (the entry our proxy appended) past trusted proxies, the first
    /// untrusted address; the peer itself when it is not trusted or the
    /// header is absent or unreadable. `None` only without a peer address
    /// (not over TCP).
    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = canonical(req.peer_addr()?.ip());
        if !self.trusts(peer) {
            return Some(peer);
        }
        let mut client = peer;
        let forwarded = req.headers().get_all("x-forwarded-for");
        let hops: Vec<&str> = forwarded
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in hops.iter().rev() {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                // A garbled hop: trust nothing left of it.
                break;
            };
            client = canonical(ip);
            if !self.trusts(client) {
                break;
            }
        }
        Some(client)
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) as the IPv4 they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The rate-limit subject of an address: IPv4 as is, IPv6 by its /64 (one
/// host usually holds a whole /64, so per-address limits would not bind).
pub fn subject(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn request(peer: &str, forwarded: Option<&str>) -> HttpRequest {
        let mut req = TestRequest::default().peer_addr(peer.parse().unwrap());
        if let Some(f) = forwarded {
            req = req.insert_header(("x-forwarded-for", f));
        }
        req.to_http_request()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_peers() {
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_ip(&request("1.2.3.4:80", Some("9.9.9.9"))),
            ip("1.2.3.4")
        );
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".into(), "::1".into()]).unwrap();
        let req = request("10.1.1.1:80", Some("6.6.6.6, 5.5.5.5, 10.2.2.2"));
        assert_eq!(proxies.client_ip(&req), ip("5.5.5.5"));
        assert_eq!(
            proxies.client_ip(&request("[::1]:80", Some("7.7.7.7"))),
            ip("7.7.7.7")
        );
        assert_eq!(
            proxies.client_ip(&request("10.1.1.1:80", None)),
            ip("10.1.1.1")
        );
        // A garbled hop stops the walk at the last good one.
        let req = request("10.1.1.1:80", Some("6.6.6.6, junk, 10.2.2.2"));
        assert_eq!(proxies.client_ip(&req), ip("10.2.2.2"));
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["proxy.local".into()]).is_err());
    }

    #[test]
    fn ipv6_clients_are_grouped_by_their_64() {
        assert_eq!(
            subject("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
        assert_eq!(subject("192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(
            canonical("::ffff:192.0.2.7".parse().unwrap()),
            ip("192.0.2.7").unwrap()
        );
    }
}
