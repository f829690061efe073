//! The one way dnspolicy's binaries reach the API server: the kubeconfig or
//! the in-cluster service account, with a user agent that names dnspolicy
//! (audit logs, and the e2e suite's write counts, show `dnspolicy/<version>`).

/// What `connect` could not do.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no Kubernetes configuration found: {0}")]
    NoConfig(#[source] kube::config::InferConfigError),
    #[error("cannot reach the Kubernetes API: {0}")]
    Client(#[source] kube::Error),
}

/// `dnspolicy/<version>`.
pub const USER_AGENT: &str = concat!("dnspolicy/", env!("CARGO_PKG_VERSION"));

pub async fn connect() -> Result<kube::Client, ConnectError> {
    let mut config = kube::Config::infer()
        .await
        .map_err(ConnectError::NoConfig)?;
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(USER_AGENT),
    ));
    kube::Client::try_from(config).map_err(ConnectError::Client)
}
