//! The official AWS SDK for Rust against the local @connections API.

mod common;

use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::config::{Credentials, Region};
use aws_sdk_apigatewaymanagement::primitives::Blob;
use common::{Client as WsClient, Stack, scratch};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn sdk(stack: &Stack) -> Client {
    let config = aws_sdk_apigatewaymanagement::Config::builder()
        .behavior_version(aws_sdk_apigatewaymanagement::config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
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
    let request = format!(
        "POST /dev/%40connections/{encoded} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
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
