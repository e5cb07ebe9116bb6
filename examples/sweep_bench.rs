//! Sweeper benchmark (issue 7, item 7): 10,000 sessions due in the same
//! second on one Redis, closed by N sweeping replicas. Prints how long after
//! the deadline the last session is stored as closed (goal: within 2 s), the
//! Redis commands per close, and the Redis bytes each ended session keeps.
//!
//! ```text
//! cargo run --release --example sweep_bench -- redis://127.0.0.1:6390 \
//!     [SESSIONS=10000] [SWEEPERS=2] [ACCOUNTS=10] [DURATION_S=10] [INTERVAL_MS=250]
//! ```
//!
//! How: it creates SESSIONS rooms over ACCOUNTS accounts, each with
//! `autoCloseConfig {type: session-ends, durationSeconds: DURATION_S}`, and
//! reports one participant joined in each through `SessionService` (the
//! media-plane call). Each join runs on a clock fixed at its own start time,
//! the starts spread evenly over one second from when the joins begin, so
//! every deadline falls in the same second however long the joins take.
//! Then SWEEPERS replicas (each its own `SessionService` over its own
//! connection, on the system clock) loop as `roomservice serve` does: sleep
//! INTERVAL_MS (the server's is 250 ms), sweep, again, until every session is
//! closed and nothing due is left in the deadline index.
//!
//! Figures:
//! - lateness: when the sweep that stored the last close returned, minus the
//!   latest deadline (an upper bound: that close was stored a little before).
//! - commands per close: `INFO commandstats` deltas from just before the first
//!   deadline until the index is drained (idle sweeps in that window
//!   included, this program's INFO calls excluded), over the closes. Redis
//!   counts the commands a Lua script runs too, so it is shown twice: every
//!   command, and client round trips (EVALSHA, plus the sweep's plain reads
//!   ZRANGEBYSCORE and HMGET; none of the sweep's scripts calls those).
//! - bytes per ended session: `used_memory` once the rooms exist versus once
//!   every session is closed and the index drained, over the sessions.
//!
//! It writes only under a prefix unique to this run (`sweepbench<pid>:`),
//! refuses to start if any key already has that prefix, and deletes its keys
//! when done. `used_memory` and `commandstats` are server-wide: run it
//! against an otherwise idle, single-node Redis.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use redis::aio::MultiplexedConnection;
use roomservice::auth::{Caller, Keyring, Verifier};
use roomservice::domain::{self, AutoCloseParams, CreateRoomParams, EndReason, Session};
use roomservice::service::{Clock, RoomService, SessionConfig, SessionService, SystemClock};
use roomservice::store::{RedisConfig, RedisStore, SessionStore, Store};
use serde_json::json;

#[path = "support/redis_admin.rs"]
mod redis_admin;

use redis_admin::{delete_keys_with_prefix, info, keys_with_prefix, positive, used_memory};

const DEFAULT_SESSIONS: usize = 10_000;
const DEFAULT_SWEEPERS: usize = 2;
const DEFAULT_ACCOUNTS: usize = 10;
const DEFAULT_DURATION_S: usize = 10;
/// As `SWEEP_INTERVAL` in src/server/mod.rs.
const DEFAULT_INTERVAL_MS: usize = 250;
const IN_FLIGHT: usize = 64;
const MEDIA_KEY: &str = "sweep-bench-media";

struct Settings {
    url: String,
    sessions: usize,
    sweepers: usize,
    accounts: usize,
    duration_s: usize,
    interval: Duration,
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(url) = args.next() else {
        eprintln!(
            "usage: sweep_bench redis://HOST:PORT [SESSIONS={DEFAULT_SESSIONS}] [SWEEPERS={DEFAULT_SWEEPERS}] \
             [ACCOUNTS={DEFAULT_ACCOUNTS}] [DURATION_S={DEFAULT_DURATION_S}] [INTERVAL_MS={DEFAULT_INTERVAL_MS}]"
        );
        return ExitCode::from(2);
    };
    let numbers = [
        DEFAULT_SESSIONS,
        DEFAULT_SWEEPERS,
        DEFAULT_ACCOUNTS,
        DEFAULT_DURATION_S,
        DEFAULT_INTERVAL_MS,
    ]
    .map(|default| positive(args.next(), default));
    let [
        Some(sessions),
        Some(sweepers),
        Some(accounts),
        Some(duration_s),
        Some(interval_ms),
    ] = numbers
    else {
        eprintln!(
            "SESSIONS, SWEEPERS, ACCOUNTS, DURATION_S and INTERVAL_MS must be positive integers"
        );
        return ExitCode::from(2);
    };
    let settings = Settings {
        url,
        sessions,
        sweepers,
        accounts,
        duration_s,
        interval: Duration::from_millis(interval_ms as u64),
    };
    let prefix = format!("sweepbench{}:", std::process::id());

    let mut admin = match redis::Client::open(settings.url.as_str()) {
        Ok(client) => match client.get_multiplexed_async_connection().await {
            Ok(admin) => admin,
            Err(e) => {
                eprintln!("cannot connect to {}: {e}", settings.url);
                return ExitCode::FAILURE;
            }
        },
        Err(e) => {
            eprintln!("bad url {}: {e}", settings.url);
            return ExitCode::from(2);
        }
    };
    match keys_with_prefix(&mut admin, &prefix).await {
        Ok(keys) if keys.is_empty() => {}
        Ok(keys) => {
            eprintln!(
                "refusing to run: {} key(s) with prefix {prefix:?} already exist (e.g. {:?})",
                keys.len(),
                keys[0]
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("cannot scan {}: {e}", settings.url);
            return ExitCode::FAILURE;
        }
    }

    // From here on keys may exist under our prefix: always clean up.
    let outcome = run(&settings, &prefix, &mut admin).await;
    let cleanup = delete_keys_with_prefix(&mut admin, &prefix).await;
    match &cleanup {
        Ok(deleted) => {
            println!("cleanup:              deleted {deleted} keys with prefix {prefix:?}")
        }
        Err(e) => eprintln!("cleanup failed, delete keys {prefix}* by hand: {e}"),
    }
    match outcome {
        Ok(true) if cleanup.is_ok() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A clock stopped at one instant: the start of one join.
struct Fixed(Timestamp);

impl Clock for Fixed {
    fn now(&self) -> Timestamp {
        self.0
    }
}

fn keyring(accounts: usize) -> Keyring {
    let mut toml = format!(
        "[[keys]]\napi_key = \"{MEDIA_KEY}\"\nsecret = \"{MEDIA_KEY}-secret\"\nservice = true\n"
    );
    for i in 0..accounts {
        toml.push_str(&format!(
            "[[keys]]\napi_key = \"sweep-bench-{i}\"\nsecret = \"sweep-bench-{i}-secret\"\n"
        ));
    }
    Keyring::parse_toml(&toml).expect("generated keys parse")
}

/// An HS256 token of `api_key` with these roles and permissions.
fn token(api_key: &str, roles: &[&str], permissions: &[&str]) -> String {
    let now = jiff::Timestamp::now().as_second();
    let claims = json!({
        "apikey": api_key,
        "permissions": permissions,
        "roles": roles,
        "version": 2,
        "iat": now,
        "exp": now + 3600,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(format!("{api_key}-secret").as_bytes()),
    )
    .expect("sign")
}

async fn connect(url: &str, prefix: &str) -> Result<Arc<RedisStore>, String> {
    let store = Arc::new(RedisStore::new(RedisConfig {
        urls: vec![url.to_owned()],
        cluster: false,
        prefix: prefix.to_owned(),
        allow_evicting: false,
        ..RedisConfig::default()
    }));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.ping().await {
            Ok(()) => return Ok(store),
            Err(e) if Instant::now() > deadline => return Err(format!("store: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn service(
    store: &Arc<RedisStore>,
    verifier: &Arc<Verifier>,
    clock: Arc<dyn Clock>,
) -> SessionService {
    SessionService::new(
        store.clone(),
        store.clone(),
        store.clone(),
        verifier.clone(),
        clock,
        SessionConfig::default(),
    )
}

fn at(t: Timestamp, millis: i64) -> Timestamp {
    Timestamp::from_millisecond(t.as_millisecond() + millis).expect("in range")
}

/// Returns whether every check held.
async fn run(
    s: &Settings,
    prefix: &str,
    admin: &mut MultiplexedConnection,
) -> Result<bool, String> {
    let verifier = Arc::new(Verifier::new(keyring(s.accounts), false));
    let verify = |token: String| -> Result<Arc<Caller>, String> {
        verifier
            .verify_management(Some(&token))
            .map_err(|e| e.to_string())
    };
    let media = verify(token(MEDIA_KEY, &["crawler"], &["allow_join"]))?;
    let accounts: Vec<(Arc<Caller>, String)> = (0..s.accounts)
        .map(|i| {
            let key = format!("sweep-bench-{i}");
            let caller = verify(token(&key, &["crawler"], &["allow_join", "allow_mod"]))?;
            Ok((caller, token(&key, &["rtc"], &["allow_join"])))
        })
        .collect::<Result<_, String>>()?;
    let accounts = Arc::new(accounts);
    let media = Arc::new(media);

    // 1. The rooms.
    let store = connect(&s.url, prefix).await?;
    let rooms = RoomService::new(store.clone());
    let started = Instant::now();
    let seconds = s.duration_s as i64;
    let room_ids = run_parallel(s.sessions, {
        let accounts = accounts.clone();
        move |i| {
            let (rooms, accounts) = (rooms.clone(), accounts.clone());
            async move {
                let (caller, _) = &accounts[i % accounts.len()];
                let params = CreateRoomParams {
                    auto_close_config: Some(AutoCloseParams {
                        kind: Some("session-ends".into()),
                        duration: None,
                        duration_seconds: Some(seconds),
                    }),
                    ..Default::default()
                };
                let created = rooms
                    .create_room(caller, params, None)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(created.room.room_id.to_string())
            }
        }
    })
    .await?;
    println!(
        "rooms:                {} over {} accounts in {:.2} s",
        s.sessions,
        s.accounts,
        started.elapsed().as_secs_f64()
    );
    let memory_before = used_memory(admin).await?;

    // 2. One participant joins each room; starts spread over one second.
    let base = domain::now();
    let room_ids = Arc::new(room_ids);
    let started = Instant::now();
    let sessions: Vec<Session> = run_parallel(s.sessions, {
        let (store, verifier, accounts, media, room_ids) = (
            store.clone(),
            verifier.clone(),
            accounts.clone(),
            media.clone(),
            room_ids.clone(),
        );
        let count = s.sessions as i64;
        move |i| {
            let start = at(base, i as i64 * 1000 / count);
            let joins = service(&store, &verifier, Arc::new(Fixed(start)));
            let (accounts, media, room_ids) = (accounts.clone(), media.clone(), room_ids.clone());
            async move {
                let (_, participant) = &accounts[i % accounts.len()];
                joins
                    .participant_joined(&media, &room_ids[i], "p", "participant", participant)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    })
    .await?;
    let first_deadline = sessions
        .iter()
        .map(|x| x.hard_deadline)
        .min()
        .expect("sessions");
    let last_deadline = sessions
        .iter()
        .map(|x| x.hard_deadline)
        .max()
        .expect("sessions");
    println!(
        "sessions:             {} joined in {:.2} s; deadlines {} .. {} ({} ms apart)",
        sessions.len(),
        started.elapsed().as_secs_f64(),
        domain::format_timestamp(first_deadline),
        domain::format_timestamp(last_deadline),
        last_deadline.as_millisecond() - first_deadline.as_millisecond()
    );
    let lead = first_deadline.as_millisecond() - domain::now().as_millisecond();
    if lead < 1000 {
        return Err(format!(
            "the joins took too long: the first deadline is {lead} ms away; raise DURATION_S"
        ));
    }
    drop(store);

    // 3. The sweepers, as replicas: each its own connection, the real clock.
    let closed = Arc::new(AtomicUsize::new(0));
    let last_close = Arc::new(std::sync::Mutex::new(None::<Timestamp>));
    let mut replicas = tokio::task::JoinSet::new();
    for _ in 0..s.sweepers {
        let sweeper = service(
            &connect(&s.url, prefix).await?,
            &verifier,
            Arc::new(SystemClock),
        );
        let (closed, last_close, total, interval) =
            (closed.clone(), last_close.clone(), s.sessions, s.interval);
        replicas.spawn(async move {
            let mut stats = SweeperStats::default();
            let mut backlog = false;
            loop {
                // As the server does: a full batch means sweep again at once.
                if !backlog {
                    tokio::time::sleep(interval).await;
                }
                let began = Instant::now();
                let report = sweeper.sweep().await.map_err(|e| e.to_string())?;
                backlog = report.examined >= SessionService::SWEEP_BATCH;
                let returned = domain::now();
                stats.sweeps += 1;
                stats.closed += report.closed;
                if report.examined > 0 {
                    stats.busy_sweeps += 1;
                    stats.busy_time += began.elapsed();
                }
                if report.closed > 0 {
                    let mut last = last_close.lock().expect("lock");
                    *last = Some(last.map_or(returned, |t: Timestamp| t.max(returned)));
                }
                let all = closed.fetch_add(report.closed, Ordering::SeqCst) + report.closed;
                if all >= total && report.examined == 0 {
                    return Ok::<SweeperStats, String>(stats);
                }
            }
        });
    }

    // Just before the first deadline: the counters the closes are measured by.
    let wait = first_deadline.as_millisecond() - domain::now().as_millisecond() - 200;
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    let stats_before = commandstats(admin).await?;

    let mut per_sweeper = Vec::new();
    let give_up = tokio::time::sleep(Duration::from_secs(120 + s.duration_s as u64));
    tokio::pin!(give_up);
    while !replicas.is_empty() {
        tokio::select! {
            joined = replicas.join_next() => {
                let stats = joined.expect("not empty").map_err(|e| format!("sweeper crashed: {e}"))??;
                per_sweeper.push(stats);
            }
            _ = &mut give_up => {
                return Err(format!(
                    "not done after 2 minutes: {} of {} closed",
                    closed.load(Ordering::SeqCst),
                    s.sessions
                ));
            }
        }
    }
    let stats_after = commandstats(admin).await?;
    let memory_after = used_memory(admin).await?;
    let total_closed = closed.load(Ordering::SeqCst);
    let last_close = last_close.lock().expect("lock").expect("something closed");

    // 4. Check from the store: each ended once, at its deadline.
    let checker = connect(&s.url, prefix).await?;
    let mut wrong = 0usize;
    for session in &sessions {
        let stored = checker
            .get_session(&session.user_id, &session.id)
            .await
            .map_err(|e| e.to_string())?;
        let ok = stored.is_some_and(|v| {
            v.version == 2
                && v.value.end == Some(session.hard_deadline)
                && v.value.end_reason == Some(EndReason::AutoClose)
        });
        if !ok {
            wrong += 1;
        }
    }

    // 5. The figures.
    let lateness = last_close.as_millisecond() - last_deadline.as_millisecond();
    let delta: BTreeMap<String, u64> = stats_after
        .iter()
        .filter(|(name, _)| name.as_str() != "info")
        .map(|(name, calls)| {
            (
                name.clone(),
                calls - stats_before.get(name).copied().unwrap_or(0),
            )
        })
        .filter(|(_, calls)| *calls > 0)
        .collect();
    let all_commands: u64 = delta.values().sum();
    let round_trips: u64 = ["evalsha", "eval", "zrangebyscore", "hmget", "script"]
        .iter()
        .map(|name| delta.get(*name).copied().unwrap_or(0))
        .sum();
    let per_close = |n: u64| n as f64 / total_closed.max(1) as f64;
    println!(
        "sweepers:             {} (each its own connection), a sweep every {} ms",
        s.sweepers,
        s.interval.as_millis()
    );
    for (i, stats) in per_sweeper.iter().enumerate() {
        println!(
            "  sweeper {i}:          {} sweeps, {} busy (mean {:.0} ms), {} closes",
            stats.sweeps,
            stats.busy_sweeps,
            stats.busy_time.as_secs_f64() * 1000.0 / stats.busy_sweeps.max(1) as f64,
            stats.closed
        );
    }
    println!(
        "closed:               {total_closed} of {} (sum of the sweepers' closes); {} stored wrong (not ended once at the deadline)",
        s.sessions, wrong
    );
    println!(
        "last close stored:    {lateness} ms after the last deadline ({} ms after the first); goal <= 2000 ms: {}",
        last_close.as_millisecond() - first_deadline.as_millisecond(),
        if lateness <= 2000 { "met" } else { "NOT met" }
    );
    println!(
        "commands per close:   {:.2} counting those run inside Lua; {:.2} client round trips",
        per_close(all_commands),
        per_close(round_trips)
    );
    let breakdown: Vec<String> = delta
        .iter()
        .map(|(name, calls)| format!("{name} {:.2}", per_close(*calls)))
        .collect();
    println!("  per close:          {}", breakdown.join(", "));
    println!(
        "used_memory:          {memory_before} -> {memory_after} bytes (rooms present in both)"
    );
    println!(
        "bytes per ended session kept: {:.1}",
        (memory_after as f64 - memory_before as f64) / s.sessions as f64
    );
    Ok(total_closed == s.sessions && wrong == 0)
}

#[derive(Default)]
struct SweeperStats {
    sweeps: usize,
    busy_sweeps: usize,
    busy_time: Duration,
    closed: usize,
}

/// Runs `job(i)` for i in 0..count, IN_FLIGHT at a time; results in order.
async fn run_parallel<T, F, Fut>(count: usize, job: F) -> Result<Vec<T>, String>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<T, String>> + Send + 'static,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT.min(count) {
        let (job, next) = (job.clone(), next.clone());
        workers.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, String>(done);
                }
                done.push((i, job(i).await?));
            }
        });
    }
    let mut all = Vec::with_capacity(count);
    while let Some(joined) = workers.join_next().await {
        all.extend(joined.map_err(|e| format!("worker crashed: {e}"))??);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

/// Calls per command: `cmdstat_evalsha:calls=12,usec=...` → ("evalsha", 12).
async fn commandstats(admin: &mut MultiplexedConnection) -> Result<BTreeMap<String, u64>, String> {
    Ok(info(admin, "commandstats")
        .await?
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_ascii_lowercase(), calls.parse().ok()?))
        })
        .collect())
}
