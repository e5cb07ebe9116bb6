//! Token verification: VideoSDK-style HS256 JWTs signed with an API key's
//! secret. The order of checks matters for the messages: shape, algorithm,
//! API key, signature and times, then claims.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::{AuthError, Caller, Keyring, Permission, Role};
use crate::domain::excerpt;

/// How far ahead a token's `exp` may lie unless configured otherwise.
pub const DEFAULT_MAX_TOKEN_LIFETIME: std::time::Duration =
    std::time::Duration::from_secs(366 * 86_400);

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECONDS: u64 = 60;

/// Turns an `authorization` value into a [`Caller`]. Built once at startup and
/// shared by every transport.
pub struct Verifier {
    keyring: Keyring,
    decoding_keys: HashMap<String, DecodingKey>,
    validation: Validation,
    /// How far ahead `exp` may lie.
    max_token_lifetime: std::time::Duration,
}

fn unauthenticated(message: impl Into<String>) -> AuthError {
    AuthError::Unauthenticated(message.into())
}

impl Verifier {
    /// `allow_legacy_tokens` accepts tokens without `exp` (they never expire),
    /// for clients that predate expiring tokens.
    pub fn new(keyring: Keyring, allow_legacy_tokens: bool) -> Verifier {
        let decoding_keys = keyring
            .iter()
            .map(|k| {
                (
                    k.api_key.clone(),
                    DecodingKey::from_secret(k.secret_bytes()),
                )
            })
            .collect();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.validate_exp = true;
        // VideoSDK tokens carry no audience; one that does is not ours to judge.
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        if !allow_legacy_tokens {
            validation.required_spec_claims.insert("exp".into());
        }
        Verifier {
            keyring,
            decoding_keys,
            validation,
            max_token_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
        }
    }

    /// Refuse tokens whose `exp` lies further than `lifetime` ahead.
    pub fn with_max_token_lifetime(mut self, lifetime: std::time::Duration) -> Verifier {
        self.max_token_lifetime = lifetime;
        self
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Verifies a token for the management API (rooms, sessions): a valid
    /// token whose roles allow server-side calls. Every transport calls this,
    /// so none can forget the role check.
    pub fn verify_management(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        let caller = self.verify(authorization)?;
        caller.require_management()?;
        Ok(caller)
    }

    /// Verifies the value of an `authorization` header or metadata entry:
    /// a raw JWT or `Bearer <jwt>`. Checks identity only, not roles.
    pub fn verify(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        let raw = authorization.map(str::trim).unwrap_or_default();
        if raw.is_empty() {
            return Err(unauthenticated(
                "missing token: send a JWT in the authorization header (raw or \"Bearer <jwt>\")",
            ));
        }
        let token = strip_bearer(raw);
        if token.is_empty() {
            return Err(unauthenticated("missing token after \"Bearer\""));
        }

        let segments: Vec<&str> = token.split('.').collect();
        if segments.len() != 3 {
            return Err(unauthenticated(
                "malformed token: a JWT has three base64url segments separated by '.'",
            ));
        }
        let header = decode_segment(segments[0], "header")?;
        match header.get("alg").and_then(Value::as_str) {
            Some("HS256") => {}
            Some(other) => {
                return Err(unauthenticated(format!(
                    "token algorithm {} is not accepted: tokens must be signed with HS256",
                    excerpt(other)
                )));
            }
            None => return Err(unauthenticated("malformed token: header has no \"alg\"")),
        }
        let payload = decode_segment(segments[1], "payload")?;
        let api_key = match payload.get("apikey") {
            Some(Value::String(key)) if !key.is_empty() => key.as_str(),
            Some(_) => {
                return Err(unauthenticated(
                    "token claim \"apikey\" must be a non-empty string",
                ));
            }
            None => return Err(unauthenticated("token has no \"apikey\" claim")),
        };
        let (Some(key), Some(decoding_key)) =
            (self.keyring.get(api_key), self.decoding_keys.get(api_key))
        else {
            return Err(unauthenticated(format!(
                "unknown api key {}",
                excerpt(api_key)
            )));
        };

        // Signature, exp and nbf. The payload was already parsed above, but
        // only the library's check of the signature makes it trustworthy.
        jsonwebtoken::decode::<Value>(token, decoding_key, &self.validation).map_err(|e| {
            match e.kind() {
                ErrorKind::InvalidSignature => {
                    unauthenticated("token signature does not match the api key's secret")
                }
                ErrorKind::ExpiredSignature => {
                    unauthenticated("token has expired (exp is in the past)")
                }
                ErrorKind::ImmatureSignature => {
                    unauthenticated("token is not valid yet (nbf is in the future)")
                }
                ErrorKind::MissingRequiredClaim(claim) => {
                    unauthenticated(format!("token has no {claim:?} claim; tokens must expire"))
                }
                ErrorKind::InvalidClaimFormat(claim) => {
                    unauthenticated(format!("token claim {claim:?} must be a number of seconds"))
                }
                // The library's wording is not ours to publish; the log keeps it.
                other => AuthError::InvalidToken {
                    cause: format!("{other:?}"),
                },
            }
        })?;

        let permissions = parse_permissions(payload.get("permissions"))?;
        let roles = parse_roles(payload.get("roles"))?;
        match payload.get("version") {
            None => {}
            Some(v) if v.as_u64() == Some(2) || v.as_str() == Some("2") => {}
            Some(_) => return Err(unauthenticated("token claim \"version\" must be 2")),
        }
        let room_scope = match payload.get("roomId") {
            None | Some(Value::Null) => None,
            Some(Value::String(room)) if !room.is_empty() => Some(room.clone()),
            Some(_) => {
                return Err(unauthenticated(
                    "token claim \"roomId\" must be a non-empty string",
                ));
            }
        };
        if let Some(iat) = payload.get("iat") {
            let now = jiff::Timestamp::now().as_second();
            // NumericDate may carry a fraction, as jsonwebtoken accepts for exp.
            match iat.as_f64() {
                Some(issued) if issued <= (now + LEEWAY_SECONDS as i64) as f64 => {}
                Some(_) => return Err(unauthenticated("token is issued in the future (iat)")),
                None => {
                    return Err(unauthenticated(
                        "token claim \"iat\" must be a number of seconds",
                    ));
                }
            }
        }

        Ok(Caller {
            account: key.account.clone(),
            api_key: key.api_key.clone(),
            permissions,
            roles,
            room_scope,
        })
    }
}

fn strip_bearer(raw: &str) -> &str {
    if raw.eq_ignore_ascii_case("bearer") {
        return "";
    }
    match raw.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => raw[7..].trim_start(),
        _ => raw,
    }
}

fn decode_segment(segment: &str, what: &str) -> Result<Value, AuthError> {
    // Some encoders pad base64url; the JWT spec does not, but the padding
    // carries no meaning, so it is tolerated.
    let bytes = URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .map_err(|_| unauthenticated(format!("malformed token: {what} is not base64url")))?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|_| unauthenticated(format!("malformed token: {what} is not JSON")))?;
    if !value.is_object() {
        return Err(unauthenticated(format!(
            "malformed token: {what} is not a JSON object"
        )));
    }
    Ok(value)
}

fn parse_permissions(value: Option<&Value>) -> Result<Vec<Permission>, AuthError> {
    let rule =
        "token claim \"permissions\" must be a non-empty list of allow_join, allow_mod, ask_join";
    let Some(list) = value.and_then(Value::as_array).filter(|l| !l.is_empty()) else {
        return Err(unauthenticated(rule));
    };
    list.iter()
        .map(|p| {
            p.as_str()
                .and_then(Permission::parse)
                .ok_or_else(|| unauthenticated(rule))
        })
        .collect()
}

fn parse_roles(value: Option<&Value>) -> Result<Option<Vec<Role>>, AuthError> {
    let rule = "token claim \"roles\" must be a list of crawler, rtc";
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(list)) => list
            .iter()
            .map(|r| {
                r.as_str()
                    .and_then(Role::parse)
                    .ok_or_else(|| unauthenticated(rule))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(unauthenticated(rule)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_prefix_is_optional_and_case_insensitive() {
        assert_eq!(strip_bearer("Bearer abc"), "abc");
        assert_eq!(strip_bearer("bearer   abc"), "abc");
        assert_eq!(strip_bearer("abc.def"), "abc.def");
        assert_eq!(strip_bearer("Bear"), "Bear");
        assert_eq!(strip_bearer("Bearer"), "");
    }
}
