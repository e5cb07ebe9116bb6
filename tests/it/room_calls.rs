//! ListRooms, ValidateRoom, DeactivateRoom and UpdateRoomStatus over gRPC, on
//! every store: `room_calls_suite!(backend, make_servers)` runs each case
//! against two servers ("replicas") sharing one store, so a change made
//! through one must be seen through the other.

use std::sync::Arc;
use std::time::Duration;

use roomservice::grpc::pb::room_service_client::RoomServiceClient;
use roomservice::grpc::pb::{
    CreateRoomRequest, DeactivateRoomRequest, GetRoomRequest, ListRoomsRequest, ListRoomsResponse,
    Room, UpdateRoomStatusRequest, ValidateRoomRequest,
};
use roomservice::store::MemoryStore;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::harness::*;
use crate::redis_harness::*;

macro_rules! room_calls_suite {
    ($backend:ident, $make:path) => {
        mod $backend {
            room_calls_suite!(@cases $make;
                listing_pages_newest_first,
                listing_by_query_is_exact,
                validate_answers_for_own_rooms_only,
                deactivate_disables_once_and_every_replica_sees_it,
                deactivate_takes_a_real_room_id_only,
                update_status_enables_and_disables_by_any_name,
                status_changes_stay_inside_the_account_and_the_token_scope
            );
        }
    };
    (@cases $make:path; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (a, b) = $make().await;
                $crate::room_calls::$case(a, b).await
            }
        )*
    };
}

/// Two servers over one store, as two replicas are.
async fn memory_servers() -> (TestServer, TestServer) {
    let store = Arc::new(MemoryStore::new());
    (
        TestServer::start_with(store.clone(), false).await,
        TestServer::start_with(store, false).await,
    )
}

/// Two servers with a connection each to one Redis, under a fresh prefix.
async fn single_redis_servers() -> (TestServer, TestServer) {
    let url = shared_redis().url();
    let prefix = unique_prefix();
    let a = connected_store(vec![url.clone()], false, prefix.clone()).await;
    let b = connected_store(vec![url], false, prefix).await;
    (
        TestServer::start_with(Arc::new(a), false).await,
        TestServer::start_with(Arc::new(b), false).await,
    )
}

async fn cluster_servers() -> (TestServer, TestServer) {
    let seeds = shared_cluster().seed_urls();
    let prefix = unique_prefix();
    let a = connected_store(seeds.clone(), true, prefix.clone()).await;
    let b = connected_store(seeds, true, prefix).await;
    (
        TestServer::start_with(Arc::new(a), false).await,
        TestServer::start_with(Arc::new(b), false).await,
    )
}

room_calls_suite!(memory, crate::room_calls::memory_servers);
room_calls_suite!(single_redis, crate::room_calls::single_redis_servers);
room_calls_suite!(redis_cluster, crate::room_calls::cluster_servers);

/// The room without its `links`: each test server has its own address, so
/// the replicas here build different links to one room. (Real replicas share
/// one `--public-url`; links are tested in rooms.rs and rest_gateway.rs.)
fn unlinked(mut room: Room) -> Room {
    room.links = None;
    room
}

fn unlinked_page(mut page: ListRoomsResponse) -> ListRoomsResponse {
    page.data = page.data.into_iter().map(unlinked).collect();
    page
}

/// A gRPC client with one token. Rooms come back [`unlinked`].
struct Client {
    inner: RoomServiceClient<Channel>,
    token: String,
}

impl Client {
    async fn new(server: &TestServer, token: String) -> Client {
        Client {
            inner: server.rooms().await,
            token,
        }
    }

    async fn create(&mut self, custom: Option<&str>) -> Room {
        let request = CreateRoomRequest {
            custom_room_id: custom.map(str::to_owned),
            ..Default::default()
        };
        let room = self
            .inner
            .create_room(authed(request, &self.token))
            .await
            .unwrap()
            .into_inner();
        let room = unlinked(room);
        // Distinct creation milliseconds make "newest first" one answer.
        tokio::time::sleep(Duration::from_millis(3)).await;
        room
    }

    async fn get(&mut self, key: &str) -> Result<Room, tonic::Status> {
        let request = GetRoomRequest {
            room_id: key.into(),
        };
        let answer = self.inner.get_room(authed(request, &self.token)).await;
        answer.map(|r| unlinked(r.into_inner()))
    }

    async fn list(
        &mut self,
        page: Option<i32>,
        per_page: Option<i32>,
        query: Option<&str>,
    ) -> Result<ListRoomsResponse, tonic::Status> {
        let request = ListRoomsRequest {
            page,
            per_page,
            query: query.map(str::to_owned),
        };
        let answer = self.inner.list_rooms(authed(request, &self.token)).await;
        answer.map(|r| unlinked_page(r.into_inner()))
    }

    async fn validate(&mut self, key: &str) -> Result<Room, tonic::Status> {
        let request = ValidateRoomRequest {
            room_id: key.into(),
        };
        let answer = self.inner.validate_room(authed(request, &self.token)).await;
        answer.map(|r| unlinked(r.into_inner()))
    }

    async fn deactivate(&mut self, key: &str) -> Result<Room, tonic::Status> {
        let request = DeactivateRoomRequest {
            room_id: key.into(),
        };
        let answer = self
            .inner
            .deactivate_room(authed(request, &self.token))
            .await;
        answer.map(|r| unlinked(r.into_inner()))
    }

    async fn set_status(&mut self, key: &str, status: &str) -> Result<Room, tonic::Status> {
        let request = UpdateRoomStatusRequest {
            room_id: key.into(),
            status: status.into(),
        };
        let answer = self
            .inner
            .update_room_status(authed(request, &self.token))
            .await;
        answer.map(|r| unlinked(r.into_inner()))
    }
}

fn page_info(page: &ListRoomsResponse) -> (i32, i32, i32, i64) {
    let info = page.page_info.expect("pageInfo is always set");
    (info.current_page, info.per_page, info.last_page, info.total)
}

fn room_ids(page: &ListRoomsResponse) -> Vec<String> {
    page.data.iter().map(|r| r.room_id.clone()).collect()
}

/// The field a google.rpc.BadRequest detail names, first.
fn bad_field(status: &tonic::Status) -> String {
    let details = status.get_error_details();
    let bad_request = details.bad_request().expect("a BadRequest detail");
    bad_request.field_violations[0].field.clone()
}

pub async fn listing_pages_newest_first(a: TestServer, _b: TestServer) {
    let mut acme = Client::new(&a, acme_token()).await;
    let empty = acme.list(None, None, None).await.unwrap();
    assert_eq!(page_info(&empty), (1, 20, 1, 0), "an empty account");
    assert!(empty.data.is_empty());

    let mut made = Vec::new();
    for i in 0..7 {
        made.push(acme.create(Some(&format!("list-{i}"))).await.room_id);
    }
    made.reverse(); // newest first
    // Another account's rooms never show up.
    Client::new(&a, globex_token()).await.create(None).await;

    let first = acme.list(Some(1), Some(3), None).await.unwrap();
    let second = acme.list(Some(2), Some(3), None).await.unwrap();
    let third = acme.list(Some(3), Some(3), None).await.unwrap();
    let past = acme.list(Some(4), Some(3), None).await.unwrap();
    assert_eq!(page_info(&first), (1, 3, 3, 7));
    assert_eq!(page_info(&third), (3, 3, 3, 7));
    assert_eq!(page_info(&past), (4, 3, 3, 7));
    let walked: Vec<String> = [&first, &second, &third]
        .iter()
        .flat_map(|page| room_ids(page))
        .collect();
    assert_eq!(
        walked, made,
        "three pages hold every room once, newest first"
    );
    assert!(past.data.is_empty(), "a page past the end is empty");

    let defaults = acme.list(None, None, None).await.unwrap();
    assert_eq!(page_info(&defaults), (1, 20, 1, 7));
    assert_eq!(room_ids(&defaults), made);
    assert_eq!(
        defaults.data[0],
        acme.get(&made[0]).await.unwrap(),
        "listed rooms are whole rooms"
    );

    for (page, per_page, field) in [
        (Some(0), None, "page"),
        (Some(-3), None, "page"),
        (None, Some(0), "perPage"),
        (None, Some(101), "perPage"),
    ] {
        let refused = acme.list(page, per_page, None).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{page:?} {per_page:?}"
        );
        assert_eq!(bad_field(&refused), field);
        assert!(refused.message().contains(field), "{}", refused.message());
    }
    assert_eq!(
        page_info(&acme.list(None, Some(100), None).await.unwrap()),
        (1, 100, 1, 7)
    );
}

pub async fn listing_by_query_is_exact(a: TestServer, _b: TestServer) {
    let mut acme = Client::new(&a, acme_token()).await;
    let standup = acme.create(Some("standup")).await;
    acme.create(Some("standup-2")).await;
    acme.create(None).await;

    for query in ["standup", standup.room_id.as_str()] {
        let found = acme.list(None, None, Some(query)).await.unwrap();
        assert_eq!(page_info(&found), (1, 20, 1, 1), "query {query}");
        assert_eq!(found.data, vec![standup.clone()], "query {query}");
    }
    for query in ["stand", "STANDUP", "nothing-here", "has space"] {
        let found = acme.list(None, None, Some(query)).await.unwrap();
        assert_eq!(page_info(&found), (1, 20, 1, 0), "query {query}");
    }
    let past = acme.list(Some(2), None, Some("standup")).await.unwrap();
    assert!(past.data.is_empty());
    assert_eq!(page_info(&past), (2, 20, 1, 1));
    let foreign = Client::new(&a, globex_token())
        .await
        .list(None, None, Some("standup"))
        .await
        .unwrap();
    assert!(
        foreign.data.is_empty(),
        "another account's room is not found"
    );
}

pub async fn validate_answers_for_own_rooms_only(a: TestServer, b: TestServer) {
    let mut acme = Client::new(&a, acme_token()).await;
    let room = acme.create(Some("check-me")).await;
    let mut acme_b = Client::new(&b, acme_token()).await;
    for key in ["check-me", room.room_id.as_str()] {
        assert_eq!(acme_b.validate(key).await.unwrap(), room, "by {key}");
    }
    let unknown = acme.validate("no-such-room").await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let mut globex = Client::new(&a, globex_token()).await;
    let foreign = globex.validate("check-me").await.unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);
    assert_eq!(
        foreign.message().replace("check-me", "X"),
        globex
            .validate("nothing")
            .await
            .unwrap_err()
            .message()
            .replace("nothing", "X"),
        "another account's room reads exactly like a missing one"
    );
    let empty = acme.validate("").await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert_eq!(bad_field(&empty), "roomId");
}

pub async fn deactivate_disables_once_and_every_replica_sees_it(a: TestServer, b: TestServer) {
    let mut acme_a = Client::new(&a, acme_token()).await;
    let mut acme_b = Client::new(&b, acme_token()).await;
    let room = acme_a.create(Some("closing")).await;
    let other = acme_a.create(Some("bystander")).await;
    tokio::time::sleep(Duration::from_millis(5)).await;

    let disabled = acme_a.deactivate(&room.room_id).await.unwrap();
    assert!(disabled.disabled);
    assert!(disabled.updated_at > room.updated_at, "{disabled:?}");
    assert_eq!(
        Room {
            disabled: false,
            updated_at: room.updated_at.clone(),
            ..disabled.clone()
        },
        room,
        "nothing but disabled and updatedAt changed"
    );
    // The other replica sees it on its very next read, by every name.
    for key in [room.room_id.as_str(), "closing", room.id.as_str()] {
        assert_eq!(acme_b.get(key).await.unwrap(), disabled, "by {key}");
    }
    assert_eq!(acme_b.validate("closing").await.unwrap(), disabled);

    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = acme_b.deactivate(&room.room_id).await.unwrap();
    assert_eq!(again, disabled, "idempotent: updatedAt did not move");
    assert!(!acme_a.get("bystander").await.unwrap().disabled);
    assert_eq!(acme_a.get("bystander").await.unwrap(), other);
    // A create with the same customRoomId returns the disabled room unchanged.
    assert_eq!(acme_b.create(Some("closing")).await, disabled);
}

pub async fn deactivate_takes_a_real_room_id_only(a: TestServer, _b: TestServer) {
    let mut acme = Client::new(&a, acme_token()).await;
    let room = acme.create(Some("by-name")).await;
    for key in ["by-name", room.id.as_str()] {
        let refused = acme.deactivate(key).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{key}");
        assert_eq!(bad_field(&refused), "roomId");
        assert!(
            refused.message().contains("must be a roomId"),
            "{}",
            refused.message()
        );
    }
    assert!(
        !acme.get("by-name").await.unwrap().disabled,
        "nothing written"
    );
    let empty = acme.deactivate("").await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert_eq!(bad_field(&empty), "roomId");
    let missing = acme.deactivate("zzzz-zzzz-zzzz").await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(
        acme.get("zzzz-zzzz-zzzz").await.is_err(),
        "a deactivate never creates a room"
    );
}

pub async fn update_status_enables_and_disables_by_any_name(a: TestServer, b: TestServer) {
    let mut acme_a = Client::new(&a, acme_token()).await;
    let mut acme_b = Client::new(&b, acme_token()).await;
    let room = acme_a.create(Some("toggle")).await;
    tokio::time::sleep(Duration::from_millis(5)).await;

    let disabled = acme_a.set_status("toggle", "disabled").await.unwrap();
    assert!(disabled.disabled);
    assert!(disabled.updated_at > room.updated_at);
    assert_eq!(acme_b.get(&room.room_id).await.unwrap(), disabled);

    tokio::time::sleep(Duration::from_millis(5)).await;
    let enabled = acme_b.set_status(&room.id, "enabled").await.unwrap();
    assert!(!enabled.disabled);
    assert!(enabled.updated_at > disabled.updated_at);
    assert_eq!(acme_a.get("toggle").await.unwrap(), enabled);

    let same = acme_a.set_status(&room.room_id, "enabled").await.unwrap();
    assert_eq!(same, enabled, "enabling an enabled room changes nothing");

    for bad in ["", "Enabled", "on", "deleted"] {
        let refused = acme_a.set_status("toggle", bad).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{bad:?}");
        assert_eq!(bad_field(&refused), "status");
    }
    let missing = acme_a
        .set_status("no-such-room", "disabled")
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(acme_a.get("toggle").await.unwrap(), enabled);
}

pub async fn status_changes_stay_inside_the_account_and_the_token_scope(
    a: TestServer,
    _b: TestServer,
) {
    let mut acme = Client::new(&a, acme_token()).await;
    let room = acme.create(Some("guarded")).await;
    let other = acme.create(Some("neighbour")).await;

    let mut globex = Client::new(&a, globex_token()).await;
    let foreign = globex.deactivate(&room.room_id).await.unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);
    let foreign = globex.set_status("guarded", "disabled").await.unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);
    assert_eq!(acme.get("guarded").await.unwrap(), room, "untouched");

    let mut claims = sdk_claims(ACME_KEY);
    claims["roomId"] = "guarded".into();
    let mut scoped = Client::new(&a, sign(&claims, ACME_SECRET)).await;
    let denied = scoped.deactivate(&other.room_id).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = scoped
        .set_status("neighbour", "disabled")
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(acme.get("neighbour").await.unwrap(), other, "untouched");

    let listed = scoped.list(None, None, None).await.unwrap();
    assert_eq!(
        listed.data,
        vec![room.clone()],
        "a scoped token lists its room only"
    );
    assert_eq!(page_info(&listed), (1, 20, 1, 1));
    let none = scoped.list(None, None, Some("neighbour")).await.unwrap();
    assert!(none.data.is_empty());

    let own = scoped.deactivate(&room.room_id).await.unwrap();
    assert!(own.disabled, "the scoped token may change its own room");
}
