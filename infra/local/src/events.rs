//! Builds the exact `ApiGatewayWebsocketProxyRequest` API Gateway would deliver.

use std::collections::HashMap;

use aws_lambda_events::apigw::{ApiGatewayWebsocketProxyRequest, ApiGatewayWebsocketProxyRequestContext};
use axum::http::HeaderMap;
use base64::Engine;
use chrono::{TimeZone, Utc};

/// An id in API Gateway's shape: 11 random bytes, base64, e.g. `L0SM9cOFvHcCIhw=`.
pub fn aws_id() -> String {
    let bytes: [u8; 11] = std::array::from_fn(|_| fastrand::u8(..));
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Epoch milliseconds now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// `24/Nov/2026:10:15:30 +0000`, the CLF `requestTime`.
pub fn clf_time(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default().format("%d/%b/%Y:%H:%M:%S %z").to_string()
}

/// What stays the same for every event of one connection.
#[derive(Clone, Debug)]
pub struct ConnectionContext {
    pub connection_id: String,
    pub connected_at_ms: i64,
    pub source_ip: String,
    pub user_agent: String,
    pub api_id: String,
    pub stage: String,
    pub domain_name: String,
    /// What the `$connect` authorizer returned (`principalId` and its context):
    /// API Gateway attaches it to every event of the connection.
    pub authorizer: HashMap<String, serde_json::Value>,
}

/// The route an event is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Connect { headers: HeaderMap, query: Vec<(String, String)> },
    Message { route_key: String, body: String },
    Disconnect { status_code: u16, reason: String },
}

/// One event, as Lambda receives it.
pub fn websocket_event(context: &ConnectionContext, route: Route) -> ApiGatewayWebsocketProxyRequest {
    let now = now_ms();
    let request_id = aws_id();
    let mut rc = ApiGatewayWebsocketProxyRequestContext::default();
    rc.stage = Some(context.stage.clone());
    rc.request_id = Some(request_id.clone());
    rc.extended_request_id = Some(request_id);
    rc.apiid = Some(context.api_id.clone());
    rc.connected_at = context.connected_at_ms;
    rc.connection_id = Some(context.connection_id.clone());
    rc.domain_name = Some(context.domain_name.clone());
    rc.message_direction = Some("IN".into());
    rc.request_time = Some(clf_time(now));
    rc.request_time_epoch = now;
    rc.identity.source_ip = Some(context.source_ip.clone());
    rc.identity.user_agent = Some(context.user_agent.clone());
    rc.authorizer.fields = context.authorizer.clone();

    let mut event = ApiGatewayWebsocketProxyRequest::default();
    match route {
        Route::Connect { headers, query } => {
            rc.route_key = Some("$connect".into());
            rc.event_type = Some("CONNECT".into());
            event.multi_value_headers = headers.clone();
            event.headers = headers;
            let mut single = HashMap::<String, Vec<String>>::new();
            for (key, value) in query {
                single.entry(key).or_default().push(value);
            }
            event.query_string_parameters = single.clone().into();
            event.multi_value_query_string_parameters = single.into();
        }
        Route::Message { route_key, body } => {
            rc.route_key = Some(route_key);
            rc.event_type = Some("MESSAGE".into());
            rc.message_id = Some(aws_id());
            event.body = Some(body);
        }
        Route::Disconnect { status_code, reason } => {
            rc.route_key = Some("$disconnect".into());
            rc.event_type = Some("DISCONNECT".into());
            rc.disconnect_status_code = Some(status_code.into());
            rc.disconnect_reason = Some(reason);
        }
    }
    event.request_context = rc;
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_look_like_api_gateway_ids() {
        let id = aws_id();
        assert_eq!(id.len(), 16);
        assert!(id.ends_with('='));
    }

    #[test]
    fn request_time_is_clf() {
        assert_eq!(clf_time(1_795_515_330_123), "24/Nov/2026:10:15:30 +0000");
    }

    #[test]
    fn events_serialize_in_the_lambda_shape() {
        let context = ConnectionContext {
            connection_id: "CXzQ2cJjoAMCJ6g=".into(),
            connected_at_ms: 1_795_515_330_123,
            source_ip: "127.0.0.1".into(),
            user_agent: "test".into(),
            api_id: "local".into(),
            stage: "dev".into(),
            domain_name: "127.0.0.1:8080".into(),
            authorizer: HashMap::from([("principalId".to_owned(), "sub-1".into()), ("name".to_owned(), "ada".into())]),
        };
        let body = r#"{"action":"sendmessage","message":"hi"}"#.to_owned();
        let event = websocket_event(&context, Route::Message { route_key: "sendmessage".into(), body });
        let json = serde_json::to_value(&event).unwrap();
        let rc = &json["requestContext"];
        assert_eq!(rc["eventType"], "MESSAGE");
        assert_eq!(rc["connectionId"], "CXzQ2cJjoAMCJ6g=");
        assert_eq!(rc["apiId"], "local");
        assert_eq!(rc["connectedAt"], 1_795_515_330_123_i64);
        assert!(rc["requestTimeEpoch"].is_i64());
        assert_eq!(rc["requestId"], rc["extendedRequestId"]);
        assert_eq!(rc["identity"]["sourceIp"], "127.0.0.1");
        assert_eq!(json["body"], r#"{"action":"sendmessage","message":"hi"}"#);
        assert_eq!(rc["authorizer"], serde_json::json!({"principalId": "sub-1", "name": "ada"}), "on every event");
    }
}
