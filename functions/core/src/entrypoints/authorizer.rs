//! The optional `$connect` REQUEST authorizer: an HS256 JWT in the query
//! parameter `Authorization` allows the connection, anything else denies it (403).

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerPolicy, ApiGatewayCustomAuthorizerRequestTypeRequest, ApiGatewayCustomAuthorizerResponse,
};
use aws_lambda_events::iam::{IamPolicyEffect, IamPolicyStatement};

use crate::auth::verify_bearer;

/// Allows or denies invoking `methodArn` (the `$connect` route) at `now` (epoch seconds).
pub fn on_authorize(
    event: &ApiGatewayCustomAuthorizerRequestTypeRequest,
    secret: &[u8],
    now: i64,
) -> ApiGatewayCustomAuthorizerResponse {
    let token = event.query_string_parameters.first("Authorization");
    let (effect, principal) = match verify_bearer(token, secret, now) {
        Ok(claims) => (IamPolicyEffect::Allow, claims.subject.unwrap_or_else(|| "anonymous".into())),
        Err(error) => {
            tracing::info!(%error, "connection refused by the authorizer");
            (IamPolicyEffect::Deny, "unauthorized".into())
        }
    };
    let mut statement = IamPolicyStatement::default();
    statement.action = vec!["execute-api:Invoke".into()];
    statement.effect = effect;
    statement.resource = vec![event.method_arn.clone().unwrap_or_default()];
    let mut policy = ApiGatewayCustomAuthorizerPolicy::default();
    policy.version = Some("2012-10-17".into());
    policy.statement = vec![statement];
    let mut response = ApiGatewayCustomAuthorizerResponse::default();
    response.principal_id = Some(principal);
    response.policy_document = policy;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::sign_hs256;

    const SECRET: &[u8] = b"a-test-secret-that-is-32-bytes!!";
    const ARN: &str = "arn:aws:execute-api:us-east-1:123456789012:a1b2c3d4e5/dev/$connect";

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

    #[test]
    fn a_valid_bearer_token_allows_the_connection() {
        let token = sign_hs256(&serde_json::json!({"sub":"alice","exp":2_000}), SECRET);
        let response = on_authorize(&event(Some(&format!("Bearer {token}"))), SECRET, 1_000);
        assert_eq!(effect_and_principal(&response), ("Allow".into(), "alice".into()));
    }

    #[test]
    fn anything_else_denies_it() {
        let expired = format!("Bearer {}", sign_hs256(&serde_json::json!({"exp":999}), SECRET));
        for authorization in [None, Some("Bearer nonsense"), Some(expired.as_str())] {
            let response = on_authorize(&event(authorization), SECRET, 1_000);
            assert_eq!(effect_and_principal(&response).0, "Deny", "{authorization:?}");
        }
    }
}
