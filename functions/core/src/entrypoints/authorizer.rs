//! The optional `$connect` REQUEST authorizer: a JWT in the query parameter
//! `Authorization` that the [`Verifier`] accepts allows the connection, anything
//! else denies it (403). An Allow carries the principal: `principalId` and the
//! context's `userId` are the issuer-qualified subject (`"<iss>|<sub>"`, the
//! account), `name` the display label, `verified` true, `rights` the compact
//! rights ([`crate::rights`]) and `rooms` the token's rooms, comma-separated;
//! API Gateway repeats them in `requestContext.authorizer` of every later event
//! of the connection (8 KB in all: each part is capped to fit).

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerPolicy, ApiGatewayCustomAuthorizerRequestTypeRequest, ApiGatewayCustomAuthorizerResponse,
};
use aws_lambda_events::iam::{IamPolicyEffect, IamPolicyStatement};

use crate::auth::Verifier;

/// Allows or denies invoking `methodArn` (the `$connect` route) at `now` (epoch seconds).
pub async fn on_authorize(
    event: &ApiGatewayCustomAuthorizerRequestTypeRequest,
    verifier: &Verifier,
    now: i64,
) -> ApiGatewayCustomAuthorizerResponse {
    let token = event.query_string_parameters.first("Authorization");
    let mut response = ApiGatewayCustomAuthorizerResponse::default();
    let effect = match verifier.verify(token, now).await {
        Ok(principal) => {
            tracing::info!(user_id = %principal.user_id, name = %principal.name, "connection allowed");
            // Context values must be strings, numbers or booleans (no objects).
            response.context = serde_json::json!({
                "name": principal.name,
                "verified": principal.verified,
                "userId": principal.user_id,
                "rights": principal.rights.to_string(),
            });
            // `$connect` subscribes to these; room names hold no commas.
            if !principal.rooms.is_empty() {
                response.context["rooms"] = principal.rooms.join(",").into();
            }
            response.principal_id = Some(principal.user_id);
            IamPolicyEffect::Allow
        }
        Err(error) => {
            tracing::info!(%error, "connection refused by the authorizer");
            response.principal_id = Some("unauthorized".into());
            IamPolicyEffect::Deny
        }
    };
    let mut statement = IamPolicyStatement::default();
    statement.action = vec!["execute-api:Invoke".into()];
    statement.effect = effect;
    statement.resource = vec![event.method_arn.clone().unwrap_or_default()];
    let mut policy = ApiGatewayCustomAuthorizerPolicy::default();
    policy.version = Some("2012-10-17".into());
    policy.statement = vec![statement];
    response.policy_document = policy;
    response
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    use super::*;
    use crate::auth::{SharedSecret, VerifierConfig};
    use crate::memory::MemoryJwks;

    const SECRET: &[u8] = b"a-test-secret-that-is-32-bytes!!";
    const ARN: &str = "arn:aws:execute-api:us-east-1:123456789012:a1b2c3d4e5/dev/$connect";

    fn verifier() -> Verifier {
        Verifier::new(VerifierConfig::with_shared_secret(SharedSecret::new(SECRET)), Arc::new(MemoryJwks::default()))
    }

    fn sign(claims: serde_json::Value) -> String {
        let key = EncodingKey::from_secret(SECRET).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
    }

    fn event(authorization: Option<&str>) -> ApiGatewayCustomAuthorizerRequestTypeRequest {
        let query = authorization.map(|a| serde_json::json!({ "Authorization": a })).unwrap_or_default();
        serde_json::from_value(serde_json::json!({
            "type": "REQUEST",
            "methodArn": ARN,
            "queryStringParameters": query,
            "requestContext": { "routeKey": "$connect", "eventType": "CONNECT", "stage": "dev", "apiId": "a1b2c3d4e5" }
        }))
        .unwrap()
    }

    fn effect_and_principal(response: &ApiGatewayCustomAuthorizerResponse) -> (serde_json::Value, String) {
        let json = serde_json::to_value(response).unwrap();
        let statement = &json["policyDocument"]["Statement"][0];
        assert_eq!(statement["Resource"], serde_json::json!([ARN]));
        assert_eq!(statement["Action"], serde_json::json!(["execute-api:Invoke"]));
        (statement["Effect"].clone(), json["principalId"].as_str().unwrap().to_owned())
    }

    #[tokio::test]
    async fn a_valid_bearer_token_allows_the_connection_with_the_name_in_context() {
        let token = sign(serde_json::json!({"sub":"u-1","preferred_username":"alice","exp":2_000}));
        let response = on_authorize(&event(Some(&format!("Bearer {token}"))), &verifier(), 1_000).await;
        assert_eq!(effect_and_principal(&response), ("Allow".into(), "local|u-1".into()));
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(
            json["context"],
            serde_json::json!({"name": "alice", "verified": true, "userId": "local|u-1", "rights": "*=rw"})
        );
    }

    #[tokio::test]
    async fn the_tokens_rooms_travel_in_the_context_as_one_string() {
        let rooms = serde_json::json!(["team-a", "ops", "team-a", "no good", 7, "dev"]);
        let token = sign(serde_json::json!({"sub":"u-1","exp":2_000,"chat":{"rooms":rooms}}));
        let response = on_authorize(&event(Some(&format!("Bearer {token}"))), &verifier(), 1_000).await;
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(json["context"]["rooms"], "team-a,ops,dev", "valid names, each once; the rest left out");
        let odd = sign(serde_json::json!({"sub":"u-1","exp":2_000,"chat":{"rooms":"ops"}}));
        let response = on_authorize(&event(Some(&format!("Bearer {odd}"))), &verifier(), 1_000).await;
        assert_eq!(effect_and_principal(&response).0, "Allow", "a malformed claim does not lock the user out");
        assert!(serde_json::to_value(&response).unwrap()["context"].get("rooms").is_none());
    }

    #[tokio::test]
    async fn the_tokens_rights_travel_in_the_context_compactly_and_a_bad_claim_denies() {
        let rights = serde_json::json!({"lobby":"rw","team-*":"rw","announcements":"r","mods":"rwm"});
        let token = sign(serde_json::json!({"sub":"u-1","exp":2_000,"chat":{"rights":rights}}));
        let response = on_authorize(&event(Some(&format!("Bearer {token}"))), &verifier(), 1_000).await;
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(json["context"]["rights"], "announcements=r;lobby=rw;mods=rwm;team-*=rw");
        let bad = sign(serde_json::json!({"sub":"u-1","exp":2_000,"chat":{"rights":{"lobby":"all"}}}));
        let response = on_authorize(&event(Some(&format!("Bearer {bad}"))), &verifier(), 1_000).await;
        assert_eq!(effect_and_principal(&response).0, "Deny", "a grant that cannot be read may have been a limit");
    }

    #[tokio::test]
    async fn anything_else_denies_it_without_context() {
        let expired = format!("Bearer {}", sign(serde_json::json!({"sub":"u-1","exp":900})));
        let no_subject = format!("Bearer {}", sign(serde_json::json!({"preferred_username":"alice","exp":2_000})));
        for authorization in [None, Some("Bearer nonsense"), Some(expired.as_str()), Some(no_subject.as_str())] {
            let response = on_authorize(&event(authorization), &verifier(), 1_000).await;
            assert_eq!(effect_and_principal(&response).0, "Deny", "{authorization:?}");
            assert!(response.context.is_null(), "a denial names nobody");
        }
    }
}
