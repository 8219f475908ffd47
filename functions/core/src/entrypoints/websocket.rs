//! API Gateway WebSocket proxy events in, proxy responses out.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use chrono::{DateTime, Duration, Utc};

use crate::auth::SettingsError;
use crate::coalesce::batch_requested;
pub use crate::handlers::RouteSettings;
use crate::handlers::{self, ConnectRequest, DefaultRoute, DisconnectRequest, HandlerError, MessageRequest};
use crate::identity::chosen_identity;
use crate::model::Identity;
use crate::origin::AllowedOrigins;
use crate::ports::{Bans, ConnectionStore, MessageLog, ReadCursors, SessionLog, SocketPoster};
use crate::rights::{Right, Rights};
use crate::room::{room_or_default, valid_room};
use crate::time::from_epoch_millis;

/// How `$connect` is configured for a deployment; read once per cold start.
#[derive(Clone, Debug, Default)]
pub struct ConnectSettings {
    /// Web pages allowed to open a socket (see [`crate::origin`]); empty = any.
    pub allowed_origins: AllowedOrigins,
    /// How long SessionHistory keeps a session, source IP included; none = forever.
    pub session_retention: Option<Duration>,
    /// The room limit and default rights every route shares.
    pub routes: RouteSettings,
}

impl ConnectSettings {
    /// Reads the settings by name through `var` (blank counts as unset):
    ///
    /// | name | meaning |
    /// |---|---|
    /// | `ALLOWED_ORIGINS` | comma-separated origins (`https://chat.example.com`) whose pages may connect; unset = any |
    /// | `SESSION_RETENTION_DAYS` | whole days a session row is kept after it opened; unset or 0 = forever |
    /// | `MAX_ROOMS_PER_CONNECTION` | rooms one connection may hold ([`RoomLimits`]) |
    /// | `DEFAULT_RIGHTS` | rights of a connection without an authorizer ([`crate::rights`]) |
    ///
    /// A value that cannot work refuses to start rather than let every page in
    /// or keep data longer than asked.
    ///
    /// ```
    /// use chat_core::entrypoints::websocket::ConnectSettings;
    /// let vars = |name: &str| (name == "SESSION_RETENTION_DAYS").then(|| "30".to_owned());
    /// assert_eq!(ConnectSettings::from_settings(vars).unwrap().session_retention, Some(chrono::Duration::days(30)));
    /// ```
    pub fn from_settings(var: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let allowed_origins = match var("ALLOWED_ORIGINS") {
            Some(list) => AllowedOrigins::parse(&list).map_err(|e| SettingsError(format!("ALLOWED_ORIGINS: {e}")))?,
            None => AllowedOrigins::default(),
        };
        let days = match var("SESSION_RETENTION_DAYS") {
            Some(days) => days
                .trim()
                .parse::<u16>()
                .map_err(|_| SettingsError("SESSION_RETENTION_DAYS must be whole days (0 = keep forever)".into()))?,
            None => 0,
        };
        let session_retention = (days > 0).then(|| Duration::days(days.into()));
        // $connect takes no token from any bucket, so it reads no rate setting.
        let default_rights = crate::rights::Rights::default_from_settings(var).map_err(|e| SettingsError(e.0))?;
        let limits = crate::room::RoomLimits::from_settings(var)?;
        let routes = RouteSettings { limits, default_rights, ..RouteSettings::default() };
        Ok(Self { allowed_origins, session_retention, routes })
    }
}

/// `$connect`: 200 opens the socket; 403 refuses a web page whose `Origin` is not
/// allowed, a home room the connection may not read, or one its account is
/// banned from (naming the ban's end); the token's rooms it may not read or is
/// banned from are left out; 400 refuses a malformed `room`, `name` or `batch` query parameter
/// (nothing is stored either way); an error refuses the upgrade. The
/// connection's name is the authorizer's verified one when an authorizer ran,
/// else the one the client chose with `?name=` (unverified), else none.
///
/// Cost per call: what [`handlers::connect`] costs, plus for a verified account
/// one GetItem on Bans per room (the home room and each of the token's); none
/// for an anonymous connection.
pub async fn on_connect(
    event: &ApiGatewayWebsocketProxyRequest,
    settings: &ConnectSettings,
    connections: &dyn ConnectionStore,
    sessions: &dyn SessionLog,
    log: &dyn MessageLog,
    bans: &dyn Bans,
) -> Result<ApiGatewayProxyResponse, HandlerError> {
    let origin = origin(event);
    if !settings.allowed_origins.allows(origin.as_deref()) {
        tracing::info!(connection_id = ?event.request_context.connection_id, ?origin, "connection refused: origin not allowed");
        return Ok(refuse(403, "Forbidden: this page's origin may not connect"));
    }
    let room = match room_or_default(event.query_string_parameters.first("room")) {
        Ok(room) => room.to_owned(),
        Err(refusal) => {
            tracing::info!(connection_id = ?event.request_context.connection_id, %refusal, "connection refused");
            return Ok(refuse(400, &refusal.to_string()));
        }
    };
    let rights = connection_rights(event, &settings.routes.default_rights);
    if let Err(refusal) = rights.check(&room, Right::Read) {
        tracing::info!(connection_id = ?event.request_context.connection_id, room, "connection refused: no read right");
        return Ok(refuse(
            403,
            &format!("Forbidden: this connection may not {} room \"{}\"", refusal.right.as_str(), refusal.room),
        ));
    }
    let identity = match authorized_identity(event) {
        Some(identity) => Some(identity),
        None => match chosen_identity(event.query_string_parameters.first("name")) {
            Ok(identity) => identity,
            Err(refusal) => {
                tracing::info!(connection_id = ?event.request_context.connection_id, %refusal, "connection refused");
                return Ok(refuse(400, &refusal.to_string()));
            }
        },
    };
    let batch = match batch_requested(event.query_string_parameters.first("batch")) {
        Ok(batch) => batch,
        Err(refusal) => {
            tracing::info!(connection_id = ?event.request_context.connection_id, %refusal, "connection refused");
            return Ok(refuse(400, &refusal.to_string()));
        }
    };
    let connected_at = connected_at(event)?;
    let mut rooms: Vec<String> = authorized_rooms(event).into_iter().filter(|room| readable(&rights, room)).collect();
    // Only an account can be banned before it connects: an anonymous
    // connection is new, so no ban names it (and this costs it nothing).
    if let Some(account) = identity.as_ref().filter(|i| i.verified).and_then(|i| i.user_id.as_deref()) {
        if let Some(ban) = bans.active(&room, account, connected_at).await? {
            tracing::info!(connection_id = ?event.request_context.connection_id, room, until = %ban.until, "connection refused: banned");
            let notice = crate::protocol::banned_notice(&room, &crate::time::format_iso(&ban.until));
            return Ok(refuse(403, &format!("Forbidden: {notice}")));
        }
        rooms = not_banned(rooms, account, connected_at, bans).await?;
    }
    let request = ConnectRequest {
        connection_id: connection_id(event)?.to_owned(),
        source_ip: event.request_context.identity.source_ip.clone().unwrap_or_default(),
        connected_at,
        room,
        rooms,
        max_rooms: settings.routes.limits.max_rooms,
        identity,
        batch,
        session_retention: settings.session_retention,
    };
    handlers::connect(&request, connections, sessions, log).await?;
    Ok(response(None))
}

/// The token's `rooms` that `account` is not banned from at `at` (one GetItem
/// each on Bans); the others are left out, and logged.
async fn not_banned(
    rooms: Vec<String>,
    account: &str,
    at: DateTime<Utc>,
    bans: &dyn Bans,
) -> Result<Vec<String>, HandlerError> {
    let mut allowed = Vec::with_capacity(rooms.len());
    for room in rooms {
        match bans.active(&room, account, at).await? {
            Some(ban) => tracing::warn!(room, until = %ban.until, "a room of the token left out: banned there"),
            None => allowed.push(room),
        }
    }
    Ok(allowed)
}

/// `$disconnect`.
pub async fn on_disconnect(
    event: &ApiGatewayWebsocketProxyRequest,
    connections: &dyn ConnectionStore,
    sessions: &dyn SessionLog,
    log: &dyn MessageLog,
) -> Result<ApiGatewayProxyResponse, HandlerError> {
    let request = DisconnectRequest {
        connection_id: connection_id(event)?.to_owned(),
        connected_at: connected_at(event)?,
        disconnected_at: request_time(event)?,
    };
    handlers::disconnect(&request, connections, sessions, log).await?;
    Ok(response(None))
}

/// `sendmessage`: the reply (pong or a refusal) is the route response body.
pub async fn on_send_message(
    event: &ApiGatewayWebsocketProxyRequest,
    settings: &RouteSettings,
    connections: &dyn ConnectionStore,
    log: &dyn MessageLog,
) -> Result<ApiGatewayProxyResponse, HandlerError> {
    let request = message_request(event, settings)?;
    let reply = handlers::send_message(&request, &settings.rate, connections, log).await?;
    Ok(response(reply))
}

/// `$default`: history, presence, subscriptions, rooms, read cursors and
/// moderation, or the seed's error, posted to the sender.
pub async fn on_default(
    event: &ApiGatewayWebsocketProxyRequest,
    settings: &RouteSettings,
    connections: &dyn ConnectionStore,
    cursors: &dyn ReadCursors,
    log: &dyn MessageLog,
    poster: &dyn SocketPoster,
    bans: &dyn Bans,
) -> Result<ApiGatewayProxyResponse, HandlerError> {
    let request = message_request(event, settings)?;
    let route = DefaultRoute { settings, connections, cursors, log, poster, bans };
    route.handle(&request).await?;
    Ok(response(None))
}

/// An inbound frame with who sent it and what that connection may do.
fn message_request(
    event: &ApiGatewayWebsocketProxyRequest,
    settings: &RouteSettings,
) -> Result<MessageRequest, HandlerError> {
    Ok(MessageRequest {
        connection_id: connection_id(event)?.to_owned(),
        body: event.body.clone().unwrap_or_default(),
        received_at: request_time(event)?,
        rights: connection_rights(event, &settings.default_rights),
        account: authorized_identity(event).and_then(|identity| identity.user_id),
    })
}

/// The connection's rights: the authorizer's context `rights` (its compact
/// form), else — no authorizer ran — the deployment's `default`. A context
/// value that does not parse grants nothing: it came from our own authorizer,
/// so it means a bug or a tampered deployment, and failing open would hide it.
fn connection_rights(event: &ApiGatewayWebsocketProxyRequest, default: &Rights) -> Rights {
    let Some(value) = event.request_context.authorizer.fields.get("rights") else { return default.clone() };
    match value.as_str().map(Rights::parse) {
        Some(Ok(rights)) => rights,
        _ => {
            tracing::error!(connection_id = ?event.request_context.connection_id, %value, "the authorizer's rights do not parse; none granted");
            Rights::none()
        }
    }
}

/// Whether a token's room may be subscribed at `$connect`; one that may not is logged.
fn readable(rights: &Rights, room: &str) -> bool {
    let allowed = rights.allows(room, Right::Read);
    if !allowed {
        tracing::warn!(room, "a room of the token left out: no read right there");
    }
    allowed
}

/// The verified identity the `$connect` authorizer returned: its context's `name`,
/// else its `principalId`, and the account's `userId`. API Gateway puts them all
/// in `requestContext.authorizer`.
fn authorized_identity(event: &ApiGatewayWebsocketProxyRequest) -> Option<Identity> {
    let context = &event.request_context.authorizer.fields;
    let text = |key: &str| context.get(key).and_then(|v| v.as_str()).filter(|s| !s.is_empty());
    let user = text("name").or_else(|| text("principalId"))?;
    Some(Identity { user: user.to_owned(), verified: true, user_id: text("userId").map(str::to_owned) })
}

/// The rooms the authorizer's context lists (`rooms`: the token's `chat.rooms`,
/// comma-separated) to subscribe to at `$connect`. A name that is not a valid
/// room is left out, and logged: the token is the issuer's to fix, and the
/// user still connects to the rest.
fn authorized_rooms(event: &ApiGatewayWebsocketProxyRequest) -> Vec<String> {
    let context = &event.request_context.authorizer.fields;
    let Some(list) = context.get("rooms").and_then(|v| v.as_str()) else { return Vec::new() };
    list.split(',')
        .map(str::trim)
        .filter(|room| !room.is_empty())
        .filter_map(|room| match valid_room(room) {
            Ok(room) => Some(room.to_owned()),
            Err(refusal) => {
                tracing::warn!(room, %refusal, "a room of the token left out");
                None
            }
        })
        .collect()
}

/// The upgrade's `Origin` header (any case; API Gateway passes both header maps).
/// A value that is not text is kept as an origin no list contains.
fn origin(event: &ApiGatewayWebsocketProxyRequest) -> Option<String> {
    let value = event.headers.get("origin").or_else(|| event.multi_value_headers.get("origin"))?;
    Some(value.to_str().unwrap_or("\u{fffd}").to_owned())
}

fn connection_id(event: &ApiGatewayWebsocketProxyRequest) -> Result<&str, HandlerError> {
    event
        .request_context
        .connection_id
        .as_deref()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| HandlerError::MalformedEvent("requestContext.connectionId is missing".into()))
}

fn connected_at(event: &ApiGatewayWebsocketProxyRequest) -> Result<DateTime<Utc>, HandlerError> {
    epoch_millis(event.request_context.connected_at, "connectedAt")
}

fn request_time(event: &ApiGatewayWebsocketProxyRequest) -> Result<DateTime<Utc>, HandlerError> {
    epoch_millis(event.request_context.request_time_epoch, "requestTimeEpoch")
}

fn epoch_millis(millis: i64, field: &str) -> Result<DateTime<Utc>, HandlerError> {
    if millis <= 0 {
        return Err(HandlerError::MalformedEvent(format!("requestContext.{field} is missing")));
    }
    from_epoch_millis(millis)
        .ok_or_else(|| HandlerError::MalformedEvent(format!("requestContext.{field} is out of range")))
}

/// A refusal: API Gateway answers the upgrade with `status` and this body.
fn refuse(status: i64, reason: &str) -> ApiGatewayProxyResponse {
    let mut response = ApiGatewayProxyResponse::default();
    response.status_code = status;
    response.body = Some(Body::Text(serde_json::json!({ "message": reason }).to_string()));
    response
}

/// A 200 proxy response, with `reply` as the route response body if given.
pub fn response(reply: Option<Vec<u8>>) -> ApiGatewayProxyResponse {
    let mut response = ApiGatewayProxyResponse::default();
    response.status_code = 200;
    response.body = reply.map(|frame| Body::Text(String::from_utf8(frame).expect("frames are JSON text")));
    response
}
