//! `roomservice serve`: turn flags into a running server, and stop it
//! gracefully on SIGINT/SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::auth::{Keyring, Verifier};
use crate::config::ServeArgs;
use crate::domain::PublicUrl;
use crate::gateway::CorsOrigins;
use crate::server::{self, App, Limits, Observability, WebhookSettings};
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

    let signals = ShutdownSignals::install()?;
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
            PublicUrl::parse(&format!("http://{local}")).expect("a socket address makes a URL")
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
    let (store, sessions, events) = open_store(&args)?;

    let app = App {
        store,
        verifier: Arc::new(
            Verifier::new(keyring, args.allow_legacy_tokens)
                .with_max_token_lifetime(args.max_token_lifetime),
        ),
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
        },
        observability: Observability {
            access_log: args.access_log_level,
            metrics_listener,
        },
    };
    tracing::info!(
        address = %local,
        metrics_address,
        public_url = app.public_url.as_str(),
        "roomservice listening"
    );

    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        signals.received().await;
        tracing::info!("shutting down: refusing new connections, finishing in-flight calls");
        let _ = stopping_tx.send(());
    };
    let grace = args.shutdown_grace;
    tokio::select! {
        result = server::serve(listener, app, shutdown) => {
            result.map_err(|e| format!("server failed: {e}"))?;
            tracing::info!("stopped");
        }
        _ = async move {
            let _ = stopping_rx.await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace_seconds = grace.as_secs(), "calls still running after the shutdown grace period; exiting");
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
    }));
    Ok((store.clone(), store.clone(), store))
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

    async fn received(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
