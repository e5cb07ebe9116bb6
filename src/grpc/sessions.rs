use tonic::{Request, Response, Status};

use super::pb::session_service_server::SessionService as SessionServiceRpc;
use super::rooms::caller;
use super::{convert, pb, to_status};
use crate::domain::{PublicUrl, Session};
use crate::service::{SessionListRequest, SessionService};

/// The tonic face of [`SessionService`]: unpack, call, convert. The caller
/// comes from the same [`super::AuthInterceptor`] as RoomService's; whether
/// it may make a media-plane call is the service's to decide.
pub struct SessionsGrpc {
    service: SessionService,
    public_url: PublicUrl,
}

impl SessionsGrpc {
    pub fn new(service: SessionService, public_url: PublicUrl) -> SessionsGrpc {
        SessionsGrpc {
            service,
            public_url,
        }
    }

    fn session(&self, session: &Session) -> Response<pb::Session> {
        Response::new(convert::session(session, &self.public_url))
    }
}

#[tonic::async_trait]
impl SessionServiceRpc for SessionsGrpc {
    async fn participant_joined(
        &self,
        request: Request<pb::ParticipantJoinedRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let caller = caller(&request)?;
        let m = request.get_ref();
        let session = self
            .service
            .participant_joined(
                &caller,
                &m.room_id,
                &m.participant_id,
                &m.name,
                &m.participant_token,
            )
            .await
            .map_err(to_status)?;
        Ok(self.session(&session))
    }

    async fn participant_left(
        &self,
        request: Request<pb::ParticipantLeftRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let caller = caller(&request)?;
        let m = request.get_ref();
        let session = self
            .service
            .participant_left(
                &caller,
                &m.user_id,
                &m.room_id,
                &m.participant_id,
                &m.reason,
            )
            .await
            .map_err(to_status)?;
        Ok(self.session(&session))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let caller = caller(&request)?;
        let m = request.into_inner();
        let list = SessionListRequest {
            room: m.room_id,
            status: m.status,
            page: m.page.map(i64::from),
            per_page: m.per_page.map(i64::from),
        };
        let page = self
            .service
            .list_sessions(&caller, list)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::session_page(
            &page,
            &self.public_url,
        )))
    }

    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let caller = caller(&request)?;
        let session = self
            .service
            .get_session(&caller, &request.get_ref().session_id)
            .await
            .map_err(to_status)?;
        Ok(self.session(&session))
    }

    async fn end_session(
        &self,
        request: Request<pb::EndSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let caller = caller(&request)?;
        let m = request.get_ref();
        let session = self
            .service
            .end_session(&caller, &m.room_id, m.session_id.as_deref())
            .await
            .map_err(to_status)?;
        Ok(self.session(&session))
    }

    async fn list_participants(
        &self,
        request: Request<pb::ListParticipantsRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let caller = caller(&request)?;
        let m = request.get_ref();
        let session = self
            .service
            .list_participants(&caller, &m.session_id, m.active_only)
            .await
            .map_err(to_status)?;
        Ok(self.session(&session))
    }

    async fn remove_participant(
        &self,
        request: Request<pb::RemoveParticipantRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let caller = caller(&request)?;
        let m = request.get_ref();
        let session = self
            .service
            .remove_participant(
                &caller,
                &m.room_id,
                &m.participant_id,
                m.session_id.as_deref(),
            )
            .await
            .map_err(to_status)?;
        Ok(self.session(&session))
    }
}
