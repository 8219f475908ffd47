//! The web chat (`frontend/`), built into the binary: a copied or `cargo install`ed
//! `chat-local` serves the page from anywhere. `--frontend DIR` serves a directory
//! instead, for editing the page without rebuilding.

use axum::body::Body;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "../../frontend/"]
#[exclude = "*.png"] // the README's screenshots
struct Page;

/// The embedded file at `uri`'s path (`/` is `index.html`), or 404.
pub fn serve(uri: &Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    match Page::get(path) {
        Some(file) => {
            let mime = file.metadata.mimetype().to_owned();
            ([(header::CONTENT_TYPE, mime)], Body::from(file.data.into_owned())).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
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
}
