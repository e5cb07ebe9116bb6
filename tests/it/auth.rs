//! Token checks: every RoomService call is authenticated once, in the
//! interceptor, by the rules of videosdk-rest.md.

use jsonwebtoken::Algorithm;
use roomservice::auth::AuthError;
use roomservice::grpc::pb::{CreateRoomRequest, GetRoomRequest};
use serde_json::{Value, json};
use tonic::Code;

use crate::harness::*;

async fn create_with(
    server: &TestServer,
    authorization: Option<&str>,
) -> Result<(), tonic::Status> {
    let mut client = server.rooms().await;
    let request = match authorization {
        Some(value) => authed(CreateRoomRequest::default(), value),
        None => tonic::Request::new(CreateRoomRequest::default()),
    };
    client.create_room(request).await.map(|_| ())
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

const DAY: i64 = 86_400;

/// The refusal of an `exp` beyond the default `--max-token-lifetime`.
const TOO_FAR_AHEAD: &str = "token expires too far ahead: exp may be at most 366 days from now";

/// Each case: a description, the authorization value, the expected code, and
/// a phrase the message must contain (it names the rule that failed).
fn bad_tokens() -> Vec<(&'static str, String, Code, &'static str)> {
    let acme = || sdk_claims(ACME_KEY);
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    let good = acme_token();
    let (head, rest) = good.split_once('.').unwrap();
    let signature = rest.split_once('.').unwrap().1;
    let tampered_payload = raw_token(
        &hs256,
        &with(acme(), "apikey", GLOBEX_KEY.into()),
        signature,
    );
    vec![
        (
            "empty",
            String::new(),
            Code::Unauthenticated,
            "missing token",
        ),
        (
            "bearer only",
            "Bearer ".into(),
            Code::Unauthenticated,
            "missing token",
        ),
        (
            "not a jwt",
            "hello".into(),
            Code::Unauthenticated,
            "three base64url segments",
        ),
        (
            "four segments",
            format!("{good}.x"),
            Code::Unauthenticated,
            "three base64url segments",
        ),
        (
            "malformed base64",
            format!("{head}.!!!notbase64!!!.{signature}"),
            Code::Unauthenticated,
            "payload is not base64url",
        ),
        (
            "header not json",
            format!("bm90IGpzb24.{}", rest),
            Code::Unauthenticated,
            "header is not JSON",
        ),
        (
            "alg none",
            raw_token(&json!({"alg": "none", "typ": "JWT"}), &acme(), ""),
            Code::Unauthenticated,
            "\"none\" is not accepted",
        ),
        (
            "alg with caller text, not echoed",
            raw_token(
                &json!({"alg": "Error(InvalidToken) {kind: \"x\"}"}),
                &acme(),
                "c2ln",
            ),
            Code::Unauthenticated,
            "token algorithm is not accepted: tokens must be signed with HS256",
        ),
        (
            "alg not a string",
            raw_token(&json!({"alg": {"name": "HS256"}}), &acme(), "c2ln"),
            Code::Unauthenticated,
            "header \"alg\" must be a string",
        ),
        (
            "HS512 with the right secret",
            sign_with(Algorithm::HS512, &acme(), ACME_SECRET),
            Code::Unauthenticated,
            "must be signed with HS256",
        ),
        (
            "HS384 with the right secret",
            sign_with(Algorithm::HS384, &acme(), ACME_SECRET),
            Code::Unauthenticated,
            "must be signed with HS256",
        ),
        (
            "RS256 header",
            raw_token(&json!({"alg": "RS256"}), &acme(), "c2ln"),
            Code::Unauthenticated,
            "must be signed with HS256",
        ),
        (
            "wrong secret",
            sign(&acme(), "not-the-secret"),
            Code::Unauthenticated,
            AuthError::BAD_CREDENTIALS_MESSAGE,
        ),
        (
            "another account's secret",
            sign(&acme(), GLOBEX_SECRET),
            Code::Unauthenticated,
            AuthError::BAD_CREDENTIALS_MESSAGE,
        ),
        (
            "payload changed after signing",
            tampered_payload,
            Code::Unauthenticated,
            AuthError::BAD_CREDENTIALS_MESSAGE,
        ),
        (
            "unknown api key",
            sign(&sdk_claims("who-is-this"), ACME_SECRET),
            Code::Unauthenticated,
            AuthError::BAD_CREDENTIALS_MESSAGE,
        ),
        (
            "no apikey claim",
            sign(&without(acme(), "apikey"), ACME_SECRET),
            Code::Unauthenticated,
            "no \"apikey\" claim",
        ),
        (
            "expired",
            sign(&with(acme(), "exp", (now() - 3600).into()), ACME_SECRET),
            Code::Unauthenticated,
            "expired",
        ),
        (
            "expired beyond the leeway",
            sign(&with(acme(), "exp", (now() - 90).into()), ACME_SECRET),
            Code::Unauthenticated,
            "expired",
        ),
        (
            "nbf in the future",
            sign(&with(acme(), "nbf", (now() + 3600).into()), ACME_SECRET),
            Code::Unauthenticated,
            "not valid yet",
        ),
        (
            "iat in the future",
            sign(&with(acme(), "iat", (now() + 3600).into()), ACME_SECRET),
            Code::Unauthenticated,
            "issued in the future",
        ),
        (
            "no exp",
            sign(&without(acme(), "exp"), ACME_SECRET),
            Code::Unauthenticated,
            "\"exp\" claim",
        ),
        (
            "exp not a number",
            sign(&with(acme(), "exp", "tomorrow".into()), ACME_SECRET),
            Code::Unauthenticated,
            "exp",
        ),
        (
            "exp negative",
            sign(&with(acme(), "exp", (-1).into()), ACME_SECRET),
            Code::Unauthenticated,
            "\"exp\" must be a non-negative number of seconds",
        ),
        (
            "exp 400 days ahead",
            sign(
                &with(acme(), "exp", (now() + 400 * DAY).into()),
                ACME_SECRET,
            ),
            Code::Unauthenticated,
            TOO_FAR_AHEAD,
        ),
        (
            "exp 2^63",
            sign(&with(acme(), "exp", json!(1u64 << 63)), ACME_SECRET),
            Code::Unauthenticated,
            TOO_FAR_AHEAD,
        ),
        (
            "exp u64::MAX",
            sign(&with(acme(), "exp", json!(u64::MAX)), ACME_SECRET),
            Code::Unauthenticated,
            TOO_FAR_AHEAD,
        ),
        (
            "exp 2^64, beyond what the JWT library reads",
            sign(
                &with(acme(), "exp", json!(18446744073709551616.0)),
                ACME_SECRET,
            ),
            Code::Unauthenticated,
            TOO_FAR_AHEAD,
        ),
        (
            "exp 1e300",
            sign(&with(acme(), "exp", json!(1e300)), ACME_SECRET),
            Code::Unauthenticated,
            TOO_FAR_AHEAD,
        ),
        (
            "exp a huge fraction",
            sign(&with(acme(), "exp", json!(9.2e18 + 0.5)), ACME_SECRET),
            Code::Unauthenticated,
            TOO_FAR_AHEAD,
        ),
        (
            "no permissions",
            sign(&without(acme(), "permissions"), ACME_SECRET),
            Code::Unauthenticated,
            "permissions",
        ),
        (
            "empty permissions",
            sign(&with(acme(), "permissions", json!([])), ACME_SECRET),
            Code::Unauthenticated,
            "permissions",
        ),
        (
            "unknown permission",
            sign(
                &with(acme(), "permissions", json!(["allow_everything"])),
                ACME_SECRET,
            ),
            Code::Unauthenticated,
            "permissions",
        ),
        (
            "unknown role",
            sign(&with(acme(), "roles", json!(["admin"])), ACME_SECRET),
            Code::Unauthenticated,
            "roles",
        ),
        (
            "version 3",
            sign(&with(acme(), "version", 3.into()), ACME_SECRET),
            Code::Unauthenticated,
            "version",
        ),
        (
            "rtc-only role",
            sign(&with(acme(), "roles", json!(["rtc"])), ACME_SECRET),
            Code::PermissionDenied,
            "crawler",
        ),
        (
            "empty roles",
            sign(&with(acme(), "roles", json!([])), ACME_SECRET),
            Code::PermissionDenied,
            "crawler",
        ),
    ]
}

#[tokio::test]
async fn bad_tokens_are_refused_with_the_rule_that_failed() {
    let server = TestServer::start().await;
    let cases = bad_tokens();
    assert!(cases.len() >= 15);
    for (what, token, code, phrase) in cases {
        let err = create_with(&server, Some(&token)).await.expect_err(what);
        assert_eq!(err.code(), code, "{what}: {err:?}");
        assert!(
            err.message().contains(phrase),
            "{what}: message {:?} lacks {phrase:?}",
            err.message()
        );
        assert!(
            !err.message().contains(ACME_SECRET),
            "{what}: message leaks the secret"
        );
        for debug_text in ["Error", "Kind", "{", "}", "jsonwebtoken", "(\""] {
            assert!(
                !err.message().contains(debug_text),
                "{what}: message {:?} carries library text",
                err.message()
            );
        }
        if token.len() > 20 {
            assert!(
                !err.message().contains(&token),
                "{what}: message echoes the token"
            );
        }
    }
    // Nothing was created by any refused call.
    let user = roomservice::domain::UserId::parse(ACME_USER).unwrap();
    assert_eq!(server.store.list_rooms(&user, 0, 10).await.unwrap().1, 0);
}

#[tokio::test]
async fn a_call_without_a_token_is_refused() {
    let server = TestServer::start().await;
    let err = create_with(&server, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("missing token"), "{}", err.message());

    let mut client = server.rooms().await;
    let err = client
        .get_room(GetRoomRequest {
            room_id: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn good_tokens_in_every_accepted_form() {
    let server = TestServer::start().await;
    let acme = || sdk_claims(ACME_KEY);
    let token = acme_token();
    let accepted = [
        ("raw", token.clone()),
        ("Bearer", format!("Bearer {token}")),
        ("lowercase bearer", format!("bearer {token}")),
        (
            "no roles claim means every role",
            sign(&without(acme(), "roles"), ACME_SECRET),
        ),
        (
            "both roles",
            sign(
                &with(acme(), "roles", json!(["rtc", "crawler"])),
                ACME_SECRET,
            ),
        ),
        (
            "no version claim",
            sign(&without(acme(), "version"), ACME_SECRET),
        ),
        (
            "expired within the 60 s leeway",
            sign(&with(acme(), "exp", (now() - 30).into()), ACME_SECRET),
        ),
        (
            "nbf within the leeway",
            sign(&with(acme(), "nbf", (now() + 30).into()), ACME_SECRET),
        ),
        (
            "exp 300 days ahead",
            sign(
                &with(acme(), "exp", (now() + 300 * DAY).into()),
                ACME_SECRET,
            ),
        ),
        (
            "exp at the 366-day limit, plus the issuer's clock 30 s ahead",
            sign(
                &with(acme(), "exp", (now() + 366 * DAY + 30).into()),
                ACME_SECRET,
            ),
        ),
        (
            "exp as a fraction",
            sign(
                &with(acme(), "exp", json!(now() as f64 + 3600.5)),
                ACME_SECRET,
            ),
        ),
        (
            "second key of the account",
            sign(&sdk_claims(ACME_KEY_2), ACME_SECRET_2),
        ),
        (
            "ask_join only",
            sign(
                &with(acme(), "permissions", json!(["ask_join"])),
                ACME_SECRET,
            ),
        ),
        (
            "an aud claim is ignored",
            sign(&with(acme(), "aud", "anything".into()), ACME_SECRET),
        ),
    ];
    for (what, token) in accepted {
        create_with(&server, Some(&token))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
    }
}

#[tokio::test]
async fn legacy_tokens_without_exp_only_when_allowed() {
    let no_exp = sign(&without(sdk_claims(ACME_KEY), "exp"), ACME_SECRET);
    let strict = TestServer::start().await;
    assert_eq!(
        create_with(&strict, Some(&no_exp))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    let legacy = TestServer::start_with(
        std::sync::Arc::new(roomservice::store::MemoryStore::new()),
        true,
    )
    .await;
    create_with(&legacy, Some(&no_exp))
        .await
        .expect("legacy token accepted");
    // An expired token stays expired.
    let expired = sign(
        &with(sdk_claims(ACME_KEY), "exp", (now() - 3600).into()),
        ACME_SECRET,
    );
    assert_eq!(
        create_with(&legacy, Some(&expired))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
}

/// An unknown API key and a bad signature must look the same to a caller, or
/// API keys could be enumerated; the log tells them apart.
#[tokio::test]
async fn unknown_api_key_and_bad_signature_get_one_answer() {
    let server = TestServer::start().await;
    let unknown_key = sign(&sdk_claims("who-is-this"), ACME_SECRET);
    let bad_signature = sign(&sdk_claims(ACME_KEY), "not-the-secret");
    // An expired token too: without the secret, its expiry is not told.
    let unknown_key_expired = sign(
        &with(sdk_claims("who-is-this"), "exp", (now() - 3600).into()),
        "any-secret",
    );

    let mut grpc_answers = Vec::new();
    let mut rest_answers = Vec::new();
    for token in [&unknown_key, &bad_signature, &unknown_key_expired] {
        let err = create_with(&server, Some(token)).await.unwrap_err();
        grpc_answers.push((err.code(), err.message().to_owned(), err.details().to_vec()));
        let reply = server
            .http()
            .get(format!("{}/v2/rooms/x", server.url()))
            .header("authorization", token.as_str())
            .send()
            .await
            .unwrap();
        rest_answers.push((reply.status(), reply.text().await.unwrap()));
    }
    assert_eq!(grpc_answers[0].0, Code::Unauthenticated);
    assert_eq!(grpc_answers[0].1, AuthError::BAD_CREDENTIALS_MESSAGE);
    assert!(
        grpc_answers.iter().all(|a| *a == grpc_answers[0]),
        "{grpc_answers:#?}"
    );

    assert_eq!(rest_answers[0].0, 401);
    let body: Value = serde_json::from_str(&rest_answers[0].1).unwrap();
    assert_eq!(body["error"], AuthError::BAD_CREDENTIALS_MESSAGE, "{body}");
    assert!(
        rest_answers.iter().all(|a| *a == rest_answers[0]),
        "{rest_answers:#?}"
    );
}
