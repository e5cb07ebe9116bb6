//! Token verification: VideoSDK-style HS256 JWTs signed with an API key's
//! secret. The order of checks matters for the messages: shape, algorithm,
//! API key and signature (one answer for both), times, then claims.
//!
//! Every message a caller can see is written here: the JWT library's own
//! text, and any caller text beyond a short algorithm name, stay in the log.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::accepted::AcceptedTokens;
use super::{AuthError, Caller, Keyring, Permission, Role};
use crate::domain::excerpt;

/// How far ahead a token's `exp` may lie unless configured otherwise.
pub const DEFAULT_MAX_TOKEN_LIFETIME: std::time::Duration =
    std::time::Duration::from_secs(366 * 86_400);

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECONDS: u64 = 60;

/// Turns an `authorization` value into a [`Caller`]. Built once at startup and
/// shared by every transport; its keys can be replaced while serving
/// ([`Verifier::replace_keyring`], on SIGHUP).
pub struct Verifier {
    /// The keys and their decoding keys, swapped together as one value: a
    /// token is checked against one keyring from start to end, never against
    /// half of an old one and half of a new one. A std lock, held only to
    /// clone the `Arc`.
    keys: RwLock<Arc<Keys>>,
    /// A random secret that tokens naming an unknown API key are checked
    /// against, so that they take as long, and end as, a bad signature.
    unknown_key_decoy: DecodingKey,
    validation: Validation,
    /// How far ahead `exp` may lie.
    max_token_lifetime: std::time::Duration,
    /// Tokens that passed every check, so a repeated token is not checked
    /// again in full.
    accepted: AcceptedTokens,
}

/// A keyring with the decoding key of each of its secrets, made once per
/// keyring rather than per token.
struct Keys {
    /// Which keyring this is, for the tokens accepted against it.
    generation: u64,
    keyring: Keyring,
    decoding_keys: HashMap<String, DecodingKey>,
}

impl Keys {
    fn new(keyring: Keyring) -> Keys {
        let decoding_keys = keyring
            .iter()
            .map(|k| {
                (
                    k.api_key.clone(),
                    DecodingKey::from_secret(k.secret_bytes()),
                )
            })
            .collect();
        static GENERATIONS: AtomicU64 = AtomicU64::new(0);
        Keys {
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            keyring,
            decoding_keys,
        }
    }
}

fn unauthenticated(message: impl Into<String>) -> AuthError {
    AuthError::Unauthenticated(message.into())
}

impl Verifier {
    /// `allow_legacy_tokens` accepts tokens without `exp` (they never expire),
    /// for clients that predate expiring tokens.
    pub fn new(keyring: Keyring, allow_legacy_tokens: bool) -> Verifier {
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
            keys: RwLock::new(Arc::new(Keys::new(keyring))),
            unknown_key_decoy: DecodingKey::from_secret(&rand::random::<[u8; 32]>()),
            validation,
            max_token_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
            accepted: AcceptedTokens::default(),
        }
    }

    /// Refuse tokens whose `exp` lies further than `lifetime` ahead.
    pub fn with_max_token_lifetime(mut self, lifetime: std::time::Duration) -> Verifier {
        self.max_token_lifetime = lifetime;
        self
    }

    /// The keys in force now. A caller that keeps the `Arc` keeps this
    /// keyring, whatever replaces it later.
    fn keys(&self) -> Arc<Keys> {
        // A poisoned lock only means a reader panicked while cloning an Arc:
        // the value inside is still whole.
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Verifies tokens against `keyring` from now on; calls already past
    /// their token check are not affected.
    pub fn replace_keyring(&self, keyring: Keyring) {
        let keys = Arc::new(Keys::new(keyring));
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
    }

    /// Verifies a token for the management API (rooms, sessions): a valid
    /// token whose roles allow server-side calls. Every transport calls this,
    /// so none can forget the role check.
    pub fn verify_management(&self, authorization: Option<&str>) -> Result<Arc<Caller>, AuthError> {
        let caller = self.verify(authorization)?;
        caller.require_management()?;
        Ok(caller)
    }

    /// Verifies the value of an `authorization` header or metadata entry:
    /// a raw JWT or `Bearer <jwt>`. Checks identity only, not roles.
    pub fn verify(&self, authorization: Option<&str>) -> Result<Arc<Caller>, AuthError> {
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
        let keys = self.keys();
        let now = jiff::Timestamp::now().as_second();
        if let Some(caller) = self
            .accepted
            .get(token, keys.generation, now, LEEWAY_SECONDS)
        {
            return Ok(caller);
        }
        let (caller, exp) = self.verify_in_full(token, &keys)?;
        // Shared, not cloned: every call with this token gets the same one.
        let caller = Arc::new(caller);
        // An `exp` the library accepted without reading it as whole seconds
        // (a fraction, on a server that takes legacy tokens) is re-checked
        // in full every time rather than judged differently here.
        let remembered_exp = match exp {
            None | Some(Value::Null) => Some(None),
            Some(exp) => exp.as_u64().map(Some),
        };
        if let Some(exp) = remembered_exp {
            self.accepted
                .insert(token, keys.generation, exp, Arc::clone(&caller));
        }
        Ok(caller)
    }

    /// Every check of `token` against `keys`; on success the caller and the
    /// token's `exp` claim, if it has one.
    fn verify_in_full(
        &self,
        token: &str,
        keys: &Keys,
    ) -> Result<(Caller, Option<Value>), AuthError> {
        let segments: Vec<&str> = token.split('.').collect();
        if segments.len() != 3 {
            return Err(unauthenticated(
                "malformed token: a JWT has three base64url segments separated by '.'",
            ));
        }
        let header = decode_segment(segments[0], "header")?;
        match header.get("alg") {
            Some(Value::String(alg)) if alg == "HS256" => {}
            // Named back only when it looks like an algorithm name: the
            // header is the caller's text.
            Some(Value::String(alg))
                if (1..=16).contains(&alg.len())
                    && alg.chars().all(|c| c.is_ascii_alphanumeric()) =>
            {
                return Err(unauthenticated(format!(
                    "token algorithm \"{alg}\" is not accepted: tokens must be signed with HS256"
                )));
            }
            Some(Value::String(_)) => {
                return Err(unauthenticated(
                    "token algorithm is not accepted: tokens must be signed with HS256",
                ));
            }
            Some(_) => {
                return Err(unauthenticated(
                    "malformed token: header \"alg\" must be a string",
                ));
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
        let known = keys
            .keyring
            .get(api_key)
            .zip(keys.decoding_keys.get(api_key));
        let decoding_key = known.map_or(&self.unknown_key_decoy, |(_, decoding_key)| decoding_key);

        // Signature, exp and nbf. The payload was already parsed above, but
        // only the library's check of the signature makes it trustworthy.
        let verified = jsonwebtoken::decode::<Value>(token, decoding_key, &self.validation);
        let Some((key, _)) = known else {
            // The decoy secret never matches: whatever the library said
            // before the signature, it says for a known key too; after it,
            // the caller learns only what a bad signature would tell.
            return Err(match verified {
                Err(e) if !matches!(e.kind(), ErrorKind::InvalidSignature) => {
                    self.refusal(e, token, &payload)
                }
                _ => AuthError::BadCredentials {
                    cause: format!("unknown api key {}", excerpt(api_key)),
                },
            });
        };
        verified.map_err(|e| self.refusal(e, token, &payload))?;
        self.check_exp_horizon(payload.get("exp"))?;

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
        let participant_id = match payload.get("participantId") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) if !id.is_empty() => Some(id.clone()),
            Some(_) => {
                return Err(unauthenticated(
                    "token claim \"participantId\" must be a non-empty string",
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

        let caller = Caller {
            account: key.account.clone(),
            api_key: key.api_key.clone(),
            permissions,
            roles,
            room_scope,
            participant_id,
        };
        Ok((caller, payload.get("exp").cloned()))
    }

    /// Verifies a participant's own token, as a media server reports it on a
    /// join: the same rules as any token, and it must allow joining (`roles`
    /// absent or holding `rtc`; `permissions` holding `allow_join` or
    /// `ask_join`).
    pub fn verify_participant(&self, token: &str) -> Result<Arc<Caller>, AuthError> {
        let caller = self.verify(Some(token))?;
        caller.require_join()?;
        Ok(caller)
    }
}

impl Verifier {
    /// Turns the JWT library's refusal into ours. Its wording and its debug
    /// text are not ours to publish: the log keeps them.
    fn refusal(
        &self,
        error: jsonwebtoken::errors::Error,
        token: &str,
        payload: &Value,
    ) -> AuthError {
        match error.kind() {
            ErrorKind::InvalidSignature => AuthError::BadCredentials {
                cause: "token signature does not match the api key's secret".into(),
            },
            ErrorKind::ExpiredSignature => {
                unauthenticated("token has expired (exp is in the past)")
            }
            ErrorKind::ImmatureSignature => {
                unauthenticated("token is not valid yet (nbf is in the future)")
            }
            // The library reads an `exp` it cannot parse as a u64 (negative,
            // 2^64, 1e300, text) as missing when it is required, and as
            // malformed when it is not.
            ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => match payload.get("exp") {
                None | Some(Value::Null) => {
                    unauthenticated("token has no \"exp\" claim; tokens must expire")
                }
                Some(_) => self.unreadable_exp(payload),
            },
            ErrorKind::InvalidClaimFormat(claim) if claim == "exp" => self.unreadable_exp(payload),
            ErrorKind::InvalidClaimFormat(claim) if claim == "nbf" => unauthenticated(NBF_RULE),
            // The library reads the header before the signature and the
            // claims after it; a claim of a type it cannot skip (a list for
            // `exp`) fails its JSON reading rather than its claim checks.
            ErrorKind::Json(_) => match jsonwebtoken::decode_header(token) {
                Err(e) if matches!(e.kind(), ErrorKind::Json(_)) => {
                    unauthenticated("malformed token: a header field has the wrong type")
                }
                Err(_) => AuthError::InvalidToken {
                    cause: format!("{:?}", error.kind()),
                },
                Ok(_) => misread_claim(payload).unwrap_or_else(|| AuthError::InvalidToken {
                    cause: format!("{:?}", error.kind()),
                }),
            },
            other => AuthError::InvalidToken {
                cause: format!("{other:?}"),
            },
        }
    }

    /// An `exp` the library could not read: too far ahead if it is a number
    /// (2^64, 1e300), else malformed.
    fn unreadable_exp(&self, payload: &Value) -> AuthError {
        self.check_exp_horizon(payload.get("exp"))
            .err()
            .unwrap_or_else(|| unauthenticated(EXP_RULE))
    }

    /// Refuses an `exp` further ahead than the configured lifetime (plus the
    /// clock-skew leeway, since the issuer's clock may run ahead of ours).
    /// A token without `exp` is a legacy token; whether those are accepted
    /// was decided by the library's required claims.
    fn check_exp_horizon(&self, exp: Option<&Value>) -> Result<(), AuthError> {
        let exp = match exp {
            None | Some(Value::Null) => return Ok(()),
            Some(exp) => exp,
        };
        // Any JSON number becomes a finite f64 (serde_json refuses
        // overflowing literals), so 2^63 and 1e300 are compared, not wrapped.
        let Some(exp) = exp.as_f64() else {
            return Err(unauthenticated(EXP_RULE));
        };
        let now = jiff::Timestamp::now().as_second() as f64;
        let horizon = now + self.max_token_lifetime.as_secs_f64() + LEEWAY_SECONDS as f64;
        if exp > horizon {
            return Err(unauthenticated(format!(
                "token expires too far ahead: exp may be at most {} from now",
                describe_duration(self.max_token_lifetime)
            )));
        }
        Ok(())
    }
}

/// The registered claim the library could not read, if we can tell. (`aud`
/// and `iss` of any type it skips without complaint.)
fn misread_claim(payload: &Value) -> Option<AuthError> {
    let claim = |name: &str| payload.get(name).filter(|v| !v.is_null());
    if claim("exp").is_some_and(|v| !v.is_number()) {
        return Some(unauthenticated(EXP_RULE));
    }
    if claim("nbf").is_some_and(|v| !v.is_number()) {
        return Some(unauthenticated(NBF_RULE));
    }
    if claim("sub").is_some_and(|v| !v.is_string()) {
        return Some(unauthenticated("token claim \"sub\" must be a string"));
    }
    None
}

const EXP_RULE: &str = "token claim \"exp\" must be a non-negative number of seconds since 1970";
const NBF_RULE: &str = "token claim \"nbf\" must be a non-negative number of seconds since 1970";

/// `366 days`, `12 hours`, `90 seconds`: the largest whole unit.
fn describe_duration(duration: std::time::Duration) -> String {
    let seconds = duration.as_secs();
    let (count, unit) = match seconds {
        0 => (0, "second"),
        s if s % 86_400 == 0 => (s / 86_400, "day"),
        s if s % 3_600 == 0 => (s / 3_600, "hour"),
        s if s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    let plural = if count == 1 { "" } else { "s" };
    format!("{count} {unit}{plural}")
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
    use crate::error::PublicError;
    use serde_json::json;

    const KEYS: &str = r#"
        [[keys]]
        api_key = "k"
        secret = "s3cret"
    "#;

    fn verifier(allow_legacy_tokens: bool) -> Verifier {
        Verifier::new(Keyring::parse_toml(KEYS).unwrap(), allow_legacy_tokens)
    }

    fn token(claims: Value, secret: &str) -> String {
        let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    }

    fn claims(apikey: &str, exp: Value) -> Value {
        json!({"apikey": apikey, "permissions": ["allow_join"], "exp": exp})
    }

    fn now() -> i64 {
        jiff::Timestamp::now().as_second()
    }

    #[test]
    fn unknown_key_and_bad_signature_differ_only_in_the_log() {
        let verifier = verifier(false);
        let unknown = verifier
            .verify(Some(&token(claims("who", json!(now() + 60)), "s3cret")))
            .unwrap_err();
        let bad_signature = verifier
            .verify(Some(&token(claims("k", json!(now() + 60)), "guess")))
            .unwrap_err();
        assert_eq!(unknown.public_message(), bad_signature.public_message());
        assert_eq!(unknown.code(), bad_signature.code());
        assert_eq!(
            unknown.to_string(),
            "unauthenticated: unknown api key \"who\""
        );
        assert_eq!(
            bad_signature.to_string(),
            "unauthenticated: token signature does not match the api key's secret"
        );
    }

    #[test]
    fn exp_beyond_the_configured_lifetime_is_refused_naming_it() {
        let verifier =
            verifier(false).with_max_token_lifetime(std::time::Duration::from_secs(3600));
        let ok = token(claims("k", json!(now() + 3600 + 30)), "s3cret");
        verifier
            .verify(Some(&ok))
            .expect("within the lifetime and leeway");
        let far = token(claims("k", json!(now() + 3600 + 120)), "s3cret");
        assert_eq!(
            verifier.verify(Some(&far)).unwrap_err().public_message(),
            "unauthenticated: token expires too far ahead: exp may be at most 1 hour from now"
        );
    }

    #[test]
    fn enormous_exp_is_refused_not_taken_as_never_expiring() {
        let far =
            "unauthenticated: token expires too far ahead: exp may be at most 366 days from now";
        for legacy in [false, true] {
            let verifier = verifier(legacy);
            for exp in [
                json!(1u64 << 63),
                json!(u64::MAX),
                json!(18446744073709551616.0),
                json!(1e300),
                json!(f64::MAX),
            ] {
                let refusal = verifier
                    .verify(Some(&token(claims("k", exp.clone()), "s3cret")))
                    .unwrap_err();
                assert_eq!(refusal.public_message(), far, "exp {exp}, legacy {legacy}");
            }
            for exp in [json!(-1), json!(-1e300), json!("soon"), json!([1])] {
                let refusal = verifier
                    .verify(Some(&token(claims("k", exp.clone()), "s3cret")))
                    .unwrap_err();
                assert_eq!(
                    refusal.public_message(),
                    format!("unauthenticated: {EXP_RULE}"),
                    "exp {exp}, legacy {legacy}"
                );
            }
        }
    }

    #[test]
    fn fields_of_types_the_library_cannot_read_are_named() {
        let verifier = verifier(false);
        let base = claims("k", json!(now() + 60));
        for (claim, value, expected) in [
            ("sub", json!(["x"]), "token claim \"sub\" must be a string"),
            ("nbf", json!({"at": 1}), NBF_RULE),
        ] {
            let mut claims = base.clone();
            claims[claim] = value;
            let refusal = verifier.verify(Some(&token(claims, "s3cret"))).unwrap_err();
            assert_eq!(
                refusal.public_message(),
                format!("unauthenticated: {expected}")
            );
        }
        // `aud` and `iss` are not ours to judge, whatever their type.
        for (claim, value) in [("aud", json!([1, 2])), ("iss", json!({"a": [1]}))] {
            let mut claims = base.clone();
            claims[claim] = value;
            verifier.verify(Some(&token(claims, "s3cret"))).unwrap();
        }

        let encode = |v: Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap());
        for key in ["k", "unknown"] {
            let header = encode(json!({"alg": "HS256", "typ": ["JWT"]}));
            let payload = encode(claims(key, json!(now() + 60)));
            let refusal = verifier
                .verify(Some(&format!("{header}.{payload}.c2ln")))
                .unwrap_err();
            assert_eq!(
                refusal.public_message(),
                "unauthenticated: malformed token: a header field has the wrong type"
            );
        }
    }

    #[test]
    fn durations_are_named_in_their_largest_whole_unit() {
        let named = |s| describe_duration(std::time::Duration::from_secs(s));
        assert_eq!(named(366 * 86_400), "366 days");
        assert_eq!(named(86_400), "1 day");
        assert_eq!(named(7_200), "2 hours");
        assert_eq!(named(90), "90 seconds");
        assert_eq!(named(120), "2 minutes");
        assert_eq!(named(0), "0 seconds");
    }

    #[test]
    fn bearer_prefix_is_optional_and_case_insensitive() {
        assert_eq!(strip_bearer("Bearer abc"), "abc");
        assert_eq!(strip_bearer("bearer   abc"), "abc");
        assert_eq!(strip_bearer("abc.def"), "abc.def");
        assert_eq!(strip_bearer("Bear"), "Bear");
        assert_eq!(strip_bearer("Bearer"), "");
    }

    #[test]
    fn an_accepted_token_is_remembered_and_a_refused_one_is_not() {
        let verifier = verifier(false);
        let good = token(claims("k", json!(now() + 600)), "s3cret");
        let first = verifier.verify(Some(&good)).unwrap();
        assert_eq!(verifier.accepted.len(), 1);
        let again = verifier.verify(Some(&format!("Bearer {good}"))).unwrap();
        assert_eq!(again.api_key, first.api_key);
        assert_eq!(again.permissions, first.permissions);
        assert_eq!(verifier.accepted.len(), 1, "one entry per token text");

        let forged = token(claims("k", json!(now() + 600)), "not-the-secret");
        for _ in 0..2 {
            assert!(matches!(
                verifier.verify(Some(&forged)),
                Err(AuthError::BadCredentials { .. })
            ));
        }
        assert_eq!(verifier.accepted.len(), 1, "refusals are never remembered");
    }

    #[test]
    fn a_remembered_token_is_refused_once_its_key_is_gone() {
        let verifier = verifier(false);
        let good = token(claims("k", json!(now() + 600)), "s3cret");
        verifier.verify(Some(&good)).unwrap();
        verifier.replace_keyring(
            Keyring::parse_toml("[[keys]]\napi_key = \"k\"\nsecret = \"rotated\"\n").unwrap(),
        );
        assert!(matches!(
            verifier.verify(Some(&good)),
            Err(AuthError::BadCredentials { .. })
        ));
    }

    #[test]
    fn a_remembered_token_expires_as_the_full_check_would_judge_it() {
        let verifier = verifier(false);
        let exp = now() + 600;
        let good = token(claims("k", json!(exp)), "s3cret");
        let caller = verifier.verify(Some(&good)).unwrap();
        let generation = verifier.keys().generation;
        let accepted = &verifier.accepted;
        let leeway = LEEWAY_SECONDS;
        let last_good = exp + leeway as i64;
        assert!(accepted.get(&good, generation, last_good, leeway).is_some());
        assert!(
            accepted
                .get(&good, generation, last_good + 1, leeway)
                .is_none()
        );
        assert!(accepted.get(&good, generation + 1, now(), leeway).is_none());
        // The full check agrees at the edge.
        let expired = token(claims("k", json!(now() - leeway as i64 - 1)), "s3cret");
        assert!(verifier.verify(Some(&expired)).is_err());
        assert_eq!(caller.api_key, "k");
    }
}
