//! Measures the Redis memory a room costs: creates COUNT default rooms (no
//! settings, no customRoomId, spread over ACCOUNTS accounts) through
//! `RedisStore` and compares `used_memory` before and after.
//!
//! ```text
//! cargo run --release --example redis_memory -- redis://127.0.0.1:6390 [COUNT=100000] [ACCOUNTS=10]
//! ```
//!
//! Accounts matter: an account's rooms zset stays in the compact listpack
//! encoding up to `zset-max-listpack-entries` (128 by default) rooms, and
//! becomes a skiplist above that. The default of 10,000 rooms per account
//! measures the larger, skiplist case.
//!
//! It writes only under a prefix unique to this run (`bench<pid>:`), refuses to
//! start if any key already has that prefix, and deletes its keys when done.
//! `used_memory` is server-wide, so run it against an otherwise idle Redis.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use roomservice::domain::{self, Room, RoomId, UserId};
use roomservice::store::{CreateOutcome, RedisConfig, RedisStore, Store};

#[path = "support/redis_admin.rs"]
mod redis_admin;

use redis_admin::{delete_keys_with_prefix, keys_with_prefix, positive, used_memory};

const DEFAULT_ACCOUNTS: usize = 10;
const IN_FLIGHT: usize = 64;
const DEFAULT_COUNT: usize = 100_000;

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(url) = args.next() else {
        eprintln!(
            "usage: redis_memory redis://HOST:PORT [COUNT={DEFAULT_COUNT}] [ACCOUNTS={DEFAULT_ACCOUNTS}]"
        );
        return ExitCode::from(2);
    };
    let (count, accounts) = match (
        positive(args.next(), DEFAULT_COUNT),
        positive(args.next(), DEFAULT_ACCOUNTS),
    ) {
        (Some(count), Some(accounts)) => (count, accounts),
        _ => {
            eprintln!("COUNT and ACCOUNTS must be positive integers");
            return ExitCode::from(2);
        }
    };
    let prefix = format!("bench{}:", std::process::id());

    let mut admin = match connect(&url).await {
        Ok(admin) => admin,
        Err(e) => {
            eprintln!("cannot connect to {url}: {e}");
            return ExitCode::FAILURE;
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
            eprintln!("cannot scan {url}: {e}");
            return ExitCode::FAILURE;
        }
    }

    // From here on keys may exist under our prefix: always clean up.
    let outcome = measure(&url, &prefix, count, accounts, &mut admin).await;
    let cleanup = delete_keys_with_prefix(&mut admin, &prefix).await;
    match &cleanup {
        Ok(deleted) => println!("cleanup:         deleted {deleted} keys with prefix {prefix:?}"),
        Err(e) => eprintln!("cleanup failed, delete keys {prefix}* by hand: {e}"),
    }
    match outcome {
        Ok(()) if cleanup.is_ok() => ExitCode::SUCCESS,
        Ok(()) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn measure(
    url: &str,
    prefix: &str,
    count: usize,
    account_count: usize,
    admin: &mut MultiplexedConnection,
) -> Result<(), String> {
    let store = Arc::new(RedisStore::new(RedisConfig {
        urls: vec![url.to_owned()],
        cluster: false,
        prefix: prefix.to_owned(),
        // The example measures memory, whatever the policy.
        allow_evicting: true,
        ..RedisConfig::default()
    }));
    wait_until_connected(store.as_ref()).await?;

    let before = used_memory(admin).await?;
    let accounts: Arc<Vec<UserId>> = Arc::new(
        (0..account_count)
            .map(|i| UserId::derive_from_api_key(&format!("redis-memory-bench-{i}")))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT.min(count) {
        let (store, accounts, next) = (store.clone(), accounts.clone(), next.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<(), String>(());
                }
                create_one(store.as_ref(), &accounts[i % accounts.len()]).await?;
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.map_err(|e| format!("worker crashed: {e}"))??;
    }
    let elapsed = started.elapsed();
    let after = used_memory(admin).await?;

    let (_, listed) = store
        .list_rooms(&accounts[0], 0, 1)
        .await
        .map_err(|e| e.to_string())?;
    let per_room = (after as f64 - before as f64) / count as f64;
    println!("redis:           {url} (prefix {prefix:?})");
    println!("rooms created:   {count} over {account_count} accounts ({listed} in the first)");
    println!("elapsed:         {:.2} s", elapsed.as_secs_f64());
    println!(
        "creates/s:       {:.0}",
        count as f64 / elapsed.as_secs_f64()
    );
    println!("used_memory:     {before} -> {after} bytes");
    println!("bytes per room:  {per_room:.1}");
    Ok(())
}

async fn create_one(store: &RedisStore, user_id: &UserId) -> Result<(), String> {
    loop {
        let now = domain::now();
        let room = Room {
            room_id: RoomId::generate(),
            user_id: user_id.clone(),
            custom_room_id: None,
            disabled: false,
            created_at: now,
            updated_at: now,
            settings: Default::default(),
        };
        match store
            .create_room(&room, u64::MAX)
            .await
            .map_err(|e| e.to_string())?
        {
            CreateOutcome::Created(_) => return Ok(()),
            CreateOutcome::RoomIdTaken => continue,
            CreateOutcome::AccountFull => return Err("no limit, yet the account is full".into()),
            CreateOutcome::Existing(_) => {
                return Err("no customRoomId, yet an existing room".into());
            }
            CreateOutcome::Replayed(_) | CreateOutcome::KeyReused => {
                return Err("no idempotency key, yet an answer about one".into());
            }
        }
    }
}

async fn wait_until_connected(store: &RedisStore) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.ping().await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn connect(url: &str) -> redis::RedisResult<MultiplexedConnection> {
    redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await
}
