//! Property tests for token verification: whatever arrives in the
//! `authorization` value, the verifier answers without panicking, with a
//! caller we can trust or an UNAUTHENTICATED / PERMISSION_DENIED refusal in
//! words of our own (never the JWT library's debug text).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use proptest::prelude::*;
use roomservice::auth::{AuthError, Caller, Verifier};
use roomservice::error::{ErrorCode, PublicError};
use serde_json::{Map, Value, json};

use crate::harness::*;

/// Each property's case count: enough variety, a few seconds in all.
const CASES: u32 = 256;

fn verifiers() -> [Verifier; 2] {
    [
        Verifier::new(keyring(), false),
        Verifier::new(keyring(), true),
    ]
}

/// The refusal rules every answer keeps.
fn check_answer(result: &Result<std::sync::Arc<Caller>, AuthError>) -> Result<(), TestCaseError> {
    let Err(refusal) = result else {
        return Ok(());
    };
    prop_assert!(
        matches!(
            refusal.code(),
            ErrorCode::Unauthenticated | ErrorCode::PermissionDenied
        ),
        "{refusal:?}"
    );
    let message = refusal.public_message();
    prop_assert!(
        message.starts_with("unauthenticated: ") || message.starts_with("permission denied: "),
        "{message:?}"
    );
    for library_text in [
        "Error",
        "error(",
        "Kind",
        "jsonwebtoken",
        "serde",
        "{",
        "}",
        "(\"",
        "\\u",
    ] {
        prop_assert!(!message.contains(library_text), "{message:?}");
    }
    prop_assert!(!message.contains(ACME_SECRET), "{message:?}");
    prop_assert!(message.len() <= 160, "{message:?}");
    Ok(())
}

/// A token that verified must carry what the rules demand.
fn check_accepted(
    result: &Result<std::sync::Arc<Caller>, AuthError>,
    claims: &Value,
    strict: bool,
) {
    let Ok(caller) = result else {
        return;
    };
    assert_eq!(caller.api_key, ACME_KEY, "{claims}");
    match claims.get("exp").filter(|exp| !exp.is_null()) {
        Some(exp) => {
            let exp = exp.as_f64().expect("a verified exp is a number");
            assert!(exp >= (now() - 120) as f64, "expired: {claims}");
            assert!(
                exp <= (now() + 366 * 86_400 + 120) as f64,
                "beyond the lifetime: {claims}"
            );
        }
        None => assert!(!strict, "no exp in strict mode: {claims}"),
    }
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z]{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A time claim: plausible (around now), extreme, or not a time at all.
fn time_claim() -> impl Strategy<Value = Value> {
    let now = now();
    prop_oneof![
        (-400i64 * 86_400..400 * 86_400).prop_map(move |offset| json!(now + offset)),
        (-100i64..100).prop_map(move |offset| json!(now + offset)),
        (-200i64..200).prop_map(move |offset| json!(now + 366 * 86_400 + offset)),
        (-1e9f64..1e9).prop_map(move |offset| json!(now as f64 + offset)),
        prop::sample::select(vec![
            json!(0),
            json!(-1),
            json!(1u64 << 63),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(18446744073709551616.0),
            json!(1e300),
            json!(-1e300),
            json!(f64::MAX),
            json!(f64::MIN_POSITIVE),
            json!("1700000000"),
            json!(null),
        ]),
        any_json(),
    ]
}

/// A list drawn from `pool` (valid and invalid words), or anything at all.
fn words(pool: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop::collection::vec(prop::sample::select(pool), 0..4)
            .prop_map(|list| Value::from(list.into_iter().map(Value::from).collect::<Vec<_>>())),
        1 => any_json(),
    ]
}

/// Every known claim mostly present and mostly well-formed, so that many
/// tokens reach the later rules, or else of a random type.
fn claims() -> impl Strategy<Value = Value> {
    let now = now();
    let apikey = prop_oneof![
        6 => Just(json!(ACME_KEY)),
        1 => Just(json!(GLOBEX_KEY)),
        1 => any_json(),
    ];
    let permissions = prop_oneof![
        3 => Just(json!(["allow_join", "allow_mod"])),
        2 => words(&["allow_join", "allow_mod", "ask_join", "admin", ""]),
    ];
    let roles = prop_oneof![
        3 => Just(json!(["crawler"])),
        2 => words(&["crawler", "rtc", "root"]),
    ];
    let version = prop_oneof![3 => Just(json!(2)), 1 => Just(json!("2")), 1 => any_json()];
    let room_id = prop_oneof![Just(json!("abcd-efgh-ijkl")), any_json()];
    let iat =
        prop_oneof![3 => (0i64..86_400).prop_map(move |ago| json!(now - ago)), 1 => time_claim()];
    let exp = prop_oneof![
        3 => (-90i64..367 * 86_400).prop_map(move |ahead| json!(now + ahead)),
        2 => time_claim(),
    ];
    let nbf =
        prop_oneof![3 => (0i64..86_400).prop_map(move |ago| json!(now - ago)), 1 => time_claim()];
    let aud = prop_oneof![Just(json!("anything")), any_json()];
    (
        (apikey, permissions, roles, version, room_id),
        (iat, exp, nbf, aud),
        prop::collection::vec(prop::bool::weighted(0.8), 9),
    )
        .prop_map(
            |((apikey, permissions, roles, version, room_id), (iat, exp, nbf, aud), present)| {
                let values = [
                    ("apikey", apikey),
                    ("permissions", permissions),
                    ("roles", roles),
                    ("version", version),
                    ("roomId", room_id),
                    ("iat", iat),
                    ("exp", exp),
                    ("nbf", nbf),
                    ("aud", aud),
                ];
                let claims = values
                    .into_iter()
                    .zip(present)
                    .filter(|(_, keep)| *keep)
                    .map(|((name, value), _)| (name.to_owned(), value))
                    .collect();
                Value::Object(claims)
            },
        )
}

/// A JOSE header: mostly `alg: HS256`, with the registered fields holding
/// sensible or random values.
fn header() -> impl Strategy<Value = Value> {
    let alg = prop_oneof![
        6 => Just(json!("HS256")),
        1 => prop::sample::select(vec!["none", "HS512", "RS256", "hs256", "HS256 ", ""])
            .prop_map(Value::from),
        1 => any_json(),
    ];
    let field = (
        prop::sample::select(vec![
            "typ", "cty", "kid", "jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256", "crit", "b64",
            "zip", "other",
        ]),
        prop_oneof![Just(json!("JWT")), any_json()],
    );
    (
        alg,
        prop::bool::weighted(0.9),
        prop::collection::vec(field, 0..3),
    )
        .prop_map(|(alg, with_alg, fields)| {
            let mut header: Map<String, Value> = fields
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect();
            if with_alg {
                header.insert("alg".into(), alg);
            }
            Value::Object(header)
        })
}

/// Three base64url segments, the first two of some JSON: shapes that get
/// past the first checks.
fn jwt_shaped() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        any_json().prop_map(|v| URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap())),
        claims().prop_map(|v| URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap())),
        "[A-Za-z0-9_=-]{0,40}",
    ];
    (header(), segment, "[A-Za-z0-9_=+/-]{0,50}").prop_map(|(header, payload, signature)| {
        let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
        format!("{header}.{payload}.{signature}")
    })
}

/// Signs raw header and claims JSON with HS256 and Acme's secret, whatever
/// they hold: the tokens a holder of the secret could mint by hand.
fn sign_raw(header: &Value, claims: &Value) -> String {
    let encode = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let message = format!("{}.{}", encode(header), encode(claims));
    let key = EncodingKey::from_secret(ACME_SECRET.as_bytes());
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
    format!("{message}.{signature}")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn any_authorization_text_is_answered_in_our_words(
        text in prop_oneof![
            any::<String>(),
            "(Bearer |bearer |)[A-Za-z0-9_=-]{0,40}(\\.[A-Za-z0-9_=-]{0,40}){0,4}",
            "(Bearer )?[ -~]{0,200}",
            jwt_shaped(),
            jwt_shaped().prop_map(|token| format!("Bearer {token}")),
        ],
    ) {
        for verifier in verifiers() {
            check_answer(&verifier.verify_management(Some(&text)))?;
            check_answer(&verifier.verify(Some(&text)))?;
        }
    }

    #[test]
    fn any_claims_signed_with_the_right_secret_are_answered_in_our_words(
        claims in claims(),
    ) {
        let token = sign_raw(&json!({"alg": "HS256", "typ": "JWT"}), &claims);
        for (verifier, strict) in verifiers().into_iter().zip([true, false]) {
            let answer = verifier.verify_management(Some(&token));
            check_answer(&answer)?;
            check_accepted(&answer, &claims, strict);
        }
    }

    #[test]
    fn any_header_is_answered_in_our_words(header in header(), claims in claims()) {
        let token = sign_raw(&header, &claims);
        for (verifier, strict) in verifiers().into_iter().zip([true, false]) {
            let answer = verifier.verify_management(Some(&format!("Bearer {token}")));
            check_answer(&answer)?;
            check_accepted(&answer, &claims, strict);
            if answer.is_ok() {
                prop_assert_eq!(&header["alg"], "HS256");
            }
        }
    }

    /// Without the secret, an unknown API key and a bad signature are one
    /// answer, whatever else the token says.
    #[test]
    fn unknown_keys_and_bad_signatures_are_indistinguishable(
        claims in claims(),
        name in "[a-z-]{1,20}",
    ) {
        let header = json!({"alg": "HS256", "typ": "JWT"});
        let mut known = claims.clone();
        known["apikey"] = json!(ACME_KEY);
        let mut unknown = claims;
        unknown["apikey"] = json!(format!("unknown-{name}"));
        let bad_signature = raw_token(&header, &known, "c2lnbmF0dXJl");
        let unknown_key = raw_token(&header, &unknown, "c2lnbmF0dXJl");
        for verifier in verifiers() {
            let a = verifier.verify(Some(&bad_signature)).map(|_| ()).unwrap_err();
            let b = verifier.verify(Some(&unknown_key)).map(|_| ()).unwrap_err();
            prop_assert_eq!(a.public_message(), b.public_message());
            prop_assert_eq!(a.public_message(), AuthError::BAD_CREDENTIALS_MESSAGE);
        }
    }
}
