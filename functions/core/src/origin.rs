//! Which web pages may open a socket. A browser sends the page's origin in the
//! upgrade's `Origin` header and lets any page open a WebSocket to any server, so
//! without this check every site a user visits could chat (and read) in their
//! name. Clients that are not browsers (wscat, apps) send no `Origin` and are not
//! concerned: the check protects users of browsers, it does not authenticate.
//!
//! One [`Origin`] type serves both the deployed `$connect` check
//! ([`AllowedOrigins`], env `ALLOWED_ORIGINS`) and the local stack's
//! `--allowed-origin` and own-page checks, so both read an origin the same way.
//!
//! ```
//! use chat_core::origin::AllowedOrigins;
//! let allowed = AllowedOrigins::parse("https://chat.example.com, http://localhost:8080").unwrap();
//! assert!(allowed.allows(Some("https://chat.example.com")));
//! assert!(!allowed.allows(Some("https://evil.example")));
//! assert!(allowed.allows(None), "wscat sends no Origin");
//! ```

use std::fmt;
use std::str::FromStr;

// `http` through the Lambda event types: the same crate (and version) axum uses,
// without another direct dependency of the domain crate.
use aws_lambda_events::http::Uri;
use aws_lambda_events::http::uri::Authority;

/// A page's origin, `scheme://host[:port]`, as browsers send it in `Origin`;
/// compared case-insensitively and with the scheme's default port made explicit,
/// so `http://LOCALHOST:80` and `http://localhost` are the same origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Lower case.
    scheme: String,
    /// Lower case, without the brackets of an IPv6 literal.
    host: String,
    /// `None` only for a scheme without a default port and no port given.
    port: Option<u16>,
}

/// Why a text is not an [`Origin`] one can allow.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("'*' would let every web page in: list the origins instead")]
    Wildcard,
    #[error("{0:?} is not an origin: write scheme://host[:port], without a path (e.g. http://localhost:3000)")]
    Malformed(String),
}

impl Origin {
    /// The scheme, lower case (`http`, `https`, `tauri`, …).
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The host, lower case, an IPv6 literal without its brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, the scheme's default one if none was written; `None` only for
    /// a scheme without a default port.
    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

impl FromStr for Origin {
    type Err = OriginError;

    /// Strict on purpose: a browser serialises an origin canonically, so anything
    /// else (`null` from sandboxed frames and `file:` pages, a path, a fragment,
    /// user info, a port that is not a number) is not one and never matches.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // Lists in the environment are written `a, b`.
        let text = text.trim();
        if text == "*" {
            return Err(OriginError::Wildcard);
        }
        let malformed = || OriginError::Malformed(text.to_owned());
        // The `http` parser silently drops a fragment.
        let uri: Uri = text.parse().map_err(|_| malformed())?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else { return Err(malformed()) };
        // An origin has no path, query or fragment; a trailing `/` is forgiven.
        let path = uri.path_and_query().map_or("", |p| p.as_str());
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic());
        if !matches!(path, "" | "/") || text.contains('#') || !scheme_ok || !is_plain(authority) {
            return Err(malformed());
        }
        let scheme = scheme.to_ascii_lowercase();
        let port = authority.port_u16().or(default_port(&scheme));
        Ok(Origin { scheme, host: host_name(authority), port })
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

impl fmt::Display for Origin {
    /// `scheme://host[:port]`, without the scheme's default port (as browsers send it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        match self.port.filter(|port| Some(*port) != default_port(&self.scheme)) {
            Some(port) => write!(f, "{}://{host}:{port}", self.scheme),
            None => write!(f, "{}://{host}", self.scheme),
        }
    }
}

/// `host[:port]` as in a `Host` header: a host name or IP literal, and a port
/// of digits if any; none if it is anything else.
pub fn parse_authority(text: &str) -> Option<Authority> {
    text.parse().ok().filter(is_plain)
}

/// Whether an authority is a bare host (letters, digits, `-._~`, or an IPv6
/// literal) with an optional port of digits: no user info, and none of the
/// characters the URI grammar allows in a name but DNS does not (`,` `;` `!` …).
fn is_plain(authority: &Authority) -> bool {
    let port_ok = match authority.as_str().strip_prefix(authority.host()) {
        Some("") => true,
        // `u16::from_str` also takes a sign.
        Some(port) => port
            .strip_prefix(':')
            .is_some_and(|port| port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok()),
        None => false,
    };
    let host = host_name(authority);
    let host_ok = !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || "-._~:".contains(c));
    port_ok && host_ok
}

/// The host of an authority, lower case and without IPv6 brackets.
pub fn host_name(authority: &Authority) -> String {
    authority.host().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase()
}

/// The origins allowed to open a socket; empty allows any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedOrigins(Vec<Origin>);

impl AllowedOrigins {
    /// A comma-separated list (blank entries ignored; empty = any origin); one
    /// entry that is not an origin (or `*`) refuses the whole list.
    pub fn parse(list: &str) -> Result<Self, OriginError> {
        let entries = list.split(',').map(str::trim).filter(|entry| !entry.is_empty());
        Ok(Self(entries.map(str::parse).collect::<Result<_, _>>()?))
    }

    /// Whether an upgrade with this `Origin` header may open: always without a
    /// header or without a list; else only a listed origin (`null`, sent by
    /// sandboxed frames and `file:` pages, never is).
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(_) if self.0.is_empty() => true,
            Some(origin) => origin.parse::<Origin>().is_ok_and(|origin| self.0.contains(&origin)),
        }
    }

    /// The allowed origins; empty means any.
    pub fn as_slice(&self) -> &[Origin] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_list_allows_any_origin() {
        let any = AllowedOrigins::parse(" , ").unwrap();
        assert_eq!(any, AllowedOrigins::default());
        assert!(any.allows(Some("https://evil.example")) && any.allows(None));
    }

    #[test]
    fn only_listed_origins_open_and_no_origin_always_does() {
        let allowed = AllowedOrigins::parse("https://Chat.Example.com/,http://localhost:8080").unwrap();
        let listed: Vec<String> = allowed.as_slice().iter().map(Origin::to_string).collect();
        assert_eq!(listed, ["https://chat.example.com", "http://localhost:8080"]);
        for ok in ["https://chat.example.com", "HTTPS://CHAT.EXAMPLE.COM", "https://chat.example.com:443"] {
            assert!(allowed.allows(Some(ok)), "{ok}");
        }
        assert!(allowed.allows(Some("http://localhost:8080")));
        for refused in [
            "https://evil.example",
            "http://chat.example.com",          // another scheme is another origin
            "https://chat.example.com:8443",    // and another port
            "https://chat.example.com.evil.io", // not a prefix match
            "http://localhost",
            "null",
            "",
            "garbage",
            "*",
        ] {
            assert!(!allowed.allows(Some(refused)), "{refused:?}");
        }
        assert!(allowed.allows(None));
    }

    #[test]
    fn a_list_entry_that_is_not_an_origin_is_refused() {
        for bad in ["chat.example.com", "https://chat.example.com/app", "https://", "null", "https://a b"] {
            assert_eq!(AllowedOrigins::parse(bad), Err(OriginError::Malformed(bad.to_owned())), "{bad}");
        }
        assert_eq!(AllowedOrigins::parse("*"), Err(OriginError::Wildcard));
        assert!(AllowedOrigins::parse("https://ok.example,ftp:/x").is_err(), "one bad entry refuses the list");
    }

    #[test]
    fn allowed_origins_are_whole_origins() {
        assert_eq!("*".parse::<Origin>(), Err(OriginError::Wildcard));
        for bad in
            ["localhost:3000", "http://", "http://a.example/app", "http://u@a.example", "http://a.example?x", "/x"]
        {
            assert!(matches!(bad.parse::<Origin>(), Err(OriginError::Malformed(_))), "{bad}");
        }
        let origin: Origin = " HTTP://[::1]:3000/".parse().unwrap();
        assert_eq!(origin.to_string(), "http://[::1]:3000");
        assert_eq!((origin.scheme(), origin.host(), origin.port()), ("http", "::1", Some(3000)));
        assert_eq!("https://a.example:443".parse::<Origin>().unwrap().to_string(), "https://a.example");
        assert_eq!("https://a.example:443".parse::<Origin>(), "HTTPS://A.example".parse::<Origin>());
        assert_eq!("tauri://localhost".parse::<Origin>().unwrap().to_string(), "tauri://localhost");
        assert_eq!("tauri://localhost".parse::<Origin>().unwrap().port(), None);
    }

    /// What one of the two former parsers let through and the other did not.
    #[test]
    fn what_no_browser_sends_is_not_an_origin() {
        for bad in [
            "https://a.example#x", // the `http` parser drops a fragment
            "https://a,b.example", // a list's separator, not a name
            "https://a;b.example",
            "1http://a.example",  // a scheme starts with a letter
            "https://a.example:", // a port is digits…
            "https://a.example:+443",
            "https://a.example:notaport",
            "https://a.example:99999", // …that fit in 16 bits
            "https://été.example",     // browsers send names in punycode
            "https://[::1",
        ] {
            assert!(matches!(bad.parse::<Origin>(), Err(OriginError::Malformed(_))), "{bad}");
        }
    }
}
