use super::*;
use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

fn jwt(exp: u64) -> String {
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    format!(
        "{}.{}.sig",
        b64(serde_json::json!({"alg": "ES256"})),
        b64(serde_json::json!({"exp": exp, "sub": "system:serviceaccount:sample:sleep"}))
    )
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Counts reviews; says yes to tokens that do not contain "bad".
struct Counting(Arc<AtomicUsize>);

impl Reviewer for Counting {
    fn review<'a>(
        &'a self,
        token: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Account, ReviewError>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let answer = if token.contains("bad") {
            Err(ReviewError::Refused("bad".into()))
        } else {
            Ok(Account {
                namespace: "sample".into(),
                name: "sleep".into(),
            })
        };
        Box::pin(async move { answer })
    }
}

fn counting() -> (CachedReviewer, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    (
        CachedReviewer::new(Box::new(Counting(calls.clone()))),
        calls,
    )
}

#[tokio::test]
async fn a_good_answer_is_reused_a_refusal_is_not() {
    let (reviewer, calls) = counting();
    let token = jwt(now_s() + 3600);
    let first = reviewer.review(&token, "istio-ca").await.unwrap();
    assert_eq!(first.1, Source::Review);
    let second = reviewer.review(&token, "istio-ca").await.unwrap();
    assert_eq!(second, (first.0, Source::Cache));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Another audience is another question.
    reviewer.review(&token, "other").await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let bad = format!("{token}bad");
    for _ in 0..2 {
        assert!(reviewer.review(&bad, "istio-ca").await.is_err());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 4, "refusals are asked again");
}

/// "Reviews are cached no longer than the token's life": an expired token or one whose
/// expiry cannot be read is never cached, and no answer lives past MAX_CACHE_AGE.
#[test]
fn the_cache_life_is_bounded_by_the_token() {
    let now = SystemTime::now();
    let at = now_s();
    assert_eq!(cache_life(&jwt(at + 3600), now), Some(MAX_CACHE_AGE));
    let short = cache_life(&jwt(at + 10), now).unwrap();
    assert!(
        short <= Duration::from_secs(10) && short >= Duration::from_secs(8),
        "{short:?}"
    );
    assert_eq!(cache_life(&jwt(at - 1), now), None);
    assert_eq!(cache_life("opaque-legacy-token", now), None);
    assert_eq!(cache_life("a.!!!.c", now), None);
}

#[tokio::test]
async fn tokens_without_a_readable_expiry_are_reviewed_every_time() {
    let (reviewer, calls) = counting();
    for _ in 0..3 {
        reviewer.review("opaque", "istio-ca").await.unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(reviewer.cached_len(), 0);
    let long = "x".repeat(MAX_TOKEN_LEN + 1);
    assert!(matches!(
        reviewer.review(&long, "istio-ca").await,
        Err(ReviewError::Refused(_))
    ));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "an oversized token is never sent"
    );
}

fn review(authenticated: bool, user: &str, audiences: &[&str]) -> TokenReview {
    TokenReview {
        status: Some(TokenReviewStatus {
            authenticated: Some(authenticated),
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
            user: Some(UserInfo {
                username: Some(user.into()),
                ..Default::default()
            }),
            error: (!authenticated).then(|| "token expired".into()),
        }),
        ..Default::default()
    }
}

/// Istio's kube JWT authenticator: the review must be authenticated, carry the required
/// audience, and name a ServiceAccount user `system:serviceaccount:NS:SA`.
#[test]
fn a_review_vouches_only_for_a_service_account_of_the_audience() {
    let sa = "system:serviceaccount:sample:sleep";
    assert_eq!(
        account_of(&review(true, sa, &["istio-ca"]), "istio-ca"),
        Ok(Account {
            namespace: "sample".into(),
            name: "sleep".into()
        })
    );
    let refused =
        |r: TokenReview| matches!(account_of(&r, "istio-ca"), Err(ReviewError::Refused(_)));
    assert!(refused(review(false, sa, &["istio-ca"])));
    assert!(refused(review(
        true,
        sa,
        &["https://kubernetes.default.svc"]
    )));
    assert!(refused(review(true, sa, &[])));
    assert!(refused(review(true, "admin", &["istio-ca"])));
    assert!(refused(review(
        true,
        "system:serviceaccount:sample",
        &["istio-ca"]
    )));
    assert!(refused(review(
        true,
        "system:serviceaccount::x",
        &["istio-ca"]
    )));
    assert!(refused(review(
        true,
        "system:serviceaccount:a:b:c",
        &["istio-ca"]
    )));
    assert!(matches!(
        account_of(&TokenReview::default(), "istio-ca"),
        Err(ReviewError::Unavailable(_))
    ));
}
