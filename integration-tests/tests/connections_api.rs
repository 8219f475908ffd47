//! The official AWS SDK for Rust against the local @connections API.

use crate::common;

use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::config::{Credentials, Region};
use aws_sdk_apigatewaymanagement::error::ProvideErrorMetadata;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use common::{
    Client as WsClient, Stack, TEST_KEY, WAIT, binary, host_of, http_exchange, http_get, scratch, signed_header_lines,
    sigv4_headers_for,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn sdk(stack: &Stack) -> Client {
    sdk_with_key(stack, TEST_KEY)
}

/// An SDK client that signs with `key` (access key id, secret).
fn sdk_with_key(stack: &Stack, key: (&str, &str)) -> Client {
    let config = aws_sdk_apigatewaymanagement::Config::builder()
        .behavior_version(aws_sdk_apigatewaymanagement::config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(key.0, key.1, None, None, "test"))
        .endpoint_url(&stack.http_url)
        .build();
    Client::from_conf(config)
}

#[tokio::test]
async fn post_get_delete_and_gone_through_the_sdk() {
    let dir = scratch("connections_api");
    let stack = Stack::start(&dir.join("chat.db"), &[]).await;
    let api = sdk(&stack).await;
    let mut client = WsClient::connect(&stack.ws_url).await;
    let id = client.my_id().await;

    api.post_to_connection()
        .connection_id(&id)
        .data(Blob::new(json!({"message": "from the SDK"}).to_string()))
        .send()
        .await
        .unwrap();
    assert_eq!(client.next_json().await, json!({"message": "from the SDK"}));

    let info = api.get_connection().connection_id(&id).send().await.unwrap();
    let connected = info.connected_at().expect("connectedAt").secs();
    let active = info.last_active_at().expect("lastActiveAt").secs();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!(connected <= active && active <= now && now - connected < 60, "{connected} {active} {now}");
    assert_eq!(info.identity().and_then(|i| i.source_ip()), Some("127.0.0.1"));

    api.delete_connection().connection_id(&id).send().await.unwrap();
    assert_eq!(client.close_code().await, Some(1000));

    let error = api.post_to_connection().connection_id(&id).data(Blob::new("x")).send().await.unwrap_err();
    assert!(error.as_service_error().is_some_and(|e| e.is_gone_exception()), "{error:?}");
    let error = api.get_connection().connection_id("nobody000000000=").send().await.unwrap_err();
    assert!(error.as_service_error().is_some_and(|e| e.is_gone_exception()), "{error:?}");

    let too_big = vec![b'x'; 128 * 1024 + 1];
    let mut other = WsClient::connect(&stack.ws_url).await;
    let other_id = other.my_id().await;
    let error = api.post_to_connection().connection_id(&other_id).data(Blob::new(too_big)).send().await.unwrap_err();
    assert!(error.as_service_error().is_some_and(|e| e.is_payload_too_large_exception()), "{error:?}");
    stack.stop().await;
}

#[tokio::test]
async fn the_path_accepts_an_encoded_at_sign() {
    let dir = scratch("connections_path");
    let stack = Stack::start(&dir.join("chat.db"), &[]).await;
    let mut client = WsClient::connect(&stack.ws_url).await;
    let id = client.my_id().await;
    let encoded: String = id.replace('=', "%3D").replace('/', "%2F").replace('+', "%2B");
    // A raw request, since SDKs send `@` unencoded.
    let host = stack.http_url.trim_start_matches("http://").split('/').next().unwrap().to_owned();
    let body = r#"{"message":"raw"}"#;
    let path = format!("/dev/%40connections/{encoded}");
    let signature = signed_header_lines("POST", &format!("http://{host}{path}"), body.as_bytes(), TEST_KEY);
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {host}\r\n{signature}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(client.next_json().await, json!({"message": "raw"}));
    stack.stop().await;
}

/// The SDK error's HTTP status and `x-amzn-ErrorType`, as the SDK classified it.
fn refusal<E: ProvideErrorMetadata>(
    error: &aws_sdk_apigatewaymanagement::error::SdkError<E, aws_sdk_apigatewaymanagement::config::http::HttpResponse>,
) -> (u16, String) {
    let status = error.raw_response().map(|r| r.status().as_u16()).unwrap_or_default();
    let code = error.as_service_error().and_then(|e| e.code()).unwrap_or("unclassified").to_owned();
    (status, code)
}

#[tokio::test]
async fn only_requests_signed_with_the_configured_key_get_through() {
    let dir = scratch("connections_signed");
    let key = ("AKIDLOCALEXAMPLE", "a-secret-of-our-own");
    let stack = Stack::start(&dir.join("chat.db"), &["--access-key-id", key.0, "--secret-access-key", key.1]).await;
    let mut client = WsClient::connect(&stack.ws_url).await;
    let id = client.my_id().await;
    let post = |api: Client| {
        let id = id.clone();
        async move { api.post_to_connection().connection_id(id).data(Blob::new(r#"{"message":"signed"}"#)).send().await }
    };

    post(sdk_with_key(&stack, key)).await.expect("the configured key works");
    assert_eq!(client.next_json().await, json!({"message": "signed"}));

    let wrong_secret = post(sdk_with_key(&stack, (key.0, "not-the-secret"))).await.unwrap_err();
    assert_eq!(refusal(&wrong_secret), (403, "InvalidSignatureException".into()), "{wrong_secret:?}");
    let message = wrong_secret.as_service_error().and_then(|e| e.message()).unwrap_or_default().to_owned();
    assert!(message.starts_with("The request signature we calculated does not match"), "{message}");

    let other_key = post(sdk_with_key(&stack, TEST_KEY)).await.unwrap_err();
    assert_eq!(refusal(&other_key), (403, "UnrecognizedClientException".into()), "{other_key:?}");
    let deleted = sdk_with_key(&stack, TEST_KEY).delete_connection().connection_id(&id).send().await.unwrap_err();
    assert_eq!(refusal(&deleted), (403, "UnrecognizedClientException".into()));

    // Plain HTTP, no signature: API Gateway's 403 for a request without credentials.
    let host = host_of(&stack.http_url);
    let encoded = id.replace('/', "%2F").replace('+', "%2B").replace('=', "%3D");
    let unsigned = http_get(&host, &format!("/dev/@connections/{encoded}")).await;
    assert!(unsigned.starts_with("HTTP/1.1 403"), "{unsigned}");
    assert!(
        unsigned.to_ascii_lowercase().contains("x-amzn-errortype: missingauthenticationtokenexception"),
        "{unsigned}"
    );
    assert!(unsigned.ends_with(r#"{"message":"Missing Authentication Token"}"#), "{unsigned}");

    // None of the refused calls reached the socket; the right key still closes it.
    sdk_with_key(&stack, key).delete_connection().connection_id(&id).send().await.unwrap();
    assert_eq!(client.close_code().await, Some(1000));
    stack.stop().await;
}

/// `headers` (from [`common::sigv4_headers`]) with the `Authorization`'s
/// `SignedHeaders` changed to `list`, as a hand-made client might sign.
fn signing_only(headers: Vec<(String, String)>, list: &str) -> Vec<(String, String)> {
    headers
        .into_iter()
        .map(|(name, value)| {
            let value = value.replace("SignedHeaders=host;x-amz-date,", &format!("SignedHeaders={list},"));
            (name, value)
        })
        .collect()
}

#[tokio::test]
async fn a_signature_without_host_or_date_or_for_another_region_is_refused() {
    let dir = scratch("connections_scope");
    let stack = Stack::start(&dir.join("chat.db"), &[]).await;
    let mut client = WsClient::connect(&stack.ws_url).await;
    let id = client.my_id().await;
    let host = host_of(&stack.http_url);
    let path = format!("/dev/@connections/{}", id.replace('/', "%2F").replace('+', "%2B").replace('=', "%3D"));
    let url = format!("http://{host}{path}");
    let post = |headers: &[(String, String)], body: &str| {
        let lines: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: {host}\r\n{lines}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        http_exchange(&host, request)
    };
    let body = r#"{"message":"must not arrive"}"#;
    let signed = |region: &str| sigv4_headers_for(region, "POST", &url, body.as_bytes(), TEST_KEY);
    assert!(signed("us-east-1").iter().any(|(_, v)| v.contains("SignedHeaders=host;x-amz-date,")), "as the SDKs sign");
    let refusals = [
        (
            signing_only(signed("us-east-1"), "x-amz-date"),
            "IncompleteSignatureException",
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        ),
        (
            signing_only(signed("us-east-1"), "host"),
            "IncompleteSignatureException",
            "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization.",
        ),
        (
            signed("eu-west-1"),
            "InvalidSignatureException",
            "Credential should be scoped to a valid region, not 'eu-west-1'. ",
        ),
    ];
    for (headers, error_type, message) in refusals {
        // Before the fix, leaving `host` out panicked the worker: an empty reply.
        let response = post(&headers, body).await;
        assert!(response.starts_with("HTTP/1.1 403"), "{error_type}: {response:?}");
        let expected = format!("x-amzn-errortype: {}", error_type.to_ascii_lowercase());
        assert!(response.to_ascii_lowercase().contains(&expected), "{response}");
        assert!(response.ends_with(&json!({ "message": message }).to_string()), "{response}");
    }

    // Nothing reached the socket; a request signed as the SDKs sign still does.
    let body = r#"{"message":"signed properly"}"#;
    let response = post(&sigv4_headers_for("us-east-1", "POST", &url, body.as_bytes(), TEST_KEY), body).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(client.next_json().await, json!({"message": "signed properly"}));
    stack.stop().await;
}

#[tokio::test]
async fn a_non_loopback_address_needs_a_key_of_ones_own() {
    // Refused before binding anything: the test never listens off loopback.
    let run = tokio::process::Command::new(binary())
        .args(["--host", "0.0.0.0", "--port", "0", "--db", ":memory:"])
        .env_remove("CHAT_ACCESS_KEY_ID")
        .env_remove("CHAT_SECRET_ACCESS_KEY")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WAIT, run).await.expect("exits at once").unwrap();
    assert!(!output.status.success(), "started anyway");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refusing to listen on 0.0.0.0") && stderr.contains("--access-key-id"), "{stderr}");
    assert!(output.stdout.is_empty(), "no endpoint was announced");
}
