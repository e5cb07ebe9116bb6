//! Prometheus metrics: the process's one recorder and every metric it holds.
//!
//! The recorder is installed once per process, on first use: tests start
//! many servers in one process, and a second global recorder cannot be
//! installed. Servers render its text in their own `/metrics` route (the
//! exporter is built without an HTTP listener of its own).
//!
//! Every label value comes from a closed set (method names from the proto
//! descriptors, route templates, status codes, operation names): a label
//! that took a raw path or an id would grow the series without bound.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{OnceLock, PoisonError, RwLock};
use std::time::Duration;

use ::metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

pub const BUILD_INFO: &str = "roomservice_build_info";
pub const GRPC_CALLS: &str = "roomservice_grpc_calls_total";
pub const GRPC_DURATION: &str = "roomservice_grpc_call_duration_seconds";
pub const HTTP_REQUESTS: &str = "roomservice_http_requests_total";
pub const HTTP_DURATION: &str = "roomservice_http_request_duration_seconds";
pub const IN_FLIGHT: &str = "roomservice_calls_in_flight";
pub const SHED: &str = "roomservice_calls_shed_total";
pub const STORE_OPERATIONS: &str = "roomservice_store_operations_total";
pub const STORE_DURATION: &str = "roomservice_store_operation_duration_seconds";
pub const STORE_UP: &str = "roomservice_store_up";
pub const WEBHOOK_DELIVERIES: &str = "roomservice_webhook_deliveries_total";
pub const ROOM_CACHE_LOOKUPS: &str = "roomservice_room_cache_lookups_total";

/// Histogram buckets, in seconds: a memory-store call takes tens of
/// microseconds, a Redis round trip about a millisecond, and a store
/// operation gives up after its deadline (seconds).
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Histogram samples are folded into their buckets at each scrape, and at
/// least this often: a server nobody scrapes must not keep every sample.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(install)
}

/// The current values, in the text exposition format.
pub fn render() -> String {
    handle().render()
}

fn install() -> PrometheusHandle {
    let recorder = PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)
        .expect("the bucket list is not empty")
        .build_recorder();
    let handle = recorder.handle();
    if let Err(error) = ::metrics::set_global_recorder(recorder) {
        // Only an embedding program that installed its own recorder gets
        // here: its recorder gets the values, and `/metrics` stays empty.
        tracing::warn!(%error, "another metrics recorder is installed; /metrics will be empty");
    }
    describe();
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // Rare events start at 0 rather than absent, so that `rate()` and
    // alerts see their first occurrence as an increase.
    for transport in ["grpc", "rest"] {
        counter!(SHED, "transport" => transport).increment(0);
    }
    for outcome in ["delivered", "retrying", "dead"] {
        counter!(WEBHOOK_DELIVERIES, "outcome" => outcome).increment(0);
    }

    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            }
        });
    if let Err(error) = spawned {
        // Scrapes still fold the samples in; only an unscraped server grows.
        tracing::warn!(%error, "cannot start the metrics upkeep thread");
    }
    handle
}

fn describe() {
    describe_gauge!(
        BUILD_INFO,
        "always 1; the version label is the running build's"
    );
    describe_counter!(GRPC_CALLS, "finished gRPC calls, by method and status code");
    describe_histogram!(
        GRPC_DURATION,
        Unit::Seconds,
        "gRPC call latency, from the request's headers to the response's end"
    );
    describe_counter!(
        HTTP_REQUESTS,
        "finished REST requests, by method, route template and HTTP status"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "REST request latency, from the request's headers to the response's end"
    );
    describe_gauge!(
        IN_FLIGHT,
        "calls holding a slot of --max-in-flight (health checks and scrapes hold none)"
    );
    describe_counter!(
        SHED,
        "calls refused at once because --max-in-flight calls were in flight"
    );
    describe_counter!(
        STORE_OPERATIONS,
        "store operations, by operation and result (ok, unavailable, corrupt)"
    );
    describe_histogram!(
        STORE_DURATION,
        Unit::Seconds,
        "store operation latency, by operation"
    );
    describe_gauge!(
        STORE_UP,
        "1 while the store answers the health probe (every 500 ms), else 0"
    );
    describe_counter!(
        WEBHOOK_DELIVERIES,
        "webhook delivery attempts, by outcome (delivered, retrying, dead)"
    );
    describe_counter!(
        ROOM_CACHE_LOOKUPS,
        "GetRoom lookups by roomId on Redis, by result: hit (served from memory) or miss"
    );
}

/// A finished gRPC call.
pub fn grpc_call(method: &'static str, code: &'static str, elapsed: Duration) {
    static HANDLES: Handles<(&str, &str), (Counter, Histogram)> = Handles::new();
    let (calls, duration) = HANDLES.get((method, code), || {
        (
            counter!(GRPC_CALLS, "method" => method, "code" => code),
            histogram!(GRPC_DURATION, "method" => method),
        )
    });
    calls.increment(1);
    duration.record(elapsed.as_secs_f64());
}

/// A finished REST request.
pub fn http_request(method: &'static str, route: &'static str, status: u16, elapsed: Duration) {
    counter!(
        HTTP_REQUESTS,
        "method" => method,
        "route" => route,
        "status" => status.to_string()
    )
    .increment(1);
    histogram!(HTTP_DURATION, "method" => method, "route" => route).record(elapsed.as_secs_f64());
}

/// A call refused by admission; `transport` is `grpc` or `rest`.
pub fn shed(transport: &'static str) {
    counter!(SHED, "transport" => transport).increment(1);
}

/// A finished store operation; `result` is `ok`, `unavailable` or `corrupt`.
pub fn store_operation(operation: &'static str, result: &'static str, elapsed: Duration) {
    static HANDLES: Handles<(&str, &str), (Counter, Histogram)> = Handles::new();
    let (operations, duration) = HANDLES.get((operation, result), || {
        (
            counter!(STORE_OPERATIONS, "operation" => operation, "result" => result),
            histogram!(STORE_DURATION, "operation" => operation),
        )
    });
    operations.increment(1);
    duration.record(elapsed.as_secs_f64());
}

/// The store's health, as the prober last saw it.
pub fn store_up(up: bool) {
    gauge!(STORE_UP).set(if up { 1.0 } else { 0.0 });
}

/// A GetRoom by roomId on Redis: answered from the room cache, or not.
pub fn room_cache_lookup(hit: bool) {
    static HANDLES: Handles<bool, Counter> = Handles::new();
    HANDLES
        .get(hit, || {
            let result = if hit { "hit" } else { "miss" };
            counter!(ROOM_CACHE_LOOKUPS, "result" => result)
        })
        .increment(1);
}

/// One webhook delivery attempt's outcome: `delivered`, `retrying` or `dead`.
pub fn webhook_delivery(outcome: &'static str) {
    counter!(WEBHOOK_DELIVERIES, "outcome" => outcome).increment(1);
}

/// Counts one call in [`IN_FLIGHT`] for as long as it lives.
pub struct InFlight(());

impl InFlight {
    pub fn enter() -> InFlight {
        in_flight().increment(1.0);
        InFlight(())
    }
}

fn in_flight() -> &'static Gauge {
    static GAUGE: OnceLock<Gauge> = OnceLock::new();
    GAUGE.get_or_init(|| {
        handle();
        gauge!(IN_FLIGHT)
    })
}

/// The handles of the metrics of one kind, by label values. Looking a metric
/// up by name and labels builds and hashes its key in the registry; the
/// per-call metrics are looked up once per label set instead. The recorder
/// is installed before the first handle is made (so no handle is a no-op
/// one) and never replaced, so a handle stays valid for the process's life.
/// Label values come from closed sets, so the table stays small.
struct Handles<K, V> {
    by_labels: RwLock<Option<HashMap<K, V>>>,
}

impl<K: Copy + Eq + Hash, V: Clone> Handles<K, V> {
    const fn new() -> Handles<K, V> {
        Handles {
            by_labels: RwLock::new(None),
        }
    }

    fn get(&self, labels: K, make: impl FnOnce() -> V) -> V {
        let found = self
            .by_labels
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(|handles| handles.get(&labels).cloned());
        if let Some(handles) = found {
            return handles;
        }
        handle();
        let made = make();
        self.by_labels
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(HashMap::new)
            .insert(labels, made.clone());
        made
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        in_flight().decrement(1.0);
    }
}
