//! TLS (and mTLS) for the public listener: the certificate, key and client
//! CA files named by `--tls-cert`, `--tls-key` and `--tls-client-ca`, turned
//! into a rustls `ServerConfig` that SIGHUP can replace while serving.
//!
//! The whole config is swapped rather than only the certificate (rustls'
//! `ResolvesServerCert`), because the client CA lives in the config's client
//! verifier: one swap covers both, and a connection's handshake sees one
//! consistent set.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// ALPN protocols offered, in order of preference: gRPC needs h2, REST
/// clients may use either.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Where the listener's TLS material lives. Read at startup and again on
/// every reload.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// `--tls-cert`: the server's certificate chain, leaf first.
    pub cert: PathBuf,
    /// `--tls-key`: the leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// `--tls-client-ca`: when set, every client must present a certificate
    /// chaining to one of these CAs (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// Why the TLS files could not be used. Each names the flag and the file, so
/// an operator knows which one to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{flag} {}: cannot read: {source}", path.display())]
    Read {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{flag} {}: {problem}", path.display())]
    Invalid {
        flag: &'static str,
        path: PathBuf,
        problem: String,
    },
}

/// The listener's TLS configuration, replaceable while serving: each new
/// connection takes the config current at its accept; connections already
/// open keep the one they started with.
pub struct ServerTls {
    files: TlsFiles,
    /// A std lock, never held across an await: readers clone the `Arc`.
    current: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Reads and checks the files; fails naming the file that is wrong.
    pub fn load(files: TlsFiles) -> Result<ServerTls, TlsError> {
        let config = server_config(&files)?;
        Ok(ServerTls {
            files,
            current: RwLock::new(Arc::new(config)),
        })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Whether clients must present a certificate.
    pub fn is_mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Reads the files again and, if they are good, serves new connections
    /// with them. On an error the current configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Arc::new(server_config(&self.files)?);
        // A poisoned lock only means a reader panicked while cloning an Arc:
        // the value inside is still whole.
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    /// An acceptor with the current configuration, for one connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        TlsAcceptor::from(config)
    }
}

/// The one crypto provider this crate builds (aws-lc-rs), named explicitly
/// rather than relying on a process-wide default.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let chain = read_certificates("--tls-cert", &files.cert)?;
    // Parsed here so that a certificate rustls cannot read is reported as
    // the certificate's problem, not as a mismatch with the key.
    ParsedCertificate::try_from(&chain[0]).map_err(|e| {
        invalid(
            "--tls-cert",
            &files.cert,
            format!("the first certificate cannot be parsed: {e}"),
        )
    })?;
    let key = read_key(&files.key)?;
    let signing_key = provider.key_provider.load_private_key(key).map_err(|e| {
        invalid(
            "--tls-key",
            &files.key,
            format!("the private key cannot be used: {e}"),
        )
    })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // `Unknown`: the key cannot tell its public half; rustls accepts
        // those too, and so do we.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(invalid(
                "--tls-key",
                &files.key,
                format!(
                    "does not match the certificate in --tls-cert {}",
                    files.cert.display()
                ),
            ));
        }
    }

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("--tls-cert", &files.cert, e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certificates("--tls-client-ca", path)? {
                roots.add(cert).map_err(|e| {
                    invalid(
                        "--tls-client-ca",
                        path,
                        format!("not a usable CA certificate: {e}"),
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| invalid("--tls-client-ca", path, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config =
        builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

fn invalid(flag: &'static str, path: &Path, problem: String) -> TlsError {
    TlsError::Invalid {
        flag,
        path: path.to_owned(),
        problem,
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.to_owned(),
        source,
    })
}

/// Every CERTIFICATE section of a PEM file; at least one.
fn read_certificates(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(flag, path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(flag, path, pem_problem(&e)))?;
    if chain.is_empty() {
        return Err(invalid(
            flag,
            path,
            "no certificate in it: expected a PEM file with \"-----BEGIN CERTIFICATE-----\"".into(),
        ));
    }
    Ok(chain)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read("--tls-key", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => invalid(
            "--tls-key",
            path,
            "no private key in it: expected a PEM file with \"-----BEGIN PRIVATE KEY-----\" \
             (or RSA / EC PRIVATE KEY)"
                .into(),
        ),
        other => invalid("--tls-key", path, pem_problem(&other)),
    })
}

/// pem's own messages print the offending line as a list of bytes; ours say
/// what is wrong in words.
fn pem_problem(error: &pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { .. } => {
            "malformed PEM: a section has no \"-----END\" line".into()
        }
        pem::Error::IllegalSectionStart { .. } => {
            "malformed PEM: a \"-----BEGIN\" line is broken".into()
        }
        pem::Error::Base64Decode(e) => format!("malformed PEM: bad base64 ({e})"),
        other => format!("malformed PEM: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, cert: &str, key: &str) -> TlsFiles {
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        TlsFiles {
            cert: cert_path,
            key: key_path,
            client_ca: None,
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("roomservice-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn errors_name_the_flag_the_file_and_the_problem() {
        let dir = temp_dir("errors");
        let missing = TlsFiles {
            cert: dir.join("nope.pem"),
            key: dir.join("key.pem"),
            client_ca: None,
        };
        let err = ServerTls::load(missing).err().unwrap().to_string();
        assert!(
            err.starts_with("--tls-cert ")
                && err.contains("nope.pem")
                && err.contains("cannot read"),
            "{err}"
        );

        let err = ServerTls::load(files(&dir, "hello", "hello"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("--tls-cert")
                && err.contains("cert.pem")
                && err.contains("no certificate"),
            "{err}"
        );

        let err = ServerTls::load(files(
            &dir,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            "",
        ))
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("--tls-cert") && err.contains("base64"),
            "{err}"
        );

        let err = ServerTls::load(files(&dir, "-----BEGIN CERTIFICATE-----\nAAAA\n", ""))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no \"-----END\" line"), "{err}");

        // Well-formed PEM whose content is not a certificate.
        let err = ServerTls::load(files(
            &dir,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "",
        ))
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("cannot be parsed"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
