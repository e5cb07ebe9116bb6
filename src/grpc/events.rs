use std::pin::Pin;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::pb::event_service_server::EventService as EventServiceRpc;
use super::rooms::caller;
use super::{convert, pb, to_status};
use crate::service::{EventService, WatchRequest};

/// The tonic face of [`EventService`]: unpack, call, convert.
pub struct EventsGrpc {
    service: EventService,
}

impl EventsGrpc {
    pub fn new(service: EventService) -> EventsGrpc {
        EventsGrpc { service }
    }

    async fn listing(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
        dead_only: bool,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let caller = caller(&request)?;
        let limit = request.get_ref().limit.map(i64::from);
        let records = self
            .service
            .deliveries(&caller, limit, dead_only)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: records.iter().map(convert::delivery).collect(),
        }))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RoomEvent, Status>> + Send>>;

#[tonic::async_trait]
impl EventServiceRpc for EventsGrpc {
    async fn publish_room_event(
        &self,
        request: Request<pb::PublishRoomEventRequest>,
    ) -> Result<Response<pb::RoomEvent>, Status> {
        let caller = caller(&request)?;
        let m = request.into_inner();
        let data = m.data.map(convert::struct_to_json).unwrap_or_default();
        let event = self
            .service
            .publish(
                &caller,
                Some(m.user_id.as_str()),
                &m.room_id,
                &m.webhook_type,
                data,
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::event(&event)))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let caller = caller(&request)?;
        let m = request.into_inner();
        let events = self
            .service
            .watch(
                &caller,
                WatchRequest {
                    room: m.room_id,
                    types: m.webhook_types,
                    after: m.after_event_id,
                },
            )
            .await
            .map_err(to_status)?;
        let stream = events.map(|item| item.map(|e| convert::event(&e)).map_err(to_status));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        self.listing(request, false).await
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        self.listing(request, true).await
    }

    async fn replay_dead_letter(
        &self,
        request: Request<pb::ReplayDeadLetterRequest>,
    ) -> Result<Response<pb::ReplayDeadLetterResponse>, Status> {
        let caller = caller(&request)?;
        let event = self
            .service
            .replay(&caller, &request.get_ref().event_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ReplayDeadLetterResponse {
            event: Some(convert::event(&event)),
        }))
    }
}
