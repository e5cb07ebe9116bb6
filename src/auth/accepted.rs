//! Tokens verified recently, so that a caller who sends the same token with
//! every call (every SDK does) pays for base64, JSON and HMAC once, not per
//! call: the full check was about a fifth of the server's CPU per GetRoom
//! (docs/performance.md).
//!
//! A hit is the very same token text, verified against the same keyring, and
//! still inside its `exp` (plus leeway) now. Everything else a verification
//! checks cannot change with time in a way that would turn an accepted token
//! into a refused one: `nbf`, `iat` and the `exp` horizon only become easier
//! to meet as time passes. Refusals are never remembered, so that each one is
//! logged with its reason.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::Caller;

/// How many tokens are remembered. At about half a KiB each (the token and
/// its caller), a few MiB at most. When full, the whole table is dropped:
/// simpler than an LRU, and a server with that many distinct live tokens
/// re-verifies each once more.
const CAPACITY: usize = 10_000;

/// Verified tokens and who they verified as.
#[derive(Default)]
pub struct AcceptedTokens {
    entries: Mutex<HashMap<Box<str>, Accepted>>,
}

struct Accepted {
    /// The keyring the token was verified against ([`super::Verifier`]
    /// numbers them); a replaced keyring (SIGHUP) invalidates the entry.
    keyring: u64,
    /// The token's `exp` in seconds; `None` for a legacy token without one.
    exp: Option<u64>,
    caller: Arc<Caller>,
}

impl AcceptedTokens {
    /// The caller `token` verified as, if it was verified against `keyring`
    /// and has not expired by `now` (unix seconds) with `leeway` seconds of
    /// clock skew, as the full check would judge it.
    pub fn get(&self, token: &str, keyring: u64, now: i64, leeway: u64) -> Option<Arc<Caller>> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let accepted = entries.get(token)?;
        if accepted.keyring != keyring {
            return None;
        }
        if let Some(exp) = accepted.exp {
            // The JWT library refuses when exp < now - leeway.
            if i128::from(exp) + i128::from(leeway) < i128::from(now) {
                return None;
            }
        }
        Some(Arc::clone(&accepted.caller))
    }

    pub fn insert(&self, token: &str, keyring: u64, exp: Option<u64>, caller: Arc<Caller>) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= CAPACITY && !entries.contains_key(token) {
            entries.clear();
        }
        entries.insert(
            token.into(),
            Accepted {
                keyring,
                exp,
                caller,
            },
        );
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
