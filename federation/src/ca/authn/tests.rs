use super::*;
use crate::ca::review::Reviewer;
use crate::xds::listen::ConnInfo;
use futures::future::BoxFuture;
use meshfed_certs::{CertificateAuthority, WorkloadOptions};
use std::sync::Arc;

struct Yes;

impl Reviewer for Yes {
    fn review<'a>(
        &'a self,
        token: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Account, ReviewError>> {
        let answer = match token {
            "down" => Err(ReviewError::Unavailable("connection refused".into())),
            "no" => Err(ReviewError::Refused("expired".into())),
            _ => Ok(Account {
                namespace: "sample".into(),
                name: token.to_string(),
            }),
        };
        Box::pin(async move { answer })
    }
}

fn authenticator() -> Authenticator {
    Authenticator::new(
        CachedReviewer::new(Box::new(Yes)),
        "istio-ca",
        "cluster.local",
    )
}

fn ca() -> CertificateAuthority {
    crate::ca::test_intermediate()
}

fn leaf(ca: &CertificateAuthority, id: &str) -> CertificateDer<'static> {
    let cert = ca
        .issue_workload(&WorkloadOptions::new(id.parse().unwrap()))
        .unwrap();
    let pem = cert.chain[0].clone();
    let der = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .unwrap()
        .1
        .contents;
    CertificateDer::from(der)
}

fn with_bearer(value: &str) -> MetadataMap {
    let mut m = MetadataMap::new();
    m.insert("authorization", value.parse().unwrap());
    m
}

fn conn(certs: Option<Vec<CertificateDer<'static>>>) -> ConnInfo {
    ConnInfo {
        remote: None,
        kill: Default::default(),
        peer_certs: certs.map(Arc::new),
    }
}

/// Istio's ClientCertAuthenticator: a renewal over mTLS is authenticated by the SPIFFE id of
/// the certificate the handshake verified, and it wins over a token in the same request.
#[tokio::test]
async fn a_verified_client_certificate_names_the_caller() {
    let ca = ca();
    let cert = leaf(&ca, "spiffe://cluster.local/ns/sample/sa/sleep");
    let got = authenticator()
        .authenticate(Some(&conn(Some(vec![cert]))), &with_bearer("Bearer other"))
        .await
        .unwrap();
    assert_eq!(
        got.identity.to_string(),
        "spiffe://cluster.local/ns/sample/sa/sleep"
    );
    assert_eq!(got.method, Method::Certificate);
    let foreign = leaf(&ca, "spiffe://other.domain/ns/sample/sa/sleep");
    let err = authenticator()
        .authenticate(Some(&conn(Some(vec![foreign]))), &MetadataMap::new())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "bad_certificate");
    assert_eq!(err.status().code(), tonic::Code::Unauthenticated);
}

/// Istio's KubeJWTAuthenticator: `authorization: Bearer <token>`; the reviewed account
/// becomes spiffe://<trust domain>/ns/<ns>/sa/<sa>; the second use comes from the cache.
#[tokio::test]
async fn a_bearer_token_names_its_service_account() {
    let authn = authenticator();
    let got = authn
        .authenticate(Some(&conn(None)), &with_bearer("Bearer sleep"))
        .await
        .unwrap();
    assert_eq!(
        got.identity.to_string(),
        "spiffe://cluster.local/ns/sample/sa/sleep"
    );
    assert_eq!(got.method, Method::Token);
    let lower = with_bearer("bearer sleep");
    assert_eq!(
        authn.authenticate(None, &lower).await.unwrap().identity,
        got.identity
    );
}

#[tokio::test]
async fn missing_malformed_refused_and_unavailable_are_told_apart() {
    let authn = authenticator();
    let reason = |r: Result<Caller, AuthError>| {
        let e = r.unwrap_err();
        (e.reason(), e.status().code())
    };
    use tonic::Code::{Unauthenticated, Unavailable};
    assert_eq!(
        reason(authn.authenticate(None, &MetadataMap::new()).await),
        ("missing", Unauthenticated)
    );
    for bad in ["Basic abc", "Bearer", "Bearer  ", "token"] {
        assert_eq!(
            reason(authn.authenticate(None, &with_bearer(bad)).await),
            ("bad_header", Unauthenticated),
            "{bad}"
        );
    }
    assert_eq!(
        reason(authn.authenticate(None, &with_bearer("Bearer no")).await),
        ("token_refused", Unauthenticated)
    );
    assert_eq!(
        reason(authn.authenticate(None, &with_bearer("Bearer down")).await),
        ("review_unavailable", Unavailable)
    );
    // An account name that cannot be a SPIFFE path segment is refused, not signed.
    assert_eq!(
        reason(authn.authenticate(None, &with_bearer("Bearer a/b")).await),
        ("token_refused", Unauthenticated)
    );
}
