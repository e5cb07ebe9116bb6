use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::room_service_server::RoomService as RoomServiceRpc;
use super::wire::{CreateRoomInput, RoomReply, SettingsTails};
use super::{convert, pb, to_status};
use crate::auth::{AuthError, Caller};
use crate::domain::PublicUrl;
use crate::service::{Error, PageRequest, RoomService};

/// The tonic face of [`RoomService`]: unpack, call, convert.
pub struct RoomsGrpc {
    service: RoomService,
    public_url: PublicUrl,
    /// The encoded settings of the rooms GetRoom returns.
    tails: SettingsTails,
}

impl RoomsGrpc {
    pub fn new(service: RoomService, public_url: PublicUrl) -> RoomsGrpc {
        RoomsGrpc {
            service,
            public_url,
            tails: SettingsTails::default(),
        }
    }

    fn room(&self, room: &crate::domain::Room) -> Response<pb::Room> {
        Response::new(convert::room(room, &self.public_url))
    }

    /// CreateRoom, with its reply in the form that is encoded without a
    /// `pb::Room` in between.
    pub async fn create_room_reply(
        &self,
        request: Request<CreateRoomInput>,
    ) -> Result<Response<RoomReply>, Status> {
        let caller = caller(&request)?;
        // Not ASCII: kept as given, so the service refuses it by name.
        let key = request
            .metadata()
            .get("idempotency-key")
            .map(|v| v.to_str().unwrap_or("\u{0}").to_owned());
        let params = request.into_inner().into_params();
        let created = self
            .service
            .create_room(&caller, params, key.as_deref())
            .await
            .map_err(to_status)?;
        Ok(Response::new(RoomReply::new(
            created.room,
            &self.public_url,
        )))
    }

    /// GetRoom, with its reply in the form that is encoded without a
    /// `pb::Room` in between.
    pub async fn get_room_reply(
        &self,
        request: Request<pb::GetRoomRequest>,
    ) -> Result<Response<RoomReply>, Status> {
        let caller = caller(&request)?;
        let room = self
            .service
            .get_room(&caller, &request.get_ref().room_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(RoomReply::with_tails(
            room,
            &self.public_url,
            &self.tails,
        )))
    }
}

/// The caller the auth interceptor verified. Its absence means the service was
/// mounted without the interceptor: refuse rather than serve anonymously.
pub(super) fn caller<T>(request: &Request<T>) -> Result<Arc<Caller>, Status> {
    request
        .extensions()
        .get::<Arc<Caller>>()
        .cloned()
        .ok_or_else(|| {
            to_status(Error::Auth(AuthError::Unauthenticated(
                "no verified caller".into(),
            )))
        })
}

#[tonic::async_trait]
impl RoomServiceRpc for RoomsGrpc {
    /// Served by [`super::RoomRoute`], which encodes the reply directly;
    /// this is the same call for anyone holding the generated server alone.
    async fn create_room(
        &self,
        request: Request<pb::CreateRoomRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        let reply = self
            .create_room_reply(request.map(CreateRoomInput::from_request))
            .await?;
        Ok(reply.map(RoomReply::into_room))
    }

    /// Served by [`super::RoomRoute`], which encodes the reply directly;
    /// this is the same call for anyone holding the generated server alone.
    async fn get_room(
        &self,
        request: Request<pb::GetRoomRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        let reply = self.get_room_reply(request).await?;
        Ok(reply.map(RoomReply::into_room))
    }

    async fn list_rooms(
        &self,
        request: Request<pb::ListRoomsRequest>,
    ) -> Result<Response<pb::ListRoomsResponse>, Status> {
        let caller = caller(&request)?;
        let message = request.into_inner();
        let page = PageRequest {
            page: message.page.map(i64::from),
            per_page: message.per_page.map(i64::from),
            query: message.query,
        };
        let page = self
            .service
            .list_rooms(&caller, page)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::page(&page, &self.public_url)))
    }

    async fn validate_room(
        &self,
        request: Request<pb::ValidateRoomRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        let caller = caller(&request)?;
        let room = self
            .service
            .validate_room(&caller, &request.get_ref().room_id)
            .await
            .map_err(to_status)?;
        Ok(self.room(&room))
    }

    async fn deactivate_room(
        &self,
        request: Request<pb::DeactivateRoomRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        let caller = caller(&request)?;
        let room = self
            .service
            .deactivate_room(&caller, &request.get_ref().room_id)
            .await
            .map_err(to_status)?;
        Ok(self.room(&room))
    }

    async fn update_room_status(
        &self,
        request: Request<pb::UpdateRoomStatusRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        let caller = caller(&request)?;
        let message = request.get_ref();
        let room = self
            .service
            .update_room_status(&caller, &message.room_id, &message.status)
            .await
            .map_err(to_status)?;
        Ok(self.room(&room))
    }
}
