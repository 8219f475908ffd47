//! AWS Signature Version 4 on the @connections API, checked the way API Gateway
//! checks an IAM-authorized `execute-api` call: the expected signature is
//! computed by `aws-sigv4` (the SDKs' own signer) from the request as received,
//! and every refusal is API Gateway's 403 with its error type and message.

use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::config::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use axum::http::{HeaderMap, Method, Uri, header};
use chrono::{DateTime, NaiveDateTime, Utc};

/// The fake pair the README, the SDK examples and the tests use.
pub const DEFAULT_ACCESS_KEY_ID: &str = "test";
/// See [`DEFAULT_ACCESS_KEY_ID`].
pub const DEFAULT_SECRET_ACCESS_KEY: &str = "test";

/// How far a request's `X-Amz-Date` may be from this clock, either way.
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

/// The service name a request must be signed for.
const SERVICE: &str = "execute-api";
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const AMZ_DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// The one key pair the @connections API accepts.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
}

impl AccessKey {
    /// `true` for the well-known `test`/`test` pair, which protects nothing.
    pub fn is_default(&self) -> bool {
        self.id == DEFAULT_ACCESS_KEY_ID && self.secret == DEFAULT_SECRET_ACCESS_KEY
    }
}

impl Default for AccessKey {
    fn default() -> Self {
        Self { id: DEFAULT_ACCESS_KEY_ID.into(), secret: DEFAULT_SECRET_ACCESS_KEY.into() }
    }
}

// The secret never reaches a log line.
impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey").field("id", &self.id).field("secret", &"** redacted **").finish()
    }
}

/// Why a request was refused; each is a 403 with [`SignatureError::error_type`]
/// in `x-amzn-ErrorType` and the `Display` text as the message, as API Gateway answers.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `Authorization` header at all.
    #[error("Missing Authentication Token")]
    Missing,
    /// An `Authorization` header that is not a complete SigV4 one.
    #[error("{0}")]
    Incomplete(String),
    /// A key id other than the configured one.
    #[error("The security token included in the request is invalid.")]
    UnknownKey,
    /// Signed long enough ago (or ahead) that it may be a replay.
    #[error("Signature expired: {signed} is now earlier than {earliest} ({now} - 5 min.)")]
    Expired { signed: String, earliest: String, now: String },
    #[error("Signature not yet current: {signed} is still later than {latest} ({now} + 5 min.)")]
    NotYetCurrent { signed: String, latest: String, now: String },
    #[error("Credential should be scoped to correct service: 'execute-api'. ")]
    WrongService,
    /// Signed for another region than the stack's (the credential scope's region).
    #[error("Credential should be scoped to a valid region, not '{0}'. ")]
    WrongRegion(String),
    /// `host` is not among the signed headers: the signature would fit any server.
    #[error("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")]
    HostNotSigned,
    /// `x-amz-date` is not among the signed headers: the signing time could be replaced.
    #[error("'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization.")]
    DateNotSigned,
    /// Anything signed differently from what the configured secret gives.
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
    )]
    Mismatch,
}

impl SignatureError {
    /// The `x-amzn-ErrorType` the SDKs classify the refusal by.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Missing => "MissingAuthenticationTokenException",
            Self::Incomplete(_) | Self::HostNotSigned | Self::DateNotSigned => "IncompleteSignatureException",
            Self::UnknownKey => "UnrecognizedClientException",
            Self::Expired { .. }
            | Self::NotYetCurrent { .. }
            | Self::WrongService
            | Self::WrongRegion(_)
            | Self::Mismatch => "InvalidSignatureException",
        }
    }
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…` header.
#[derive(Debug, PartialEq, Eq)]
struct Authorization<'a> {
    key_id: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, SignatureError> {
    let incomplete =
        |what: &str| SignatureError::Incomplete(format!("Authorization header requires {what}. Authorization={value}"));
    let parameters =
        value.strip_prefix(ALGORITHM).ok_or_else(|| incomplete(&format!("the '{ALGORITHM}' algorithm")))?;
    let parameter =
        |name: &str| parameters.split(',').find_map(|part| part.trim().strip_prefix(name)?.strip_prefix('='));
    let credential = parameter("Credential").ok_or_else(|| incomplete("'Credential' parameter"))?;
    let signed_headers = parameter("SignedHeaders").ok_or_else(|| incomplete("'SignedHeaders' parameter"))?;
    let signature = parameter("Signature").ok_or_else(|| incomplete("'Signature' parameter"))?;
    // KEY/DATE/REGION/SERVICE/aws4_request
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, _date, region, service, "aws4_request"] = scope[..] else {
        return Err(incomplete("a 'Credential' of the form KEY/DATE/REGION/SERVICE/aws4_request"));
    };
    let signed_headers: Vec<&str> = signed_headers.split(';').collect();
    // Both are what make a signature this request's: without `host` it fits any
    // server, without `x-amz-date` any time. (The SDKs always sign both.)
    if !signed_headers.contains(&"host") {
        return Err(SignatureError::HostNotSigned);
    }
    if !signed_headers.contains(&"x-amz-date") {
        return Err(SignatureError::DateNotSigned);
    }
    Ok(Authorization { key_id, region, service, signed_headers, signature })
}

/// The request's signing time, checked against `now` within [`MAX_SKEW`].
fn signing_time(headers: &HeaderMap, now: SystemTime) -> Result<SystemTime, SignatureError> {
    let value = headers.get("x-amz-date").and_then(|v| v.to_str().ok()).ok_or_else(|| {
        SignatureError::Incomplete(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.".into(),
        )
    })?;
    let signed = NaiveDateTime::parse_from_str(value, AMZ_DATE_FORMAT)
        .map_err(|_| SignatureError::Incomplete(format!("Date must be in ISO-8601 'basic format'. Got '{value}'.")))?
        .and_utc();
    let now_utc = DateTime::<Utc>::from(now);
    let skew = chrono::Duration::from_std(MAX_SKEW).expect("five minutes fit");
    let stamp = |at: DateTime<Utc>| at.format(AMZ_DATE_FORMAT).to_string();
    if signed < now_utc - skew {
        return Err(SignatureError::Expired {
            signed: stamp(signed),
            earliest: stamp(now_utc - skew),
            now: stamp(now_utc),
        });
    }
    if signed > now_utc + skew {
        return Err(SignatureError::NotYetCurrent {
            signed: stamp(signed),
            latest: stamp(now_utc + skew),
            now: stamp(now_utc),
        });
    }
    Ok(signed.into())
}

/// Checks the request's SigV4 signature against `key` and `region`, with the
/// clock at `now`. Only the header-level checks run here; see
/// [`SignedRequest::verify_signature`] for the body.
pub fn verify_headers<'a>(
    headers: &'a HeaderMap,
    key: &AccessKey,
    region: &str,
    now: SystemTime,
) -> Result<SignedRequest<'a>, SignatureError> {
    let authorization = headers.get(header::AUTHORIZATION).ok_or(SignatureError::Missing)?;
    let authorization =
        authorization.to_str().map_err(|_| SignatureError::Incomplete("Invalid Authorization header.".into()))?;
    let authorization = parse_authorization(authorization)?;
    if authorization.key_id != key.id {
        return Err(SignatureError::UnknownKey);
    }
    if authorization.service != SERVICE {
        return Err(SignatureError::WrongService);
    }
    if authorization.region != region {
        return Err(SignatureError::WrongRegion(authorization.region.to_owned()));
    }
    let time = signing_time(headers, now)?;
    Ok(SignedRequest { headers, authorization, time })
}

/// A request whose headers passed [`verify_headers`]; its body is still to check.
pub struct SignedRequest<'a> {
    headers: &'a HeaderMap,
    authorization: Authorization<'a>,
    time: SystemTime,
}

impl SignedRequest<'_> {
    /// Recomputes the signature over the method, path, query, the headers the
    /// client signed and `body`, and compares it with the one sent.
    pub fn verify_signature(
        &self,
        method: &Method,
        uri: &Uri,
        body: &[u8],
        key: &AccessKey,
    ) -> Result<(), SignatureError> {
        // `host` is always signed (see `parse_authorization`), and its value is
        // always handed to the signer: without one, the signer would take it from
        // the URI, which here has no authority, and panic.
        let host = match self.headers.get(header::HOST) {
            Some(host) => host.to_str().map_err(|_| SignatureError::Mismatch)?,
            // HTTP/2 carries it as `:authority`, in the URI.
            None => uri.authority().map(|a| a.as_str()).ok_or(SignatureError::HostNotSigned)?,
        };
        let mut signed_headers = vec![("host", host)];
        for name in self.authorization.signed_headers.iter().filter(|name| **name != "host") {
            for value in self.headers.get_all(*name) {
                // A header that is not text cannot have been signed as the client meant.
                let value = value.to_str().map_err(|_| SignatureError::Mismatch)?;
                signed_headers.push((*name, value));
            }
        }
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        let request =
            SignableRequest::new(method.as_str(), target, signed_headers.into_iter(), SignableBody::Bytes(body))
                .map_err(|_| SignatureError::Mismatch)?;
        let identity = Credentials::new(&key.id, &key.secret, None, None, "chat-local").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(self.authorization.region)
            .name(SERVICE)
            .time(self.time)
            // The SDKs' settings for execute-api: double-encoded path, normalized.
            .settings(SigningSettings::default())
            .build()
            .map_err(|_| SignatureError::Mismatch)?
            .into();
        let expected = sign(request, &params).map_err(|_| SignatureError::Mismatch)?;
        if same_bytes(expected.signature().as_bytes(), self.authorization.signature.as_bytes()) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// Compares without stopping at the first difference, so timing tells nothing.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGION: &str = "us-east-1";

    fn signed(method: &str, uri: &str, body: &[u8], key: &AccessKey, at: SystemTime) -> HeaderMap {
        signed_for(REGION, method, uri, body, key, at)
    }

    fn signed_for(region: &str, method: &str, uri: &str, body: &[u8], key: &AccessKey, at: SystemTime) -> HeaderMap {
        let identity = Credentials::new(&key.id, &key.secret, None, None, "test").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(SERVICE)
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let host = [("host", "127.0.0.1:8080")];
        let request = SignableRequest::new(method, uri, host.into_iter(), SignableBody::Bytes(body)).unwrap();
        let (instructions, _) = sign(request, &params).unwrap().into_parts();
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        for (name, value) in instructions.headers() {
            headers.insert(axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        headers
    }

    fn check(
        headers: &HeaderMap,
        method: &str,
        uri: &str,
        body: &[u8],
        key: &AccessKey,
        now: SystemTime,
    ) -> Result<(), SignatureError> {
        let uri: Uri = uri.parse().unwrap();
        verify_headers(headers, key, REGION, now)?.verify_signature(&method.parse().unwrap(), &uri, body, key)
    }

    /// `headers` with the `Authorization`'s `SignedHeaders` replaced by `list`.
    fn signing_only(mut headers: HeaderMap, list: &str) -> HeaderMap {
        let authorization = headers[header::AUTHORIZATION].to_str().unwrap();
        assert!(authorization.contains("SignedHeaders=host;x-amz-date,"), "{authorization}");
        let changed = authorization.replace("SignedHeaders=host;x-amz-date,", &format!("SignedHeaders={list},"));
        headers.insert(header::AUTHORIZATION, changed.parse().unwrap());
        headers
    }

    #[test]
    fn host_and_date_must_be_signed_and_the_region_must_be_the_stacks() {
        let key = AccessKey::default();
        let now = SystemTime::now();
        let path = "/dev/@connections/CXzQ2cJjoAMCJ6g%3D";
        let headers = signed("POST", path, b"hi", &key, now);
        for list in ["x-amz-date", "content-type;x-amz-date", "", "Host;x-amz-date"] {
            let refusal = check(&signing_only(headers.clone(), list), "POST", path, b"hi", &key, now).unwrap_err();
            assert_eq!(refusal, SignatureError::HostNotSigned, "{list}");
            assert_eq!(refusal.error_type(), "IncompleteSignatureException");
        }
        let refusal = check(&signing_only(headers.clone(), "host"), "POST", path, b"hi", &key, now).unwrap_err();
        assert_eq!(refusal, SignatureError::DateNotSigned);
        assert_eq!(
            (refusal.error_type(), refusal.to_string().as_str()),
            ("IncompleteSignatureException", "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization.")
        );

        let elsewhere = signed_for("eu-west-1", "POST", path, b"hi", &key, now);
        let refusal = check(&elsewhere, "POST", path, b"hi", &key, now).unwrap_err();
        assert_eq!(
            (refusal.error_type(), refusal.to_string().as_str()),
            ("InvalidSignatureException", "Credential should be scoped to a valid region, not 'eu-west-1'. ")
        );
        let stack_in_eu = verify_headers(&elsewhere, &key, "eu-west-1", now).unwrap();
        assert_eq!(stack_in_eu.verify_signature(&Method::POST, &path.parse().unwrap(), b"hi", &key), Ok(()));
    }

    #[test]
    fn a_request_without_a_host_is_refused_not_a_panic() {
        let key = AccessKey::default();
        let now = SystemTime::now();
        let path = "/dev/@connections/x";
        let mut headers = signed("GET", path, b"", &key, now);
        headers.remove(header::HOST);
        assert_eq!(check(&headers, "GET", path, b"", &key, now), Err(SignatureError::HostNotSigned));
        // HTTP/2: no Host header, the authority in the URI instead.
        let absolute = format!("http://127.0.0.1:8080{path}");
        assert_eq!(check(&headers, "GET", &absolute, b"", &key, now), Ok(()));
    }

    #[test]
    fn what_the_sdk_signer_signs_verifies_and_any_change_does_not() {
        let key = AccessKey::default();
        let now = SystemTime::now();
        let path = "/dev/@connections/CXzQ2cJjoAMCJ6g%3D";
        let headers = signed("POST", path, b"hello", &key, now);
        assert_eq!(check(&headers, "POST", path, b"hello", &key, now), Ok(()));
        assert_eq!(check(&headers, "POST", path, b"hellO", &key, now), Err(SignatureError::Mismatch));
        assert_eq!(check(&headers, "DELETE", path, b"hello", &key, now), Err(SignatureError::Mismatch));
        let other = "/dev/@connections/AAAAAAAAAAAAAAA%3D";
        assert_eq!(check(&headers, "POST", other, b"hello", &key, now), Err(SignatureError::Mismatch));
        let wrong_secret = AccessKey { secret: "not-the-secret".into(), ..AccessKey::default() };
        let forged = signed("POST", path, b"hello", &wrong_secret, now);
        assert_eq!(check(&forged, "POST", path, b"hello", &key, now), Err(SignatureError::Mismatch));
    }

    #[test]
    fn refusals_have_api_gateways_types() {
        let key = AccessKey::default();
        let now = SystemTime::now();
        let path = "/dev/@connections/x";
        let missing = check(&HeaderMap::new(), "GET", path, b"", &key, now).unwrap_err();
        assert_eq!(
            (missing.error_type(), missing.to_string().as_str()),
            ("MissingAuthenticationTokenException", "Missing Authentication Token")
        );

        let stranger = AccessKey { id: "AKIDSTRANGER".into(), ..AccessKey::default() };
        let unknown = check(&signed("GET", path, b"", &stranger, now), "GET", path, b"", &key, now).unwrap_err();
        assert_eq!(unknown.error_type(), "UnrecognizedClientException");

        let stale = signed("GET", path, b"", &key, now - Duration::from_secs(6 * 60));
        let expired = check(&stale, "GET", path, b"", &key, now).unwrap_err();
        assert!(matches!(expired, SignatureError::Expired { .. }), "{expired}");
        assert_eq!(expired.error_type(), "InvalidSignatureException");
        let early = signed("GET", path, b"", &key, now + Duration::from_secs(6 * 60));
        assert!(matches!(check(&early, "GET", path, b"", &key, now), Err(SignatureError::NotYetCurrent { .. })));
        let recent = signed("GET", path, b"", &key, now - Duration::from_secs(4 * 60));
        assert_eq!(check(&recent, "GET", path, b"", &key, now), Ok(()));

        let mut garbled = HeaderMap::new();
        garbled.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        let incomplete = check(&garbled, "GET", path, b"", &key, now).unwrap_err();
        assert_eq!(incomplete.error_type(), "IncompleteSignatureException");
    }

    #[test]
    fn only_the_default_pair_counts_as_default() {
        assert!(AccessKey::default().is_default());
        assert!(!AccessKey { id: "test".into(), secret: "s3cret".into() }.is_default());
        assert!(!format!("{:?}", AccessKey { id: "k".into(), secret: "s3cret".into() }).contains("s3cret"));
    }
}
