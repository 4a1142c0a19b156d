//! Who is calling: the client address and whether the request came over TLS.
//!
//! The address is the TCP peer's (axum's `ConnectInfo<SocketAddr>`, present when the server runs with
//! `into_make_service_with_connect_info`, as [`crate::serve`] does). `X-Forwarded-For` and `X-Forwarded-Proto` are
//! believed only when the peer is one of the trusted proxies (`crm serve --trusted-proxy CIDR`): the client is
//! then the right-most forwarded address that is not itself a trusted proxy. In-process callers (tests through
//! `tower::ServiceExt::oneshot`) have no peer: their address is unknown (`None`), which a non-empty allowlist
//! refuses; such tests insert a `ConnectInfo` extension to play a client at a given address.

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use crm_store::ClientInfo;
use ipnet::IpNet;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The HTTP edge's network settings, installed as a request extension by [`crate::router_with`].
#[derive(Debug, Clone, Default)]
pub struct NetConfig {
    /// Proxies whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Mark session cookies `Secure` whatever the request's scheme (the server sits behind TLS that does not
    /// forward `X-Forwarded-Proto`).
    pub secure_cookies: bool,
}

impl NetConfig {
    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = crm_store::auth::normalize_ip(ip);
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }
}

/// The client address of a request with TCP peer `peer`.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, cfg: &NetConfig) -> Option<IpAddr> {
    let peer = peer.map(crm_store::auth::normalize_ip)?;
    if !cfg.trusts(peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .map(crm_store::auth::normalize_ip)
        .collect();
    // Right to left: each trusted hop vouches for the one before it; the first untrusted address is the client.
    for ip in forwarded.iter().rev() {
        if !cfg.trusts(*ip) {
            return Some(*ip);
        }
    }
    Some(forwarded.first().copied().unwrap_or(peer))
}

/// Did the request reach us (or the trusted proxy in front of us) over TLS?
pub fn is_https(parts: &Parts, peer: Option<IpAddr>, cfg: &NetConfig) -> bool {
    if cfg.secure_cookies || parts.uri.scheme_str() == Some("https") {
        return true;
    }
    peer.is_some_and(|p| cfg.trusts(p))
        && parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').next().is_some_and(|s| s.trim().eq_ignore_ascii_case("https")))
}

/// The calling client: address, user agent, and whether cookies must be `Secure`.
#[derive(Debug, Clone)]
pub struct Client {
    pub info: ClientInfo,
    pub https: bool,
}

impl Client {
    pub fn from_parts(parts: &Parts) -> Client {
        let default = Arc::new(NetConfig::default());
        let cfg = parts.extensions.get::<Arc<NetConfig>>().unwrap_or(&default);
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let user_agent =
            parts.headers.get("user-agent").and_then(|h| h.to_str().ok()).map(|s| s.chars().take(300).collect());
        Client {
            info: ClientInfo { ip: client_ip(peer, &parts.headers, cfg), user_agent },
            https: is_https(parts, peer, cfg),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Client::from_parts(parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(proxies: &[&str]) -> NetConfig {
        NetConfig { trusted_proxies: proxies.iter().map(|p| p.parse().expect("cidr")).collect(), secure_cookies: false }
    }
    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().expect("header"));
        h
    }
    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("ip"))
    }

    #[test]
    fn forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() {
        assert_eq!(client_ip(ip("203.0.113.5"), &xff("10.0.0.1"), &cfg(&[])), ip("203.0.113.5"));
        assert_eq!(client_ip(ip("203.0.113.5"), &xff("10.0.0.1"), &cfg(&["10.0.0.0/8"])), ip("203.0.113.5"));
        assert_eq!(
            client_ip(None, &xff("10.0.0.1"), &cfg(&["10.0.0.0/8"])),
            None,
            "no peer: unknown, whatever the headers say"
        );
    }

    fn parts(proto: Option<&str>) -> Parts {
        let mut b = axum::http::Request::builder().uri("/api/v1/session");
        if let Some(p) = proto {
            b = b.header("x-forwarded-proto", p);
        }
        b.body(()).expect("request").into_parts().0
    }

    #[test]
    fn https_is_believed_only_from_a_trusted_proxy_or_when_configured() {
        let c = cfg(&["10.0.0.0/8"]);
        assert!(is_https(&parts(Some("https")), ip("10.0.0.2"), &c));
        assert!(!is_https(&parts(Some("https")), ip("203.0.113.5"), &c), "a client cannot claim TLS");
        assert!(!is_https(&parts(Some("http")), ip("10.0.0.2"), &c));
        assert!(!is_https(&parts(None), ip("10.0.0.2"), &c));
        assert!(is_https(&parts(None), None, &NetConfig { secure_cookies: true, ..NetConfig::default() }));
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_forwarded_address() {
        let c = cfg(&["10.0.0.0/8"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &xff("198.51.100.9"), &c), ip("198.51.100.9"));
        // A client cannot spoof by prepending: the proxy appended the real address last.
        assert_eq!(client_ip(ip("10.0.0.2"), &xff("1.2.3.4, 198.51.100.9"), &c), ip("198.51.100.9"));
        // Two trusted hops.
        assert_eq!(client_ip(ip("10.0.0.2"), &xff("198.51.100.9, 10.0.0.7"), &c), ip("198.51.100.9"));
        // A dual-stack peer and mapped forwarded addresses.
        assert_eq!(client_ip(ip("::ffff:10.0.0.2"), &xff("::ffff:198.51.100.9"), &c), ip("198.51.100.9"));
        assert_eq!(client_ip(ip("10.0.0.2"), &HeaderMap::new(), &c), ip("10.0.0.2"), "no header: the proxy itself");
        assert_eq!(client_ip(ip("10.0.0.2"), &xff("garbage"), &c), ip("10.0.0.2"));
    }
}
