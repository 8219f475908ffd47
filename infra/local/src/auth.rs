//! The `$connect` authorizer, locally: the Lambda's own entrypoint
//! ([`authorizer::on_authorize`]) runs on every upgrade, and its answer is
//! handled as API Gateway handles it: no `Authorization` query parameter → 401
//! without invoking it, a Deny → 403, an Allow → its `principalId` and context go
//! into the `$connect` event and every later event of the connection.
//!
//! With a shared secret on a loopback address there is also a development
//! sign-in: `POST /dev/token` mints a short-lived HS256 token for a typed name,
//! and `/login.html` (the page that calls it) is served. For trying rights by
//! hand, the request may also give the token's `chat.rights` claim
//! (`"rights":{"*":"rw","mods":"rwm"}`) and its `cognito:groups`
//! (`"groups":["moderators"]`, mapped by `--group-rights`).

use std::collections::HashMap;
use std::sync::Arc;

use aws_lambda_events::apigw::{ApiGatewayCustomAuthorizerRequestTypeRequest, ApiGatewayCustomAuthorizerResponse};
use aws_lambda_events::iam::IamPolicyEffect;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chat_core::auth::{Verifier, VerifierConfig};
use chat_core::entrypoints::authorizer;
use chat_core::identity::chosen_identity;
use serde_json::{Value, json};

use crate::AppState;
use crate::events::ConnectionContext;

/// The identity source API Gateway is configured with (`route.request.querystring.Authorization`).
pub const IDENTITY_SOURCE: &str = "Authorization";
/// How long a development token lives, seconds.
pub const DEV_TOKEN_SECONDS: i64 = 3600;

/// What the stack's authorizer trusts, and whether it hands out development tokens.
#[derive(Clone, Debug)]
pub struct AuthSettings {
    pub verifier: VerifierConfig,
    /// Mint HS256 tokens at `/dev/token` (needs the shared secret; loopback only).
    pub dev_signin: bool,
}

/// The upgrade's identity check, as API Gateway's REQUEST authorizer does it.
pub struct Authorizer {
    verifier: Verifier,
    dev_signin: bool,
}

/// An upgrade the authorizer turned away, with the status API Gateway answers.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No identity source: 401, and the authorizer never ran.
    Unauthorized,
    /// The authorizer denied (or failed): 403.
    Forbidden,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Refusal::Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            Refusal::Forbidden => (StatusCode::FORBIDDEN, "Forbidden"),
        };
        (status, Json(json!({ "message": message }))).into_response()
    }
}

impl Authorizer {
    pub fn new(settings: AuthSettings) -> std::io::Result<Self> {
        let jwks = Arc::new(chat_aws::HttpJwks::new()?);
        let dev_signin = settings.dev_signin && settings.verifier.shared_secret.is_some();
        Ok(Self { verifier: Verifier::new(settings.verifier, jwks), dev_signin })
    }

    /// Whether `/dev/token` and `/login.html` exist.
    pub fn dev_signin(&self) -> bool {
        self.dev_signin
    }

    /// Runs the authorizer for an upgrade; an Allow gives the fields of
    /// `requestContext.authorizer` (`principalId` plus the context).
    pub async fn authorize(
        &self,
        context: &ConnectionContext,
        query: &[(String, String)],
        headers: &HeaderMap,
    ) -> Result<HashMap<String, Value>, Refusal> {
        let has_identity = query.iter().any(|(key, value)| key == IDENTITY_SOURCE && !value.trim().is_empty());
        if !has_identity {
            return Err(Refusal::Unauthorized);
        }
        let request = request_event(context, query, headers);
        let response = authorizer::on_authorize(&request, &self.verifier, chrono::Utc::now().timestamp()).await;
        allowed_fields(response).ok_or(Refusal::Forbidden)
    }

    /// A development token for `name`: HS256 with the stack's secret.
    pub fn mint(&self, name: &str, now: i64) -> Option<(String, i64)> {
        self.mint_with(name, &DevClaims::default(), now)
    }

    /// [`Authorizer::mint`] with the rights and groups asked for.
    pub fn mint_with(&self, name: &str, extra: &DevClaims, now: i64) -> Option<(String, i64)> {
        let secret = self.verifier.config().shared_secret.as_ref().filter(|_| self.dev_signin)?;
        let exp = now + DEV_TOKEN_SECONDS;
        let mut claims = json!({ "sub": format!("dev:{name}"), "preferred_username": name, "iat": now, "exp": exp });
        if let Some(rights) = &extra.rights {
            claims["chat"] = json!({ "rights": rights });
        }
        if let Some(groups) = &extra.groups {
            claims["cognito:groups"] = json!(groups);
        }
        if let Some(issuer) = &secret.issuer {
            claims["iss"] = issuer.as_str().into();
        }
        if let Some(audience) = secret.audience.first() {
            claims["aud"] = audience.as_str().into();
        }
        let key = jsonwebtoken::EncodingKey::from_secret(&secret.secret).ok()?;
        let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).ok()?;
        Some((token, exp))
    }
}

/// What a development token may carry besides the name, as a user pool or a
/// pre-token-generation trigger would put it there.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DevClaims {
    /// The `chat.rights` claim, checked as the authorizer will read it.
    pub rights: Option<Value>,
    /// The `cognito:groups` claim.
    pub groups: Option<Vec<String>>,
}

impl DevClaims {
    /// The `rights` and `groups` of a `/dev/token` request; a value the
    /// authorizer would refuse is refused here, with its reason.
    fn from_request(request: &Value) -> Result<Self, String> {
        let rights = match request.get("rights") {
            None | Some(Value::Null) => None,
            Some(claim) => {
                chat_core::rights::Rights::from_claim(claim).map_err(|e| e.to_string())?;
                Some(claim.clone())
            }
        };
        let groups = match request.get("groups") {
            None | Some(Value::Null) => None,
            Some(Value::Array(listed)) => Some(
                listed
                    .iter()
                    .map(|g| g.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or("groups must be a list of group names")?,
            ),
            Some(_) => return Err("groups must be a list of group names".into()),
        };
        Ok(Self { rights, groups })
    }
}

/// The REQUEST authorizer's event, as API Gateway builds it for `$connect`.
fn request_event(
    context: &ConnectionContext,
    query: &[(String, String)],
    headers: &HeaderMap,
) -> ApiGatewayCustomAuthorizerRequestTypeRequest {
    let single = |pairs: &mut dyn Iterator<Item = (String, String)>| {
        pairs.fold(serde_json::Map::new(), |mut map, (key, value)| {
            map.entry(key).or_insert(value.into());
            map
        })
    };
    let mut headers = headers.iter().filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())));
    let event = json!({
        "type": "REQUEST",
        "methodArn": format!("arn:aws:execute-api:local:000000000000:{}/{}/$connect", context.api_id, context.stage),
        "queryStringParameters": single(&mut query.iter().cloned()),
        "headers": single(&mut headers),
        "requestContext": {
            "routeKey": "$connect",
            "eventType": "CONNECT",
            "stage": context.stage,
            "apiId": context.api_id,
            "connectionId": context.connection_id,
            "identity": { "sourceIp": context.source_ip },
        },
    });
    // The shape is aws_lambda_events' own; only strings are put in, so it always fits.
    serde_json::from_value(event).unwrap_or_default()
}

/// `principalId` and the context of an Allow; `None` for anything else.
fn allowed_fields(response: ApiGatewayCustomAuthorizerResponse) -> Option<HashMap<String, Value>> {
    let allowed = response.policy_document.statement.iter().any(|s| s.effect == IamPolicyEffect::Allow);
    let denied = response.policy_document.statement.iter().any(|s| s.effect == IamPolicyEffect::Deny);
    if !allowed || denied {
        return None;
    }
    let mut fields: HashMap<String, Value> = match response.context {
        Value::Object(context) => context.into_iter().collect(),
        _ => HashMap::new(),
    };
    fields.insert("principalId".into(), response.principal_id.unwrap_or_default().into());
    Some(fields)
}

/// `POST /dev/token` with `{"name": "…", "rights"?: {…}, "groups"?: […]}` → `{"token", "exp", "name"}`.
/// Only the stack's own page (or an `--allowed-origin`) may ask: another site's
/// page could otherwise mint a verified token for any name.
pub async fn dev_token(
    State(app): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(authorizer) = app.authorizer.as_ref().filter(|a| a.dev_signin()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Err(refusal) = app.same_origin.check_origin(&headers, &uri) {
        return refusal.into_response();
    }
    let bad = |message: &str| (StatusCode::BAD_REQUEST, Json(json!({ "message": message }))).into_response();
    let Ok(request) = serde_json::from_slice::<Value>(&body) else { return bad("Send JSON: {\"name\": \"…\"}.") };
    let name = match chosen_identity(request["name"].as_str()) {
        Ok(Some(identity)) => identity.user,
        Ok(None) => return bad("Send JSON: {\"name\": \"…\"}."),
        Err(error) => return bad(&error.to_string()),
    };
    let extra = match DevClaims::from_request(&request) {
        Ok(extra) => extra,
        Err(reason) => return bad(&reason),
    };
    match authorizer.mint_with(&name, &extra, chrono::Utc::now().timestamp()) {
        Some((token, exp)) => Json(json!({ "token": token, "exp": exp, "name": name })).into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `GET /config.json`: what the web page needs to know to sign in.
pub fn page_config(authorizer: Option<&Authorizer>) -> Value {
    let Some(authorizer) = authorizer else { return json!({ "auth": "none" }) };
    if authorizer.dev_signin() {
        return json!({ "auth": "dev", "loginUrl": "/login.html" });
    }
    match authorizer.verifier.config().issuers.first() {
        Some(issuer) => json!({
            "auth": "oidc",
            "issuer": issuer.issuer,
            "clientId": issuer.audience.first(),
            "scope": "openid profile email",
        }),
        // A shared secret off loopback: tokens come from elsewhere; the page can only use one it has.
        None => json!({ "auth": "token" }),
    }
}

#[cfg(test)]
mod tests {
    use chat_core::auth::SharedSecret;

    use super::*;

    const SECRET: &[u8] = b"a-test-secret-that-is-32-bytes!!";

    fn context() -> ConnectionContext {
        ConnectionContext {
            connection_id: "CXzQ2cJjoAMCJ6g=".into(),
            connected_at_ms: 0,
            source_ip: "127.0.0.1".into(),
            user_agent: String::new(),
            api_id: "local".into(),
            stage: "dev".into(),
            domain_name: String::new(),
            authorizer: HashMap::new(),
        }
    }

    fn authorizer(dev_signin: bool) -> Authorizer {
        let verifier = VerifierConfig::with_shared_secret(SharedSecret::new(SECRET));
        Authorizer::new(AuthSettings { verifier, dev_signin }).unwrap()
    }

    fn query(authorization: &str) -> Vec<(String, String)> {
        vec![("room".into(), "lobby".into()), (IDENTITY_SOURCE.into(), authorization.into())]
    }

    #[tokio::test]
    async fn no_identity_source_is_401_a_denial_403_an_allow_gives_the_context() {
        let auth = authorizer(true);
        let headers = HeaderMap::new();
        assert_eq!(auth.authorize(&context(), &[], &headers).await, Err(Refusal::Unauthorized));
        assert_eq!(auth.authorize(&context(), &query("  "), &headers).await, Err(Refusal::Unauthorized));
        assert_eq!(auth.authorize(&context(), &query("Bearer nonsense"), &headers).await, Err(Refusal::Forbidden));

        let (token, exp) = auth.mint("Ada", chrono::Utc::now().timestamp()).unwrap();
        assert!(exp > chrono::Utc::now().timestamp());
        let fields = auth.authorize(&context(), &query(&format!("Bearer {token}")), &headers).await.unwrap();
        let expected: HashMap<String, Value> = HashMap::from([
            ("principalId".into(), "local|dev:Ada".into()),
            ("name".into(), "Ada".into()),
            ("verified".into(), true.into()),
            ("userId".into(), "local|dev:Ada".into()),
            ("rights".into(), "*=rw".into()),
        ]);
        assert_eq!(fields, expected);
    }

    #[tokio::test]
    async fn the_tokens_rooms_reach_the_connect_event_in_the_context() {
        let now = chrono::Utc::now().timestamp();
        let claims = json!({"sub": "ada", "exp": now + 60, "chat": {"rooms": ["team", "ops"]}});
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET).unwrap();
        let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
        let auth = authorizer(false);
        let fields = auth.authorize(&context(), &query(&format!("Bearer {token}")), &HeaderMap::new()).await.unwrap();
        assert_eq!(fields["rooms"], "team,ops", "as API Gateway passes it to $connect");
    }

    /// A development sign-in whose tokens must carry `iss` and one of two audiences.
    fn pinned(issuer: &str, audience: &str) -> Authorizer {
        let mut shared = SharedSecret::new(SECRET);
        shared.issuer = Some(issuer.into());
        shared.audience = vec![audience.into(), "mobile".into()];
        Authorizer::new(AuthSettings { verifier: VerifierConfig::with_shared_secret(shared), dev_signin: true })
            .unwrap()
    }

    #[tokio::test]
    async fn a_pinned_issuer_and_audience_are_in_minted_tokens_and_required_of_all() {
        let (auth, headers, now) = (pinned("chat-local", "web"), HeaderMap::new(), chrono::Utc::now().timestamp());
        let bearer = |token: String| query(&format!("Bearer {token}"));
        let (token, _) = auth.mint("Ada", now).unwrap();
        assert!(auth.authorize(&context(), &bearer(token), &headers).await.is_ok(), "its own tokens pass");
        // The same secret, but another issuer, another audience, or neither.
        for other in [pinned("elsewhere", "web"), pinned("chat-local", "app"), authorizer(true)] {
            let (foreign, _) = other.mint("Ada", now).unwrap();
            assert_eq!(auth.authorize(&context(), &bearer(foreign), &headers).await, Err(Refusal::Forbidden));
        }
    }

    #[tokio::test]
    async fn a_development_token_carries_the_rights_and_groups_asked_for() {
        let mut verifier = VerifierConfig::with_shared_secret(SharedSecret::new(SECRET));
        verifier.default_rights = chat_core::rights::Rights::parse("lobby=rw").unwrap();
        verifier.group_rights = chat_core::auth::GroupRights::parse("mods:*=rwm", &verifier.default_rights).unwrap();
        let auth = Authorizer::new(AuthSettings { verifier, dev_signin: true }).unwrap();
        let rights_of = |request: Value| {
            let auth = &auth;
            async move {
                let extra = DevClaims::from_request(&request)?;
                let (token, _) = auth.mint_with("Ada", &extra, chrono::Utc::now().timestamp()).unwrap();
                let fields = auth.authorize(&context(), &query(&format!("Bearer {token}")), &HeaderMap::new()).await;
                Ok::<_, String>(fields.unwrap()["rights"].clone())
            }
        };
        assert_eq!(rights_of(json!({"name": "Ada"})).await, Ok(json!("lobby=rw")), "the default");
        assert_eq!(rights_of(json!({"rights": {"ops": "r"}})).await, Ok(json!("ops=r")));
        assert_eq!(rights_of(json!({"groups": ["mods"]})).await, Ok(json!("lobby=rwm;*=rwm")));
        for bad in [json!({"rights": {"ops": "rx"}}), json!({"rights": ["ops"]}), json!({"groups": "mods"})] {
            assert!(rights_of(bad.clone()).await.is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_are_minted_only_for_dev_signin() {
        assert!(authorizer(false).mint("Ada", 0).is_none());
        assert_eq!(page_config(Some(&authorizer(false))), json!({"auth": "token"}));
        assert_eq!(page_config(Some(&authorizer(true))), json!({"auth": "dev", "loginUrl": "/login.html"}));
        assert_eq!(page_config(None), json!({"auth": "none"}));
    }
}
