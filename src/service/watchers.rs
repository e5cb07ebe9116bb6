//! The WatchEvents streams open on this server, per account: how many there
//! may be, and the one poll of the account's log that they all share.
//!
//! A stream waits for events by polling the store. Done by each stream, that
//! is two commands five times a second per stream, so an account's 256
//! streams alone would send Redis 2,560 commands a second while nothing
//! happens. Instead, while an account has streams open here, one task polls
//! where its log ends (newest event id and trim point) and tells them; a
//! stream reads the log only when it has something to read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;

use super::Error;
use crate::domain::{EventId, UserId};
use crate::store::EventStore;

/// How often an account's log is looked at while it has streams open here.
pub(super) const WATCH_POLL: Duration = Duration::from_millis(200);

/// Counts each account's open streams against a bound, and keeps one
/// [`Tail`] per account for as long as it has any.
#[derive(Debug)]
pub(super) struct Watchers {
    max_per_account: usize,
    open: Mutex<HashMap<UserId, Account>>,
}

#[derive(Debug)]
struct Account {
    streams: usize,
    tail: Weak<Tail>,
}

/// Where an account's log ends, as last polled. Polled while anyone holds it.
#[derive(Debug)]
pub(super) struct Tail {
    end: watch::Receiver<LogEnd>,
}

/// The end of an account's log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct LogEnd {
    pub newest: Option<EventId>,
    pub trimmed_before: Option<EventId>,
    /// The last poll failed: streams poll for themselves meanwhile, and so
    /// meet (and report) the failure themselves.
    pub failed: bool,
}

impl LogEnd {
    /// Whether a stream that has seen everything up to `cursor` has
    /// something to read, or to report.
    pub fn is_past(&self, cursor: EventId) -> bool {
        self.newest.is_some_and(|newest| newest > cursor)
            || self.trimmed_before.is_some_and(|trim| trim > cursor.next())
    }
}

/// One open stream, counted against its account until dropped.
pub(super) struct WatcherSlot {
    watchers: Arc<Watchers>,
    user_id: UserId,
    tail: Arc<Tail>,
}

impl Watchers {
    pub fn new(max_per_account: usize) -> Watchers {
        Watchers {
            max_per_account,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A place for one more stream of `user_id`'s, or TooManyWatchers.
    /// Starts the account's tail poll if it has none running.
    pub fn enter(
        self: &Arc<Self>,
        user_id: &UserId,
        events: &Arc<dyn EventStore>,
    ) -> Result<WatcherSlot, Error> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.get(user_id).map_or(0, |account| account.streams) >= self.max_per_account {
            return Err(Error::TooManyWatchers {
                limit: self.max_per_account,
            });
        }
        let account = open.entry(user_id.clone()).or_insert_with(|| Account {
            streams: 0,
            tail: Weak::new(),
        });
        let tail = match account.tail.upgrade() {
            Some(tail) => tail,
            None => {
                let tail = Tail::start(events.clone(), user_id.clone());
                account.tail = Arc::downgrade(&tail);
                tail
            }
        };
        account.streams += 1;
        Ok(WatcherSlot {
            watchers: self.clone(),
            user_id: user_id.clone(),
            tail,
        })
    }
}

impl WatcherSlot {
    /// Where the account's log ends, updated by the shared poll.
    pub fn log_end(&self) -> watch::Receiver<LogEnd> {
        self.tail.end.clone()
    }
}

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        let mut open = self.watchers.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(account) = open.get_mut(&self.user_id) {
            account.streams -= 1;
            if account.streams == 0 {
                open.remove(&self.user_id);
            }
        }
    }
}

impl Tail {
    fn start(events: Arc<dyn EventStore>, user_id: UserId) -> Arc<Tail> {
        // Until the first poll answers, streams look for themselves.
        let (tx, end) = watch::channel(LogEnd {
            failed: true,
            ..LogEnd::default()
        });
        tokio::spawn(async move {
            // Ends once every stream, and the Tail, let go of it.
            while !tx.is_closed() {
                let polled = async {
                    Ok::<_, crate::store::StoreError>(LogEnd {
                        newest: events.newest_event_id(&user_id).await?,
                        trimmed_before: events.trimmed_before(&user_id).await?,
                        failed: false,
                    })
                };
                let end = polled.await.unwrap_or(LogEnd {
                    failed: true,
                    ..*tx.borrow()
                });
                tx.send_if_modified(|current| {
                    let changed = *current != end;
                    *current = end;
                    changed
                });
                tokio::time::sleep(WATCH_POLL).await;
            }
        });
        Arc::new(Tail { end })
    }
}

/// Completes when the account's log, as last polled, has something past
/// `cursor`; or after one poll interval when that poll fails.
pub(super) async fn wait_for_more(log_end: &mut watch::Receiver<LogEnd>, cursor: EventId) {
    let failed = match log_end
        .wait_for(|end| end.failed || end.is_past(cursor))
        .await
    {
        Ok(end) => end.failed,
        // The poll task is gone: poll as if it failed.
        Err(_) => true,
    };
    if failed {
        tokio::time::sleep(WATCH_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::domain::{NewEvent, RoomId};
    use crate::store::MemoryStore;

    fn user(n: u8) -> UserId {
        UserId::parse(&format!("{n:024x}")).unwrap()
    }

    #[tokio::test]
    async fn an_accounts_streams_share_one_tail_while_any_is_open() {
        let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
        let watchers = Arc::new(Watchers::new(2));
        let first = watchers.enter(&user(1), &store).unwrap();
        let second = watchers.enter(&user(1), &store).unwrap();
        assert!(Arc::ptr_eq(&first.tail, &second.tail));
        assert!(matches!(
            watchers.enter(&user(1), &store),
            Err(Error::TooManyWatchers { limit: 2 })
        ));
        let other = watchers.enter(&user(2), &store).unwrap();
        assert!(!Arc::ptr_eq(&first.tail, &other.tail));

        let tail = Arc::downgrade(&first.tail);
        drop((first, second));
        assert!(tail.upgrade().is_none(), "the last stream took the tail");
        let open = watchers.open.lock().unwrap();
        assert_eq!(open.keys().collect::<Vec<_>>(), [&user(2)]);
    }

    #[tokio::test]
    async fn a_waiting_stream_wakes_for_an_event_past_its_cursor() {
        let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
        let watchers = Arc::new(Watchers::new(2));
        let room = RoomId::generate();
        let append = || {
            let event = NewEvent {
                room_id: room.clone(),
                kind: "recording-started".into(),
                data: Default::default(),
                at: Timestamp::now(),
                replay_of: None,
            };
            let store = store.clone();
            async move { store.append_event(&user(1), &event).await.unwrap() }
        };
        let seen = append().await;
        let slot = watchers.enter(&user(1), &store).unwrap();
        let mut end = slot.log_end();
        end.wait_for(|end| !end.failed).await.unwrap();
        // Nothing past `seen`: still waiting after several polls.
        let waited = tokio::time::timeout(WATCH_POLL * 3, wait_for_more(&mut end, seen)).await;
        assert!(
            waited.is_err(),
            "woke with nothing new: {:?}",
            *end.borrow()
        );

        let next = append().await;
        // A poll after the append; a loaded machine may take longer.
        tokio::time::timeout(WATCH_POLL * 10, wait_for_more(&mut end, seen))
            .await
            .expect("woken by a poll after the append");
        assert_eq!(end.borrow().newest, Some(next));
    }

    #[test]
    fn the_end_is_past_a_cursor_by_a_newer_event_or_a_trim_beyond_it() {
        let id = |millis, seq| EventId { millis, seq };
        let cursor = id(10, 0);
        let end = |newest, trimmed_before| LogEnd {
            newest,
            trimmed_before,
            failed: false,
        };
        assert!(!end(None, None).is_past(cursor));
        assert!(!end(Some(cursor), None).is_past(cursor));
        assert!(end(Some(id(10, 1)), None).is_past(cursor));
        // Trimmed up to just after what the stream has sent: nothing lost.
        assert!(!end(None, Some(cursor.next())).is_past(cursor));
        assert!(end(None, Some(id(10, 2))).is_past(cursor));
    }
}
