//! A lean gRPC client for load generators: requests encoded once, answers
//! not decoded, and each call written by the caller's own task straight onto
//! an `h2` connection.
//!
//! With tonic's generated client the load generator spent more CPU per call
//! than the server did (encoding the settings' `Struct`, decoding every
//! reply into a `Room`, the channel's buffer task), on a CPU it shares with
//! Redis in these benchmarks. Worse, tonic's client sends a request's body
//! from a task of its own: when the load generator is saturated, the DATA
//! frame can leave long after the HEADERS, and the server's clock for that
//! call (it starts at the headers) runs while the client is the one behind.
//! Here the HEADERS and DATA frames are queued together.
//!
//! Status, message and trailers are still read in full: a call counts as OK
//! only when the server's `grpc-status` says so.

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderValue;
use prost::Message;
use tonic::Status;

/// One method and its request, framed as a gRPC message.
#[derive(Clone)]
pub struct RawCall {
    path: String,
    framed: Bytes,
}

impl RawCall {
    pub fn new(method: &str, request: &impl Message) -> RawCall {
        let body = request.encode_to_vec();
        let mut framed = BytesMut::with_capacity(5 + body.len());
        framed.put_u8(0); // not compressed
        framed.put_u32(u32::try_from(body.len()).expect("a small request"));
        framed.put_slice(&body);
        RawCall {
            path: format!("/rooms.v1.RoomService/{method}"),
            framed: framed.freeze(),
        }
    }
}

/// One HTTP/2 connection; clones share it.
#[derive(Clone)]
pub struct RawClient {
    send: h2::client::SendRequest<Bytes>,
    authority: String,
}

impl RawClient {
    /// `addr`: host:port.
    pub async fn connect(addr: &str) -> Result<RawClient, String> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(1 << 24)
            .handshake(tcp)
            .await
            .map_err(|e| format!("HTTP/2 handshake with {addr}: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(RawClient {
            send,
            authority: addr.to_string(),
        })
    }

    /// Sends `call` with `authorization: token`; returns the reply message's
    /// bytes (without the gRPC frame header), or the status the server gave.
    pub async fn call(&self, call: &RawCall, token: &HeaderValue) -> Result<Bytes, Status> {
        let broken = |e: h2::Error| Status::unavailable(format!("connection: {e}"));
        let mut send = self.send.clone().ready().await.map_err(broken)?;
        let request = http::Request::post(format!("http://{}{}", self.authority, call.path))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .header(http::header::AUTHORIZATION, token.clone())
            .body(())
            .expect("a request");
        let (response, mut stream) = send.send_request(request, false).map_err(broken)?;
        stream
            .send_data(call.framed.clone(), true)
            .map_err(broken)?;
        let response = response.await.map_err(broken)?;
        if response.status() != http::StatusCode::OK {
            return Err(Status::unknown(format!("HTTP {}", response.status())));
        }
        let (parts, mut body) = response.into_parts();
        // Trailers-only: the status is in the headers.
        if let Some(status) = Status::from_header_map(&parts.headers) {
            return Err(if status.code() == tonic::Code::Ok {
                Status::internal("an OK answer without a message")
            } else {
                status
            });
        }
        let mut message = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(broken)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            message.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.map_err(broken)?.unwrap_or_default();
        match Status::from_header_map(&trailers) {
            Some(status) if status.code() != tonic::Code::Ok => Err(status),
            Some(_) if message.len() >= 5 => Ok(message.freeze().split_off(5)),
            Some(_) => Err(Status::internal("an OK answer without a message")),
            None => Err(Status::internal("an answer without grpc-status")),
        }
    }
}
