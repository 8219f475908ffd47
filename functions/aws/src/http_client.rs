//! One plain HTTP(S) client on the hyper / rustls stack the SDK already links
//! (no second HTTP client to build or ship): the authorizer's JWKS fetch and
//! the local stack's webhooks use it.

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A client of `https://` and `http://` URLs, HTTP/1.1, sending bodies of type `B`.
pub type HttpClient<B> = Client<HttpsConnector<HttpConnector>, B>;

/// Trusts the system's root certificates (Lambda's images carry them). Build
/// once and clone, so connections are reused.
pub fn http_client<B>() -> std::io::Result<HttpClient<B>>
where
    B: http_body::Body + Send,
    B::Data: Send,
{
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}
