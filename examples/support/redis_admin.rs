//! Helpers the benchmark examples share (`#[path]`-included; not an example
//! of its own): argument parsing and the admin side of a Redis they measure.

#![allow(dead_code)]

use redis::aio::MultiplexedConnection;

/// `raw` parsed as a positive integer, `default` when absent.
pub fn positive(raw: Option<String>, default: usize) -> Option<usize> {
    match raw {
        None => Some(default),
        Some(raw) => raw.parse().ok().filter(|n| *n > 0),
    }
}

pub async fn info(admin: &mut MultiplexedConnection, section: &str) -> Result<String, String> {
    redis::cmd("INFO")
        .arg(section)
        .query_async(admin)
        .await
        .map_err(|e| format!("INFO {section}: {e}"))
}

/// Redis's `used_memory`: server-wide, so measure on an otherwise idle Redis.
pub async fn used_memory(admin: &mut MultiplexedConnection) -> Result<u64, String> {
    info(admin, "memory")
        .await?
        .lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "INFO memory has no used_memory".to_owned())
}

/// Every key starting with `prefix`. The examples' prefixes are their own
/// (`bench<pid>:`, `sweepbench<pid>:`), with no glob characters.
pub async fn keys_with_prefix(
    admin: &mut MultiplexedConnection,
    prefix: &str,
) -> redis::RedisResult<Vec<String>> {
    let pattern = format!("{prefix}*");
    let mut cursor: u64 = 0;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(admin)
            .await?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

pub async fn delete_keys_with_prefix(
    admin: &mut MultiplexedConnection,
    prefix: &str,
) -> redis::RedisResult<usize> {
    let keys = keys_with_prefix(admin, prefix).await?;
    for batch in keys.chunks(1000) {
        redis::cmd("UNLINK")
            .arg(batch)
            .query_async::<()>(admin)
            .await?;
    }
    Ok(keys.len())
}
