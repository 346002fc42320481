use super::*;
use rcgen::{CertificateParams, KeyPair, SanType};
use x509_parser::extensions::GeneralName;

fn ca() -> CertificateAuthority {
    crate::ca::test_intermediate()
}

fn service() -> CaService {
    use crate::ca::review::{Account, CachedReviewer, ReviewError, Reviewer};
    struct No;
    impl Reviewer for No {
        fn review<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<Account, ReviewError>> {
            Box::pin(async { Err(ReviewError::Refused("no".into())) })
        }
    }
    let authn = Authenticator::new(
        CachedReviewer::new(Box::new(No)),
        "istio-ca",
        "cluster.local",
    );
    CaService::new(
        Arc::new(ca()),
        Arc::new(authn),
        Duration::from_secs(24 * 3600),
    )
}

fn csr(sans: Vec<SanType>) -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn uri(u: &str) -> SanType {
    SanType::URI(u.try_into().unwrap())
}

fn request(csr: String, validity_s: i64) -> IstioCertificateRequest {
    IstioCertificateRequest {
        csr,
        validity_duration: validity_s,
        metadata: None,
    }
}

fn sleep_id() -> SpiffeId {
    "spiffe://cluster.local/ns/sample/sa/sleep".parse().unwrap()
}

/// Istio's answer order: the leaf, then the chain up to and including the root; the leaf
/// names exactly the caller and lives as long as asked.
#[test]
fn a_csr_for_the_callers_own_id_is_signed_leaf_first_root_last() {
    let svc = service();
    let chain = svc
        .sign(
            &sleep_id(),
            &request(
                csr(vec![uri("spiffe://cluster.local/ns/sample/sa/sleep")]),
                3600,
            ),
        )
        .unwrap();
    assert_eq!(chain.len(), 3, "leaf, intermediate, root");
    assert_eq!(chain[1], svc.ca.chain()[0]);
    assert_eq!(chain[2], svc.ca.root_pem());
    let der = x509_parser::pem::parse_x509_pem(chain[0].as_bytes())
        .unwrap()
        .1
        .contents;
    let (_, leaf) = x509_parser::parse_x509_certificate(&der).unwrap();
    let names: Vec<_> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .clone();
    assert_eq!(
        names,
        vec![GeneralName::URI(
            "spiffe://cluster.local/ns/sample/sa/sleep"
        )]
    );
    let life = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    // The certs crate backdates notBefore by 5 minutes for lagging clocks.
    assert_eq!(life, 3600 + 300);
}

/// The proto's rule: the caller must be authorized for every SAN in the CSR. Another
/// identity, an extra DNS name or no SAN at all is PERMISSION_DENIED; what is not a CSR is
/// INVALID_ARGUMENT.
#[test]
fn a_csr_asking_for_anything_else_is_refused() {
    let svc = service();
    let denied = |sans: Vec<SanType>| {
        matches!(
            svc.sign(&sleep_id(), &request(csr(sans), 0)),
            Err(Refusal::Denied(_))
        )
    };
    assert!(denied(vec![uri(
        "spiffe://cluster.local/ns/sample/sa/helloworld"
    )]));
    assert!(denied(vec![uri(
        "spiffe://cluster.local/ns/istio-system/sa/sleep"
    )]));
    assert!(denied(vec![uri("spiffe://other/ns/sample/sa/sleep")]));
    assert!(denied(vec![
        uri("spiffe://cluster.local/ns/sample/sa/sleep"),
        SanType::DnsName("kubernetes.default.svc".try_into().unwrap()),
    ]));
    assert!(denied(vec![]));
    for junk in [
        "",
        "hello",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    ] {
        let got = svc.sign(&sleep_id(), &request(junk.into(), 0));
        assert!(matches!(got, Err(Refusal::Invalid(_))), "{junk:?}: {got:?}");
        assert_eq!(
            got.unwrap_err().status().code(),
            tonic::Code::InvalidArgument
        );
    }
}

#[test]
fn validity_is_what_was_asked_capped_by_the_maximum() {
    let max = Duration::from_secs(24 * 3600);
    assert_eq!(ttl(3600, max), Duration::from_secs(3600));
    assert_eq!(ttl(7 * 24 * 3600, max), max);
    assert_eq!(ttl(0, max), max);
    assert_eq!(ttl(-5, max), max);
}
