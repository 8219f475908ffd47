//! `cargo run --release`: the local chat stack.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chat_aws::TableNames;
use chat_core::auth::VerifierConfig;
use chat_core::broadcaster::FanoutConfig;
use chat_core::entrypoints::websocket::RouteSettings;
use chat_core::occupancy::{BadPresenceLimit, PresenceConfig};
use chat_core::origin::Origin;
use chat_core::rate::{RateLimiter, RateLimits};
use chat_core::rights::Rights;
use chat_core::room::RoomLimits;
use chat_local::metrics::{MetricsPeers, PeerRule};
use chat_local::sockets::{FRAME_OVERHEAD, SEND_LAG, SendLimits};
use chat_local::stream::StreamSettings;
use chat_local::throttle::Limit;
use chat_local::webhook::Secret;
use chat_local::{AccessKey, ArchiveSettings, AuthSettings, Backend, Config, DynamoSettings, WebhookSettings};
use clap::Parser;
use tokio::net::TcpListener;

/// A faithful local API Gateway WebSocket chat: the same handler code as the
/// Lambdas, SQLite for the tables, and its message log as the DynamoDB Stream.
/// With --dynamodb-endpoint, the Lambdas' DynamoDB adapters and the table's real
/// stream instead.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Instead of serving: a client command (`publish`).
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to listen on (loopback by default). Any other address needs a
    /// key of your own (--access-key-id and --secret-access-key).
    #[arg(long, env = "CHAT_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Access key id that @connections requests must be signed with (AWS SigV4).
    #[arg(long, env = "CHAT_ACCESS_KEY_ID", default_value = chat_local::signature::DEFAULT_ACCESS_KEY_ID)]
    access_key_id: String,
    /// Secret access key that @connections requests must be signed with.
    #[arg(long, env = "CHAT_SECRET_ACCESS_KEY", default_value = chat_local::signature::DEFAULT_SECRET_ACCESS_KEY, hide_default_value = true)]
    secret_access_key: String,
    /// The region @connections requests must be signed for (the SDKs sign for
    /// their configured region; a deployed API accepts only its own).
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
    /// Another name browsers may reach the stack by (repeatable, or
    /// comma-separated in the environment), e.g. a LAN name with --host 0.0.0.0.
    /// Requests are served only when their Host is the --host value, `localhost`,
    /// a loopback address or one of these; any other is refused with 403, so a
    /// DNS-rebinding page cannot read the stack.
    #[arg(long = "allowed-host", env = "CHAT_ALLOWED_HOSTS", value_name = "NAME", value_delimiter = ',',
          value_parser = chat_local::same_origin::parse_host_name)]
    allowed_hosts: Vec<String>,
    /// A web page origin, scheme://host[:port], that may open the WebSocket and
    /// mint development tokens besides the stack's own page (repeatable, or
    /// comma-separated in the environment). Clients that send no Origin (wscat,
    /// SDKs) are always let through; other pages are refused with 403.
    #[arg(long = "allowed-origin", env = "CHAT_ALLOWED_ORIGINS", value_name = "ORIGIN", value_delimiter = ',')]
    allowed_origins: Vec<Origin>,
    /// Port for WebSockets, the @connections API and the web page (0 picks a free one).
    #[arg(long, env = "CHAT_PORT", default_value_t = 8080)]
    port: u16,
    /// API stage: clients connect to ws://HOST:PORT/STAGE.
    #[arg(long, env = "CHAT_STAGE", default_value = "dev")]
    stage: String,
    /// SQLite database file (created if missing; `:memory:` for a throwaway run).
    #[arg(long, env = "CHAT_DB", default_value = "chat-local.db")]
    db: PathBuf,
    /// Serve the web chat at http://HOST:PORT/ from this directory (e.g. `frontend`,
    /// to edit it without rebuilding) instead of the copy built into the binary.
    #[arg(long, env = "CHAT_FRONTEND", value_name = "DIR")]
    frontend: Option<PathBuf>,
    /// Close sockets idle this long, with 1001 (API Gateway: 600).
    #[arg(long, env = "CHAT_IDLE_TIMEOUT_SECS", default_value_t = 600)]
    idle_timeout_secs: u64,
    /// Close sockets this old, with 1001 (API Gateway: 7200).
    #[arg(long, env = "CHAT_MAX_LIFETIME_SECS", default_value_t = 7200)]
    max_lifetime_secs: u64,
    /// Bytes a socket may hold for its client — every frame queued to it, replies
    /// and errors as well as broadcasts, each plus 128 bytes of bookkeeping —
    /// before the client counts as too slow and is closed with 1008. In bytes, or
    /// with a KiB, MiB or GiB suffix; more than 128 KiB (the largest frame fits).
    #[arg(long, env = "CHAT_SEND_BUDGET", value_name = "BYTES", default_value = "16MiB", value_parser = parse_budget)]
    send_budget: usize,
    /// Seconds a socket may take nothing while frames wait for it (its client's
    /// TCP window stays shut: it stopped reading) before the client counts as too
    /// slow and is closed with 1008, however little is queued (1–3600). A reader
    /// that is only behind keeps taking bytes and is never cut off by this.
    #[arg(long, env = "CHAT_SEND_LAG_SECS", value_name = "SECS", default_value_t = SEND_LAG.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    send_lag_secs: u64,
    /// Also close a client with this many frames queued (off by default: the
    /// send budget and the send lag decide).
    #[arg(long, env = "CHAT_SEND_QUEUE", value_name = "FRAMES", value_parser = clap::value_parser!(u32).range(1..))]
    send_queue: Option<u32>,
    /// Also serve /metrics to these peers (loopback peers always may; others get
    /// 403): `any`, an IP address, or a block such as 10.0.0.0/8. Repeatable, or
    /// comma-separated.
    #[arg(long, env = "CHAT_METRICS_HOST", value_name = "PEERS", value_delimiter = ',')]
    metrics_host: Vec<PeerRule>,
    /// Stream event source: records per broadcaster invocation (1–10000).
    #[arg(long, env = "CHAT_BATCH_SIZE", default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=10000))]
    batch_size: u16,
    /// Stream event source: milliseconds to gather a batch before invoking.
    #[arg(long, env = "CHAT_BATCHING_WINDOW_MS", default_value_t = 0)]
    batching_window_ms: u64,
    /// Stream event source: retries of a failing record before it is given up.
    #[arg(long, env = "CHAT_MAX_RETRIES", default_value_t = 5)]
    max_retries: u32,
    /// Stage throttling, as API Gateway's route settings: inbound messages per
    /// second (token bucket refill); excess messages are answered "Too Many
    /// Requests" and not processed. Off unless set (the template sets 1000).
    #[arg(long, env = "CHAT_THROTTLE_RATE", requires = "throttle_burst")]
    throttle_rate: Option<f64>,
    /// Stage throttling: messages accepted at once above the rate (the bucket size).
    #[arg(long, env = "CHAT_THROTTLE_BURST", requires = "throttle_rate")]
    throttle_burst: Option<u32>,
    /// New connections per second (API Gateway: 500 per account and Region);
    /// excess upgrades are refused with 429. Off unless set.
    #[arg(long, env = "CHAT_CONNECT_RATE", requires = "connect_burst")]
    connect_rate: Option<f64>,
    /// New connections accepted at once above the rate.
    #[arg(long, env = "CHAT_CONNECT_BURST", requires = "connect_rate")]
    connect_burst: Option<u32>,
    /// Publish API calls per second (`POST /rooms/{room}/messages`, all
    /// callers together), as the template's PublishThrottlingRateLimit;
    /// excess calls are answered 429 {"message":"Too Many Requests"}.
    #[arg(long, env = "CHAT_PUBLISH_RATE", default_value_t = 50.0, value_parser = parse_positive_rate)]
    publish_rate: f64,
    /// Publish API calls accepted at once above the rate, as PublishThrottlingBurstLimit.
    #[arg(long, env = "CHAT_PUBLISH_BURST", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    publish_burst: u32,
    /// Rooms one connection may be subscribed to at once (its home room
    /// included); one more is refused with "Too many rooms". As the Lambdas'
    /// MAX_ROOMS_PER_CONNECTION (1–1000).
    #[arg(long, env = "MAX_ROOMS_PER_CONNECTION", default_value_t = chat_core::room::DEFAULT_MAX_ROOMS,
          value_parser = parse_max_rooms)]
    max_rooms: usize,
    /// What a connection may do where when its token has no `chat.rights`
    /// claim, or when no authorizer runs: `pattern=letters` joined by `;`
    /// (`r` read, `w` write, `m` moderate; `*` ends a prefix), e.g.
    /// `lobby=rw;announcements=r`. As the Lambdas' DEFAULT_RIGHTS.
    #[arg(long, env = "DEFAULT_RIGHTS", default_value = chat_core::rights::OPEN, value_parser = parse_rights)]
    default_rights: Rights,
    /// With --jwt-secret or --oidc-issuer: what a token without `chat.rights`
    /// gains for each group in its `cognito:groups` claim, `group:rights`
    /// entries separated by spaces (split at the last `:`), e.g.
    /// "moderators:*=rwm staff:team-*=rw;announcements=r". Such a token gets
    /// the default rights plus each of its mapped groups' rights. As the
    /// authorizer's GROUP_RIGHTS; the development sign-in's `groups` fill the claim.
    #[arg(long, env = "GROUP_RIGHTS", value_name = "GROUP:RIGHTS ...")]
    group_rights: Option<String>,
    /// Per-user rate limit of chat lines (a verified account, else a
    /// connection): lines per second, or `off`; past it a send is answered
    /// "Rate limited" with `retryAfterMs` and not stored. As the Lambdas'
    /// SEND_RATE (default 10). Pings never count.
    #[arg(long, env = "SEND_RATE", value_parser = rate_setting("SEND_RATE"))]
    send_rate: Option<String>,
    /// Lines a user may send at once above the rate (default 20), as SEND_BURST.
    #[arg(long, env = "SEND_BURST", value_parser = rate_setting("SEND_BURST"))]
    send_burst: Option<String>,
    /// Per-user rate limit of `history` and `who` together: requests per
    /// second, or `off`, as READ_RATE (default 2).
    #[arg(long, env = "READ_RATE", value_parser = rate_setting("READ_RATE"))]
    read_rate: Option<String>,
    /// `history`/`who` requests a user may make at once (default 10), as READ_BURST.
    #[arg(long, env = "READ_BURST", value_parser = rate_setting("READ_BURST"))]
    read_burst: Option<String>,
    /// Broadcaster: posts in flight at once per message.
    #[arg(long, env = "FANOUT_CONCURRENCY", default_value_t = 256)]
    fanout_concurrency: usize,
    /// Broadcaster: rooms with more members than this get one occupancy frame a
    /// second (count, joined, left) instead of a join or leave notice per member;
    /// `off` keeps the notices at any size.
    #[arg(long, env = "PRESENCE_LIMIT", value_name = "MEMBERS", default_value = "100", value_parser = parse_presence_limit)]
    presence_limit: PresenceLimit,
    /// Use this DynamoDB API (moto, DynamoDB Local, AWS) through the AWS adapters
    /// instead of SQLite; the broadcaster then reads the table's real stream.
    #[arg(long, env = "CHAT_DYNAMODB_ENDPOINT", value_name = "URL")]
    dynamodb_endpoint: Option<String>,
    /// Use the AWS account of the environment's credentials (no endpoint override).
    #[arg(long, env = "CHAT_DYNAMODB", conflicts_with = "dynamodb_endpoint")]
    dynamodb: bool,
    /// DynamoDB mode: create missing tables (and the archive bucket).
    #[arg(long, env = "CHAT_CREATE_TABLES")]
    create_tables: bool,
    /// DynamoDB mode: the ActiveConnections table.
    #[arg(long, env = "CONNECTIONS_TABLE", default_value = "ActiveConnections")]
    connections_table: String,
    /// DynamoDB mode: the SessionHistory table.
    #[arg(long, env = "SESSIONS_TABLE", default_value = "SessionHistory")]
    sessions_table: String,
    /// DynamoDB mode: the MessageHistory table (with a NEW_IMAGE stream).
    #[arg(long, env = "MESSAGES_TABLE", default_value = "MessageHistory")]
    messages_table: String,
    /// DynamoDB mode: the Memberships table (one item per subscription).
    #[arg(long, env = "MEMBERSHIPS_TABLE", default_value = "Memberships")]
    memberships_table: String,
    /// DynamoDB mode: the ReadCursors table (how far each reader read each room).
    #[arg(long, env = "READ_CURSORS_TABLE", default_value = "ReadCursors")]
    cursors_table: String,
    /// DynamoDB mode: the Bans table (who may not hear which room, until when).
    #[arg(long, env = "BANS_TABLE", default_value = "Bans")]
    bans_table: String,
    /// Archive every broadcast batch as JSON Lines to this S3 bucket.
    #[arg(long, env = "ARCHIVE_BUCKET")]
    archive_bucket: Option<String>,
    /// Require a token signed with this HS256 secret (≥ 32 bytes) on connect, as the
    /// deployed authorizer does. On a loopback address, also a development sign-in
    /// at http://HOST:PORT/login.html that mints such tokens for a typed name;
    /// for tests by hand, `POST /dev/token` also takes `"rights"` (the
    /// `chat.rights` claim, e.g. {"*":"rw","mods":"rwm"}) and `"groups"` (the
    /// `cognito:groups` claim, e.g. ["moderators"], see --group-rights).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Require this `iss` of HS256 tokens (the development sign-in puts it in its tokens).
    #[arg(long, env = "JWT_ISSUER", requires = "jwt_secret")]
    jwt_issuer: Option<String>,
    /// Require one of these audiences (comma-separated) of HS256 tokens (the
    /// development sign-in puts the first in its tokens).
    #[arg(long, env = "JWT_AUDIENCE", requires = "jwt_secret")]
    jwt_audience: Option<String>,
    /// Require a token from this OIDC issuer (RS256/ES256, keys from its JWKS), e.g.
    /// a Cognito user pool's `https://cognito-idp.REGION.amazonaws.com/POOL_ID`.
    #[arg(long, env = "OIDC_ISSUER", value_name = "URL", requires = "audience")]
    oidc_issuer: Option<String>,
    /// The issuer's JWKS, if not at `{issuer}/.well-known/jwks.json`.
    #[arg(long, env = "JWKS_URL", value_name = "URL", requires = "oidc_issuer")]
    jwks_url: Option<String>,
    /// App client id(s) accepted from the issuer (comma-separated): `aud` of ID
    /// tokens, `client_id` of Cognito access tokens.
    #[arg(long, env = "OIDC_AUDIENCE", requires = "oidc_issuer")]
    audience: Option<String>,
    /// POST every event out — chat.message.created, chat.member.joined,
    /// chat.member.left, chat.room.occupied, chat.room.vacated — to this URL,
    /// one JSON event per request (EventBridge's envelope), signed with
    /// --webhook-secret in the X-Chat-Signature header; retried with back-off,
    /// in order per room. A slow or down receiver never slows the chat: past
    /// --webhook-queue waiting events, new ones are dropped and counted in /metrics.
    #[arg(long, env = "CHAT_WEBHOOK", value_name = "URL", value_parser = chat_local::webhook::parse_url)]
    webhook: Option<http::Uri>,
    /// The secret webhook requests are signed with (HMAC-SHA256): required
    /// with --webhook, so the receiver can refuse forgeries. Never printed.
    #[arg(long, env = "CHAT_WEBHOOK_SECRET", value_name = "SECRET", hide_env_values = true,
          value_parser = parse_secret, requires = "webhook")]
    webhook_secret: Option<Secret>,
    /// Webhook events waiting for delivery (all rooms together) before new ones are dropped.
    #[arg(long, env = "CHAT_WEBHOOK_QUEUE", value_name = "EVENTS", default_value_t = chat_local::webhook::DEFAULT_QUEUE,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    webhook_queue: u32,
    /// One webhook attempt's limit, connect included; past it the attempt is retried.
    #[arg(long, env = "CHAT_WEBHOOK_TIMEOUT_SECS", value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    webhook_timeout_secs: u64,
    /// The S3 API for the archive (moto, MinIO); default: AWS.
    #[arg(long, env = "CHAT_S3_ENDPOINT", value_name = "URL", requires = "archive_bucket")]
    s3_endpoint: Option<String>,
}

/// Client commands: talk to a running stack (or a deployment) instead of serving.
#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Say a line into a room through the publish API (POST /rooms/{room}/messages),
    /// signed with SigV4 (service execute-api) by the standard AWS credential chain.
    /// Prints "<status> <id>": 201 for a new line, 200 for a retry of the same
    /// --client-message-id (the first line's id). Exits 1 with the reason otherwise.
    Publish(PublishArgs),
}

#[derive(clap::Args, Debug)]
struct PublishArgs {
    /// The room to publish into.
    #[arg(long)]
    room: String,
    /// The label shown as the sender (default: the last part of your IAM principal's ARN).
    #[arg(long)]
    user: Option<String>,
    /// An idempotency key: a retry with the same key stores nothing new and answers the first id.
    #[arg(long, value_name = "KEY")]
    client_message_id: Option<String>,
    /// The publish API: a deployment's PublishApiUrl output, or a local stack's http://HOST:PORT.
    #[arg(long, env = "CHAT_PUBLISH_ENDPOINT", default_value = "http://127.0.0.1:8080")]
    endpoint: String,
    /// The region to sign for (default: the credential chain's, e.g. AWS_REGION).
    #[arg(long)]
    region: Option<String>,
    /// The line.
    text: String,
}

/// `chat-local publish`: one call, its outcome on stdout or its error on stderr.
async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let publication = chat_local::publisher::Publication {
        endpoint: args.endpoint,
        room: args.room,
        text: args.text,
        user: args.user,
        client_message_id: args.client_message_id,
        region: args.region,
    };
    let answer = chat_local::publisher::publish(&publication).await?;
    println!("{}", chat_local::publisher::outcome(&answer)?);
    Ok(())
}

impl Args {
    fn backend(&self) -> Backend {
        if self.dynamodb_endpoint.is_none() && !self.dynamodb {
            return Backend::Embedded { database: self.db.clone() };
        }
        Backend::DynamoDb(DynamoSettings {
            endpoint: self.dynamodb_endpoint.clone(),
            tables: TableNames {
                connections: self.connections_table.clone(),
                sessions: self.sessions_table.clone(),
                messages: self.messages_table.clone(),
                memberships: self.memberships_table.clone(),
                cursors: self.cursors_table.clone(),
                bans: self.bans_table.clone(),
            },
            create_tables: self.create_tables,
        })
    }

    /// The per-user rate limits, read by the Lambdas' own rule under their names.
    fn rate_limits(&self) -> anyhow::Result<RateLimits> {
        Ok(RateLimits::from_settings(|name| match name {
            "SEND_RATE" => self.send_rate.clone(),
            "SEND_BURST" => self.send_burst.clone(),
            "READ_RATE" => self.read_rate.clone(),
            "READ_BURST" => self.read_burst.clone(),
            _ => None,
        })?)
    }

    /// The authorizer's settings, under the names the Lambda reads from its environment.
    fn auth(&self) -> anyhow::Result<Option<AuthSettings>> {
        if self.jwt_secret.is_none() && self.oidc_issuer.is_none() {
            if self.group_rights.as_deref().is_some_and(|g| !g.trim().is_empty()) {
                anyhow::bail!(
                    "--group-rights needs an authorizer (--jwt-secret or --oidc-issuer): groups come in tokens"
                );
            }
            return Ok(None);
        }
        let verifier = VerifierConfig::from_settings(|name| match name {
            "JWT_SECRET" => self.jwt_secret.clone(),
            "JWT_ISSUER" => self.jwt_issuer.clone(),
            "JWT_AUDIENCE" => self.jwt_audience.clone(),
            "OIDC_ISSUER" => self.oidc_issuer.clone(),
            "JWKS_URL" => self.jwks_url.clone(),
            "OIDC_AUDIENCE" => self.audience.clone(),
            "DEFAULT_RIGHTS" => Some(self.default_rights.to_string()),
            "GROUP_RIGHTS" => self.group_rights.clone(),
            _ => None,
        })?;
        let dev_signin = self.jwt_secret.is_some() && chat_local::same_origin::is_loopback_host(&self.host);
        Ok(Some(AuthSettings { verifier, dev_signin }))
    }

    /// The webhook's settings; a URL without a secret is refused (unsigned
    /// events could be forged by anyone who can reach the receiver).
    fn webhook(&self) -> anyhow::Result<Option<WebhookSettings>> {
        let Some(url) = self.webhook.clone() else { return Ok(None) };
        let Some(secret) = self.webhook_secret.clone() else {
            anyhow::bail!(
                "--webhook needs --webhook-secret SECRET (or CHAT_WEBHOOK_SECRET): every request is signed with it \
                 so the receiver can refuse forgeries"
            );
        };
        Ok(Some(WebhookSettings {
            url,
            secret,
            queue: self.webhook_queue as usize,
            timeout: Duration::from_secs(self.webhook_timeout_secs),
        }))
    }

    fn archive(&self) -> Option<ArchiveSettings> {
        let bucket = self.archive_bucket.clone()?;
        Some(ArchiveSettings { bucket, endpoint: self.s3_endpoint.clone(), create_bucket: self.create_tables })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,chat_core=info".into()),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut args = Args::parse();
    if let Some(Command::Publish(publish_args)) = args.command.take() {
        // One clear line (no backtrace) for a script's log, and exit status 1.
        if let Err(error) = publish(publish_args).await {
            eprintln!("chat-local publish: {error:#}");
            std::process::exit(1);
        }
        return Ok(());
    }
    raise_open_files_limit();
    let access_key = AccessKey { id: args.access_key_id.clone(), secret: args.secret_access_key.clone() };
    refuse_to_expose_the_default_key(&args.host, args.port, &access_key).await?;
    let listener = TcpListener::bind((args.host.as_str(), args.port))
        .await
        .map_err(|error| cannot_listen(&args.host, args.port, &error))?;
    let address = listener.local_addr()?;
    if let Some(dir) = args.frontend.as_ref().filter(|dir| !dir.is_dir()) {
        anyhow::bail!("--frontend {}: not a directory", dir.display());
    }
    let frontend = args.frontend.clone();
    let config = Config {
        stage: args.stage.clone(),
        api_id: "local".into(),
        backend: args.backend(),
        archive: args.archive(),
        frontend,
        idle_timeout: Duration::from_secs(args.idle_timeout_secs),
        max_lifetime: Duration::from_secs(args.max_lifetime_secs),
        send_limits: SendLimits {
            budget: args.send_budget,
            lag: Duration::from_secs(args.send_lag_secs),
            frames: args.send_queue.map(|frames| frames as usize),
        },
        metrics_peers: MetricsPeers(args.metrics_host.clone()),
        stream: StreamSettings {
            batch_size: args.batch_size.into(),
            batching_window: Duration::from_millis(args.batching_window_ms),
            max_retries: args.max_retries,
        },
        fanout: FanoutConfig {
            max_in_flight: args.fanout_concurrency,
            presence: PresenceConfig {
                limit: args.presence_limit.0,
                // A full batch is followed at once: it leaves what it held back to the next.
                full_batch: Some(args.batch_size.into()),
                ..PresenceConfig::default()
            },
            ..FanoutConfig::default()
        },
        routes: RouteSettings {
            limits: RoomLimits { max_rooms: args.max_rooms },
            default_rights: args.default_rights.clone(),
            rate: Arc::new(RateLimiter::new(args.rate_limits()?)),
        },
        message_limit: limit(args.throttle_rate, args.throttle_burst),
        connect_limit: limit(args.connect_rate, args.connect_burst),
        publish_limit: Some(Limit { rate: args.publish_rate, burst: args.publish_burst }),
        access_key,
        region: args.region.clone(),
        allowed_hosts: std::iter::once(args.host.clone()).chain(args.allowed_hosts.iter().cloned()).collect(),
        allowed_origins: args.allowed_origins.clone(),
        auth: args.auth()?,
        webhook: args.webhook()?,
    };
    let ready = move |config: &Config| print_endpoints(address, config);
    serve_until_ctrl_c(config, listener, ready).await
}

/// Checked before binding: with the well-known test/test key, anyone who can
/// reach the port could post to, read or close any socket.
async fn refuse_to_expose_the_default_key(host: &str, port: u16, key: &AccessKey) -> anyhow::Result<()> {
    if !key.is_default() {
        return Ok(());
    }
    let mut addresses = tokio::net::lookup_host((host, port)).await?;
    if let Some(exposed) = addresses.find(|address| !address.ip().is_loopback()) {
        anyhow::bail!(
            "refusing to listen on {exposed} (--host {host}) with the well-known test/test key: the @connections \
             API would accept anyone on the network. Set --access-key-id and --secret-access-key (or \
             CHAT_ACCESS_KEY_ID and CHAT_SECRET_ACCESS_KEY) to a key of your own, or listen on 127.0.0.1."
        );
    }
    Ok(())
}

/// One line that says what to do when the port cannot be had: the first thing a
/// second `cargo run --release` meets.
fn cannot_listen(host: &str, port: u16, error: &std::io::Error) -> anyhow::Error {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "port {port} on {host} is in use (is the chat already running?): stop that process, or choose \
             another port with --port N or CHAT_PORT=N (--port 0 picks a free one)"
        ),
        std::io::ErrorKind::PermissionDenied => anyhow::anyhow!(
            "not allowed to listen on port {port} of {host} (ports below 1024 need privileges): choose \
             another with --port N, e.g. the default 8080"
        ),
        _ => anyhow::anyhow!("cannot listen on {host}:{port}: {error}"),
    }
}

/// `--max-rooms`: read by the Lambdas' own rule, so the range and its message are theirs.
fn parse_max_rooms(value: &str) -> Result<usize, String> {
    RoomLimits::from_settings(|_| Some(value.to_owned())).map(|limits| limits.max_rooms).map_err(|e| e.to_string())
}

/// `--send-rate` and the like: checked at parse time by the Lambdas' own rule
/// for the setting `name`, so the ranges and messages are theirs.
fn rate_setting(name: &'static str) -> impl Fn(&str) -> Result<String, String> + Clone {
    move |value: &str| {
        RateLimits::from_settings(|n| (n == name).then(|| value.to_owned())).map_err(|e| e.to_string())?;
        Ok(value.to_owned())
    }
}

/// `--webhook-secret`: any non-empty text.
fn parse_secret(value: &str) -> Result<Secret, String> {
    Secret::new(value)
}

/// `--default-rights`: the Lambdas' own parser, so the rules and messages are theirs.
fn parse_rights(value: &str) -> Result<Rights, String> {
    Rights::parse(value).map_err(|e| e.to_string())
}

/// `--send-budget`: bytes, or a number with a binary suffix (`512KiB`, `8MiB`, `1GiB`).
/// Every socket is a descriptor, and the usual soft limit (1024) would refuse
/// connections long before memory runs out; the hard limit is what the machine
/// allows this process. Raised at start-up, and logged, so that a refused
/// connection is never a mystery.
fn raise_open_files_limit() {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit only writes the struct passed.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "could not read the open files limit");
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            // SAFETY: setrlimit only reads the struct passed.
            match unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } {
                0 => limit = raised,
                _ => tracing::warn!(error = %std::io::Error::last_os_error(), "could not raise the open files limit"),
            }
        }
        tracing::info!(soft = limit.rlim_cur, hard = limit.rlim_max, "open files limit");
    }
}

fn parse_budget(text: &str) -> Result<usize, String> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = match text[digits.len()..].to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        other => return Err(format!("unknown unit {other:?}: use bytes, KiB, MiB or GiB")),
    };
    let bytes = digits.trim().parse::<usize>().ok().and_then(|n| n.checked_mul(unit));
    let bytes = bytes.ok_or_else(|| format!("{text:?} is not a number of bytes (e.g. 8388608 or 8MiB)"))?;
    let least = chat_core::protocol::MAX_FRAME_BYTES + FRAME_OVERHEAD;
    if bytes < least {
        return Err(format!("{bytes} bytes cannot hold the largest frame: at least {least}"));
    }
    Ok(bytes)
}

/// `--publish-rate`: calls per second, a positive number (a bucket refilled at 0 would close the API for good).
fn parse_positive_rate(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{value:?} is not a positive number of calls per second (e.g. 50 or 0.5)")),
    }
}

fn limit(rate: Option<f64>, burst: Option<u32>) -> Option<Limit> {
    Some(Limit { rate: rate?, burst: burst? })
}

/// The startup banner: every URL the stack serves. Tests and scripts read the
/// first line to find the endpoint, so it is printed only once the stack
/// accepts connections, and the WebSocket URL stays first.
fn print_endpoints(address: std::net::SocketAddr, config: &Config) {
    let stage = &config.stage;
    println!("websocket: ws://{address}/{stage}");
    println!("web chat:  http://{address}/");
    println!("@connections: http://{address}/{stage}/@connections/{{connection_id}}");
    // Never the secret: only which key signs, and whether it is the well-known one.
    let key = &config.access_key;
    let which = if key.is_default() { " (the default test/test pair)" } else { "" };
    println!("signed by: AWS SigV4, access key id {}{which}", key.id);
    println!(
        "publish:   POST http://{address}{} (SigV4, service execute-api, region {})",
        chat_local::publish::ROUTE_PATH,
        config.region
    );
    println!("metrics:   http://{address}/{}", chat_local::METRICS_PATH);
    if let Some(auth) = &config.auth {
        let sign_in = if auth.dev_signin { format!(" (sign in: http://{address}/login.html)") } else { String::new() };
        println!("auth:      a token is required on connect{sign_in}");
    }
    if let Some(webhook) = &config.webhook {
        // The URL, never the secret.
        println!("webhooks:  POST {} (signed: X-Chat-Signature; queue {})", webhook.url, webhook.queue);
    }
    match &config.backend {
        Backend::Embedded { database } => println!("database:  {}", database.display()),
        Backend::DynamoDb(dynamo) => println!("dynamodb:  {}", dynamo.endpoint.as_deref().unwrap_or("AWS")),
    }
    println!("version:   chat-local {}", env!("CARGO_PKG_VERSION"));
}

async fn serve_until_ctrl_c(config: Config, listener: TcpListener, ready: impl FnOnce(&Config)) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Registered before the ready line is printed: a SIGTERM sent the moment a
    // script sees it must still stop the stack gracefully, not kill it.
    let (mut interrupt, mut terminate) = (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?);
    let shutdown = async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down: closing sockets");
    };
    chat_local::serve(config, listener, ready, shutdown).await
}

/// `--presence-limit`: members, or `None` for `off`.
#[derive(Clone, Debug)]
struct PresenceLimit(Option<usize>);

fn parse_presence_limit(text: &str) -> Result<PresenceLimit, BadPresenceLimit> {
    chat_core::occupancy::parse_presence_limit(text).map(PresenceLimit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_budgets_parse_in_bytes_or_binary_units_and_must_hold_the_largest_frame() {
        assert_eq!(parse_budget("8MiB"), Ok(8 << 20));
        assert_eq!(parse_budget("512KiB"), Ok(512 << 10));
        assert_eq!(parse_budget("1g"), Ok(1 << 30));
        assert_eq!(parse_budget("4194304"), Ok(4 << 20));
        for bad in ["", "MiB", "8 MB", "-1", "8.5MiB", "99999999999999999999GiB", "128KiB"] {
            assert!(parse_budget(bad).is_err(), "{bad:?}");
        }
    }
}
