//! The deployed Lambda functions, in-process: the route table the SAM template
//! declares, mapped onto the same `chat_core` entrypoints the binaries call.

use std::sync::Arc;

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use chat_core::entrypoints::websocket;
use chat_core::entrypoints::websocket::RouteSettings;
use chat_core::handlers::HandlerError;
use chat_core::ports::{Bans, ConnectionStore, MessageLog, ReadCursors, SessionLog};

use crate::metrics::Invocations;
use crate::sockets::LocalPoster;

/// Custom routes and whether each has a route response (its returned body goes
/// back to the caller). Everything else goes to `$default`. `rooms`, `read`,
/// `unsubscribe` and `typing` are served by the `$default` function too; deployed
/// they are routes of their own only to have a throttle of their own (typing's
/// is set by its fan-out: each signal is a post per member of the room).
pub const ROUTES: &[(&str, bool)] =
    &[("sendmessage", true), ("rooms", false), ("read", false), ("unsubscribe", false), ("typing", false)];

/// The route key API Gateway selects with `$request.body.action`, and whether
/// that route returns its response body to the caller.
pub fn select_route(body: &str) -> (String, bool) {
    let action = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("action").and_then(|a| a.as_str()).map(str::to_owned));
    match action.and_then(|a| ROUTES.iter().find(|(key, _)| *key == a)) {
        Some((key, route_response)) => ((*key).to_owned(), *route_response),
        None => ("$default".to_owned(), false),
    }
}

/// ActiveConnections (with Memberships), SessionHistory, MessageHistory,
/// ReadCursors and Bans, whichever store holds them.
#[derive(Clone)]
pub struct Tables {
    pub connections: Arc<dyn ConnectionStore>,
    pub sessions: Arc<dyn SessionLog>,
    pub log: Arc<dyn MessageLog>,
    pub cursors: Arc<dyn ReadCursors>,
    pub bans: Arc<dyn Bans>,
}

/// The functions and the ports they were given.
#[derive(Clone)]
pub struct Functions {
    pub tables: Tables,
    pub poster: LocalPoster,
    /// How many rooms a connection may hold (`--max-rooms`) and the default
    /// rights (`--default-rights`), as the Lambdas' `MAX_ROOMS_PER_CONNECTION`
    /// and `DEFAULT_RIGHTS`.
    pub routes: RouteSettings,
    /// What every invocation did, for `/metrics`.
    pub invocations: Invocations,
}

impl Functions {
    /// Invokes the function integrated with the event's route.
    pub async fn invoke(
        &self,
        event: &ApiGatewayWebsocketProxyRequest,
    ) -> Result<ApiGatewayProxyResponse, HandlerError> {
        let Tables { connections, sessions, log, cursors, bans } = &self.tables;
        let route = event.request_context.route_key.as_deref().unwrap_or("$default");
        let result = match route {
            // The gateway checks Origin itself (it knows the page's own origin), and
            // the embedded store keeps sessions: the deployment's defaults.
            "$connect" => {
                let settings = websocket::ConnectSettings { routes: self.routes.clone(), ..Default::default() };
                websocket::on_connect(event, &settings, &**connections, &**sessions, &**log, &**bans).await
            }
            "$disconnect" => websocket::on_disconnect(event, &**connections, &**sessions, &**log).await,
            "sendmessage" => websocket::on_send_message(event, &self.routes, &**connections, &**log).await,
            _ => {
                let (connections, cursors, log, bans) = (&**connections, &**cursors, &**log, &**bans);
                websocket::on_default(event, &self.routes, connections, cursors, log, &self.poster, bans).await
            }
        };
        self.invocations.record(route, event, &result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_action_like_api_gateway() {
        assert_eq!(select_route(r#"{"action":"sendmessage","message":"x"}"#), ("sendmessage".into(), true));
        for action in ["rooms", "read", "unsubscribe", "typing"] {
            let body = format!(r#"{{"action":"{action}","room":"ops"}}"#);
            assert_eq!(select_route(&body), (action.into(), false), "a route of its own, answered by posts");
        }
        assert_eq!(select_route(r#"{"action":"subscribe","room":"ops"}"#), ("$default".into(), false));
        for body in ["", "nope", "{}", r#"{"action":"history"}"#, r#"{"action":7}"#] {
            assert_eq!(select_route(body), ("$default".into(), false), "{body}");
        }
    }
}
