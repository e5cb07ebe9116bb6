//! Command-line flags. Every flag has a `ROOMSERVICE_*` environment twin; a
//! flag given on the command line wins over its variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::auth::Keyring;
use crate::server::TlsFiles;
use crate::telemetry::{AccessLogLevel, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "roomservice",
    version,
    about = "Control plane for video-conference rooms: gRPC RoomService with JWT auth",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `serve`, for a bare `roomservice`.
    #[command(flatten)]
    pub serve: ServeArgs,
}

// Parsed once at startup: the size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (the default).
    Serve(ServeArgs),
    /// Print a signed token for calling the service, and nothing else.
    Token(TokenArgs),
}

/// Where API keys come from: a keys file, a `key:secret` list, or neither
/// (dev mode).
#[derive(Debug, Clone, Args)]
pub struct KeySource {
    /// TOML file of API keys ([[keys]] with api_key, secret, and optional
    /// user_id, name, email, service).
    #[arg(long, env = "ROOMSERVICE_KEYS_FILE", value_name = "PATH")]
    pub keys_file: Option<PathBuf>,

    /// API keys as "key1:secret1,key2:secret2"; not together with --keys-file.
    #[arg(
        long,
        env = "ROOMSERVICE_KEYS",
        value_name = "LIST",
        hide_env_values = true,
        conflicts_with = "keys_file"
    )]
    pub keys: Option<String>,
}

impl KeySource {
    /// The configured keyring, or `None` when no keys are configured (dev mode).
    pub fn load(&self) -> Result<Option<Keyring>, String> {
        if let Some(path) = &self.keys_file {
            return Keyring::load_file(path)
                .map(Some)
                .map_err(|e| e.to_string());
        }
        if let Some(list) = &self.keys {
            return Keyring::parse_list(list)
                .map(Some)
                .map_err(|e| e.to_string());
        }
        Ok(None)
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on, for gRPC and the REST gateway alike.
    #[arg(long, env = "ROOMSERVICE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Base of the `links` URLs in responses [default: http://<listen address>].
    #[arg(long, env = "ROOMSERVICE_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,

    #[command(flatten)]
    pub keys: KeySource,

    /// PEM file of the server's certificate chain, leaf first. With it (and
    /// --tls-key) the port speaks TLS only, offering ALPN h2 and http/1.1.
    /// Re-read on SIGHUP.
    #[arg(
        long,
        env = "ROOMSERVICE_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM file of the private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    /// Re-read on SIGHUP.
    #[arg(
        long,
        env = "ROOMSERVICE_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// PEM file of the CA certificates that client certificates must chain
    /// to: every client must present one (mTLS). Needs --tls-cert and
    /// --tls-key. Re-read on SIGHUP.
    #[arg(
        long,
        env = "ROOMSERVICE_TLS_CLIENT_CA",
        value_name = "PEM",
        requires = "tls_cert",
        requires = "tls_key"
    )]
    pub tls_client_ca: Option<PathBuf>,

    /// Browser origins allowed to call the REST API (CORS): "*" or a
    /// comma-separated list such as "https://app.example.com". None by default.
    #[arg(long, env = "ROOMSERVICE_CORS_ORIGINS", value_name = "ORIGINS")]
    pub cors_origins: Option<String>,

    /// Redis to store rooms in: `redis://[user:pass@]host:port/db` or
    /// `rediss://` for TLS. With --redis-cluster, one or more comma-separated
    /// seed nodes. Without it, rooms live in process memory only.
    #[arg(
        long,
        env = "ROOMSERVICE_REDIS_URL",
        value_name = "URL[,URL...]",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,

    /// Treat --redis-url as the seed nodes of a Redis Cluster.
    #[arg(long, env = "ROOMSERVICE_REDIS_CLUSTER", requires = "redis_url")]
    pub redis_cluster: bool,

    /// Prefix of every Redis key, so the service can share a Redis.
    #[arg(long, env = "ROOMSERVICE_REDIS_PREFIX", default_value = "rs:", value_parser = parse_prefix)]
    pub redis_prefix: String,

    /// Serve from a Redis whose `maxmemory-policy` is not `noeviction`.
    /// DANGEROUS: such a Redis silently drops rooms and index entries under
    /// memory pressure; without this flag the service reports NOT_SERVING.
    #[arg(long, env = "ROOMSERVICE_ALLOW_EVICTING_REDIS", requires = "redis_url")]
    pub allow_evicting_redis: bool,

    /// On Redis, GetRoom by roomId is served from an in-process cache that
    /// Redis keeps true (client-side caching with invalidation pushes). Its
    /// bound, in estimated bytes; least recently used rooms go first. 0
    /// turns the cache off.
    #[arg(long, env = "ROOMSERVICE_ROOM_CACHE_BYTES", default_value_t = crate::store::redis::DEFAULT_ROOM_CACHE_BYTES, value_name = "BYTES")]
    pub room_cache_bytes: usize,

    /// Calls served at once; beyond it calls are refused at once
    /// (RESOURCE_EXHAUSTED, HTTP 503 with Retry-After) rather than queued.
    /// Health checks are never refused.
    #[arg(long, env = "ROOMSERVICE_MAX_IN_FLIGHT", default_value_t = crate::server::DEFAULT_MAX_IN_FLIGHT, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,

    /// Rooms one account may hold; creates past it are RESOURCE_EXHAUSTED.
    #[arg(long, env = "ROOMSERVICE_MAX_ROOMS_PER_ACCOUNT", default_value = "1000000", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_rooms_per_account: u64,

    /// WatchEvents streams one account may have open on this server at
    /// once; more are RESOURCE_EXHAUSTED. Each open stream polls the store
    /// five times a second.
    #[arg(long, env = "ROOMSERVICE_MAX_WATCHERS_PER_ACCOUNT", default_value_t = crate::service::EventService::DEFAULT_MAX_WATCHERS_PER_ACCOUNT as u32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_watchers_per_account: u32,

    /// Tokens whose `exp` lies further ahead than this are refused: a token
    /// that never expires in practice cannot be revoked.
    #[arg(long, env = "ROOMSERVICE_MAX_TOKEN_LIFETIME", default_value = "366d", value_parser = parse_duration)]
    pub max_token_lifetime: std::time::Duration,

    /// Sessions of rooms without autoCloseConfig end after this many minutes.
    #[arg(long, env = "ROOMSERVICE_MAX_SESSION_MINUTES", default_value = "480", value_parser = clap::value_parser!(u32).range(1..=43_200))]
    pub max_session_minutes: u32,

    /// A session whose last participant left ends when nobody has come back
    /// within this long (e.g. 60s, 5m).
    #[arg(long, env = "ROOMSERVICE_EMPTY_SESSION_GRACE", default_value = "60s", value_parser = parse_duration)]
    pub empty_session_grace: std::time::Duration,

    /// Accept tokens without an `exp` claim (they never expire).
    #[arg(long, env = "ROOMSERVICE_ALLOW_LEGACY_TOKENS")]
    pub allow_legacy_tokens: bool,

    /// Log format.
    #[arg(
        long,
        env = "ROOMSERVICE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Log filter, in tracing's EnvFilter syntax (e.g. "info,roomservice=debug").
    #[arg(long, env = "ROOMSERVICE_LOG", default_value = "info")]
    pub log: String,

    /// Calls one account may make on this server, e.g. `200/s,burst=400`
    /// (or `12000/m`): a token bucket per account, per replica (N replicas
    /// allow up to N times as much). Excess calls get RESOURCE_EXHAUSTED
    /// with a RetryInfo detail, HTTP 429 with Retry-After. Off by default.
    #[arg(long, env = "ROOMSERVICE_RATE_LIMIT", value_name = "RATE")]
    pub rate_limit: Option<crate::ratelimit::RateLimit>,

    /// Level of the access log, one line per call (target
    /// `roomservice::access`); `off` writes none. --log must let the level
    /// through.
    #[arg(
        long,
        env = "ROOMSERVICE_ACCESS_LOG_LEVEL",
        value_enum,
        default_value = "info"
    )]
    pub access_log_level: AccessLogLevel,

    /// Serve Prometheus metrics (`GET /metrics`, plain HTTP) on this address
    /// instead of on --listen's port, e.g. to keep them off a public port.
    #[arg(long, env = "ROOMSERVICE_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// PEM file of the RSA private key (PKCS#8 or PKCS#1, at least 2048
    /// bits) that signs webhooks (`videosdk-signature`). Without it, one key
    /// is made on first start and kept in the store, so every replica signs
    /// with the same key.
    #[arg(long, env = "ROOMSERVICE_WEBHOOK_SIGNING_KEY", value_name = "PEM-FILE")]
    pub webhook_signing_key: Option<std::path::PathBuf>,

    /// Let webhooks reach loopback, private, link-local and other non-public
    /// addresses. For tests and closed networks only: otherwise anyone who
    /// can create a room can make this server call into its own network.
    #[arg(long, env = "ROOMSERVICE_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,

    /// How long a webhook that keeps failing (408, 429, 5xx, timeouts,
    /// connection errors) is retried before it becomes a dead letter.
    #[arg(long, env = "ROOMSERVICE_WEBHOOK_RETRY_FOR", default_value = "24h", value_parser = parse_duration)]
    pub webhook_retry_for: std::time::Duration,

    /// How long events stay in an account's log once delivered, for
    /// WatchEvents resumes (`afterEventId`).
    #[arg(long, env = "ROOMSERVICE_EVENT_RETENTION", default_value = "24h", value_parser = parse_duration)]
    pub event_retention: std::time::Duration,

    /// On SIGINT/SIGTERM, how long to keep serving while health reports
    /// NOT_SERVING (and /readyz 503), before the listener closes: time for
    /// load balancers to notice and stop sending (e.g. 5s behind one that
    /// checks every few seconds).
    #[arg(long, env = "ROOMSERVICE_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub shutdown_delay: std::time::Duration,

    /// On SIGINT/SIGTERM, how long in-flight calls may take to finish before
    /// the process exits anyway, with a non-zero status; a second signal
    /// stops at once.
    #[arg(long, env = "ROOMSERVICE_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: std::time::Duration,
}

impl ServeArgs {
    /// The TLS files, when TLS is configured. clap has already made sure
    /// the certificate and the key come together.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// API key to put in the token [default: the only key of --keys-file or
    /// ROOMSERVICE_KEYS, else the dev key "devkey"].
    #[arg(long, env = "ROOMSERVICE_API_KEY")]
    pub api_key: Option<String>,

    /// Secret to sign with [default: looked up in the keys, else the dev secret].
    #[arg(long, env = "ROOMSERVICE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    #[command(flatten)]
    pub keys: KeySource,

    /// How long the token is valid: e.g. 90s, 30m, 2h, 7d.
    #[arg(long, env = "ROOMSERVICE_TOKEN_TTL", default_value = "24h", value_parser = parse_duration)]
    pub ttl: std::time::Duration,

    /// Comma-separated permissions: allow_join, allow_mod, ask_join.
    #[arg(
        long,
        env = "ROOMSERVICE_TOKEN_PERMISSIONS",
        default_value = "allow_join,allow_mod"
    )]
    pub permissions: String,

    /// Comma-separated roles: crawler (server API), rtc (join only). An empty
    /// value leaves the claim out, which means both.
    #[arg(long, env = "ROOMSERVICE_TOKEN_ROLES", default_value = "crawler")]
    pub roles: String,

    /// Limit the token to one room (roomId or customRoomId).
    #[arg(long, env = "ROOMSERVICE_TOKEN_ROOM_ID")]
    pub room_id: Option<String>,

    /// Mint a participant's join token for this participant id (the
    /// `participantId` claim): a media server's ParticipantJoined with this
    /// token must name this participant. Use with --roles rtc.
    #[arg(long, env = "ROOMSERVICE_TOKEN_PARTICIPANT_ID")]
    pub participant_id: Option<String>,
}

/// Key prefixes may not contain braces: they would change the cluster hash tag.
fn parse_prefix(raw: &str) -> Result<String, String> {
    if raw.contains(['{', '}']) {
        return Err("must not contain '{' or '}'".into());
    }
    Ok(raw.to_owned())
}

/// Parses `90s`, `30m`, `2h`, `7d`, or a bare number of seconds.
pub fn parse_duration(raw: &str) -> Result<std::time::Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration: use e.g. 90s, 30m, 2h, 7d"))?;
    let seconds_per_unit = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{raw:?} has an unknown unit: use s, m, h or d")),
    };
    number
        .checked_mul(seconds_per_unit)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{raw:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("2h").unwrap().as_secs(), 7200);
        assert_eq!(parse_duration("7d").unwrap().as_secs(), 604_800);
        assert_eq!(parse_duration("15").unwrap().as_secs(), 15);
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
