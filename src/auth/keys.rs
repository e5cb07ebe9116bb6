//! API keys and the accounts they belong to, loaded once at startup from a
//! TOML keys file, from `ROOMSERVICE_KEYS`, or (dev mode) built in.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use toml::Spanned;

use crate::domain::UserId;

/// The API key and secret of dev mode; only ever served on loopback.
pub const DEV_API_KEY: &str = "devkey";
pub const DEV_SECRET: &str = "secret";

/// An account: the owner of rooms. Several API keys may share one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub user_id: UserId,
    pub name: Option<String>,
    pub email: Option<String>,
    /// An internal service key (the media plane), not a customer's.
    pub service: bool,
}

/// One API key: its secret and its account.
pub struct ApiKey {
    pub api_key: String,
    pub secret: SecretString,
    pub account: Arc<Account>,
}

/// Every API key the server accepts.
pub struct Keyring {
    keys: HashMap<String, ApiKey>,
    dev_mode: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("keys file {path}: {message}")]
    File { path: String, message: String },
    #[error("ROOMSERVICE_KEYS: {0}")]
    List(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<Spanned<KeyEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    api_key: Spanned<String>,
    secret: Spanned<String>,
    user_id: Option<Spanned<String>>,
    name: Option<String>,
    email: Option<String>,
    #[serde(default)]
    service: bool,
}

impl Keyring {
    /// The built-in `devkey` / `secret` key of dev mode.
    pub fn dev() -> Keyring {
        let mut ring = Keyring {
            keys: HashMap::new(),
            dev_mode: true,
        };
        ring.insert(
            DEV_API_KEY.into(),
            DEV_SECRET.into(),
            None,
            None,
            None,
            false,
        )
        .expect("the dev key is the only key");
        ring
    }

    pub fn is_dev_mode(&self) -> bool {
        self.dev_mode
    }

    pub fn get(&self, api_key: &str) -> Option<&ApiKey> {
        self.keys.get(api_key)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn load_file(path: &Path) -> Result<Keyring, KeysError> {
        let fail = |message: String| KeysError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        Keyring::parse_toml(&text).map_err(fail)
    }

    /// Parses keys-file text; errors say `line N: problem`.
    pub fn parse_toml(text: &str) -> Result<Keyring, String> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let file: KeysFile = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => format!("line {}: {}", line_of(span.start), e.message()),
            None => e.message().to_owned(),
        })?;
        if file.keys.is_empty() {
            return Err(
                "no [[keys]] entries: add at least one, or leave the keys file out for dev mode"
                    .into(),
            );
        }
        let mut ring = Keyring {
            keys: HashMap::new(),
            dev_mode: false,
        };
        for entry in file.keys {
            let entry_start = entry.span().start;
            let entry = entry.into_inner();
            let at = |spanned_start: usize| format!("line {}", line_of(spanned_start));
            let api_key = entry.api_key.get_ref().trim();
            if api_key.is_empty() {
                return Err(format!(
                    "{}: api_key is empty",
                    at(entry.api_key.span().start)
                ));
            }
            if ring.keys.contains_key(api_key) {
                return Err(format!(
                    "{}: api_key {api_key:?} is listed twice",
                    at(entry.api_key.span().start)
                ));
            }
            if entry.secret.get_ref().is_empty() {
                return Err(format!(
                    "{}: secret is empty",
                    at(entry.secret.span().start)
                ));
            }
            let user_id = match &entry.user_id {
                None => None,
                Some(raw) => Some(
                    UserId::parse(raw.get_ref())
                        .map_err(|rule| format!("{}: user_id {rule}", at(raw.span().start)))?,
                ),
            };
            ring.insert(
                api_key.to_owned(),
                entry.secret.into_inner(),
                user_id,
                entry.name,
                entry.email,
                entry.service,
            )
            .map_err(|problem| format!("{}: {problem}", at(entry_start)))?;
        }
        Ok(ring)
    }

    /// Parses `key1:secret1,key2:secret2`.
    pub fn parse_list(list: &str) -> Result<Keyring, KeysError> {
        let mut ring = Keyring {
            keys: HashMap::new(),
            dev_mode: false,
        };
        for (index, pair) in list
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .enumerate()
        {
            let position = index + 1;
            let Some((api_key, secret)) = pair.split_once(':') else {
                return Err(KeysError::List(format!(
                    "entry {position} has no ':' between api key and secret"
                )));
            };
            if api_key.is_empty() || secret.is_empty() {
                return Err(KeysError::List(format!(
                    "entry {position} has an empty api key or secret"
                )));
            }
            if ring.keys.contains_key(api_key) {
                return Err(KeysError::List(format!(
                    "api key {api_key:?} is listed twice"
                )));
            }
            ring.insert(api_key.into(), secret.into(), None, None, None, false)
                .map_err(KeysError::List)?;
        }
        if ring.keys.is_empty() {
            return Err(KeysError::List("no keys given".into()));
        }
        Ok(ring)
    }

    /// Adds a key. Keys naming one user_id share one account, described by
    /// the first; a later key that describes it differently is refused, since
    /// silently taking either description (a `service` flag above all) would
    /// surprise whoever wrote the other.
    fn insert(
        &mut self,
        api_key: String,
        secret: String,
        user_id: Option<UserId>,
        name: Option<String>,
        email: Option<String>,
        service: bool,
    ) -> Result<(), String> {
        let user_id = user_id.unwrap_or_else(|| UserId::derive_from_api_key(&api_key));
        let shared = self.keys.values().find(|k| k.account.user_id == user_id);
        let account = match shared {
            Some(first) => {
                let account = &first.account;
                let differs = (name.is_some() && name != account.name)
                    || (email.is_some() && email != account.email)
                    || service != account.service;
                if differs {
                    return Err(format!(
                        "api_key {api_key:?} shares user_id {user_id} with api_key {:?} but gives a different name, \
                         email or service flag: describe the account on its first key only",
                        first.api_key
                    ));
                }
                account.clone()
            }
            None => Arc::new(Account {
                user_id,
                name,
                email,
                service,
            }),
        };
        self.keys.insert(
            api_key.clone(),
            ApiKey {
                api_key,
                secret: SecretString::from(secret),
                account,
            },
        );
        Ok(())
    }

    pub fn iter(&self) -> impl Iterator<Item = &ApiKey> {
        self.keys.values()
    }
}

impl ApiKey {
    pub fn secret_bytes(&self) -> &[u8] {
        self.secret.expose_secret().as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_entry_parses() {
        let ring = Keyring::parse_toml(
            r#"
[[keys]]
api_key = "acme"
secret = "s3cret"
user_id = "5f7edbb14c938bcd42944527"
name = "Acme"
email = "ops@acme.test"

[[keys]]
api_key = "media"
secret = "m"
service = true
"#,
        )
        .unwrap();
        let acme = ring.get("acme").unwrap();
        assert_eq!(acme.account.user_id.as_str(), "5f7edbb14c938bcd42944527");
        assert_eq!(acme.account.name.as_deref(), Some("Acme"));
        assert!(ring.get("media").unwrap().account.service);
        assert_eq!(
            ring.get("media").unwrap().account.user_id,
            UserId::derive_from_api_key("media")
        );
        assert!(!ring.is_dev_mode());
    }

    #[test]
    fn errors_name_the_line_and_problem() {
        let cases = [
            ("[[keys]]\napi_key = \"a\"\n", "line 1", "secret"),
            (
                "[[keys]]\napi_key = \"a\"\nsecret = \"s\"\nuser_id = \"xyz\"\n",
                "line 4",
                "user_id must be 24 hex",
            ),
            (
                "[[keys]]\napi_key = \"a\"\nsecret = \"s\"\n[[keys]]\napi_key = \"a\"\nsecret = \"t\"\n",
                "line 5",
                "listed twice",
            ),
            (
                "[[keys]]\napi_key = \"a\"\nsecert = \"s\"\n",
                "line 3",
                "secert",
            ),
            (
                "[[keys]]\napi_key = \"a\"\nsecret = \"\"\n",
                "line 3",
                "secret is empty",
            ),
            ("[[keys]\n", "line 1", ""),
            ("", "no [[keys]]", ""),
            (
                "[[keys]]\napi_key = \"a\"\nsecret = \"s\"\nuser_id = \"5f7edbb14c938bcd42944527\"\n\n[[keys]]\napi_key = \"b\"\nsecret = \"t\"\nuser_id = \"5f7edbb14c938bcd42944527\"\nservice = true\n",
                "line 6",
                "different name, email or service",
            ),
        ];
        for (text, line, problem) in cases {
            let err = Keyring::parse_toml(text)
                .err()
                .unwrap_or_else(|| panic!("accepted {text:?}"));
            assert!(
                err.contains(line) && err.contains(problem),
                "{text:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn env_list() {
        let ring = Keyring::parse_list("a:x, b:y").unwrap();
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.get("b").unwrap().secret_bytes(), b"y");
        assert!(Keyring::parse_list("a").is_err());
        assert!(Keyring::parse_list("a:").is_err());
        assert!(Keyring::parse_list("").is_err());
    }
}
