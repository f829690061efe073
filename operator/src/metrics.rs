//! Prometheus metrics and the `/metrics`, `/healthz`, `/readyz` endpoints
//! (`/metrics`' guard is in `metrics_access.rs`, its TLS in `metrics_tls.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::metrics_access::MetricsAccess;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    reconcile_failures: Family<Labels, Counter>,
    reconcile_seconds: Histogram,
    writes: Family<Labels, Counter>,
    rollouts: Family<Labels, Counter>,
    polluted: Family<Labels, Gauge>,
    policy_ready: Family<Labels, Gauge>,
    watched_pods: Gauge,
    forward_reachable: Family<Labels, Gauge>,
    /// The forward-target series each policy exports, to drop stale ones.
    forward_series: std::sync::Mutex<std::collections::HashMap<String, Vec<Labels>>>,
    /// Set once the API server answered; a standby replica is ready too.
    pub ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("dnspolicy");
        let reconciles = Family::<Labels, Counter>::default();
        let reconcile_failures = Family::<Labels, Counter>::default();
        let reconcile_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        let writes = Family::<Labels, Counter>::default();
        let rollouts = Family::<Labels, Counter>::default();
        let polluted = Family::<Labels, Gauge>::default();
        let watched_pods = Gauge::default();
        let policy_ready = Family::<Labels, Gauge>::default();
        let forward_reachable = Family::<Labels, Gauge>::default();
        let build_info = Family::<Labels, Gauge>::default();
        build_info
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
            .set(1);
        registry.register(
            "build_info",
            "The running dnspolicy's version (always 1)",
            build_info,
        );
        registry.register(
            "policy_ready",
            "1 when the policy's Ready condition is True, else 0",
            policy_ready.clone(),
        );
        registry.register("reconciles", "Reconciles by result", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by error kind",
            reconcile_failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            reconcile_seconds.clone(),
        );
        registry.register(
            "api_writes",
            "Writes to the Kubernetes API by object kind",
            writes.clone(),
        );
        registry.register("rollouts", "CoreDNS rollouts by outcome", rollouts.clone());
        registry.register(
            "polluted_pods",
            "Pods whose search list carries a policy's suffixes",
            polluted.clone(),
        );
        registry.register(
            "watched_pods",
            "Pods in the accounting index",
            watched_pods.clone(),
        );
        registry.register(
            "forward_target_reachable",
            "1 when the forward target answered its last probe for the suffix, else 0",
            forward_reachable.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_failures,
            reconcile_seconds,
            writes,
            rollouts,
            polluted,
            policy_ready,
            watched_pods,
            forward_reachable,
            forward_series: Default::default(),
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, result: &str, took: Duration) {
        self.reconciles
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
        self.reconcile_seconds.observe(took.as_secs_f64());
    }

    pub fn reconcile_failure(&self, kind: &str) {
        self.reconcile_failures
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc();
    }

    pub fn write(&self, kind: &str) {
        self.writes
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc();
    }

    pub fn rollout(&self, outcome: &str) {
        self.rollouts
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc();
    }

    pub fn polluted_pods(&self, policy: &str, polluted: u64) {
        self.polluted
            .get_or_create(&vec![("policy", policy.to_string())])
            .set(polluted as i64);
    }

    pub fn set_policy_ready(&self, policy: &str, ready: bool) {
        self.policy_ready
            .get_or_create(&vec![("policy", policy.to_string())])
            .set(ready as i64);
    }

    /// Drops a deleted policy's series, so nothing stale stays exported.
    pub fn forget_policy(&self, policy: &str) {
        let labels = vec![("policy", policy.to_string())];
        self.polluted.remove(&labels);
        self.policy_ready.remove(&labels);
        self.forward_targets(policy, &[]);
    }

    /// The policy's forward targets as last probed: (suffix, target,
    /// answering). Series of targets no longer probed are dropped.
    pub fn forward_targets(&self, policy: &str, probed: &[(String, String, bool)]) {
        let mut series = self.forward_series.lock().expect("forward series lock");
        let now: Vec<Labels> = probed
            .iter()
            .map(|(suffix, target, _)| {
                vec![
                    ("policy", policy.to_string()),
                    ("suffix", suffix.clone()),
                    ("target", target.clone()),
                ]
            })
            .collect();
        for old in series.remove(policy).unwrap_or_default() {
            if !now.contains(&old) {
                self.forward_reachable.remove(&old);
            }
        }
        for (labels, (_, _, answering)) in now.iter().zip(probed) {
            self.forward_reachable
                .get_or_create(labels)
                .set(i64::from(*answering));
        }
        if !now.is_empty() {
            series.insert(policy.to_string(), now);
        }
    }

    pub fn watched_pods(&self, pods: usize) {
        self.watched_pods.set(pods as i64);
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("metrics encode to a String");
        text
    }
}

/// The exposition is OpenMetrics text (prometheus-client writes only that);
/// it is labelled so when the scraper asks for it, and as the classic text
/// format otherwise, which parses the same body (`# EOF` is a comment there).
async fn metrics_page(
    State(m): State<Arc<Metrics>>,
    headers: axum::http::HeaderMap,
) -> impl axum::response::IntoResponse {
    let openmetrics = headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        OPENMETRICS_CONTENT_TYPE
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    (
        [(axum::http::header::CONTENT_TYPE, content_type)],
        m.render(),
    )
}

pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `/healthz` and `/readyz`: plain HTTP without authentication on
/// `--health-addr`, for the kubelet's probes (as controller-runtime keeps its
/// health probes apart from its metrics).
pub fn health_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(m): State<Arc<Metrics>>| async move {
                if m.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not connected to the API server yet",
                    )
                }
            }),
        )
        .with_state(metrics)
}

/// `/metrics`, behind the TokenReview and SubjectAccessReview filter when
/// `access` is given (`--metrics-auth=kubernetes`).
pub fn metrics_router(metrics: Arc<Metrics>, access: Option<Arc<MetricsAccess>>) -> Router {
    let router = Router::new()
        .route(crate::metrics_access::PATH, get(metrics_page))
        .with_state(metrics);
    match access {
        Some(access) => router.layer(axum::middleware::from_fn_with_state(
            access,
            crate::metrics_access::require_access,
        )),
        None => router,
    }
}

/// Serves a plain-HTTP router until the process ends.
pub async fn serve_plain(listener: tokio::net::TcpListener, app: Router) -> std::io::Result<()> {
    axum::serve(listener, app).await
}
