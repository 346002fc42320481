//! Bearer tokens checked as istiod's `KubeJWTAuthenticator` checks them: a TokenReview
//! against the local API server, with the audience the CA requires. Answers are cached by
//! the token's SHA-256 (never the token itself) for no longer than the token lives, and at
//! most [`MAX_CACHE_AGE`], so a revoked legacy token stops working within that. Failures
//! are not cached; reviews in flight at once are bounded so a flood of bad tokens queues
//! here instead of at the API server.

use base64::Engine;
use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;

/// The longest a review answer is reused.
pub const MAX_CACHE_AGE: Duration = Duration::from_secs(60);
/// Cached answers at most; past it, new answers are not kept.
pub const MAX_CACHED: usize = 100_000;
/// TokenReviews in flight at once.
pub const MAX_IN_FLIGHT: usize = 64;
/// Tokens longer than this are refused unread (Kubernetes' tokens are about 1 KiB).
pub const MAX_TOKEN_LEN: usize = 16 << 10;

/// A ServiceAccount a token was issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ReviewError {
    /// The API server said no (bad signature, expired, wrong audience, not a ServiceAccount).
    #[error("token refused: {0}")]
    Refused(String),
    /// The review could not be made (API server down, no permission to create reviews).
    #[error("token review failed: {0}")]
    Unavailable(String),
}

/// Something that reviews tokens: the API server, or a test's stand-in.
pub trait Reviewer: Send + Sync {
    fn review<'a>(
        &'a self,
        token: &'a str,
        audience: &'a str,
    ) -> BoxFuture<'a, Result<Account, ReviewError>>;
}

/// TokenReview through the local API server (the federation's ServiceAccount needs
/// `create` on `tokenreviews`, as istiod's `system:auth-delegator` binding gives).
pub struct KubeReviewer(pub Client);

impl Reviewer for KubeReviewer {
    fn review<'a>(
        &'a self,
        token: &'a str,
        audience: &'a str,
    ) -> BoxFuture<'a, Result<Account, ReviewError>> {
        Box::pin(async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.to_string()),
                    audiences: Some(vec![audience.to_string()]),
                },
                ..Default::default()
            };
            let api: Api<TokenReview> = Api::all(self.0.clone());
            let answer = api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| ReviewError::Unavailable(e.to_string()))?;
            account_of(&answer, audience)
        })
    }
}

/// The ServiceAccount a review vouches for, checked as Istio does: authenticated, for the
/// audience asked (an API server that ignores audiences does not pass), and a
/// `system:serviceaccount:NS:NAME` user.
pub fn account_of(review: &TokenReview, audience: &str) -> Result<Account, ReviewError> {
    let status = review
        .status
        .as_ref()
        .ok_or_else(|| ReviewError::Unavailable("the review has no status".into()))?;
    if status.authenticated != Some(true) {
        let why = status
            .error
            .clone()
            .unwrap_or_else(|| "not authenticated".into());
        return Err(ReviewError::Refused(why));
    }
    if !status.audiences.iter().flatten().any(|a| a == audience) {
        return Err(ReviewError::Refused(format!(
            "the token is not for audience {audience:?}"
        )));
    }
    let user = status
        .user
        .as_ref()
        .and_then(|u| u.username.as_deref())
        .unwrap_or_default();
    let account = user
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains(':'));
    match account {
        Some((namespace, name)) => Ok(Account {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }),
        None => Err(ReviewError::Refused(format!(
            "{user:?} is not a service account"
        ))),
    }
}

/// A [`Reviewer`] with the cache and the in-flight bound in front.
pub struct CachedReviewer {
    inner: Box<dyn Reviewer>,
    cache: Mutex<HashMap<[u8; 32], (Account, Instant)>>,
    in_flight: Semaphore,
}

/// Where an answer came from, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cache,
    Review,
}

impl CachedReviewer {
    pub fn new(inner: Box<dyn Reviewer>) -> Self {
        CachedReviewer {
            inner,
            cache: Mutex::new(HashMap::new()),
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
        }
    }

    pub async fn review(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<(Account, Source), ReviewError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(ReviewError::Refused("the token is too long".into()));
        }
        let key = digest(token, audience);
        if let Some(account) = self.cached(&key) {
            return Ok((account, Source::Cache));
        }
        let _slot = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| ReviewError::Unavailable("shutting down".into()))?;
        let account = self.inner.review(token, audience).await?;
        if let Some(life) = cache_life(token, SystemTime::now()) {
            self.keep(key, account.clone(), Instant::now() + life);
        }
        Ok((account, Source::Review))
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Account> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let (account, until) = cache.get(key)?;
        (Instant::now() < *until).then(|| account.clone())
    }

    fn keep(&self, key: [u8; 32], account: Account, until: Instant) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            let now = Instant::now();
            cache.retain(|_, (_, until)| *until > now);
        }
        if cache.len() < MAX_CACHED {
            cache.insert(key, (account, until));
        }
    }

    #[cfg(test)]
    fn cached_len(&self) -> usize {
        self.cache.lock().unwrap().len()
    }
}

fn digest(token: &str, audience: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(audience.as_bytes());
    ctx.update(&[0]);
    ctx.update(token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// How long an answer for `token` may be reused: until its `exp` claim (read unverified:
/// the review vouched for the token, the claim only shortens the reuse), at most
/// [`MAX_CACHE_AGE`]; not at all if it has expired or its expiry cannot be read.
pub fn cache_life(token: &str, now: SystemTime) -> Option<Duration> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = UNIX_EPOCH + Duration::from_secs(claims["exp"].as_u64()?);
    let left = exp.duration_since(now).ok()?;
    Some(left.min(MAX_CACHE_AGE))
}

#[cfg(test)]
mod tests;
