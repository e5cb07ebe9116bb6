//! roomservice: the control plane for video-conference rooms.
//!
//! A request walks down once: transport (`grpc` or `gateway`) → auth → `service` (the
//! rules) → `store`, and back. No layer reaches around the one below it.

/// API keys, accounts, token verification and the verified caller.
pub mod auth;
/// Subcommands other than `serve`.
pub mod cli;
/// Command-line flags and their `ROOMSERVICE_*` environment twins.
pub mod config;
/// Identifiers, rooms and validation; free of transport and storage types.
pub mod domain;
/// The error type and its gRPC/HTTP mapping.
pub mod error;
/// The VideoSDK v2 REST gateway: axum routes over the same services.
pub mod gateway;
/// tonic adapters: proto ⇄ domain, auth interceptor, service impls.
pub mod grpc;
/// Per-account rate limits, per replica.
pub mod ratelimit;
/// Startup and shutdown of the `serve` command.
pub mod run;
/// One listener: gRPC (RoomService, health, reflection) and the REST gateway.
pub mod server;
/// Business rules over a store.
pub mod service;
/// The storage trait and its implementations.
pub mod store;
/// Logging setup.
pub mod telemetry;
/// Signed webhook delivery: the RSA signing key and an SSRF-guarded sender.
pub mod webhook;
