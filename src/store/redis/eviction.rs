//! Refusing a Redis that may evict keys. With any `maxmemory-policy` but
//! `noeviction`, Redis drops keys when it reaches `maxmemory`: rooms vanish,
//! and since a room's hash and its index entries are separate keys, indexes
//! point at missing rooms and a customRoomId can end up held by two rooms.
//!
//! The policy is read from `INFO memory` (`maxmemory_policy:`) rather than
//! `CONFIG GET`, which managed Redis services often rename or disable; on a
//! cluster, from every primary. It is read when the store connects and again
//! on every [`Store::ping`](crate::store::Store::ping), so a policy changed at
//! runtime, or a failover to a differently configured node, is noticed within
//! one health-probe interval. Store calls only load an atomic flag: no round
//! trip of their own.

use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, Ordering};

use redis::Value;

use crate::store::StoreError;

/// The only policy under which Redis never drops a key on its own.
pub(super) const SAFE_POLICY: &str = "noeviction";

/// One node's `maxmemory_policy`, as `INFO memory` reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct NodePolicy {
    /// The node's address, on a cluster; `None` for a single node.
    pub(super) node: Option<String>,
    /// `None` when `INFO memory` has no `maxmemory_policy` line.
    pub(super) policy: Option<String>,
}

/// Whether store calls are refused because Redis may evict rooms. Shared by
/// the store (which checks it on every call and updates it on every ping)
/// and its connect task (which updates it before the first call can run).
pub(super) struct EvictionGuard {
    /// `--allow-evicting-redis`: serve anyway, with a warning.
    allow: bool,
    /// Set while the last reading found a policy that may evict and `allow`
    /// is off. Loaded at the start of every store call: one atomic load.
    refusing: AtomicBool,
    /// Why calls are refused: the cause of their `Unavailable` error. Written
    /// before `refusing` is set (Release; calls load it with Acquire), so a
    /// refused call finds it; read only by refused calls.
    reason: Mutex<String>,
    /// What the last reading concluded, so each change is logged once rather
    /// than on every ping. `None` until the first reading.
    last_verdict: Mutex<Option<String>>,
}

impl EvictionGuard {
    pub(super) fn new(allow: bool) -> EvictionGuard {
        EvictionGuard {
            allow,
            refusing: AtomicBool::new(false),
            reason: Mutex::new(String::new()),
            last_verdict: Mutex::new(None),
        }
    }

    /// Fails while Redis may evict rooms and that is not allowed.
    pub(super) fn check(&self) -> Result<(), StoreError> {
        if !self.refusing.load(Ordering::Acquire) {
            return Ok(());
        }
        let reason = self.reason.lock().unwrap_or_else(PoisonError::into_inner);
        Err(StoreError::Unavailable(reason.clone()))
    }

    /// Takes in a fresh reading: sets or clears the refusal, logs a change,
    /// and fails as [`EvictionGuard::check`] will from now on.
    pub(super) fn observe(&self, policies: &[NodePolicy]) -> Result<(), StoreError> {
        let danger = describe_danger(policies);
        let verdict = match (&danger, self.allow) {
            (None, _) => format!("maxmemory-policy {SAFE_POLICY}"),
            (Some(danger), false) => refusal_message(danger),
            (Some(danger), true) => format!(
                "{danger}: it may evict rooms; serving anyway because of --allow-evicting-redis"
            ),
        };
        let refuse = danger.is_some() && !self.allow;
        if refuse {
            *self.reason.lock().unwrap_or_else(PoisonError::into_inner) = verdict.clone();
        }
        self.refusing.store(refuse, Ordering::Release);

        let mut last = self
            .last_verdict
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.as_deref() != Some(verdict.as_str()) {
            match (&danger, self.allow, last.is_some()) {
                (Some(_), false, _) => {
                    tracing::warn!(reason = %verdict, "redis may evict rooms: refusing every call")
                }
                (Some(_), true, _) => tracing::warn!(reason = %verdict, "redis may evict rooms"),
                (None, _, true) => tracing::info!(
                    policy = SAFE_POLICY,
                    "redis maxmemory-policy is noeviction: serving"
                ),
                (None, _, false) => {
                    tracing::debug!(policy = SAFE_POLICY, "redis maxmemory-policy checked")
                }
            }
            *last = Some(verdict.clone());
        }
        if refuse {
            return Err(StoreError::Unavailable(verdict));
        }
        Ok(())
    }
}

/// What is wrong with `policies`, e.g. `redis maxmemory-policy is
/// allkeys-lru`; `None` when every node is `noeviction`.
fn describe_danger(policies: &[NodePolicy]) -> Option<String> {
    let unsafe_nodes: Vec<String> = policies
        .iter()
        .filter(|p| p.policy.as_deref() != Some(SAFE_POLICY))
        .map(|p| {
            let what = match &p.policy {
                Some(policy) => format!("is {policy}"),
                None => "is not reported (no maxmemory_policy in INFO memory)".to_owned(),
            };
            match &p.node {
                Some(node) => format!("{what} on node {node}"),
                None => what,
            }
        })
        .collect();
    if unsafe_nodes.is_empty() {
        return None;
    }
    Some(format!(
        "redis maxmemory-policy {}",
        unsafe_nodes.join(", ")
    ))
}

/// The cause refused calls and failed pings carry, saying how to fix it.
fn refusal_message(danger: &str) -> String {
    format!(
        "{danger}: it may evict rooms; set maxmemory-policy {SAFE_POLICY}, \
         or start with --allow-evicting-redis (dangerous)"
    )
}

/// The `maxmemory_policy` line of an `INFO memory` answer.
pub(super) fn parse_policy(info: &str) -> Option<String> {
    info.lines()
        .find_map(|line| line.trim().strip_prefix("maxmemory_policy:"))
        .map(|policy| policy.trim().to_owned())
}

/// The policies in a cluster's answers to `INFO memory` sent to every
/// primary: a map of node address to that node's answer.
pub(super) fn cluster_policies(replies: Value) -> Result<Vec<NodePolicy>, StoreError> {
    let Value::Map(replies) = replies else {
        return Err(StoreError::Unavailable(
            "redis cluster: unexpected INFO memory reply".into(),
        ));
    };
    if replies.is_empty() {
        return Err(StoreError::Unavailable(
            "redis cluster: no primary known".into(),
        ));
    }
    replies
        .into_iter()
        .map(|(node, reply)| {
            let node: String = redis::from_redis_value(node).unwrap_or_else(|_| "a node".into());
            if let Value::ServerError(error) = &reply {
                return Err(StoreError::Unavailable(format!(
                    "redis cluster node {node}: INFO memory: {error:?}"
                )));
            }
            let info: String = redis::from_redis_value(reply).map_err(|_| {
                StoreError::Unavailable(format!(
                    "redis cluster node {node}: unreadable INFO memory"
                ))
            })?;
            Ok(NodePolicy {
                policy: parse_policy(&info),
                node: Some(node),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(policy: &str) -> Vec<NodePolicy> {
        vec![NodePolicy {
            node: None,
            policy: Some(policy.to_owned()),
        }]
    }

    #[test]
    fn reads_the_policy_from_info_memory() {
        let info = "# Memory\r\nused_memory:1015816\r\nmaxmemory:0\r\n\
                    maxmemory_human:0B\r\nmaxmemory_policy:allkeys-lru\r\nallocator_frag_ratio:1.0\r\n";
        assert_eq!(parse_policy(info).as_deref(), Some("allkeys-lru"));
        assert_eq!(parse_policy("# Memory\r\nused_memory:1\r\n"), None);
    }

    #[test]
    fn only_noeviction_is_served() {
        let guard = EvictionGuard::new(false);
        assert!(guard.observe(&single("noeviction")).is_ok());
        assert!(guard.check().is_ok());

        let error = guard.observe(&single("allkeys-lru")).unwrap_err();
        let StoreError::Unavailable(cause) = &error else {
            panic!("{error:?}")
        };
        assert_eq!(
            cause,
            "redis maxmemory-policy is allkeys-lru: it may evict rooms; set maxmemory-policy \
             noeviction, or start with --allow-evicting-redis (dangerous)"
        );
        let refused = guard.check().unwrap_err();
        assert!(matches!(&refused, StoreError::Unavailable(c) if c == cause));

        assert!(guard.observe(&single("noeviction")).is_ok());
        assert!(guard.check().is_ok(), "served again once fixed");
    }

    #[test]
    fn every_cluster_primary_must_be_noeviction() {
        let guard = EvictionGuard::new(false);
        let policies = vec![
            NodePolicy {
                node: Some("127.0.0.1:7000".into()),
                policy: Some("noeviction".into()),
            },
            NodePolicy {
                node: Some("127.0.0.1:7001".into()),
                policy: Some("volatile-ttl".into()),
            },
            NodePolicy {
                node: Some("127.0.0.1:7002".into()),
                policy: None,
            },
        ];
        let error = guard.observe(&policies).unwrap_err().to_string();
        assert!(
            error.contains("is volatile-ttl on node 127.0.0.1:7001"),
            "{error}"
        );
        assert!(
            error.contains(
                "is not reported (no maxmemory_policy in INFO memory) on node 127.0.0.1:7002"
            ),
            "{error}"
        );
        assert!(!error.contains("7000"), "{error}");
        assert!(guard.check().is_err());
    }

    #[test]
    fn allowed_eviction_is_served() {
        let guard = EvictionGuard::new(true);
        assert!(guard.observe(&single("allkeys-lru")).is_ok());
        assert!(guard.check().is_ok());
    }

    #[test]
    fn cluster_replies_map_nodes_to_policies() {
        let reply = Value::Map(vec![(
            Value::BulkString(b"127.0.0.1:7000".to_vec()),
            Value::BulkString(b"# Memory\r\nmaxmemory_policy:noeviction\r\n".to_vec()),
        )]);
        assert_eq!(
            cluster_policies(reply).unwrap(),
            vec![NodePolicy {
                node: Some("127.0.0.1:7000".into()),
                policy: Some("noeviction".into()),
            }]
        );
        assert!(cluster_policies(Value::Map(vec![])).is_err());
        assert!(cluster_policies(Value::Int(1)).is_err());
    }
}
