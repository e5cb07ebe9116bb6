//! Per-account rate limits (`--rate-limit 200/s,burst=400`): a token bucket
//! per account, per replica. Checked right after a caller is verified, by
//! both transports, so an account's gRPC and REST calls share its bucket.
//! Buckets exist only for accounts with a configured API key, so their
//! number is bounded by the keyring, not by what callers send.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::UserId;

/// How many calls an account may make: `per_second` on average, and up to
/// `burst` at once after a quiet spell.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

impl FromStr for RateLimit {
    type Err = String;

    /// `200/s`, `12000/m`, optionally `,burst=400` (default: one second's
    /// worth, at least 1).
    fn from_str(raw: &str) -> Result<RateLimit, String> {
        let usage = || {
            format!(
                "{raw:?}: expected RATE/s or RATE/m, optionally ,burst=N (e.g. 200/s,burst=400)"
            )
        };
        let mut parts = raw.split(',').map(str::trim);
        let rate = parts.next().ok_or_else(usage)?;
        let (count, unit) = rate.split_once('/').ok_or_else(usage)?;
        let count: f64 = count.trim().parse().map_err(|_| usage())?;
        let per_second = match unit.trim() {
            "s" => count,
            "m" => count / 60.0,
            _ => return Err(usage()),
        };
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err(format!("{raw:?}: the rate must be positive"));
        }
        let mut burst = per_second.max(1.0);
        for part in parts {
            let value = part.strip_prefix("burst=").ok_or_else(usage)?;
            burst = value.parse().map_err(|_| usage())?;
            if !(burst.is_finite() && burst >= 1.0) {
                return Err(format!("{raw:?}: burst must be at least 1"));
            }
        }
        Ok(RateLimit { per_second, burst })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s, burst {}", self.per_second, self.burst)
    }
}

/// The buckets of one server.
#[derive(Default)]
pub struct RateLimiter {
    limit: Option<RateLimit>,
    buckets: Mutex<HashMap<UserId, Bucket>>,
}

struct Bucket {
    tokens: f64,
    filled_at: Instant,
}

impl RateLimiter {
    /// `None`: no limit (the default).
    pub fn new(limit: Option<RateLimit>) -> RateLimiter {
        RateLimiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn limit(&self) -> Option<RateLimit> {
        self.limit
    }

    /// Takes one call from the account's bucket, or says how long until
    /// one is there.
    pub fn check(&self, account: &UserId) -> Result<(), Duration> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limiter lock poisoned");
        let bucket = buckets.entry(account.clone()).or_insert(Bucket {
            tokens: limit.burst,
            filled_at: now,
        });
        let refill = now.duration_since(bucket.filled_at).as_secs_f64() * limit.per_second;
        bucket.tokens = (bucket.tokens + refill).min(limit.burst);
        bucket.filled_at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64(
            (1.0 - bucket.tokens) / limit.per_second,
        ))
    }
}

/// The check both transports make once a caller is verified; a refusal is
/// logged with the account (the caller learns when to retry).
pub fn admit(limiter: &RateLimiter, account: &UserId) -> Result<(), crate::service::Error> {
    match (limiter.check(account), limiter.limit()) {
        (Err(retry_after), Some(limit)) => {
            tracing::info!(user_id = %account, retry_after_ms = retry_after.as_millis() as u64, "call refused: rate limit");
            Err(crate::service::Error::RateLimited { limit, retry_after })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse() {
        assert_eq!(
            "200/s,burst=400".parse::<RateLimit>().unwrap(),
            RateLimit {
                per_second: 200.0,
                burst: 400.0
            }
        );
        assert_eq!(
            "120/m".parse::<RateLimit>().unwrap(),
            RateLimit {
                per_second: 2.0,
                burst: 2.0
            }
        );
        for bad in [
            "",
            "200",
            "200/h",
            "0/s",
            "-1/s",
            "x/s",
            "10/s,burst=0",
            "10/s,size=3",
        ] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let limiter = RateLimiter::new(Some(RateLimit {
            per_second: 10.0,
            burst: 3.0,
        }));
        let account = UserId::parse("5f7edbb14c938bcd42944527").unwrap();
        for _ in 0..3 {
            assert!(limiter.check(&account).is_ok());
        }
        let wait = limiter.check(&account).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        std::thread::sleep(wait + Duration::from_millis(5));
        assert!(limiter.check(&account).is_ok());
        // Another account has a bucket of its own.
        let other = UserId::parse("000000000000000000000001").unwrap();
        assert!(limiter.check(&other).is_ok());
    }

    #[test]
    fn no_limit_allows_everything() {
        let limiter = RateLimiter::new(None);
        let account = UserId::parse("5f7edbb14c938bcd42944527").unwrap();
        for _ in 0..10_000 {
            assert!(limiter.check(&account).is_ok());
        }
    }
}
