//! The whole chat on one machine, running the Lambdas' own handler code: an API
//! Gateway WebSocket emulator, the @connections API, SQLite as the tables with
//! its message table as the stream, and the stream → broadcaster event source.

pub mod auth;
pub mod dynamo;
pub mod events;
pub mod functions;
pub mod gateway;
pub mod management;
pub mod metrics;
pub mod publish;
pub mod publisher;
pub mod replay;
pub mod same_origin;
pub mod signature;
pub mod sockets;
pub mod store;
pub mod stream;
pub mod throttle;
pub mod webhook;
pub mod webpage;
pub mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use chat_core::broadcaster::{Broadcaster, FanoutConfig};
use chat_core::entrypoints::websocket::RouteSettings;
use chat_core::origin::Origin;
use chat_core::outbound::EventSink;
use chat_core::ports::{Archive, SystemClock};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::services::ServeDir;

pub use crate::auth::AuthSettings;
use crate::auth::Authorizer;
pub use crate::dynamo::{ArchiveSettings, DynamoSettings};
use crate::functions::{Functions, Tables};
use crate::metrics::{CountingLog, Invocations, MetricsPeers};
use crate::same_origin::SameOrigin;
pub use crate::signature::AccessKey;
use crate::sockets::{LocalPoster, SendLimits, ServerClose, Sockets};
use crate::store::SqliteStore;
use crate::stream::{EventsFunction, SqliteSource, StreamSettings};
use crate::throttle::{Limit, Throttles};
use crate::webhook::Webhook;
pub use crate::webhook::WebhookSettings;

/// `GET /metrics`: Prometheus text, on the same port as everything else.
pub const METRICS_PATH: &str = "metrics";

/// Everything the stack can be told.
#[derive(Clone, Debug)]
pub struct Config {
    pub stage: String,
    pub api_id: String,
    pub backend: Backend,
    /// The broadcaster's S3 archive, if any.
    pub archive: Option<ArchiveSettings>,
    /// A directory to serve the web chat from; `None`: the page built into the binary.
    pub frontend: Option<PathBuf>,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    /// What a socket may hold for its client before the client is closed as too
    /// slow (1008): a byte budget over every frame, a lag (how long the socket may
    /// take nothing while frames wait), and optionally a frame count.
    pub send_limits: SendLimits,
    /// Who may scrape `/metrics` besides loopback peers.
    pub metrics_peers: MetricsPeers,
    pub stream: StreamSettings,
    pub fanout: FanoutConfig,
    /// How many rooms one connection may hold (`--max-rooms`) and the rights
    /// of a connection the authorizer gave none (`--default-rights`).
    pub routes: RouteSettings,
    /// The stage's route throttling (every inbound message); `None`: off.
    pub message_limit: Option<Limit>,
    /// New connections per second; `None`: off.
    pub connect_limit: Option<Limit>,
    /// Publish API calls per second (the template's `PublishThrottling*`); `None`: off.
    pub publish_limit: Option<Limit>,
    /// The key @connections requests must be signed with (SigV4).
    pub access_key: AccessKey,
    /// The region @connections requests must be signed for (their credential
    /// scope's), as a deployed API accepts only its own.
    pub region: String,
    /// Names requests may give in `Host` besides `localhost` and loopback
    /// literals: the `--host` value and each `--allowed-host` (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Pages besides the stack's own that may open the socket and mint tokens.
    pub allowed_origins: Vec<Origin>,
    /// The `$connect` authorizer; `None`: anyone may connect (with an optional `?name=`).
    pub auth: Option<AuthSettings>,
    /// Where the events function POSTs events (`--webhook`); `None`: it does not run.
    pub webhook: Option<WebhookSettings>,
}

/// Where the tables live.
#[derive(Clone, Debug)]
pub enum Backend {
    /// A SQLite file (`:memory:` for a throwaway one); its message table is the stream.
    Embedded { database: PathBuf },
    /// Any DynamoDB API, through the AWS adapters, with the table's real stream.
    DynamoDb(DynamoSettings),
}

/// Shared by every request handler.
pub struct AppState {
    pub config: Config,
    pub sockets: Sockets,
    pub functions: Functions,
    pub throttles: Throttles,
    pub authorizer: Option<Authorizer>,
    /// Which pages may open a socket or mint a token (`Origin`).
    pub same_origin: Arc<SameOrigin>,
}

/// Serves on `listener` until `shutdown` resolves, then closes every socket
/// (each gets its `$disconnect`) and stops the stream emulator.
/// `ready` runs once the tables and the stream are open, just before the first
/// request is accepted.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    ready: impl FnOnce(&Config),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.stage != METRICS_PATH,
        "the stage cannot be named {METRICS_PATH:?}: /{METRICS_PATH} serves the metrics"
    );
    metrics::handle();
    metrics::spawn_upkeep();
    let sockets = Sockets::default();
    let poster = LocalPoster(sockets.clone());
    let archive: Option<Arc<dyn Archive>> = match &config.archive {
        Some(settings) => Some(Arc::new(dynamo::archive(settings).await?)),
        None => None,
    };
    let broadcaster = |tables: &Tables| {
        Arc::new(Broadcaster {
            connections: tables.connections.clone(),
            sessions: tables.sessions.clone(),
            log: tables.log.clone(),
            poster: Arc::new(poster.clone()),
            archive: archive.clone(),
            clock: Arc::new(SystemClock),
            config: config.fanout.clone(),
            occupancy: Default::default(),
        })
    };
    let (stop, stopped) = watch::channel(false);
    let settings = config.stream.clone();
    let webhook = config.webhook.clone().map(Webhook::new).transpose()?;
    let mut mappings = Vec::new();
    let (tables, stream) = match &config.backend {
        Backend::Embedded { database } => {
            let store = SqliteStore::open(database)?;
            let tables = Tables {
                connections: Arc::new(store.clone()),
                sessions: Arc::new(store.clone()),
                log: Arc::new(CountingLog(Arc::new(store.clone()))),
                cursors: Arc::new(store.clone()),
                bans: Arc::new(store.clone()),
            };
            let broadcaster = broadcaster(&tables);
            end_previous_run(&store, &broadcaster).await;
            if let Some(webhook) = &webhook {
                // The events function's two mappings: the message table again
                // (its own checkpoint) and the member counters.
                let sources = [
                    SqliteSource::messages_for(store.clone(), "events")?,
                    SqliteSource::counters_for(store.clone(), "events")?,
                ];
                mappings.extend(spawn_events(sources, webhook, &settings, &stopped));
            }
            let source = SqliteSource::new(store)?;
            let stream = tokio::spawn(stream::run(source, broadcaster, settings, stopped));
            (tables, stream)
        }
        Backend::DynamoDb(dynamo) => {
            let (mut tables, source) = dynamo::open(dynamo).await?;
            tables.log = Arc::new(CountingLog(tables.log));
            if let Some(webhook) = &webhook {
                mappings.extend(spawn_events(dynamo::event_sources(dynamo).await?, webhook, &settings, &stopped));
            }
            let stream = tokio::spawn(stream::run(source, broadcaster(&tables), settings, stopped));
            (tables, stream)
        }
    };

    let stage = config.stage.clone();
    let frontend = config.frontend.clone();
    let functions = Functions { tables, poster, routes: config.routes.clone(), invocations: Invocations };
    ready(&config);
    let throttles = Throttles::new(config.message_limit, config.connect_limit).with_publishes(config.publish_limit);
    let authorizer = config.auth.clone().map(Authorizer::new).transpose()?;
    let page_config = auth::page_config(authorizer.as_ref());
    let dev_signin = authorizer.as_ref().is_some_and(Authorizer::dev_signin);
    let same_origin = Arc::new(SameOrigin::new(&config.allowed_hosts, &config.allowed_origins));
    let state = Arc::new(AppState {
        config,
        sockets: sockets.clone(),
        functions,
        throttles,
        authorizer,
        same_origin: same_origin.clone(),
    });
    let app = Router::new()
        .route(
            &format!("/{METRICS_PATH}"),
            get(|State(app): State<Arc<AppState>>, ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                metrics::serve(peer.ip(), &app.config.metrics_peers)
            }),
        )
        .route(&format!("/{stage}"), get(gateway::upgrade))
        .route(
            &format!("/{stage}/{{segment}}/{{connection_id}}"),
            post(management::post)
                .get(management::get)
                .delete(management::delete)
                .fallback(management::no_route)
                .route_layer(axum::middleware::from_fn_with_state(state.clone(), management::require_signature))
                .layer(DefaultBodyLimit::max(chat_core::protocol::MAX_FRAME_BYTES)),
        )
        // The publish API (an HTTP API when deployed), signed as @connections is.
        .route(
            publish::ROUTE_PATH,
            post(publish::post)
                .fallback(publish::no_route)
                .route_layer(axum::middleware::from_fn_with_state(state.clone(), management::require_signature))
                .layer(DefaultBodyLimit::max(chat_core::handlers::publish::MAX_PUBLISH_BODY_BYTES)),
        )
        .route("/dev/token", post(auth::dev_token))
        .route("/config.json", get(move || std::future::ready(axum::Json(page_config.clone()))))
        .with_state(state);
    let unrouted_prefix: Arc<str> = format!("/{stage}/").into();
    let frontend = frontend.map(ServeDir::new);
    let app = app.fallback(move |request: Request| {
        // The development sign-in page exists only while tokens can be minted.
        let hidden = !dev_signin && request.uri().path() == "/login.html";
        unrouted(unrouted_prefix.clone(), frontend.clone(), hidden, request)
    });
    // Outermost: a request naming another host (DNS rebinding) reaches no route.
    let app = app.layer(axum::middleware::from_fn_with_state(same_origin, crate::same_origin::require_host));

    // Chat frames are small and latency-bound: no Nagle delay.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::warn!(%error, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            shutdown.await;
            close_all(&sockets).await;
        })
        .await?;
    stop.send(true).ok();
    stream.await.ok();
    for mapping in mappings {
        mapping.await.ok();
    }
    Ok(())
}

/// The events function behind a mapping per source, each putting on `webhook`.
fn spawn_events<S: stream::RecordSource + 'static>(
    sources: impl IntoIterator<Item = S>,
    webhook: &Webhook,
    settings: &StreamSettings,
    stopped: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let sink: Arc<dyn EventSink> = Arc::new(webhook.clone());
    let spawn =
        |source| tokio::spawn(stream::run(source, EventsFunction(sink.clone()), settings.clone(), stopped.clone()));
    sources.into_iter().map(spawn).collect()
}

/// No socket outlives this process: rows a crash left behind are departures
/// nobody announced yet, and so are memberships whose row is gone (a crash
/// between a departure's delete of the row and its leaves). Each is ended now:
/// one leave per membership, once. Anonymous readers' cursors go too (they
/// live as long as their connection). Failures are not fatal: the requests
/// will report the store.
async fn end_previous_run(store: &SqliteStore, broadcaster: &Broadcaster) {
    match store.all_connections() {
        Ok(stale) if !stale.is_empty() => {
            tracing::info!(count = stale.len(), "ending the connections of the previous run");
            broadcaster.prune(&stale).await;
        }
        Ok(_) => {}
        Err(error) => tracing::error!(%error, "cannot read the previous run's connections"),
    }
    // Read after the rows were ended: whatever membership is left has no row.
    match store.orphan_memberships() {
        Ok(orphans) if !orphans.is_empty() => {
            tracing::info!(count = orphans.len(), "ending the previous run's memberships without a connection");
            broadcaster.prune(&orphans).await;
        }
        Ok(_) => {}
        Err(error) => tracing::error!(%error, "cannot read the previous run's memberships"),
    }
    if let Err(error) = store.forget_connection_cursors() {
        tracing::error!(%error, "cannot forget the previous run's connection cursors");
    }
}

/// A request no route took: under the stage, API Gateway's own 403 (it never
/// answers 404 there); anywhere else, a file of the web chat.
async fn unrouted(stage_prefix: Arc<str>, frontend: Option<ServeDir>, hidden: bool, request: Request) -> Response {
    if request.uri().path().starts_with(&*stage_prefix) {
        return management::no_route().await;
    }
    if hidden {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Some(mut frontend) = frontend else { return webpage::serve(request.uri()) };
    match frontend.try_call(request).await {
        Ok(response) => webpage::with_policy(response.map(Body::new)),
        Err(error) => {
            tracing::error!(%error, "cannot serve the web chat");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Closes every socket with 1001 and waits (briefly) for their `$disconnect`s.
async fn close_all(sockets: &Sockets) {
    for id in sockets.ids() {
        sockets.close(&id, ServerClose::Shutdown);
    }
    for _ in 0..50 {
        if sockets.ids().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the last $disconnect handlers finish their writes.
    tokio::time::sleep(Duration::from_millis(50)).await;
}
