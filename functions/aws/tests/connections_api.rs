//! The @connections adapter classifies errors by `x-amzn-ErrorType`, as API
//! Gateway sends them. A one-route HTTP server on loopback plays the service.

use chat_aws::ApiGatewayPoster;
use chat_core::ports::{Bytes, PostError, SocketPoster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Answers every request with `status` and `error_type`, and returns the first
/// request's head and body as text.
async fn serve(status: u16, error_type: Option<&'static str>) -> (String, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/dev", listener.local_addr().unwrap());
    let handle = tokio::spawn(async move {
        let mut first = None;
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { break };
            let mut buf = vec![0u8; 64 * 1024];
            let n = socket.read(&mut buf).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            let header = error_type.map(|t| format!("x-amzn-ErrorType: {t}\r\n")).unwrap_or_default();
            let body = if status == 200 { String::new() } else { r#"{"message":"nope"}"#.to_owned() };
            let response = format!(
                "HTTP/1.1 {status} X\r\n{header}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(response.as_bytes()).await.ok();
            if first.is_none() {
                first = Some(request);
            }
            if status == 200 {
                break;
            }
        }
        first.unwrap_or_default()
    });
    (endpoint, handle)
}

async fn poster(endpoint: &str) -> ApiGatewayPoster {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_apigatewaymanagement::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    ApiGatewayPoster::new(&sdk, endpoint)
}

#[tokio::test]
async fn a_post_reaches_the_stage_path_with_the_raw_frame() {
    let (endpoint, server) = serve(200, None).await;
    poster(&endpoint).await.post("CXzQ2cJjoAMCJ6g=", &Bytes::from_static(br#"{"message":"hi"}"#)).await.unwrap();
    let request = server.await.unwrap();
    let request_line = request.lines().next().unwrap();
    // The SDK keeps `@` and percent-encodes the id's `=`: the local stack must decode it.
    assert_eq!(request_line, "POST /dev/@connections/CXzQ2cJjoAMCJ6g%3D HTTP/1.1");
    assert!(request.ends_with(r#"{"message":"hi"}"#));
}

#[tokio::test]
async fn service_errors_map_to_typed_post_errors() {
    for (status, error_type, expected) in [
        (410, "GoneException", PostError::Gone),
        (429, "LimitExceededException", PostError::Throttled),
        (413, "PayloadTooLargeException", PostError::PayloadTooLarge),
    ] {
        let (endpoint, server) = serve(status, Some(error_type)).await;
        let result = poster(&endpoint).await.post("abc=", &Bytes::from_static(b"x")).await;
        assert_eq!(result, Err(expected), "{status} {error_type}");
        server.abort();
    }
}

#[tokio::test]
async fn an_unlabelled_error_is_other_not_gone() {
    let (endpoint, server) = serve(410, None).await;
    let result = poster(&endpoint).await.post("abc=", &Bytes::from_static(b"x")).await;
    assert!(matches!(result, Err(PostError::Other(_))), "{result:?}");
    server.abort();
}
