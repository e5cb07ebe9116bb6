//! Signed webhook delivery, compatible with VideoSDK's: each request is a
//! JSON `POST` whose body is signed with the server's RSA key (PKCS#1 v1.5,
//! SHA-256, base64 in `videosdk-signature`), so receivers written for
//! VideoSDK verify ours unchanged with the public key we publish.
//!
//! The endpoint is a customer's choice, which makes the sender an SSRF
//! vector: a URL, or a DNS name, pointing at loopback, the private network or
//! a cloud metadata address would have the server call its own internals.
//! [`Sender`] therefore resolves the host at send time, connects only to
//! addresses [`forbidden_reason`] passes, and never follows a redirect or a
//! proxy; `allow_private` lifts the address check for development.
//!
//! This module stands alone: the caller builds the body, signs it with
//! [`SigningKey::sign`], and decides from the [`Attempt`] whether to retry.

mod address;
mod sender;
mod signing;

pub use address::forbidden_reason;
pub use sender::{Attempt, Outgoing, Sender, SenderConfig, SenderError};
pub use signing::{KeyError, SigningKey};
