use std::sync::Arc;

use crate::auth::{AuthError, Caller};
use crate::domain::{self, CreateRoomParams, FieldViolation, Room, RoomId, RoomSpec};
use crate::error::Error;
use crate::store::{CreateOutcome, RoomKey, Store, StoreError};

/// How many fresh roomIds to try when one is already taken. With 62 random
/// bits a second try is already astronomically rare.
const ROOM_ID_ATTEMPTS: usize = 5;

/// The result of a create: the room, and whether this call made it.
#[derive(Clone, Debug)]
pub struct Created {
    pub room: Room,
    pub created: bool,
}

#[derive(Clone)]
pub struct RoomService {
    store: Arc<dyn Store>,
}

impl RoomService {
    pub fn new(store: Arc<dyn Store>) -> RoomService {
        RoomService { store }
    }

    /// Creates a room, or returns the account's room with the same
    /// customRoomId unchanged.
    pub async fn create_room(
        &self,
        caller: &Caller,
        params: CreateRoomParams,
    ) -> Result<Created, Error> {
        let spec = RoomSpec::parse(params).map_err(Error::InvalidArgument)?;
        if caller.room_scope.is_some() {
            // A room-scoped token may only create (or re-fetch) its own room.
            let custom = spec.custom_room_id.as_ref().map(|c| c.as_str());
            if !caller.may_access_room(custom) {
                return Err(caller.scope_error().into());
            }
        }

        let now = domain::now();
        for _ in 0..ROOM_ID_ATTEMPTS {
            let room = Room {
                room_id: RoomId::generate(),
                user_id: caller.account.user_id.clone(),
                custom_room_id: spec.custom_room_id.clone(),
                disabled: false,
                created_at: now,
                updated_at: now,
                settings: spec.settings.clone(),
            };
            match self.store.create_room(&room).await? {
                CreateOutcome::Created(room) => {
                    tracing::info!(room_id = %room.room_id, user_id = %room.user_id, "room created");
                    return Ok(Created {
                        room,
                        created: true,
                    });
                }
                CreateOutcome::Existing(room) => {
                    self.check_scope(caller, &room)?;
                    return Ok(Created {
                        room,
                        created: false,
                    });
                }
                CreateOutcome::RoomIdTaken => {
                    tracing::warn!(room_id = %room.room_id, "generated roomId already taken; retrying");
                }
            }
        }
        Err(StoreError::Corrupt("could not find a free roomId".into()).into())
    }

    /// The caller's room named by its roomId, customRoomId or document id.
    pub async fn get_room(&self, caller: &Caller, raw_key: &str) -> Result<Room, Error> {
        if raw_key.is_empty() {
            return Err(Error::InvalidArgument(vec![FieldViolation::new(
                "roomId",
                "is required: a roomId, customRoomId or id",
            )]));
        }
        let not_found = || Error::NotFound(format!("room {}", domain::excerpt(raw_key)));
        let key = RoomKey::parse(raw_key).ok_or_else(not_found)?;
        let room = self
            .store
            .get_room(&caller.account.user_id, &key)
            .await?
            .ok_or_else(not_found)?;
        self.check_scope(caller, &room)?;
        Ok(room)
    }

    fn check_scope(&self, caller: &Caller, room: &Room) -> Result<(), AuthError> {
        let id = room.id();
        let names = [
            Some(room.room_id.as_str()),
            room.custom_room_id.as_ref().map(|c| c.as_str()),
            Some(id.as_str()),
        ];
        if caller.may_access_room(names.into_iter().flatten()) {
            Ok(())
        } else {
            Err(caller.scope_error())
        }
    }
}
