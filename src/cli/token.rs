//! `roomservice token`: mints the same claims the official VideoSDK server
//! SDKs do (`apikey`, `permissions`, `version: 2`, `roles`, `iat`, `exp`),
//! and the optional `roomId` and `participantId` that limit a token to one
//! room and one participant.

use jsonwebtoken::{EncodingKey, Header};
use secrecy::ExposeSecret;

use crate::auth::keys::{DEV_API_KEY, DEV_SECRET};
use crate::auth::{Claims, Permission, Role};
use crate::config::TokenArgs;

/// Signs a token for `args`, or says why it cannot.
pub fn mint(args: &TokenArgs) -> Result<String, String> {
    let (api_key, secret) = resolve_key(args)?;
    let permissions = split_list(&args.permissions)
        .map(|p| {
            Permission::parse(p).ok_or_else(|| {
                format!("unknown permission {p:?}: use allow_join, allow_mod, ask_join")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if permissions.is_empty() {
        return Err("--permissions needs at least one of allow_join, allow_mod, ask_join".into());
    }
    if args.participant_id.as_deref() == Some("") {
        return Err("--participant-id must not be empty".into());
    }
    let roles = split_list(&args.roles)
        .map(|r| Role::parse(r).ok_or_else(|| format!("unknown role {r:?}: use crawler, rtc")))
        .collect::<Result<Vec<_>, _>>()?;
    let now = jiff::Timestamp::now().as_second();
    let ttl = i64::try_from(args.ttl.as_secs()).map_err(|_| "--ttl is too long".to_owned())?;
    let claims = Claims {
        apikey: api_key,
        permissions,
        version: 2,
        roles: (!roles.is_empty()).then_some(roles),
        room_id: args.room_id.clone(),
        participant_id: args.participant_id.clone(),
        iat: now,
        exp: now.saturating_add(ttl),
    };
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| format!("cannot sign the token: {e}"))
}

fn split_list(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn resolve_key(args: &TokenArgs) -> Result<(String, String), String> {
    if let Some(secret) = &args.secret {
        let api_key = args
            .api_key
            .clone()
            .unwrap_or_else(|| DEV_API_KEY.to_owned());
        return Ok((api_key, secret.clone()));
    }
    let Some(keyring) = args.keys.load()? else {
        let api_key = args.api_key.as_deref().unwrap_or(DEV_API_KEY);
        if api_key != DEV_API_KEY {
            return Err(format!(
                "no secret for api key {api_key:?}: pass --secret, --keys-file or ROOMSERVICE_KEYS"
            ));
        }
        return Ok((DEV_API_KEY.to_owned(), DEV_SECRET.to_owned()));
    };
    let key = match &args.api_key {
        Some(api_key) => keyring
            .get(api_key)
            .ok_or_else(|| format!("api key {api_key:?} is not among the configured keys"))?,
        None if keyring.len() == 1 => keyring.iter().next().expect("one key"),
        None => {
            return Err(format!(
                "{} api keys are configured: choose one with --api-key",
                keyring.len()
            ));
        }
    };
    Ok((key.api_key.clone(), key.secret.expose_secret().to_owned()))
}
