//! One integration-test binary; each module tests one behaviour against a real
//! server (and, where named, real redis-server processes).

mod harness;
mod input_properties;
mod redis_harness;

mod attacks;
mod auth;
mod cli;
mod error_size;
mod event_store_conformance;
mod idempotency;
mod observability;
mod rate_limits;
mod redis_faults;
mod redis_policy;
mod redis_service;
mod reflection;
mod rest_gateway;
mod room_cache;
mod room_calls;
mod rooms;
mod schemathesis;
mod sdk_client;
mod session_lifecycle;
mod session_replicas;
mod session_store_conformance;
mod sessions_api;
mod shutdown;
mod store_conformance;
mod tls;
mod token_properties;
mod webhook_replicas;
mod webhooks;
