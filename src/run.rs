//! `roomservice serve`: turn flags into a running server, reload its files
//! on SIGHUP, and stop it gracefully on SIGINT/SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::auth::{Keyring, Verifier};
use crate::config::ServeArgs;
use crate::domain::PublicUrl;
use crate::gateway::CorsOrigins;
use crate::server::{self, App, Limits, Observability, ServerTls, WebhookSettings};
use crate::service::{DeliveryConfig, SessionConfig, SystemClock};
use crate::store::redis::redacted;
use crate::store::{EventStore, MemoryStore, RedisConfig, RedisStore, SessionStore, Store};
use crate::webhook::SigningKey;

pub async fn serve(args: ServeArgs) -> Result<(), String> {
    let keyring = match args.keys.load()? {
        Some(keyring) => {
            tracing::info!(keys = keyring.len(), "api keys loaded");
            keyring
        }
        None => {
            if !args.listen.ip().is_loopback() {
                return Err(format!(
                    "refusing dev mode on non-loopback address {}: configure API keys with --keys-file or ROOMSERVICE_KEYS",
                    args.listen
                ));
            }
            tracing::warn!(
                "DEV MODE: no API keys configured; accepting tokens signed by api key \"devkey\" with secret \"secret\". \
                 Configure --keys-file or ROOMSERVICE_KEYS before exposing this server"
            );
            Keyring::dev()
        }
    };

    let tls = match args.tls_files() {
        None => None,
        Some(files) => Some(Arc::new(ServerTls::load(files).map_err(|e| e.to_string())?)),
    };

    let signals = ShutdownSignals::install()?;
    // Installed with the others, before the server says it is listening:
    // SIGHUP's default action would kill the process.
    let hangups =
        signal(SignalKind::hangup()).map_err(|e| format!("cannot listen for SIGHUP: {e}"))?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    let metrics_listener = match args.metrics_listen {
        None => None,
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .map_err(|e| format!("--metrics-listen: cannot listen on {address}: {e}"))?,
        ),
    };
    // Logged on the "listening" line, so that a port chosen by the system
    // (`:0`) can be found.
    let metrics_address = match &metrics_listener {
        None => format!("{local}"),
        Some(metrics_listener) => metrics_listener
            .local_addr()
            .map_err(|e| format!("cannot read the bound metrics address: {e}"))?
            .to_string(),
    };
    let public_url = match &args.public_url {
        Some(raw) => PublicUrl::parse(raw).map_err(|e| format!("--public-url: {e}"))?,
        None => {
            if local.ip().is_unspecified() {
                // Nobody can reach http://0.0.0.0:50051: every `links` URL
                // handed to clients would be useless.
                tracing::warn!(
                    address = %local,
                    "listening on all interfaces without --public-url: links in responses will point at {local}; \
                     set --public-url (ROOMSERVICE_PUBLIC_URL) to the address clients use"
                );
            }
            let scheme = if tls.is_some() { "https" } else { "http" };
            PublicUrl::parse(&format!("{scheme}://{local}"))
                .map_err(|e| format!("cannot make a public URL of {local}: {e}"))?
        }
    };
    let cors = CorsOrigins::parse(args.cors_origins.as_deref().unwrap_or_default())
        .map_err(|e| format!("--cors-origins: {e}"))?;

    let signing_key = match &args.webhook_signing_key {
        None => None,
        Some(path) => {
            let pem = std::fs::read_to_string(path).map_err(|e| {
                format!("--webhook-signing-key {}: cannot read: {e}", path.display())
            })?;
            let key = SigningKey::from_pem(&pem)
                .map_err(|e| format!("--webhook-signing-key {}: {e}", path.display()))?;
            Some(Arc::new(key))
        }
    };
    if args.webhook_allow_private {
        tracing::warn!(
            "--webhook-allow-private: webhooks may reach loopback and private addresses; anyone who can create a room can make this server call into its network"
        );
    }
    if let Some(limit) = args.rate_limit {
        tracing::info!(limit = %limit, "rate limit per account, per replica");
    }
    let (store, sessions, events) = open_store(&args)?;

    let verifier = Arc::new(
        Verifier::new(keyring, args.allow_legacy_tokens)
            .with_max_token_lifetime(args.max_token_lifetime),
    );
    let reloader = Arc::new(Reloader {
        verifier: verifier.clone(),
        keys_file: args.keys.keys_file.clone(),
        keys_list: args.keys.keys.is_some(),
        tls: tls.clone(),
    });
    // Ends with the runtime, when `serve` returns.
    tokio::spawn(reload_on_hangup(hangups, reloader));

    let app = App {
        store,
        verifier,
        public_url,
        cors,
        sessions,
        events,
        session_config: SessionConfig {
            max_session: Duration::from_secs(60 * u64::from(args.max_session_minutes)),
            empty_grace: args.empty_session_grace,
        },
        clock: Arc::new(SystemClock),
        sweeper: true,
        shutdown_delay: args.shutdown_delay,
        webhooks: WebhookSettings {
            signing_key,
            allow_private: args.webhook_allow_private,
            delivery: DeliveryConfig {
                retry_for: args.webhook_retry_for,
                retention: args.event_retention,
                ..DeliveryConfig::default()
            },
            deliver: true,
        },
        limits: Limits {
            max_in_flight: args.max_in_flight as usize,
            max_rooms_per_account: args.max_rooms_per_account,
            max_watchers_per_account: args.max_watchers_per_account as usize,
            rate_limit: args.rate_limit,
        },
        tls: tls.clone(),
        observability: Observability {
            access_log: args.access_log_level,
            metrics_listener,
        },
    };
    let tls_mode = match &tls {
        None => "off",
        Some(tls) if tls.is_mutual() => "mutual",
        Some(_) => "on",
    };
    tracing::info!(
        address = %local,
        metrics_address,
        public_url = app.public_url.as_str(),
        tls = tls_mode,
        "roomservice listening"
    );

    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let mut signals = signals;
    let shutdown = async move {
        signals.received().await;
        tracing::info!("shutting down: refusing new connections, finishing in-flight calls");
        let _ = stopping_tx.send(());
        // A second signal means "now": an operator who cannot wait.
        tokio::spawn(async move {
            signals.received().await;
            tracing::warn!("second signal: stopping at once, calls in flight are cut off");
            std::process::exit(EXIT_FORCED);
        });
    };
    let grace = args.shutdown_grace;
    tokio::select! {
        result = server::serve(listener, app, shutdown) => {
            result.map_err(|e| format!("server failed: {e}"))?;
            tracing::info!("stopped");
        }
        _ = async move {
            let _ = stopping_rx.await;
            tokio::time::sleep(args.shutdown_delay + grace).await;
        } => {
            // Non-zero, so a supervisor can tell a forced stop from a clean one.
            tracing::warn!(grace_seconds = grace.as_secs(), "calls still running after the shutdown grace period; exiting");
            return Err(format!(
                "calls were still running when the shutdown grace period ({} s) ran out",
                grace.as_secs()
            ));
        }
    }
    Ok(())
}

/// The store, as its two concepts: rooms and sessions live in one backend.
type Stores = (Arc<dyn Store>, Arc<dyn SessionStore>, Arc<dyn EventStore>);

fn open_store(args: &ServeArgs) -> Result<Stores, String> {
    let Some(urls) = &args.redis_url else {
        tracing::warn!(
            "storage: embedded in-memory store; rooms live in this process only and are lost on exit"
        );
        let store = Arc::new(MemoryStore::new());
        return Ok((store.clone(), store.clone(), store));
    };
    let urls: Vec<String> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    if urls.is_empty() {
        return Err("--redis-url is empty".into());
    }
    if urls.len() > 1 && !args.redis_cluster {
        return Err("--redis-url lists several nodes: add --redis-cluster, or give one URL".into());
    }
    for url in &urls {
        let parsed =
            url::Url::parse(url).map_err(|e| format!("--redis-url {:?}: {e}", redacted(url)))?;
        if !matches!(parsed.scheme(), "redis" | "rediss") {
            return Err(format!(
                "--redis-url {:?}: use redis:// or rediss://",
                redacted(url)
            ));
        }
    }
    let shown: Vec<String> = urls.iter().map(|u| redacted(u)).collect();
    tracing::info!(
        urls = ?shown,
        cluster = args.redis_cluster,
        prefix = args.redis_prefix.as_str(),
        "storage: redis"
    );
    let store = Arc::new(RedisStore::new(RedisConfig {
        urls,
        cluster: args.redis_cluster,
        prefix: args.redis_prefix.clone(),
        allow_evicting: args.allow_evicting_redis,
        room_cache_bytes: args.room_cache_bytes,
    }));
    Ok((store.clone(), store.clone(), store))
}

/// The exit status of a stop forced by a second signal (as a shell reports
/// a process ended by SIGINT).
const EXIT_FORCED: i32 = 130;
/// What SIGHUP re-reads: the keys file and the TLS files. Each is reloaded
/// on its own: a broken certificate does not hold back a good keys file, and
/// whichever is broken keeps its old configuration.
struct Reloader {
    verifier: Arc<Verifier>,
    /// `--keys-file`.
    keys_file: Option<PathBuf>,
    /// Whether keys came from `--keys` / `ROOMSERVICE_KEYS`, which a running
    /// process cannot re-read.
    keys_list: bool,
    tls: Option<Arc<ServerTls>>,
}

impl Reloader {
    /// Reads files: run on a blocking thread.
    fn reload(&self) {
        if self.keys_file.is_none() && self.tls.is_none() {
            tracing::info!(
                "SIGHUP: nothing to reload (no --keys-file, no --tls-cert); other flags need a restart"
            );
            return;
        }
        if let Some(path) = &self.keys_file {
            match Keyring::load_file(path) {
                Ok(keyring) => {
                    let count = keyring.len();
                    self.verifier.replace_keyring(keyring);
                    tracing::info!(file = %path.display(), keys = count, "SIGHUP: api keys reloaded");
                }
                Err(error) => tracing::warn!(
                    %error,
                    "SIGHUP: api keys not reloaded; the keys already loaded stay in force"
                ),
            }
        } else if self.keys_list {
            tracing::info!(
                "SIGHUP: api keys from --keys / ROOMSERVICE_KEYS cannot change without a restart"
            );
        }
        if let Some(tls) = &self.tls {
            let files = tls.files();
            match tls.reload() {
                Ok(()) => tracing::info!(
                    cert = %files.cert.display(),
                    key = %files.key.display(),
                    client_ca = files.client_ca.as_ref().map(|p| p.display().to_string()),
                    "SIGHUP: tls certificate, key and client CA reloaded; new connections use them"
                ),
                Err(error) => tracing::warn!(
                    %error,
                    "SIGHUP: tls not reloaded; the certificate already loaded stays in force"
                ),
            }
        }
    }
}

/// Reloads on every SIGHUP, for as long as the server runs.
async fn reload_on_hangup(mut hangups: Signal, reloader: Arc<Reloader>) {
    while hangups.recv().await.is_some() {
        let reloader = reloader.clone();
        // File reads block: off the runtime's worker threads.
        if let Err(error) = tokio::task::spawn_blocking(move || reloader.reload()).await {
            tracing::error!(%error, "SIGHUP: reload failed");
        }
    }
}

/// SIGINT and SIGTERM listeners, installed before the server says it is
/// listening: a signal sent any time after that line must stop the server
/// gracefully, not kill it with the default action.
struct ShutdownSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl ShutdownSignals {
    fn install() -> Result<ShutdownSignals, String> {
        let listen = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| format!("cannot listen for {name}: {e}"))
        };
        Ok(ShutdownSignals {
            interrupt: listen(SignalKind::interrupt(), "SIGINT")?,
            terminate: listen(SignalKind::terminate(), "SIGTERM")?,
        })
    }

    async fn received(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
