//! The embedded store: rooms in process memory, lost on exit. The default when
//! no Redis URL is configured, so the service runs on a bare machine.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use jiff::Timestamp;

use super::{CreateOutcome, RoomKey, Store, StoreError};
use crate::domain::{CustomRoomId, Room, RoomId, UserId};

#[derive(Default)]
pub struct MemoryStore {
    /// One lock for the whole store: operations are a few map lookups and
    /// never await while holding it.
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    accounts: HashMap<UserId, AccountRooms>,
    /// Every roomId ever stored: roomIds are unique across the deployment.
    taken_room_ids: HashSet<RoomId>,
}

#[derive(Default)]
struct AccountRooms {
    rooms: HashMap<RoomId, Room>,
    by_custom_id: HashMap<CustomRoomId, RoomId>,
    /// The listing index: (created at in ms, roomId), read backwards for newest first.
    by_creation: BTreeSet<(i64, RoomId)>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_room(&self, room: &Room, max_rooms: u64) -> Result<CreateOutcome, StoreError> {
        let mut inner = self.inner.lock().expect("store lock poisoned");
        let Inner {
            accounts,
            taken_room_ids,
        } = &mut *inner;
        let account = accounts.entry(room.user_id.clone()).or_default();
        if let Some(existing) = room
            .custom_room_id
            .as_ref()
            .and_then(|custom| account.by_custom_id.get(custom))
        {
            return Ok(CreateOutcome::Existing(account.rooms[existing].clone()));
        }
        // Checked under the same lock as the insert below, so concurrent
        // creates cannot overshoot.
        if account.rooms.len() as u64 >= max_rooms {
            return Ok(CreateOutcome::AccountFull);
        }
        if !taken_room_ids.insert(room.room_id.clone()) {
            return Ok(CreateOutcome::RoomIdTaken);
        }
        if let Some(custom) = &room.custom_room_id {
            account
                .by_custom_id
                .insert(custom.clone(), room.room_id.clone());
        }
        account
            .by_creation
            .insert((room.created_at.as_millisecond(), room.room_id.clone()));
        account.rooms.insert(room.room_id.clone(), room.clone());
        Ok(CreateOutcome::Created(room.clone()))
    }

    async fn get_room(&self, user_id: &UserId, key: &RoomKey) -> Result<Option<Room>, StoreError> {
        let inner = self.inner.lock().expect("store lock poisoned");
        let Some(account) = inner.accounts.get(user_id) else {
            return Ok(None);
        };
        if let Some(room_id) = &key.room_id
            && let Some(room) = account.rooms.get(room_id)
        {
            return Ok(Some(room.clone()));
        }
        if let Some(room_id) = key.document_id.as_ref().and_then(|d| d.room_id())
            && let Some(room) = account.rooms.get(&room_id)
            && key.matches_document(room)
        {
            return Ok(Some(room.clone()));
        }
        let by_custom = key
            .custom_room_id
            .as_ref()
            .and_then(|c| account.by_custom_id.get(c))
            .map(|room_id| account.rooms[room_id].clone());
        Ok(by_custom)
    }

    async fn list_rooms(
        &self,
        user_id: &UserId,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Room>, usize), StoreError> {
        let inner = self.inner.lock().expect("store lock poisoned");
        let Some(account) = inner.accounts.get(user_id) else {
            return Ok((Vec::new(), 0));
        };
        let page = account
            .by_creation
            .iter()
            .rev()
            .skip(offset)
            .take(limit)
            .map(|(_, room_id)| account.rooms[room_id].clone())
            .collect();
        Ok((page, account.rooms.len()))
    }

    async fn set_disabled(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        disabled: bool,
        now: Timestamp,
    ) -> Result<Option<Room>, StoreError> {
        let mut inner = self.inner.lock().expect("store lock poisoned");
        let Some(room) = inner
            .accounts
            .get_mut(user_id)
            .and_then(|account| account.rooms.get_mut(room_id))
        else {
            return Ok(None);
        };
        if room.disabled != disabled {
            room.disabled = disabled;
            room.updated_at = room.updated_at.max(now);
        }
        Ok(Some(room.clone()))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
