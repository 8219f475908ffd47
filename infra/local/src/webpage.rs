//! The web chat (`frontend/`), built into the binary: a copied or `cargo install`ed
//! `chat-local` serves the page from anywhere. `--frontend DIR` serves a directory
//! instead, for editing the page without rebuilding. Either way its HTML goes out
//! with the page's Content-Security-Policy ([`with_policy`]).

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "../../frontend/"]
#[exclude = "*.png"] // the README's screenshots
#[exclude = "*.md"]
struct Page;

/// The pages' Content-Security-Policy: the `<meta>` policy of `index.html` and
/// `login.html` (which a static host serves as they are), plus what only a header
/// can say, `frame-ancestors` (no page may frame the chat). No inline script or
/// style; sockets to any ws:/wss: URL, because the page's URL box may name
/// another endpoint (the page itself refuses plain ws:// off loopback and sends
/// its token only to its own endpoint); https: and loopback http: for an OIDC
/// issuer's discovery document and token endpoint.
pub const CONTENT_SECURITY_POLICY: &str = concat!(
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; ",
    "connect-src 'self' ws: wss: https: http://localhost:* http://127.0.0.1:*; ",
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
);

/// The embedded file at `uri`'s path (`/` is `index.html`), or 404.
pub fn serve(uri: &Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    match Page::get(path) {
        Some(file) => {
            let mime = file.metadata.mimetype().to_owned();
            with_policy(([(header::CONTENT_TYPE, mime)], Body::from(file.data.into_owned())).into_response())
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `response` with the [`CONTENT_SECURITY_POLICY`] header when it is a page (HTML);
/// scripts, styles and data need none.
pub fn with_policy(mut response: Response) -> Response {
    let html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|mime| mime.starts_with("text/html"));
    if html {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_scripts_are_built_in_with_their_types() {
        let index = serve(&Uri::from_static("/"));
        assert_eq!(index.status(), StatusCode::OK);
        assert!(index.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
        let script = serve(&Uri::from_static("/chat.js"));
        assert!(script.headers()[header::CONTENT_TYPE].to_str().unwrap().contains("javascript"));
        assert_eq!(serve(&Uri::from_static("/nope.txt")).status(), StatusCode::NOT_FOUND);
        assert_eq!(serve(&Uri::from_static("/../Cargo.toml")).status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn pages_carry_the_policy_of_their_meta_tag_plus_frame_ancestors() {
        for page in ["/", "/login.html"] {
            let response = serve(&Uri::from_static(page));
            assert_eq!(response.headers()[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY, "{page}");
            let path = if page == "/" { "index.html" } else { &page[1..] };
            let html = String::from_utf8(Page::get(path).unwrap().data.into_owned()).unwrap();
            let meta = html
                .split("<meta http-equiv=\"Content-Security-Policy\" content=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("{path} has a CSP meta tag"));
            assert_eq!(format!("{meta}; frame-ancestors 'none'"), CONTENT_SECURITY_POLICY, "{path}'s meta tag");
            assert!(
                !html.contains("<script>") && !html.contains("<script type=\"module\">"),
                "{path}: no inline script"
            );
            assert!(!html.contains(" style="), "{path}: no inline style");
        }
        assert!(!serve(&Uri::from_static("/chat.js")).headers().contains_key(header::CONTENT_SECURITY_POLICY));
    }
}
