//! TLS for the TCP and QUIC listeners: the server certificate, its reloads, and the rustls
//! configurations (ALPN `h2` + `http/1.1` on TCP, `h3` on QUIC) that share it.
//!
//! A [`CertStore`] holds the current certificate; every new handshake asks it (it is the
//! rustls certificate resolver), so a reload changes what new handshakes present without
//! touching open connections. Reloads come from SIGHUP or from a change of the files' size or
//! modification time, polled by [`watch`]. A bad new file is logged and counted; the old
//! certificate stays. One crypto provider (ring) is used explicitly, never the process default.

use crate::config::TlsConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// Why a certificate could not be loaded or a TLS configuration built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {what} from {path}")]
    Pem {
        /// "certificate chain" or "private key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The parse or I/O error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    /// rustls refused the key, the key does not match the certificate, or a config failed.
    #[error("TLS configuration rejected")]
    Rustls(#[from] rustls::Error),
    /// The self-signed development certificate could not be generated.
    #[error("cannot generate the self-signed certificate")]
    Generate(#[from] rcgen::Error),
}

/// Where the certificate comes from.
#[derive(Debug, Clone)]
enum Source {
    Files { cert: PathBuf, key: PathBuf },
    SelfSigned,
}

/// The current server certificate; the resolver of every TLS and QUIC handshake.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
    source: Source,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_files(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Pem {
            what: "certificate chain",
            path: cert.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem {
        what: "private key",
        path: key.to_owned(),
        source,
    })?;
    Ok(CertifiedKey::from_der(chain, private, &provider())?)
}

fn self_signed() -> Result<CertifiedKey, TlsError> {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let key = PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
    Ok(CertifiedKey::from_der(
        vec![generated.cert.der().clone()],
        key,
        &provider(),
    )?)
}

impl CertStore {
    /// Loads the certificate `config` names (or generates the development one).
    pub fn load(config: &TlsConfig) -> Result<Arc<Self>, TlsError> {
        let source = match (&config.cert, &config.key) {
            (Some(cert), Some(key)) if !config.self_signed => Source::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => Source::SelfSigned,
        };
        let key = match &source {
            Source::Files { cert, key } => load_files(cert, key)?,
            Source::SelfSigned => self_signed()?,
        };
        Ok(Arc::new(Self {
            current: RwLock::new(Arc::new(key)),
            source,
        }))
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The DER of the leaf certificate new handshakes present.
    pub fn leaf_der(&self) -> Vec<u8> {
        self.current()
            .cert
            .first()
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default()
    }

    /// The PEM of the certificate chain new handshakes present (to trust it in a client).
    pub fn chain_pem(&self) -> String {
        let mut pem = String::new();
        for cert in &self.current().cert {
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            let encoded = base64_std(cert.as_ref());
            for line in encoded.as_bytes().chunks(64) {
                pem.push_str(&String::from_utf8_lossy(line));
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
        }
        pem
    }

    /// base64(SHA-256(SubjectPublicKeyInfo)) of the current key: what Chromium's
    /// `--ignore-certificate-errors-spki-list` takes.
    pub fn spki_sha256(&self) -> Option<String> {
        let current = self.current();
        let spki = current.key.public_key()?;
        Some(base64_std(&Sha256::digest(spki.as_ref())))
    }

    /// Re-reads the files; on failure the old certificate stays. Returns whether it changed.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let Source::Files { cert, key } = &self.source else {
            return Ok(false);
        };
        let fresh = load_files(cert, key)?;
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = current.cert != fresh.cert;
        *current = Arc::new(fresh);
        Ok(changed)
    }

    fn files(&self) -> Option<[PathBuf; 2]> {
        match &self.source {
            Source::Files { cert, key } => Some([cert.clone(), key.clone()]),
            Source::SelfSigned => None,
        }
    }

    /// The rustls configuration for TCP: ALPN `h2` then `http/1.1`.
    pub fn tcp_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        self.server_config(vec![b"h2".to_vec(), b"http/1.1".to_vec()])
    }

    /// The rustls configuration for QUIC: TLS 1.3 only, ALPN `h3`.
    pub fn quic_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h3".to_vec()];
        config.max_early_data_size = 0;
        Ok(config)
    }

    fn server_config(
        self: &Arc<Self>,
        alpn: Vec<Vec<u8>>,
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn;
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Standard base64 with padding (small enough not to need a crate here).
fn base64_std(data: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(TABLE[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn stamp(paths: &[PathBuf; 2]) -> Vec<Option<(SystemTime, u64)>> {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

fn reload_logged(store: &CertStore, why: &str) {
    match store.reload() {
        Ok(changed) => {
            metrics::counter!("headwater_tls_reloads_total", "result" => "ok").increment(1);
            tracing::info!(why, changed, "TLS certificate reloaded");
        }
        Err(error) => {
            metrics::counter!("headwater_tls_reloads_total", "result" => "error").increment(1);
            tracing::warn!(why, error = %error, cause = ?std::error::Error::source(&error),
                "TLS certificate reload failed; keeping the current certificate");
        }
    }
}

/// Reloads `store` on SIGHUP and whenever its files change (checked every `poll`), until
/// `stop`. Does nothing for a self-signed store.
pub async fn watch(store: Arc<CertStore>, poll: Duration, stop: CancellationToken) {
    let Some(paths) = store.files() else {
        return;
    };
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; TLS reloads on file change only");
            None
        }
    };
    let mut last = stamp(&paths);
    let mut ticker = tokio::time::interval(poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            Some(()) = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            } => reload_logged(&store, "SIGHUP"),
            _ = ticker.tick() => {
                let now = stamp(&paths);
                if now != last {
                    last = now;
                    reload_logged(&store, "files changed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_std(input.as_bytes()), output);
        }
    }

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let generated =
            rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("generate");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, generated.cert.pem()).expect("write cert");
        std::fs::write(&key, generated.signing_key.serialize_pem()).expect("write key");
        (cert, key)
    }

    #[test]
    fn reload_swaps_the_certificate_and_keeps_it_on_bad_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = write_pair(dir.path(), "one.test");
        let config = TlsConfig {
            listen: Some("127.0.0.1:0".parse().expect("addr")),
            cert: Some(cert.clone()),
            key: Some(key.clone()),
            ..TlsConfig::default()
        };
        let store = CertStore::load(&config).expect("load");
        let first = store.leaf_der();
        write_pair(dir.path(), "two.test");
        assert!(store.reload().expect("reload"));
        let second = store.leaf_der();
        assert_ne!(first, second);
        std::fs::write(&key, "not a key").expect("write");
        assert!(store.reload().is_err());
        assert_eq!(
            store.leaf_der(),
            second,
            "a bad file keeps the old certificate"
        );
        assert!(store.spki_sha256().is_some_and(|h| h.len() == 44));
        assert!(store.chain_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
