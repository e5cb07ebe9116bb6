//! The RSA key that signs webhook bodies. Receivers verify the
//! `videosdk-signature` header with the public key, as VideoSDK's own webhooks
//! are verified: RSA PKCS#1 v1.5 with SHA-256 over the raw body, base64.

use std::fmt;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls::pki_types::pem::{self, PemObject, SectionKind};

/// Below this, RSA is no longer considered safe; aws-lc refuses smaller keys too.
const MIN_BITS: usize = 2048;

/// Why a key could not be loaded, generated or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("bad pem: {0}")]
    Pem(String),
    #[error("encrypted private keys are not supported; decrypt it first")]
    Encrypted,
    #[error("not a private key: the pem holds {0}")]
    NotPrivateKey(&'static str),
    #[error("not an rsa key: {0}")]
    NotRsa(&'static str),
    #[error("rsa key too small: at least {MIN_BITS} bits are required")]
    TooSmall,
    #[error("rsa key too large: at most 8192 bits are supported")]
    TooLarge,
    #[error("invalid rsa private key: {0}")]
    Invalid(&'static str),
    #[error("rsa key generation failed")]
    Generate,
    #[error("rsa key could not be encoded")]
    Encode,
    #[error("signing failed")]
    Sign,
}

/// An RSA private key and the PEM texts derived from it.
///
/// Both PEMs are encoded once, when the key is loaded or generated, so the
/// accessors cannot fail; `Debug` shows only the public half.
pub struct SigningKey {
    key_pair: KeyPair,
    /// aws-lc's DER buffer, wiped on drop.
    pkcs8: Pkcs8V1Der<'static>,
    public_key_pem: String,
}

impl SigningKey {
    /// Loads a PEM private key: PKCS#8 "PRIVATE KEY" or PKCS#1 "RSA PRIVATE KEY".
    pub fn from_pem(text: &str) -> Result<SigningKey, KeyError> {
        // The PEM reader skips sections it does not know, so an encrypted key
        // would otherwise read as "no key at all".
        if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            return Err(KeyError::Encrypted);
        }
        let (kind, der) = match <(SectionKind, Vec<u8>)>::from_pem_slice(text.as_bytes()) {
            Ok(section) => section,
            Err(pem::Error::NoItemsFound) => {
                return Err(KeyError::Pem("no pem section found".to_owned()));
            }
            Err(e) => return Err(KeyError::Pem(e.to_string())),
        };
        let key_pair = match kind {
            SectionKind::PrivateKey => KeyPair::from_pkcs8(&der),
            SectionKind::RsaPrivateKey => KeyPair::from_der(&der),
            SectionKind::EcPrivateKey => return Err(KeyError::NotRsa("the pem holds an ec key")),
            SectionKind::PublicKey => return Err(KeyError::NotPrivateKey("a public key")),
            SectionKind::Certificate => return Err(KeyError::NotPrivateKey("a certificate")),
            _ => return Err(KeyError::NotPrivateKey("something other than a key")),
        }
        .map_err(|rejected| match rejected.description_() {
            "TooSmall" => KeyError::TooSmall,
            "TooLarge" => KeyError::TooLarge,
            // A PKCS#8 key of another algorithm (EC, Ed25519).
            "WrongAlgorithm" => KeyError::NotRsa("the key is of another algorithm"),
            "InvalidEncoding" => KeyError::Invalid("malformed der"),
            "InconsistentComponents" => KeyError::Invalid("inconsistent components"),
            _ => KeyError::Invalid("rejected by aws-lc"),
        })?;
        SigningKey::new(key_pair)
    }

    /// A new 2048-bit key.
    pub fn generate() -> Result<SigningKey, KeyError> {
        let key_pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError::Generate)?;
        SigningKey::new(key_pair)
    }

    fn new(key_pair: KeyPair) -> Result<SigningKey, KeyError> {
        // aws-lc enforces the minimum already; this keeps the rule ours.
        if key_pair.public_modulus_len() * 8 < MIN_BITS {
            return Err(KeyError::TooSmall);
        }
        let pkcs8: Pkcs8V1Der<'static> = key_pair.as_der().map_err(|_| KeyError::Encode)?;
        let spki = key_pair
            .public_key()
            .as_der()
            .map_err(|_| KeyError::Encode)?;
        let public_key_pem = to_pem("PUBLIC KEY", spki.as_ref());
        Ok(SigningKey {
            key_pair,
            pkcs8,
            public_key_pem,
        })
    }

    /// PKCS#8 PEM of the private key, to persist it: `from_pem` reads it back.
    pub fn to_pkcs8_pem(&self) -> String {
        to_pem("PRIVATE KEY", self.pkcs8.as_ref())
    }

    /// SPKI PEM of the public key, for receivers to verify signatures with.
    pub fn public_key_pem(&self) -> String {
        self.public_key_pem.clone()
    }

    /// The modulus size, e.g. 2048.
    pub fn bits(&self) -> usize {
        self.key_pair.public_modulus_len() * 8
    }

    /// Base64 (standard, padded) of RSA PKCS#1 v1.5 SHA-256 over exactly `body`.
    pub fn sign(&self, body: &[u8]) -> Result<String, KeyError> {
        let mut signature = vec![0; self.key_pair.public_modulus_len()];
        // aws-lc ignores the rng for PKCS#1 v1.5 (deterministic); the API asks for one.
        self.key_pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                body,
                &mut signature,
            )
            .map_err(|_| KeyError::Sign)?;
        Ok(STANDARD.encode(signature))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("bits", &self.bits())
            .finish_non_exhaustive()
    }
}

/// RFC 7468 text: base64 in 64-character lines between the labels.
fn to_pem(label: &str, der: &[u8]) -> String {
    let encoded = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    // Base64 is ASCII, so any byte offset is a char boundary.
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use super::*;

    // Throwaway keys made with `openssl genpkey` for these tests only.
    const RSA2048_PKCS1: &str = include_str!("testdata/rsa2048-pkcs1.pem");
    const RSA1024_PKCS8: &str = include_str!("testdata/rsa1024-pkcs8.pem");
    const EC_PKCS8: &str = include_str!("testdata/ec-p256-pkcs8.pem");
    const EC_SEC1: &str = include_str!("testdata/ec-p256-sec1.pem");

    #[test]
    fn generated_key_round_trips_through_pkcs8_pem() {
        let key = SigningKey::generate().unwrap();
        assert_eq!(key.bits(), 2048);
        let pem = key.to_pkcs8_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(pem.ends_with("-----END PRIVATE KEY-----\n"));

        let loaded = SigningKey::from_pem(&pem).unwrap();
        assert_eq!(loaded.public_key_pem(), key.public_key_pem());
        assert_eq!(loaded.to_pkcs8_pem(), pem);
        // PKCS#1 v1.5 is deterministic: the same key signs the same bytes alike.
        assert_eq!(loaded.sign(b"{}").unwrap(), key.sign(b"{}").unwrap());
    }

    #[test]
    fn public_key_pem_has_the_standard_shape() {
        let pem = SigningKey::generate().unwrap().public_key_pem();
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines.first(), Some(&"-----BEGIN PUBLIC KEY-----"));
        assert_eq!(lines.last(), Some(&"-----END PUBLIC KEY-----"));
        assert!(pem.ends_with("-----END PUBLIC KEY-----\n"));
        let body = &lines[1..lines.len() - 1];
        assert!(body[..body.len() - 1].iter().all(|line| line.len() == 64));
        assert!((1..=64).contains(&body[body.len() - 1].len()));
    }

    #[test]
    fn pkcs1_pem_loads() {
        let key = SigningKey::from_pem(RSA2048_PKCS1).unwrap();
        assert_eq!(key.bits(), 2048);
        // And it can be persisted in the PKCS#8 form.
        let again = SigningKey::from_pem(&key.to_pkcs8_pem()).unwrap();
        assert_eq!(again.public_key_pem(), key.public_key_pem());
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let message = |pem: &str| SigningKey::from_pem(pem).unwrap_err().to_string();

        assert!(matches!(
            SigningKey::from_pem(EC_SEC1),
            Err(KeyError::NotRsa(_))
        ));
        assert!(message(EC_SEC1).contains("not an rsa key"));
        assert!(matches!(
            SigningKey::from_pem(EC_PKCS8),
            Err(KeyError::NotRsa(_))
        ));
        assert!(message(EC_PKCS8).contains("not an rsa key"));

        assert!(matches!(
            SigningKey::from_pem(RSA1024_PKCS8),
            Err(KeyError::TooSmall)
        ));
        assert!(message(RSA1024_PKCS8).contains("too small"));

        assert!(message("hello").contains("no pem section"));
        assert!(message("").contains("no pem section"));
        let truncated = &RSA2048_PKCS1[..RSA2048_PKCS1.len() / 2];
        assert!(message(truncated).starts_with("bad pem"));
        let garbage = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(message(garbage).starts_with("invalid rsa private key"));

        let public = SigningKey::generate().unwrap().public_key_pem();
        assert!(message(&public).contains("not a private key"));
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(message(encrypted).contains("encrypted"));
    }

    #[test]
    fn debug_does_not_show_the_private_key() {
        let key = SigningKey::generate().unwrap();
        let shown = format!("{key:?}");
        assert_eq!(shown, "SigningKey { bits: 2048, .. }");
    }

    /// A directory of its own under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let name = format!(
                "roomservice-webhook-{}-{:016x}",
                std::process::id(),
                rand::random::<u64>()
            );
            let path = std::env::temp_dir().join(name);
            std::fs::create_dir(&path).unwrap();
            TempDir(path)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn openssl_verifies(dir: &Path, body: &[u8]) -> bool {
        let body_path = dir.join("body.bin");
        std::fs::write(&body_path, body).unwrap();
        let output = Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(dir.join("pub.pem"))
            .arg("-signature")
            .arg(dir.join("sig.bin"))
            .arg(&body_path)
            .output()
            .unwrap();
        output.status.success()
    }

    /// The signature is what a receiver's off-the-shelf RSA verify accepts.
    #[test]
    fn signature_verifies_with_openssl() {
        if Command::new("openssl").arg("version").output().is_err() {
            eprintln!("skipped: openssl is not on PATH");
            return;
        }
        let key = SigningKey::generate().unwrap();
        let body = br#"{"webhookType":"session-started","data":{"roomId":"abc-defg-hij"}}"#;
        let signature = STANDARD.decode(key.sign(body).unwrap()).unwrap();
        assert_eq!(signature.len(), 256);

        let dir = TempDir::new();
        std::fs::write(dir.path().join("pub.pem"), key.public_key_pem()).unwrap();
        std::fs::write(dir.path().join("sig.bin"), &signature).unwrap();

        assert!(openssl_verifies(dir.path(), body));
        let mut changed = body.to_vec();
        changed[10] ^= 1;
        assert!(!openssl_verifies(dir.path(), &changed));
        assert!(!openssl_verifies(
            dir.path(),
            &[body.as_slice(), b"\n"].concat()
        ));
    }
}
