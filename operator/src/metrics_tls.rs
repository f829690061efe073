//! The TLS side of `--metrics-auth=kubernetes`: the serving certificate
//! (`--metrics-cert-dir`'s tls.crt and tls.key, re-read when they change, or
//! a self-signed one made at start) and an accept loop that serves an axum
//! Router over rustls.
//!
//! Why a loop of our own rather than `axum::serve` or axum-server: axum's
//! `serve` takes a listener whose `accept` would have to finish the TLS
//! handshake, so one slow or silent client would hold up every other scrape;
//! axum-server would add a dependency for the same twenty lines. Here each
//! connection is handshaken and served on its own task, with hyper (already
//! in the tree through kube and axum) and tokio-rustls on ring, the crypto
//! provider kube's client uses.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How often `--metrics-cert-dir` is checked for a renewed certificate
/// (cert-manager rewrites the Secret before expiry; kubelet updates the
/// mounted files within about a minute).
const RELOAD_EVERY: Duration = Duration::from_secs(30);
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(
        "--metrics-cert-dir {dir}: cannot read {file}: {source}; mount a kubernetes.io/tls Secret (tls.crt and tls.key) there, or leave the flag out for a self-signed certificate"
    )]
    Unreadable {
        dir: PathBuf,
        file: &'static str,
        source: std::io::Error,
    },
    #[error(
        "--metrics-cert-dir {dir}: {file} holds no {what} in PEM: {detail}; it must be the tls.crt/tls.key pair of a kubernetes.io/tls Secret"
    )]
    NotPem {
        dir: PathBuf,
        file: &'static str,
        what: &'static str,
        detail: String,
    },
    #[error(
        "--metrics-cert-dir {dir}: tls.key is not a key rustls can sign with: {detail}; use an RSA, ECDSA or Ed25519 key"
    )]
    BadKey { dir: PathBuf, detail: String },
    #[error("cannot make a self-signed certificate for /metrics: {0}")]
    SelfSigned(String),
}

/// tls.crt (the chain, leaf first) and tls.key from `dir`.
pub fn load_cert_dir(dir: &Path) -> Result<CertifiedKey, CertError> {
    let read = |file: &'static str| {
        std::fs::read(dir.join(file)).map_err(|source| CertError::Unreadable {
            dir: dir.to_path_buf(),
            file,
            source,
        })
    };
    let (crt, key) = (read("tls.crt")?, read("tls.key")?);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&crt)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::NotPem {
            dir: dir.to_path_buf(),
            file: "tls.crt",
            what: "certificate",
            detail: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertError::NotPem {
            dir: dir.to_path_buf(),
            file: "tls.crt",
            what: "certificate",
            detail: "no CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| CertError::NotPem {
        dir: dir.to_path_buf(),
        file: "tls.key",
        what: "private key",
        detail: e.to_string(),
    })?;
    certified(chain, key).map_err(|detail| CertError::BadKey {
        dir: dir.to_path_buf(),
        detail,
    })
}

/// A certificate for this process only, made at start: the names a scraper
/// inside the pod or on the node may use. Scrapers skip verification of it
/// (`insecureSkipVerify`, as kubebuilder's ServiceMonitor does) or give
/// `--metrics-cert-dir` a certificate their CA signed.
pub fn self_signed() -> Result<CertifiedKey, CertError> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Ok(host) = std::env::var("HOSTNAME") {
        names.push(host);
    }
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| CertError::SelfSigned(e.to_string()))?;
    let key = PrivateKeyDer::try_from(made.signing_key.serialize_der())
        .map_err(|e| CertError::SelfSigned(e.to_string()))?;
    certified(vec![made.cert.der().clone()], key).map_err(CertError::SelfSigned)
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, String> {
    CertifiedKey::from_der(chain, key, &ring::default_provider()).map_err(|e| e.to_string())
}

/// The certificate in use, swapped when `--metrics-cert-dir`'s files change.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().expect("cert lock").clone())
    }
}

/// Where the certificate comes from.
pub enum CertSource {
    Dir(PathBuf),
    SelfSigned,
}

/// The acceptor, and for a cert dir a task that re-reads it when its files
/// change (a bad renewal is logged and the old certificate kept).
pub fn acceptor(source: &CertSource) -> Result<TlsAcceptor, CertError> {
    let first = match source {
        CertSource::Dir(dir) => load_cert_dir(dir)?,
        CertSource::SelfSigned => self_signed()?,
    };
    let current = Arc::new(Current(RwLock::new(Arc::new(first))));
    if let CertSource::Dir(dir) = source {
        tokio::spawn(reload(dir.clone(), current.clone()));
    }
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(current);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn modified(dir: &Path) -> Option<(SystemTime, SystemTime)> {
    let m = |f: &str| {
        std::fs::metadata(dir.join(f))
            .and_then(|m| m.modified())
            .ok()
    };
    Some((m("tls.crt")?, m("tls.key")?))
}

async fn reload(dir: PathBuf, current: Arc<Current>) {
    let mut seen = modified(&dir);
    loop {
        tokio::time::sleep(RELOAD_EVERY).await;
        let now = modified(&dir);
        if now == seen {
            continue;
        }
        match load_cert_dir(&dir) {
            Ok(cert) => {
                *current.0.write().expect("cert lock") = Arc::new(cert);
                seen = now;
                tracing::info!(dir = %dir.display(), "reloaded the /metrics certificate");
            }
            // Mid-update (kubelet swaps the files) or broken: keep serving the old one.
            Err(e) => tracing::warn!(error = %e, "keeping the current /metrics certificate"),
        }
    }
}

/// Serves `app` over TLS on `listener` until the process ends.
pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor, app: Router) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: back off rather than spin.
                tracing::warn!(error = %e, "/metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "/metrics TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = TowerToHyperService::new(app);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "/metrics connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "dnspolicy-metrics-tls-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_cert_dir_pair_loads_and_bad_ones_name_the_flag_and_file() {
        let d = dir("pair");
        let made = rcgen::generate_simple_self_signed(vec!["dnspolicy-metrics".into()]).unwrap();
        std::fs::write(d.join("tls.crt"), made.cert.pem()).unwrap();
        std::fs::write(d.join("tls.key"), made.signing_key.serialize_pem()).unwrap();
        assert!(load_cert_dir(&d).is_ok());

        std::fs::write(d.join("tls.key"), "not a key").unwrap();
        let e = load_cert_dir(&d).unwrap_err().to_string();
        assert!(
            e.starts_with("--metrics-cert-dir ") && e.contains("tls.key"),
            "{e}"
        );

        std::fs::remove_file(d.join("tls.crt")).unwrap();
        let e = load_cert_dir(&d).unwrap_err().to_string();
        assert!(
            e.contains("cannot read tls.crt") && e.contains("kubernetes.io/tls Secret"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_self_signed_certificate_is_made_for_loopback() {
        assert!(self_signed().is_ok());
    }
}
