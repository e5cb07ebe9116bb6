use tonic::{Request, Response, Status};

use super::pb::room_service_server::RoomService as RoomServiceRpc;
use super::{convert, pb, to_status};
use crate::auth::{AuthError, Caller};
use crate::domain::PublicUrl;
use crate::error::Error;
use crate::service::RoomService;

/// The tonic face of [`RoomService`].
pub struct RoomsGrpc {
    service: RoomService,
    public_url: PublicUrl,
}

impl RoomsGrpc {
    pub fn new(service: RoomService, public_url: PublicUrl) -> RoomsGrpc {
        RoomsGrpc {
            service,
            public_url,
        }
    }
}

/// The caller the auth interceptor verified. Its absence means the service was
/// mounted without the interceptor: refuse rather than serve anonymously.
fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| {
            to_status(Error::Auth(AuthError::Unauthenticated(
                "no verified caller".into(),
            )))
        })
}

#[tonic::async_trait]
impl RoomServiceRpc for RoomsGrpc {
    async fn create_room(
        &self,
        request: Request<pb::CreateRoomRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        let caller = caller(&request)?;
        let params = convert::create_params(request.into_inner());
        let created = self
            .service
            .create_room(&caller, params)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::room(
            &created.room,
            &self.public_url,
        )))
    }

    async fn get_room(
        &self,
        request: Request<pb::GetRoomRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        let caller = caller(&request)?;
        let room = self
            .service
            .get_room(&caller, &request.get_ref().room_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::room(&room, &self.public_url)))
    }
}
