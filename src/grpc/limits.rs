//! tonic answers a request over `max_decoding_message_size` with OUT_OF_RANGE
//! and its own wording ("Error, decoded message length too large: ...");
//! gRPC's own implementations (and our error table) say RESOURCE_EXHAUSTED,
//! which clients treat as "do not retry this as is", and the message is ours
//! to write. Our handlers never return OUT_OF_RANGE, so every such status from
//! a wrapped service is that refusal.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderValue;
use tonic::server::NamedService;

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
            if headers
                .get("grpc-status")
                .is_some_and(|v| v.as_bytes() == out_of_range.as_bytes())
            {
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
