use std::sync::Arc;

use super::{Error, SessionService};
use crate::auth::{AuthError, Caller};
use crate::domain::{
    self, CreateRoomParams, CustomRoomId, FieldViolation, Paging, Room, RoomId, RoomSpec,
    RoomStatus,
};
use crate::store::{CreateOutcome, IdempotencyKey, RoomKey, Store};

/// How many fresh roomIds to try when one is already taken. With 62 random
/// bits a second try is already astronomically rare.
const ROOM_ID_ATTEMPTS: usize = 5;

/// How long a create's idempotency key counts.
pub const IDEMPOTENCY_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// The longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

/// A valid key, hashed (stored keys have a fixed size whatever was sent).
fn check_idempotency_key(raw: &str) -> Result<String, Error> {
    if raw.is_empty()
        || raw.len() > MAX_IDEMPOTENCY_KEY_CHARS
        || !raw.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(Error::invalid(
            "idempotency-key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters"),
        ));
    }
    Ok(hex_digest(raw.as_bytes()))
}

/// What a create asks for, as a digest: the same key with another request
/// is told apart by it. The settings' JSON is the stored form, so it is
/// stable for as long as stored rooms are readable.
fn fingerprint(spec: &RoomSpec) -> String {
    let settings = serde_json::to_string(&spec.settings).unwrap_or_default();
    let custom = spec.custom_room_id.as_ref().map_or("", |c| c.as_str());
    hex_digest(format!("{custom}\n{settings}").as_bytes())
}

fn hex_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The result of a create: the room, and whether this call made it.
#[derive(Clone, Debug)]
pub struct Created {
    pub room: Room,
    pub created: bool,
}

/// A listing request as the caller sent it, before validation.
#[derive(Clone, Debug, Default)]
pub struct PageRequest {
    pub page: Option<i64>,
    pub per_page: Option<i64>,
    /// An exact roomId or customRoomId: the listing holds that room or nothing.
    pub query: Option<String>,
}

/// One page of rooms, newest first.
#[derive(Clone, Debug)]
pub struct ListPage {
    pub rooms: Vec<Room>,
    pub paging: Paging,
    pub last_page: u32,
    pub total: usize,
}

#[derive(Clone)]
pub struct RoomService {
    store: Arc<dyn Store>,
    /// Creates past this many rooms in one account are refused, atomically
    /// by the store (`--max-rooms-per-account`).
    max_rooms_per_account: u64,
    /// Told when a room is disabled, so its running session ends.
    sessions: Option<SessionService>,
}

impl RoomService {
    pub const DEFAULT_MAX_ROOMS_PER_ACCOUNT: u64 = 1_000_000;

    pub fn new(store: Arc<dyn Store>) -> RoomService {
        RoomService {
            store,
            max_rooms_per_account: Self::DEFAULT_MAX_ROOMS_PER_ACCOUNT,
            sessions: None,
        }
    }

    pub fn with_sessions(mut self, sessions: SessionService) -> RoomService {
        self.sessions = Some(sessions);
        self
    }

    pub fn with_max_rooms_per_account(mut self, max: u64) -> RoomService {
        self.max_rooms_per_account = max;
        self
    }

    /// Creates a room, or returns the account's room with the same
    /// customRoomId unchanged (even when the account is full: a repeat adds
    /// nothing). A new room past the account's limit is refused with
    /// RESOURCE_EXHAUSTED.
    ///
    /// With an idempotency key, a repeat by the same account within
    /// [`IDEMPOTENCY_TTL`] returns the room the first call made, whatever
    /// became of that call's answer; the same key with other parameters is
    /// FAILED_PRECONDITION.
    pub async fn create_room(
        &self,
        caller: &Caller,
        params: CreateRoomParams,
        idempotency_key: Option<&str>,
    ) -> Result<Created, Error> {
        let key = idempotency_key.map(check_idempotency_key).transpose()?;
        let spec = RoomSpec::parse(params).map_err(Error::InvalidArgument)?;
        let key = key.map(|key_hash| IdempotencyKey {
            key_hash,
            fingerprint: fingerprint(&spec),
            ttl: IDEMPOTENCY_TTL,
        });
        if caller.room_scope.is_some() {
            // A room-scoped token may only create (or re-fetch) its own room.
            let custom = spec.custom_room_id.as_ref().map(|c| c.as_str());
            if !caller.may_access_room(custom) {
                return Err(caller.scope_error().into());
            }
        }

        let now = domain::now();
        let mut room = Room {
            room_id: RoomId::generate(),
            user_id: caller.account.user_id.clone(),
            custom_room_id: spec.custom_room_id,
            disabled: false,
            created_at: now,
            updated_at: now,
            settings: Arc::new(spec.settings),
        };
        for attempt in 0..ROOM_ID_ATTEMPTS {
            if attempt > 0 {
                room.room_id = RoomId::generate();
            }
            let outcome = self
                .store
                .create_room_once(&room, self.max_rooms_per_account, key.as_ref())
                .await?;
            match outcome {
                CreateOutcome::Created(room) => {
                    tracing::info!(room_id = %room.room_id, user_id = %room.user_id, "room created");
                    return Ok(Created {
                        room,
                        created: true,
                    });
                }
                CreateOutcome::Replayed(room) => {
                    tracing::info!(room_id = %room.room_id, "create repeated with its idempotency key");
                    check_scope(caller, &room)?;
                    return Ok(Created {
                        room,
                        created: false,
                    });
                }
                CreateOutcome::KeyReused => return Err(Error::IdempotencyKeyReused),
                CreateOutcome::Existing(room) => {
                    check_scope(caller, &room)?;
                    return Ok(Created {
                        room,
                        created: false,
                    });
                }
                CreateOutcome::AccountFull => {
                    tracing::info!(
                        user_id = %room.user_id,
                        limit = self.max_rooms_per_account,
                        "create refused: the account holds its most rooms"
                    );
                    return Err(Error::AccountFull {
                        limit: self.max_rooms_per_account,
                    });
                }
                CreateOutcome::RoomIdTaken => {
                    tracing::warn!(room_id = %room.room_id, "generated roomId already taken; retrying");
                }
            }
        }
        Err(Error::NoFreeRoomId(ROOM_ID_ATTEMPTS))
    }

    /// The caller's room named by its roomId, customRoomId or document id.
    pub async fn get_room(&self, caller: &Caller, raw_key: &str) -> Result<Room, Error> {
        if raw_key.is_empty() {
            return Err(Error::invalid(
                "roomId",
                "is required: a roomId, customRoomId or id",
            ));
        }
        let not_found = || room_not_found(raw_key);
        let key = RoomKey::parse(raw_key).ok_or_else(not_found)?;
        let room = self
            .store
            .get_room(&caller.account.user_id, &key)
            .await?
            .ok_or_else(not_found)?;
        check_scope(caller, &room)?;
        Ok(room)
    }

    /// Whether `raw_key` (a roomId or customRoomId) names one of the caller's
    /// rooms: the room, or NOT_FOUND.
    pub async fn validate_room(&self, caller: &Caller, raw_key: &str) -> Result<Room, Error> {
        self.get_room(caller, raw_key).await
    }

    /// One page of the caller's rooms, newest first. A room-scoped token sees
    /// its own room only.
    pub async fn list_rooms(
        &self,
        caller: &Caller,
        request: PageRequest,
    ) -> Result<ListPage, Error> {
        let paging =
            Paging::parse(request.page, request.per_page).map_err(Error::InvalidArgument)?;
        let query = match request.query.as_deref() {
            None | Some("") => None,
            Some(raw) => Some(raw),
        };
        // A filtered listing is a lookup: at most one room, whatever the
        // account's size. A scoped token's listing is filtered by its scope.
        let single = match (query, caller.room_scope.as_deref()) {
            (None, None) => None,
            (Some(query), _) => Some(self.find_exact(caller, query).await?),
            (None, Some(scope)) => Some(self.find_any(caller, scope).await?),
        };
        if let Some(found) = single {
            let matching: Vec<Room> = found
                .into_iter()
                .filter(|room| check_scope(caller, room).is_ok())
                .collect();
            let total = matching.len();
            let rooms = matching.into_iter().skip(paging.offset()).collect();
            return Ok(ListPage {
                rooms,
                paging,
                last_page: paging.last_page(total),
                total,
            });
        }
        let (rooms, total) = self
            .store
            .list_rooms(
                &caller.account.user_id,
                paging.offset(),
                paging.per_page as usize,
            )
            .await?;
        Ok(ListPage {
            rooms,
            paging,
            last_page: paging.last_page(total),
            total,
        })
    }

    /// Disables the room named by its real roomId (a customRoomId is refused,
    /// as VideoSDK does). Idempotent: deactivating a disabled room changes
    /// nothing, `updatedAt` included.
    pub async fn deactivate_room(&self, caller: &Caller, raw_room_id: &str) -> Result<Room, Error> {
        if raw_room_id.is_empty() {
            return Err(Error::invalid("roomId", "is required"));
        }
        let Some(room_id) = RoomId::parse(raw_room_id) else {
            return Err(Error::RoomIdRequired {
                field: "roomId",
                got: domain::excerpt(raw_room_id),
            });
        };
        let room_id = self
            .writable_room(caller, raw_room_id, Some(room_id))
            .await?;
        self.set_disabled(caller, raw_room_id, &room_id, true).await
    }

    /// Enables or disables the room named by its roomId, customRoomId or id.
    pub async fn update_room_status(
        &self,
        caller: &Caller,
        raw_key: &str,
        raw_status: &str,
    ) -> Result<Room, Error> {
        let mut violations = Vec::new();
        if raw_key.is_empty() {
            violations.push(FieldViolation::new(
                "roomId",
                "is required: a roomId, customRoomId or id",
            ));
        }
        let status = RoomStatus::parse(raw_status);
        if status.is_none() {
            violations.push(FieldViolation::new(
                "status",
                format!("{}, got {}", RoomStatus::RULE, domain::excerpt(raw_status)),
            ));
        }
        let Some(status) = status.filter(|_| violations.is_empty()) else {
            return Err(Error::InvalidArgument(violations));
        };
        let room_id = self
            .writable_room(caller, raw_key, RoomId::parse(raw_key))
            .await?;
        self.set_disabled(caller, raw_key, &room_id, status.disabled())
            .await
    }

    /// The roomId to write to. A roomId given by an unscoped caller needs no
    /// read first: the write itself finds the room or reports it missing.
    /// Anything else is looked up, so a scoped token is checked against the
    /// room's every name before anything is written.
    async fn writable_room(
        &self,
        caller: &Caller,
        raw_key: &str,
        direct: Option<RoomId>,
    ) -> Result<RoomId, Error> {
        if let Some(room_id) = direct
            && caller.room_scope.is_none()
        {
            return Ok(room_id);
        }
        Ok(self.get_room(caller, raw_key).await?.room_id)
    }

    async fn set_disabled(
        &self,
        caller: &Caller,
        raw_key: &str,
        room_id: &RoomId,
        disabled: bool,
    ) -> Result<Room, Error> {
        let room = self
            .store
            .set_disabled(&caller.account.user_id, room_id, disabled, domain::now())
            .await?
            .ok_or_else(|| room_not_found(raw_key))?;
        tracing::info!(room_id = %room.room_id, user_id = %room.user_id, disabled, "room status set");
        if disabled && let Some(sessions) = &self.sessions {
            // The room is disabled whatever happens here: joins are refused.
            // A session left running still ends at its deadline.
            if let Err(error) = sessions.room_deactivated(&room).await {
                tracing::warn!(room_id = %room.room_id, %error, "cannot end the session of a disabled room");
            }
        }
        Ok(room)
    }

    /// The room whose roomId or customRoomId is exactly `raw`.
    async fn find_exact(&self, caller: &Caller, raw: &str) -> Result<Option<Room>, Error> {
        let key = RoomKey {
            room_id: RoomId::parse(raw),
            document_id: None,
            custom_room_id: CustomRoomId::parse(raw).ok(),
        };
        if key.room_id.is_none() && key.custom_room_id.is_none() {
            return Ok(None);
        }
        Ok(self.store.get_room(&caller.account.user_id, &key).await?)
    }

    /// The room named by `raw` in any reading (roomId, id, customRoomId).
    async fn find_any(&self, caller: &Caller, raw: &str) -> Result<Option<Room>, Error> {
        let Some(key) = RoomKey::parse(raw) else {
            return Ok(None);
        };
        Ok(self.store.get_room(&caller.account.user_id, &key).await?)
    }
}

fn room_not_found(raw_key: &str) -> Error {
    Error::not_found(format!("room {}", domain::excerpt(raw_key)))
}

/// The account's room named by `raw_key` (roomId, customRoomId or id):
/// the lookup every service's calls share.
pub(super) async fn find_room(
    store: &dyn Store,
    user_id: &domain::UserId,
    raw_key: &str,
) -> Result<Room, Error> {
    if raw_key.is_empty() {
        return Err(Error::invalid(
            "roomId",
            "is required: a roomId or customRoomId",
        ));
    }
    let not_found = || Error::not_found(format!("room {}", domain::excerpt(raw_key)));
    let key = RoomKey::parse(raw_key).ok_or_else(not_found)?;
    store.get_room(user_id, &key).await?.ok_or_else(not_found)
}

/// The caller's room named by `raw_key`, within its token's scope.
pub(super) async fn caller_room(
    store: &dyn Store,
    caller: &Caller,
    raw_key: &str,
) -> Result<Room, Error> {
    let room = find_room(store, &caller.account.user_id, raw_key).await?;
    check_scope(caller, &room)?;
    Ok(room)
}

pub(super) fn check_scope(caller: &Caller, room: &Room) -> Result<(), AuthError> {
    // Most tokens are not scoped: they need no document id, which is made
    // with a `format!` on every read.
    if caller.room_scope.is_none() {
        return Ok(());
    }
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
