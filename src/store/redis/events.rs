//! Placeholder: the Redis event store is being written.
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;

use super::RedisStore;
use crate::domain::{Event, EventId, NewEvent, UserId};
use crate::store::{
    DeliveryHint, DeliveryRecord, DeliveryState, DeliveryUpdate, EventStore, StoreError,
};

fn todo() -> StoreError {
    StoreError::Unavailable("events on redis: not written yet".into())
}

#[async_trait]
impl EventStore for RedisStore {
    async fn append_event(&self, _: &UserId, _: &NewEvent) -> Result<EventId, StoreError> {
        Err(todo())
    }
    async fn read_events(
        &self,
        _: &UserId,
        _: Option<EventId>,
        _: usize,
    ) -> Result<Vec<Event>, StoreError> {
        Err(todo())
    }
    async fn trimmed_before(&self, _: &UserId) -> Result<Option<EventId>, StoreError> {
        Err(todo())
    }
    async fn hint_delivery(&self, _: &UserId, _: Timestamp) -> Result<(), StoreError> {
        Err(todo())
    }
    async fn due_hints(&self, _: Timestamp, _: usize) -> Result<Vec<DeliveryHint>, StoreError> {
        Err(todo())
    }
    async fn settle_hint(&self, _: &DeliveryHint, _: Option<Timestamp>) -> Result<(), StoreError> {
        Err(todo())
    }
    async fn lease_deliveries(&self, _: &UserId, _: &str, _: Duration) -> Result<bool, StoreError> {
        Err(todo())
    }
    async fn release_deliveries(&self, _: &UserId, _: &str) -> Result<(), StoreError> {
        Err(todo())
    }
    async fn delivery_state(&self, _: &UserId) -> Result<DeliveryState, StoreError> {
        Err(todo())
    }
    async fn update_deliveries(
        &self,
        _: &UserId,
        _: &str,
        _: &DeliveryUpdate,
    ) -> Result<bool, StoreError> {
        Err(todo())
    }
    async fn recent_deliveries(
        &self,
        _: &UserId,
        _: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        Err(todo())
    }
    async fn dead_letters(&self, _: &UserId, _: usize) -> Result<Vec<DeliveryRecord>, StoreError> {
        Err(todo())
    }
    async fn take_dead_letter(
        &self,
        _: &UserId,
        _: &str,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        Err(todo())
    }
    async fn signing_key(&self, _: &str) -> Result<String, StoreError> {
        Err(todo())
    }
}
