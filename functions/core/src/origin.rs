//! Which web pages may open a socket. A browser sends the page's origin in the
//! upgrade's `Origin` header and lets any page open a WebSocket to any server, so
//! without this check every site a user visits could chat (and read) in their
//! name. Clients that are not browsers (wscat, apps) send no `Origin` and are not
//! concerned: the check protects users of browsers, it does not authenticate.
//!
//! ```
//! use chat_core::origin::AllowedOrigins;
//! let allowed = AllowedOrigins::parse("https://chat.example.com, http://localhost:8080").unwrap();
//! assert!(allowed.allows(Some("https://chat.example.com")));
//! assert!(!allowed.allows(Some("https://evil.example")));
//! assert!(allowed.allows(None), "wscat sends no Origin");
//! ```

/// A configured origin that is not one (`scheme://host[:port]`, no path).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an origin: scheme://host[:port], with no path")]
pub struct OriginError(pub String);

/// The origins allowed to open a socket; empty allows any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedOrigins(Vec<String>);

impl AllowedOrigins {
    /// A comma-separated list (blank entries ignored; empty = any origin).
    pub fn parse(list: &str) -> Result<Self, OriginError> {
        let entries = list.split(',').map(str::trim).filter(|entry| !entry.is_empty());
        let origins = entries.map(|entry| normalize(entry).ok_or_else(|| OriginError(entry.to_owned())));
        Ok(Self(origins.collect::<Result<_, _>>()?))
    }

    /// Whether an upgrade with this `Origin` header may open: always without a
    /// header or without a list; else only a listed origin (`null`, sent by
    /// sandboxed frames and `file:` pages, never is).
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(_) if self.0.is_empty() => true,
            Some(origin) => normalize(origin).is_some_and(|origin| self.0.contains(&origin)),
        }
    }

    /// The allowed origins, normalized; empty means any.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// `scheme://host[:port]` lowercased, without a trailing `/` or the scheme's
/// default port (browsers send neither); none if it is not an origin.
fn normalize(origin: &str) -> Option<String> {
    let origin = origin.trim().to_ascii_lowercase();
    let origin = origin.strip_suffix('/').unwrap_or(&origin);
    let (scheme, authority) = origin.split_once("://")?;
    let scheme_ok = scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c));
    let authority_ok = !authority.is_empty()
        && !authority.chars().any(|c| c.is_whitespace() || c.is_control() || "/?#@,\\".contains(c));
    if !scheme_ok || !authority_ok {
        return None;
    }
    let default_port = match scheme {
        "https" | "wss" => ":443",
        "http" | "ws" => ":80",
        _ => "",
    };
    let authority = if default_port.is_empty() { authority } else { authority.trim_end_matches(default_port) };
    Some(format!("{scheme}://{authority}"))
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
        assert_eq!(allowed.as_slice(), ["https://chat.example.com", "http://localhost:8080"]);
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
        ] {
            assert!(!allowed.allows(Some(refused)), "{refused:?}");
        }
        assert!(allowed.allows(None));
    }

    #[test]
    fn a_list_entry_that_is_not_an_origin_is_refused() {
        for bad in ["chat.example.com", "https://chat.example.com/app", "https://", "null", "https://a b", "*"] {
            assert_eq!(AllowedOrigins::parse(bad), Err(OriginError(bad.to_owned())), "{bad}");
        }
        assert!(AllowedOrigins::parse("https://ok.example,ftp:/x").is_err(), "one bad entry refuses the list");
    }
}
