//! Who may read `/metrics` with `--metrics-auth=kubernetes`: the same filter
//! controller-runtime's `metrics/filters.WithAuthenticationAndAuthorization`
//! puts in front of a kubebuilder operator's metrics. The bearer token is
//! sent to the API server in a TokenReview; the user it names is checked with
//! a SubjectAccessReview for `get` on the non-resource URL `/metrics` (what
//! the ClusterRole `dnspolicy-metrics-reader` grants). No token or a token
//! the API server rejects: 401; a user without the grant: 403.
//!
//! Decisions are cached by the SHA-256 of the token, as the API server's
//! delegating authenticator and authorizer cache theirs, so a scrape every
//! 30 s costs two API calls a minute per scraper at most, not two per scrape.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// How long a decision is reused. controller-runtime's filter caches an
/// authenticated token for 1 minute, an allow for 5 and a deny for 30 s;
/// one decision per token here, so an allow lasts as long as its token's
/// authentication (1 minute), a deny 30 s and a rejected token 10 s (a
/// freshly bound or created ServiceAccount is let in soon).
pub const ALLOWED_TTL: Duration = Duration::from_secs(60);
pub const FORBIDDEN_TTL: Duration = Duration::from_secs(30);
pub const UNAUTHENTICATED_TTL: Duration = Duration::from_secs(10);
/// Entries kept at most; a flood of made-up tokens cannot grow memory.
pub const CACHE_CAPACITY: usize = 1024;

/// The request's bearer token, or why there is none.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, &'static str> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or("no Authorization header")?
        .to_str()
        .map_err(|_| "the Authorization header is not text")?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or("the Authorization header is not `Bearer <token>`")?;
    // RFC 9110: the scheme is case-insensitive.
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("the Authorization header is not `Bearer <token>`");
    }
    // The value was trimmed, so what follows the space is not empty.
    Ok(token.trim_start())
}

/// What the API server said about a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed {
        user: String,
    },
    /// TokenReview did not authenticate it; the reason is the API server's.
    Unauthenticated {
        reason: String,
    },
    /// Authenticated, but the SubjectAccessReview denied `get /metrics`.
    Forbidden {
        user: String,
        reason: String,
    },
}

impl Decision {
    fn ttl(&self) -> Duration {
        match self {
            Decision::Allowed { .. } => ALLOWED_TTL,
            Decision::Forbidden { .. } => FORBIDDEN_TTL,
            Decision::Unauthenticated { .. } => UNAUTHENTICATED_TTL,
        }
    }
}

/// The key a token is cached under: its SHA-256, so no token stays in memory.
pub type TokenHash = [u8; 32];

pub fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Decisions by token hash, each until its own expiry. Time is passed in,
/// so the tests need no clock.
#[derive(Debug, Default)]
pub struct DecisionCache {
    entries: HashMap<TokenHash, (Decision, Instant)>,
}

impl DecisionCache {
    pub fn get(&self, key: &TokenHash, now: Instant) -> Option<&Decision> {
        self.entries
            .get(key)
            .filter(|(_, expires)| now < *expires)
            .map(|(d, _)| d)
    }

    pub fn put(&mut self, key: TokenHash, decision: Decision, now: Instant) {
        if self.entries.len() >= CACHE_CAPACITY && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (_, expires)| now < *expires);
            if self.entries.len() >= CACHE_CAPACITY {
                // Still full of live entries: start over rather than grow.
                self.entries.clear();
            }
        }
        let expires = now + decision.ttl();
        self.entries.insert(key, (decision, expires));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The path and verb every decision is about: the only guarded route.
pub const PATH: &str = "/metrics";
pub const VERB: &str = "get";

/// The filter's state: the operator's client (its ServiceAccount needs
/// `create` on tokenreviews and subjectaccessreviews) and the cache.
pub struct MetricsAccess {
    client: kube::Client,
    cache: Mutex<DecisionCache>,
}

impl MetricsAccess {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            cache: Mutex::default(),
        }
    }

    /// The cached decision for the token, or a fresh one from the API server.
    /// An API error is not cached: the next scrape asks again.
    pub async fn decide(&self, token: &str) -> Result<Decision, kube::Error> {
        let key = token_hash(token);
        if let Some(d) = self
            .cache
            .lock()
            .expect("cache lock")
            .get(&key, Instant::now())
        {
            return Ok(d.clone());
        }
        let decision = self.review(token).await?;
        self.cache
            .lock()
            .expect("cache lock")
            .put(key, decision.clone(), Instant::now());
        Ok(decision)
    }

    async fn review(&self, token: &str) -> Result<Decision, kube::Error> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let status = reviewed.status.unwrap_or_default();
        let user = status.user.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Ok(Decision::Unauthenticated {
                reason: status
                    .error
                    .unwrap_or_else(|| "the API server did not authenticate the token".into()),
            });
        }
        let name = user.username.clone().unwrap_or_default();
        let sar = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(PATH.into()),
                    verb: Some(VERB.into()),
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answered = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &sar)
            .await?;
        let status = answered.status.unwrap_or_default();
        Ok(if status.allowed {
            Decision::Allowed { user: name }
        } else {
            Decision::Forbidden {
                user: name,
                reason: status.reason.unwrap_or_default(),
            }
        })
    }
}

/// axum middleware in front of `/metrics`.
pub async fn require_access(
    State(access): State<Arc<MetricsAccess>>,
    request: Request,
    next: Next,
) -> Response {
    let token = match bearer_token(request.headers()) {
        Ok(t) => t.to_string(),
        Err(why) => return unauthorized(why),
    };
    match access.decide(&token).await {
        Ok(Decision::Allowed { .. }) => next.run(request).await,
        Ok(Decision::Unauthenticated { reason }) => {
            tracing::debug!(%reason, "/metrics: token not authenticated");
            unauthorized("the API server did not authenticate the bearer token")
        }
        Ok(Decision::Forbidden { user, reason }) => {
            tracing::debug!(%user, %reason, "/metrics: access denied");
            (
                StatusCode::FORBIDDEN,
                format!(
                    "{user} may not get /metrics: bind it to the ClusterRole dnspolicy-metrics-reader\n"
                ),
            )
                .into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "/metrics: TokenReview or SubjectAccessReview failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot check the bearer token with the API server\n",
            )
                .into_response()
        }
    }
}

fn unauthorized(why: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Bearer realm=\"dnspolicy-metrics\"",
        )],
        format!("{why}: send `Authorization: Bearer <ServiceAccount token>`\n"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn the_bearer_token_is_read_from_the_authorization_header() {
        assert_eq!(bearer_token(&headers("Bearer abc.def")), Ok("abc.def"));
        assert_eq!(bearer_token(&headers("bearer  abc ")), Ok("abc"));
        assert_eq!(bearer_token(&headers("BEARER abc")), Ok("abc"));
        assert_eq!(
            bearer_token(&HeaderMap::new()),
            Err("no Authorization header")
        );
        assert_eq!(
            bearer_token(&headers("Basic dXNlcjpwYXNz")),
            Err("the Authorization header is not `Bearer <token>`")
        );
        assert_eq!(
            bearer_token(&headers("Bearer")),
            Err("the Authorization header is not `Bearer <token>`")
        );
        assert_eq!(
            bearer_token(&headers("Bearer    ")),
            Err("the Authorization header is not `Bearer <token>`")
        );
    }

    #[test]
    fn decisions_expire_by_outcome() {
        let t0 = Instant::now();
        let mut cache = DecisionCache::default();
        let allowed = token_hash("a");
        let forbidden = token_hash("f");
        let rejected = token_hash("r");
        cache.put(allowed, Decision::Allowed { user: "a".into() }, t0);
        cache.put(
            forbidden,
            Decision::Forbidden {
                user: "f".into(),
                reason: String::new(),
            },
            t0,
        );
        cache.put(
            rejected,
            Decision::Unauthenticated {
                reason: "invalid".into(),
            },
            t0,
        );
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(cache.get(&rejected, at(9)).is_some());
        assert!(cache.get(&rejected, at(10)).is_none());
        assert!(cache.get(&forbidden, at(29)).is_some());
        assert!(cache.get(&forbidden, at(30)).is_none());
        assert_eq!(
            cache.get(&allowed, at(59)),
            Some(&Decision::Allowed { user: "a".into() })
        );
        assert!(cache.get(&allowed, at(60)).is_none());
        assert!(cache.get(&token_hash("other"), t0).is_none());
    }

    #[test]
    fn the_cache_keys_on_the_token_hash_and_stays_bounded() {
        assert_ne!(token_hash("a"), token_hash("b"));
        assert_eq!(token_hash("a"), token_hash("a"));
        let t0 = Instant::now();
        let mut cache = DecisionCache::default();
        let rejected = || Decision::Unauthenticated {
            reason: String::new(),
        };
        for i in 0..CACHE_CAPACITY {
            cache.put(token_hash(&i.to_string()), rejected(), t0);
        }
        assert_eq!(cache.len(), CACHE_CAPACITY);
        // Full of expired entries: they make room.
        let later = t0 + UNAUTHENTICATED_TTL;
        cache.put(token_hash("new"), rejected(), later);
        assert_eq!(cache.len(), 1);
        // Full of live entries: it starts over, never past the capacity.
        for i in 0..CACHE_CAPACITY + 5 {
            cache.put(token_hash(&format!("x{i}")), rejected(), later);
            assert!(cache.len() <= CACHE_CAPACITY);
        }
    }
}
