//! The SSRF guard: webhooks go to the internet, not into the gateway's own
//! network.
//!
//! Whoever may create a webhook endpoint could otherwise make the gateway
//! POST to (and report the answers of) cloud metadata services, the
//! gateway's own `/metrics`, or devices on the home or hospital LAN. So
//! addresses that are loopback, link-local, private (RFC 1918, CGNAT,
//! unique-local), multicast, broadcast, reserved or unspecified are
//! refused, IPv4 and IPv6 alike, including IPv4 written inside IPv6
//! (`::ffff:127.0.0.1`, NAT64). The check runs three times:
//!
//! - when an endpoint is created or its URL changed (literal addresses and
//!   the names' current DNS answers: a clear 422 for the operator);
//! - at every connection, in the HTTP client's resolver ([`GuardedResolver`]),
//!   so a name that later resolves somewhere else (DNS rebinding) is
//!   refused before any byte is sent;
//! - before every attempt for literal addresses (they bypass the resolver).
//!
//! An endpoint that must reach a private address (a hospital server on
//! the LAN, a receiver on the same host) says so explicitly:
//! `allow_private_network` on the endpoint, or `delivery.allow_private_network`
//! for every endpoint of a gateway (tests, demos).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// A refused destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} is a {class} address ({ip}): refused by the SSRF guard (set allow_private_network on the endpoint to allow it)")]
pub struct Refused {
    /// The host as written.
    pub host: String,
    /// The address refused.
    pub ip: IpAddr,
    /// Which kind (`loopback`, `private`, ...).
    pub class: &'static str,
}

/// The kind of a non-public address, `None` for a public one.
pub fn class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => class_v4(v4),
        IpAddr::V6(v6) => class_v6(v6),
    }
}

fn class_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_broadcast() || a >= 240 {
        Some("reserved")
    } else {
        None
    }
}

fn class_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return class_v4(v4);
    }
    // IPv4-compatible (::a.b.c.d, deprecated) and NAT64 (64:ff9b::/96):
    // the IPv4 address inside is where the packets end up.
    if (s[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified())
        || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
    {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return class_v4(Ipv4Addr::new(a, b, c, d));
    }
    if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if s[0] & 0xfe00 == 0xfc00 || s[0] & 0xffc0 == 0xfec0 {
        Some("private")
    } else if s[0] & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else {
        None
    }
}

/// Checks one address.
pub fn check_ip(host: &str, ip: IpAddr) -> Result<(), Refused> {
    match class(ip) {
        None => Ok(()),
        Some(class) => Err(Refused {
            host: host.to_string(),
            ip,
            class,
        }),
    }
}

/// The address of a URL's host when it is a literal (`127.0.0.1`, `[::1]`).
pub fn literal(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(d) => d.parse().ok(),
    }
}

/// Checks a URL's literal address, if it has one (no DNS).
pub fn check_literal(url: &url::Url) -> Result<(), Refused> {
    match literal(url) {
        Some(ip) => check_ip(url.host_str().unwrap_or_default(), ip),
        None => Ok(()),
    }
}

/// Checks a URL: its literal address, or every address its name resolves to
/// now. A name that does not resolve (yet) passes: the resolver checks it
/// again at every connection.
pub async fn check_url(url: &url::Url, timeout: Duration) -> Result<(), Refused> {
    check_literal(url)?;
    let (Some(url::Host::Domain(name)), None) = (url.host(), literal(url)) else {
        return Ok(());
    };
    let port = url.port_or_known_default().unwrap_or(443);
    let Ok(Ok(addrs)) = tokio::time::timeout(timeout, tokio::net::lookup_host((name, port))).await
    else {
        return Ok(());
    };
    for a in addrs {
        check_ip(name, a.ip())?;
    }
    Ok(())
}

/// The blocking twin of [`check_url`] (the CLI).
pub fn check_url_blocking(url: &url::Url) -> Result<(), Refused> {
    use std::net::ToSocketAddrs;
    check_literal(url)?;
    let (Some(url::Host::Domain(name)), None) = (url.host(), literal(url)) else {
        return Ok(());
    };
    let port = url.port_or_known_default().unwrap_or(443);
    if let Ok(addrs) = (name, port).to_socket_addrs() {
        for a in addrs {
            check_ip(name, a.ip())?;
        }
    }
    Ok(())
}

/// The HTTP client's resolver: the system resolver, refusing a name when
/// any of its addresses is not public (checked at every new connection,
/// which is what defeats DNS rebinding).
#[derive(Debug, Default)]
pub struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for a in &addrs {
                check_ip(&host, a.ip())?;
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        for (ip, want) in [
            ("127.0.0.1", Some("loopback")),
            ("10.1.2.3", Some("private")),
            ("172.16.0.1", Some("private")),
            ("192.168.1.1", Some("private")),
            ("100.64.0.1", Some("private")),
            ("169.254.169.254", Some("link-local")),
            ("224.0.0.1", Some("multicast")),
            ("0.0.0.0", Some("unspecified")),
            ("255.255.255.255", Some("reserved")),
            ("::1", Some("loopback")),
            ("::", Some("unspecified")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:169.254.169.254", Some("link-local")),
            ("::127.0.0.1", Some("loopback")),
            ("64:ff9b::a00:1", Some("private")),
            ("fd00::1", Some("private")),
            ("fe80::1", Some("link-local")),
            ("ff02::1", Some("multicast")),
            ("93.184.215.14", None),
            ("2606:4700::1111", None),
            ("::ffff:93.184.215.14", None),
        ] {
            assert_eq!(class(ip.parse().unwrap()), want, "{ip}");
        }
    }
}
