//! `chat-local publish`: one line into a room through the publish API, signed
//! with SigV4 (service `execute-api`) by the standard AWS credential chain
//! (environment, profile, SSO, container or instance role), as a script or a
//! CI job would call a deployment's `PublishApiUrl` (or the local stack).

use std::time::SystemTime;

use anyhow::{Context, anyhow, bail};
use aws_config::BehaviorVersion;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

/// What to publish, where.
#[derive(Clone, Debug)]
pub struct Publication {
    /// The API's base URL: a deployment's `PublishApiUrl`, or the local stack's `http://HOST:PORT`.
    pub endpoint: String,
    pub room: String,
    pub text: String,
    pub user: Option<String>,
    pub client_message_id: Option<String>,
    /// The region to sign for; `None`: the credential chain's (`AWS_REGION`, the profile).
    pub region: Option<String>,
}

/// The API's answer: its status and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
}

/// The request's URL: the endpoint with `/rooms/{room}/messages`, the room percent-encoded.
pub fn url(endpoint: &str, room: &str) -> String {
    format!("{}/rooms/{}/messages", endpoint.trim_end_matches('/'), utf8_percent_encode(room, NON_ALPHANUMERIC))
}

/// The body: `{"message", "user"?, "clientMessageId"?}`.
pub fn body(publication: &Publication) -> String {
    let mut body = serde_json::json!({ "message": publication.text });
    if let Some(user) = &publication.user {
        body["user"] = user.as_str().into();
    }
    if let Some(key) = &publication.client_message_id {
        body["clientMessageId"] = key.as_str().into();
    }
    body.to_string()
}

/// Signs and sends the call; any answer (refusals included) is `Ok`, an
/// unreachable endpoint or missing credentials an `Err` that says which.
pub async fn publish(publication: &Publication) -> anyhow::Result<Answer> {
    let url = url(&publication.endpoint, &publication.room);
    let uri: hyper::Uri = url.parse().with_context(|| format!("--endpoint {}: not a URL", publication.endpoint))?;
    let host = uri.authority().ok_or_else(|| anyhow!("--endpoint {}: no host", publication.endpoint))?.to_string();
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &publication.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    let sdk = loader.load().await;
    let region = sdk.region().map(|r| r.to_string()).ok_or_else(|| {
        anyhow!("no AWS region: give --region, or set AWS_REGION (the local stack's is us-east-1 unless told)")
    })?;
    let provider = sdk.credentials_provider().ok_or_else(|| anyhow!("no AWS credential chain is configured"))?;
    let credentials = provider.provide_credentials().await.context(
        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (test/test for the local stack), \
         or AWS_PROFILE",
    )?;
    let body = body(publication);
    let target = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let identity = credentials.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&region)
        .name("execute-api")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .context("signing parameters")?
        .into();
    let signable = SignableRequest::new(
        "POST",
        target.clone(),
        [("host", host.as_str()), ("content-type", "application/json")].into_iter(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .context("a signable request")?;
    let (instructions, _) = sign(signable, &params).context("signing the request")?.into_parts();
    let mut request = hyper::Request::post(uri.clone())
        .header("host", &host)
        .header("content-type", "application/json")
        .header("user-agent", concat!("chat-local/", env!("CARGO_PKG_VERSION")));
    for (name, value) in instructions.headers() {
        request = request.header(name, value);
    }
    let request = request.body(Full::new(Bytes::from(body))).context("building the request")?;
    let client = chat_aws::http_client::http_client::<Full<Bytes>>().context("reading the system's TLS roots")?;
    let response = client.request(request).await.with_context(|| format!("cannot reach {url}"))?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.with_context(|| format!("reading the answer of {url}"))?;
    let bytes = bytes.to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok(Answer { status, body })
}

/// What `chat-local publish` prints for an answer: `"<status> <id>"` on
/// success (201 new, 200 a retry of the key), else the error line.
pub fn outcome(answer: &Answer) -> anyhow::Result<String> {
    match (answer.status, answer.body.get("id").and_then(|id| id.as_str())) {
        (200 | 201, Some(id)) => Ok(format!("{} {id}", answer.status)),
        (status, _) => {
            let reason = answer
                .body
                .get("message")
                .and_then(|m| m.as_str())
                .map_or_else(|| answer.body.to_string(), str::to_owned);
            bail!("refused with {status}: {reason}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_and_body_are_the_apis() {
        assert_eq!(url("http://127.0.0.1:8080/", "ops"), "http://127.0.0.1:8080/rooms/ops/messages");
        assert_eq!(url("https://x.example", "a b/c"), "https://x.example/rooms/a%20b%2Fc/messages");
        let publication = Publication {
            endpoint: String::new(),
            room: "ops".into(),
            text: "hi \"there\"".into(),
            user: Some("CI".into()),
            client_message_id: None,
            region: None,
        };
        assert_eq!(body(&publication), r#"{"message":"hi \"there\"","user":"CI"}"#);
    }

    #[test]
    fn answers_print_as_status_and_id_or_the_reason() {
        let answer = |status, body: serde_json::Value| Answer { status, body };
        assert_eq!(outcome(&answer(201, serde_json::json!({"id": "m1"}))).unwrap(), "201 m1");
        assert_eq!(outcome(&answer(200, serde_json::json!({"id": "m1"}))).unwrap(), "200 m1");
        let refused = outcome(&answer(403, serde_json::json!({"message": "Missing Authentication Token"})));
        assert_eq!(refused.unwrap_err().to_string(), "refused with 403: Missing Authentication Token");
    }
}
