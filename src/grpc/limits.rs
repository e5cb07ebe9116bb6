//! tonic answers a request over `max_decoding_message_size` with OUT_OF_RANGE;
//! gRPC's own implementations (and our error table) say RESOURCE_EXHAUSTED, which
//! clients treat as "do not retry this as is". Our handlers never return
//! OUT_OF_RANGE, so every such status from a wrapped service is that refusal.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderValue;
use tonic::server::NamedService;

/// Wraps a generated tonic service, rewriting OUT_OF_RANGE to RESOURCE_EXHAUSTED.
#[derive(Clone)]
pub struct OversizeAsResourceExhausted<S>(pub S);

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
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let response = self.0.call(request);
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
            }
            Ok(response)
        })
    }
}
