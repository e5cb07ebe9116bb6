//! The embedded store's event logs and delivery state: one [`AccountEvents`]
//! per account under the store's single lock, so a session write and its
//! events land together.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use jiff::Timestamp;

use super::events::{
    DEAD_LETTERS, DeliveryHint, DeliveryRecord, DeliveryState, DeliveryUpdate, RECENT_DELIVERIES,
    RoomDeliveries,
};
use crate::domain::{Event, EventId, NewEvent, RoomId, UserId};

#[derive(Default)]
pub(super) struct Events {
    accounts: HashMap<UserId, AccountEvents>,
    /// The hint index: account → (due ms, stamp of the write that set it).
    hints: HashMap<UserId, (i64, u64)>,
    hint_stamp: u64,
    signing_key: Option<String>,
}

#[derive(Default)]
struct AccountEvents {
    log: BTreeMap<EventId, Event>,
    last_id: Option<EventId>,
    trimmed_before: Option<EventId>,
    assigned: Option<EventId>,
    rooms: BTreeMap<RoomId, RoomDeliveries>,
    recent: VecDeque<DeliveryRecord>,
    dead: VecDeque<DeliveryRecord>,
    lease: Option<(String, Instant)>,
}

impl Events {
    /// Appends in log order; ids follow the wall clock like Redis's `*` ids
    /// and never go backwards.
    pub(super) fn append(&mut self, user_id: &UserId, event: &NewEvent) -> EventId {
        let account = self.accounts.entry(user_id.clone()).or_default();
        let now = u64::try_from(Timestamp::now().as_millisecond()).unwrap_or(0);
        let id = match account.last_id {
            Some(last) if last.millis >= now => last.next(),
            _ => EventId {
                millis: now,
                seq: 0,
            },
        };
        account.last_id = Some(id);
        account.log.insert(id, Event::stored(id, event.clone()));
        id
    }

    pub(super) fn read(
        &self,
        user_id: &UserId,
        after: Option<EventId>,
        limit: usize,
    ) -> Vec<Event> {
        let Some(account) = self.accounts.get(user_id) else {
            return Vec::new();
        };
        let range = match after {
            Some(after) => account.log.range(after.next()..),
            None => account.log.range(..),
        };
        range.take(limit).map(|(_, e)| e.clone()).collect()
    }

    pub(super) fn newest(&self, user_id: &UserId) -> Option<EventId> {
        let account = self.accounts.get(user_id)?;
        account.log.last_key_value().map(|(id, _)| *id)
    }

    pub(super) fn trimmed_before(&self, user_id: &UserId) -> Option<EventId> {
        self.accounts.get(user_id).and_then(|a| a.trimmed_before)
    }

    pub(super) fn hint(&mut self, user_id: &UserId, due: Timestamp) {
        let due = due.as_millisecond();
        self.hint_stamp += 1;
        let stamp = self.hint_stamp;
        let entry = self.hints.entry(user_id.clone()).or_insert((due, stamp));
        *entry = (entry.0.min(due), stamp);
    }

    pub(super) fn due_hints(&self, now: Timestamp, limit: usize) -> Vec<DeliveryHint> {
        let now = now.as_millisecond();
        let mut due: Vec<_> = self
            .hints
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .collect();
        due.sort_by_key(|(_, (at, _))| *at);
        due.into_iter()
            .take(limit)
            .map(|(user_id, (at, stamp))| DeliveryHint {
                user_id: user_id.clone(),
                due: Timestamp::from_millisecond(*at).unwrap_or(Timestamp::MIN),
                entry: format!("{at}/{stamp}"),
            })
            .collect()
    }

    pub(super) fn settle_hint(&mut self, hint: &DeliveryHint, next: Option<Timestamp>) {
        let Some(current) = self.hints.get(&hint.user_id) else {
            return;
        };
        if format!("{}/{}", current.0, current.1) != hint.entry {
            return;
        }
        match next {
            None => {
                self.hints.remove(&hint.user_id);
            }
            Some(next) => {
                let stamp = current.1;
                self.hints
                    .insert(hint.user_id.clone(), (next.as_millisecond(), stamp));
            }
        }
    }

    pub(super) fn lease(
        &mut self,
        user_id: &UserId,
        holder: &str,
        ttl: std::time::Duration,
    ) -> bool {
        let account = self.accounts.entry(user_id.clone()).or_default();
        let now = Instant::now();
        match &account.lease {
            Some((other, until)) if other != holder && *until > now => false,
            _ => {
                account.lease = Some((holder.to_owned(), now + ttl));
                true
            }
        }
    }

    pub(super) fn release(&mut self, user_id: &UserId, holder: &str) {
        if let Some(account) = self.accounts.get_mut(user_id)
            && account.lease.as_ref().is_some_and(|(h, _)| h == holder)
        {
            account.lease = None;
        }
    }

    pub(super) fn state(&self, user_id: &UserId) -> DeliveryState {
        let Some(account) = self.accounts.get(user_id) else {
            return DeliveryState::default();
        };
        DeliveryState {
            assigned: account.assigned,
            rooms: account
                .rooms
                .iter()
                .map(|(room, queue)| (room.clone(), queue.clone()))
                .collect(),
        }
    }

    pub(super) fn update(
        &mut self,
        user_id: &UserId,
        holder: &str,
        update: &DeliveryUpdate,
    ) -> bool {
        let Some(account) = self.accounts.get_mut(user_id) else {
            return false;
        };
        let holds = account
            .lease
            .as_ref()
            .is_some_and(|(h, until)| h == holder && *until > Instant::now());
        if !holds {
            return false;
        }
        if let Some(assigned) = update.assigned {
            account.assigned = Some(account.assigned.map_or(assigned, |a| a.max(assigned)));
        }
        for (room, queue) in &update.rooms {
            match queue {
                Some(queue) => account.rooms.insert(room.clone(), queue.clone()),
                None => account.rooms.remove(room),
            };
        }
        for record in &update.records {
            account.recent.push_front(record.clone());
        }
        account.recent.truncate(RECENT_DELIVERIES);
        for record in &update.dead {
            account.dead.push_front(record.clone());
        }
        account.dead.truncate(DEAD_LETTERS);
        if let Some(before) = update.trim_before {
            account.log = account.log.split_off(&before);
            account.trimmed_before = Some(account.trimmed_before.map_or(before, |t| t.max(before)));
        }
        true
    }

    pub(super) fn recent(&self, user_id: &UserId, limit: usize) -> Vec<DeliveryRecord> {
        self.accounts
            .get(user_id)
            .map(|a| a.recent.iter().take(limit).cloned().collect())
            .unwrap_or_default()
    }

    pub(super) fn dead(&self, user_id: &UserId, limit: usize) -> Vec<DeliveryRecord> {
        self.accounts
            .get(user_id)
            .map(|a| a.dead.iter().take(limit).cloned().collect())
            .unwrap_or_default()
    }

    pub(super) fn take_dead(&mut self, user_id: &UserId, event_id: &str) -> Option<DeliveryRecord> {
        let account = self.accounts.get_mut(user_id)?;
        let at = account.dead.iter().position(|r| r.event_id == event_id)?;
        account.dead.remove(at)
    }

    pub(super) fn signing_key(&mut self, candidate: &str) -> String {
        self.signing_key
            .get_or_insert_with(|| candidate.to_owned())
            .clone()
    }
}
