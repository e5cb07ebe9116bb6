//! tonic answers a request over `max_decoding_message_size` with OUT_OF_RANGE
//! and its own wording ("Error, decoded message length too large: ...");
//! gRPC's own implementations (and our error table) say RESOURCE_EXHAUSTED,
//! which clients treat as "do not retry this as is", and the message is ours
//! to write. WatchEvents answers OUT_OF_RANGE of its own (an event no longer
//! retained), so only a status with tonic's wording is rewritten.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderValue;
use tonic::server::NamedService;

/// What tonic's refusal says ("Error, decoded message length too large:
/// found N bytes, the limit is: M bytes"), percent-encoding aside: spaces
/// and these characters are sent as they are.
const TONIC_OVERSIZE_WORDING: &str = "decoded message length too large";

/// Wraps a generated tonic service whose decoding limit is `limit` bytes,
/// rewriting its OUT_OF_RANGE refusals to RESOURCE_EXHAUSTED with a message
/// naming the limit.
#[derive(Clone)]
pub struct OversizeAsResourceExhausted<S> {
    service: S,
    message: HeaderValue,
}

impl<S> OversizeAsResourceExhausted<S> {
    pub fn new(service: S, limit: usize) -> OversizeAsResourceExhausted<S> {
        let text = format!("request message too large: at most {limit} bytes");
        OversizeAsResourceExhausted {
            service,
            // Plain ASCII without '%': valid as a grpc-message as it is.
            message: HeaderValue::from_str(&text).expect("ascii"),
        }
    }
}

impl<S: NamedService> NamedService for OversizeAsResourceExhausted<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for OversizeAsResourceExhausted<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let response = self.service.call(request);
        let message = self.message.clone();
        Box::pin(async move {
            let mut response = response.await?;
            let headers = response.headers_mut();
            let out_of_range = (tonic::Code::OutOfRange as i32).to_string();
            let oversize = headers
                .get("grpc-status")
                .is_some_and(|v| v.as_bytes() == out_of_range.as_bytes())
                && headers
                    .get("grpc-message")
                    .is_some_and(|v| v.to_str().is_ok_and(|m| m.contains(TONIC_OVERSIZE_WORDING)));
            if oversize {
                let exhausted = (tonic::Code::ResourceExhausted as i32).to_string();
                headers.insert(
                    "grpc-status",
                    HeaderValue::from_str(&exhausted).expect("digits"),
                );
                headers.insert("grpc-message", message);
                headers.remove("grpc-status-details-bin");
            }
            Ok(response)
        })
    }
}
