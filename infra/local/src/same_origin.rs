//! Which web pages may use the stack. A browser lets any page it shows send
//! requests to `127.0.0.1`; two checks keep other sites' pages out:
//!
//! - **`Host`, on every route** (DNS rebinding): a page of `attacker.example`
//!   whose name is re-pointed at `127.0.0.1` reaches this port with
//!   `Host: attacker.example`, and the browser then lets that page read the
//!   answers (`/dev/token`, `/metrics`, …). Only the names the stack is reached
//!   by are served: the `--host` value, `localhost`, loopback literals and each
//!   `--allowed-host`; anything else is a 403 before any handler runs.
//! - **`Origin`, on the WebSocket upgrade and on `POST /dev/token`**
//!   (cross-site WebSocket hijacking): a browser sends the page's origin, and
//!   neither WebSockets nor a form post are held back by the same-origin policy.
//!   No `Origin` (wscat, websocat, the SDKs) passes: it never comes from a
//!   browser's page; the stack's own page passes, and so does each `--allowed-origin`.
//!
//! A 403 rather than 421 Misdirected Request: API Gateway answers a host name it
//! does not serve with 403 Forbidden, and a browser may silently retry a 421 on
//! another connection; for a refused page the answer is the same either way.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chat_core::origin::{Origin, host_name, parse_authority};

/// Parses an `--allowed-host` value: a host name or IP literal, without a port.
pub fn parse_host_name(text: &str) -> Result<String, String> {
    let text = text.trim();
    let authority = parse_authority(text).ok_or_else(|| format!("{text:?} is not a host name"))?;
    if authority.port().is_some() {
        return Err(format!("{text:?}: give the host name alone, without a port (any port is accepted)"));
    }
    Ok(host_name(&authority))
}

/// A host name as given, an IP literal in its one canonical spelling
/// (`2001:DB8:0::5` and `2001:db8::5` are one address).
/// Whether `host` (a `--host` value or a `Host` name, brackets optional) only listens on this machine.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn canonical(host: &str) -> String {
    host.parse::<IpAddr>().map_or_else(|_| host.to_owned(), |ip| ip.to_string())
}

/// The names and origins the stack serves browsers under.
#[derive(Clone, Debug, Default)]
pub struct SameOrigin {
    /// Besides `localhost` and loopback literals, which are always served.
    hosts: Vec<String>,
    origins: Vec<Origin>,
}

/// A request turned away by [`SameOrigin`]: 403 with a short plain reason.
#[derive(Debug, PartialEq, Eq)]
pub struct Forbidden(String);

impl IntoResponse for Forbidden {
    fn into_response(self) -> Response {
        let headers =
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::X_CONTENT_TYPE_OPTIONS, "nosniff")];
        (StatusCode::FORBIDDEN, headers, self.0 + "\n").into_response()
    }
}

impl SameOrigin {
    /// `hosts`: the `--host` value and every `--allowed-host` (as given, any case);
    /// `origins`: every `--allowed-origin`.
    pub fn new(hosts: &[String], origins: &[Origin]) -> Self {
        // `--host` is a bind address: an IPv6 one is written bare (`2001:db8::5`),
        // which is no `Host` authority without its brackets.
        let name = |host: &String| match host.trim().parse::<IpAddr>() {
            Ok(ip) => Some(ip.to_string()),
            Err(_) => parse_host_name(host).ok().map(|name| canonical(&name)),
        };
        Self { hosts: hosts.iter().filter_map(name).collect(), origins: origins.to_vec() }
    }

    fn serves(&self, host: &str) -> bool {
        let host = canonical(host);
        is_loopback_host(&host) || self.hosts.contains(&host)
    }

    /// The request's `Host` (or, in HTTP/2, its `:authority`) if it names this stack.
    pub fn check_host(&self, headers: &HeaderMap, uri: &Uri) -> Result<Authority, Forbidden> {
        let mut hosts = headers.get_all(header::HOST).iter();
        let authority = match (hosts.next(), hosts.next()) {
            (Some(host), None) => host.to_str().ok().and_then(parse_authority),
            (None, _) => uri.authority().and_then(|a| parse_authority(a.as_str())),
            (Some(_), Some(_)) => None,
        };
        let Some(authority) = authority else {
            return Err(Forbidden("Forbidden: the request needs one valid Host header.".into()));
        };
        let host = host_name(&authority);
        if self.serves(&host) {
            Ok(authority)
        } else {
            Err(Forbidden(format!(
                "Forbidden: this server is not {host}. Reach it by its own address, or start it with --allowed-host {host}."
            )))
        }
    }

    /// Whether a request may come from the page that sent it: no `Origin` (not
    /// a browser's page), the stack's own page under any name it serves on the
    /// port the request came to, or an `--allowed-origin`. Call after [`Self::check_host`].
    pub fn check_origin(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), Forbidden> {
        let mut sent = headers.get_all(header::ORIGIN).iter();
        let origin = match (sent.next(), sent.next()) {
            (None, _) => return Ok(()),
            (Some(origin), None) => origin.to_str().ok().and_then(|origin| origin.parse::<Origin>().ok()),
            (Some(_), Some(_)) => None,
        };
        let refused = |what: String| {
            Err(Forbidden(format!(
                "Forbidden: pages of {what} may not use this server. Open the page it serves, or start it with --allowed-origin ORIGIN."
            )))
        };
        let Some(origin) = origin else { return refused("an opaque or malformed origin".into()) };
        let port = self.check_host(headers, uri).ok().map(|host| host.port_u16().unwrap_or(80));
        let own_page =
            origin.scheme() == "http" && self.serves(origin.host()) && origin.port().is_some() && origin.port() == port;
        if own_page || self.origins.contains(&origin) { Ok(()) } else { refused(origin.to_string()) }
    }
}

/// Middleware on the whole router: a request whose `Host` is not one of the
/// stack's names is answered 403 and reaches no handler. A refused WebSocket
/// upgrade is counted with the other refused upgrades.
pub async fn require_host(State(policy): State<Arc<SameOrigin>>, request: Request, next: Next) -> Response {
    match policy.check_host(request.headers(), request.uri()) {
        Ok(_) => next.run(request).await,
        Err(refusal) => {
            tracing::info!(host = ?request.headers().get(header::HOST), path = %request.uri().path(), "request for another host refused");
            let response = refusal.into_response();
            if is_upgrade(request.headers()) {
                crate::metrics::record_refused_upgrade(response.status());
            }
            response
        }
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.get(header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &[&str], origins: &[&str]) -> SameOrigin {
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let origins: Vec<Origin> = origins.iter().map(|o| o.parse().unwrap()).collect();
        SameOrigin::new(&hosts, &origins)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        map
    }

    fn host_ok(policy: &SameOrigin, host: &str) -> bool {
        policy.check_host(&headers(&[("host", host)]), &Uri::from_static("/dev")).is_ok()
    }

    fn origin_ok(policy: &SameOrigin, host: &str, origin: &str) -> bool {
        policy.check_origin(&headers(&[("host", host), ("origin", origin)]), &Uri::from_static("/dev")).is_ok()
    }

    #[test]
    fn only_the_stacks_own_names_are_served() {
        let policy = policy(&["127.0.0.1", "Chat.LAN"], &[]);
        for host in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
            "[::1]",
            "127.9.9.9:1",
            "chat.lan:8080",
            "CHAT.lan",
        ] {
            assert!(host_ok(&policy, host), "{host}");
        }
        for host in [
            "attacker.example",
            "attacker.example:8080",
            "localhost.attacker.example",
            "127.0.0.1.nip.io:8080",
            "192.168.1.10:8080",
            "user@127.0.0.1:8080",
            "",
            "127.0.0.1:notaport",
            "127.0.0.1:+8080", // a port is digits alone
        ] {
            assert!(!host_ok(&policy, host), "{host}");
        }
        let none = policy.check_host(&HeaderMap::new(), &Uri::from_static("/dev"));
        assert!(none.is_err());
        // HTTP/2 has no Host header: the :authority is in the URI.
        assert!(policy.check_host(&HeaderMap::new(), &Uri::from_static("http://localhost:8080/dev")).is_ok());
        let two = headers(&[("host", "127.0.0.1:8080"), ("host", "attacker.example")]);
        assert!(policy.check_host(&two, &Uri::from_static("/dev")).is_err());
    }

    #[test]
    fn an_ipv6_listen_address_is_served_under_its_bracketed_host() {
        // `--host 2001:db8::5` (bare, as a bind address) and `--allowed-host [fd00::7]`.
        let policy = policy(&["2001:db8::5", "[fd00::7]"], &[]);
        for host in ["[2001:db8::5]:8080", "[2001:DB8:0::5]", "[fd00::7]:8080", "[fd00:0::7]"] {
            assert!(host_ok(&policy, host), "{host}");
        }
        assert!(!host_ok(&policy, "[2001:db8::6]:8080"));
        assert!(origin_ok(&policy, "[2001:db8::5]:8080", "http://[2001:db8::5]:8080"), "its own page");
    }

    #[test]
    fn the_own_page_and_listed_origins_pass_others_do_not() {
        let policy = policy(&["127.0.0.1"], &["https://chat.example", "http://localhost:3000"]);
        let uri = Uri::from_static("/dev");
        assert!(policy.check_origin(&headers(&[("host", "127.0.0.1:8080")]), &uri).is_ok(), "no Origin: not a page");
        assert!(origin_ok(&policy, "127.0.0.1:8080", "http://127.0.0.1:8080"));
        // Served under another of its names, on the same port: the same server's page.
        assert!(origin_ok(&policy, "localhost:8080", "http://127.0.0.1:8080"));
        assert!(origin_ok(&policy, "127.0.0.1", "http://localhost"));
        assert!(origin_ok(&policy, "127.0.0.1:8080", "https://chat.example"));
        assert!(origin_ok(&policy, "127.0.0.1:8080", "https://CHAT.example:443"));
        assert!(origin_ok(&policy, "127.0.0.1:8080", "http://localhost:3000"));
        for refused in [
            "https://evil.example",
            "http://127.0.0.1:8081",
            "http://localhost:3001",
            "https://127.0.0.1:8080",
            "https://chat.example:8443",
            "null",
            "file://",
            "http://127.0.0.1:8080/path",
            "",
        ] {
            assert!(!origin_ok(&policy, "127.0.0.1:8080", refused), "{refused}");
        }
        let two = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            ("origin", "https://evil.example"),
        ]);
        assert!(policy.check_origin(&two, &uri).is_err());
    }

    #[test]
    fn loopback_hosts() {
        for host in ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["0.0.0.0", "::", "192.168.1.10", "example.com"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn allowed_hosts_are_names_without_ports() {
        assert_eq!(parse_host_name(" Chat.LAN"), Ok("chat.lan".into()));
        assert_eq!(parse_host_name("[fe80::1]"), Ok("fe80::1".into()));
        assert!(parse_host_name("chat.lan:8080").is_err());
        assert!(parse_host_name("a b").is_err());
        assert!(parse_host_name("a;b.lan").is_err(), "URI syntax allows it, DNS does not");
        assert!(parse_host_name("").is_err());
    }
}
