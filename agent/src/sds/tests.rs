use super::*;
use crate::material::Material;
use crate::material::tests::{ca, workload, write};
use envoy_types::pb::google::rpc::Status as RpcStatus;

fn material(generation: u64) -> Material {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = workload(&ca("cluster1"), "sleep");
    write(dir.path(), &w.chain_pem(), &w.key_pem, &w.root_pem);
    Material::load(dir.path(), generation).expect("load")
}

fn req(names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: SECRET_TYPE.into(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn secrets(resp: &DiscoveryResponse) -> Vec<Secret> {
    resp.resources
        .iter()
        .map(|a| {
            assert_eq!(a.type_url, SECRET_TYPE);
            Secret::decode(a.value.as_slice()).expect("Secret")
        })
        .collect()
}

fn inline(ds: &Option<DataSource>) -> Vec<u8> {
    match ds.as_ref().and_then(|d| d.specifier.clone()) {
        Some(data_source::Specifier::InlineBytes(b)) => b,
        other => panic!("expected inline bytes, got {other:?}"),
    }
}

#[test]
fn default_is_the_chain_and_key_and_rootca_the_root() {
    let m = material(1);
    let Some(secret::Type::TlsCertificate(tls)) = secret("default", &m).and_then(|s| s.r#type)
    else {
        panic!("default is not a TLS certificate");
    };
    assert_eq!(inline(&tls.certificate_chain), m.files.cert_chain);
    assert_eq!(inline(&tls.private_key), m.files.key);
    let Some(secret::Type::ValidationContext(v)) = secret("ROOTCA", &m).and_then(|s| s.r#type)
    else {
        panic!("ROOTCA is not a validation context");
    };
    assert_eq!(inline(&v.trusted_ca), m.files.root);
    assert!(secret("file-cert:/etc/x", &m).is_none());
}

#[test]
fn first_request_is_answered_and_its_ack_is_not() {
    let m = material(3);
    let mut s = SecretStream::default();
    let resp = s
        .request(&req(&["default"], "", ""), &m)
        .expect("first response");
    assert_eq!(resp.version_info, "3");
    assert_eq!(resp.type_url, SECRET_TYPE);
    assert!(!resp.nonce.is_empty());
    let names: Vec<String> = secrets(&resp).into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["default"]);
    assert!(
        s.request(&req(&["default"], "3", &resp.nonce), &m)
            .is_none()
    );
}

#[test]
fn new_names_are_answered_with_every_name_and_stale_nonces_are_ignored() {
    let m = material(1);
    let mut s = SecretStream::default();
    let first = s.request(&req(&["default"], "", ""), &m).expect("first");
    let second = s
        .request(&req(&["default", "ROOTCA"], "1", &first.nonce), &m)
        .expect("names changed");
    assert_ne!(second.nonce, first.nonce);
    let mut names: Vec<String> = secrets(&second).into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(names, ["ROOTCA", "default"]);
    // Answers the first response, which the second replaced.
    assert!(
        s.request(&req(&["ROOTCA"], "1", &first.nonce), &m)
            .is_none()
    );
}

#[test]
fn a_nack_is_not_answered() {
    let m = material(1);
    let mut s = SecretStream::default();
    let first = s.request(&req(&["default"], "", ""), &m).expect("first");
    let mut nack = req(&["default"], "", &first.nonce);
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "bad key".into(),
        ..Default::default()
    });
    assert!(s.request(&nack, &m).is_none());
}

#[test]
fn a_change_is_pushed_once_and_only_to_subscribed_streams() {
    let (m1, m2) = (material(1), material(2));
    let mut idle = SecretStream::default();
    assert!(idle.update(&m2).is_none(), "nothing asked for");
    let mut s = SecretStream::default();
    s.request(&req(&["default"], "", ""), &m1).expect("first");
    assert!(s.update(&m1).is_none(), "already sent");
    let pushed = s.update(&m2).expect("pushed");
    assert_eq!(pushed.version_info, "2");
    let Some(secret::Type::TlsCertificate(tls)) = secrets(&pushed)[0].r#type.clone() else {
        panic!("not a certificate");
    };
    assert_eq!(inline(&tls.certificate_chain), m2.files.cert_chain);
    assert!(s.update(&m2).is_none(), "pushed once");
}

#[test]
fn unknown_names_and_other_types_get_nothing_they_did_not_ask_for() {
    let m = material(1);
    let mut s = SecretStream::default();
    let resp = s
        .request(&req(&["default", "spiffe://other"], "", ""), &m)
        .expect("answered");
    let names: Vec<String> = secrets(&resp).into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["default"]);
    let mut other = req(&["x"], "", "");
    other.type_url = meshfed_proto::ads::CLUSTER_TYPE.into();
    assert!(SecretStream::default().request(&other, &m).is_none());
}

/// Istio's SDS waits for the CA's first certificate instead of answering `default` empty:
/// a request before it is remembered and answered once the certificate arrives.
#[test]
fn nothing_is_answered_before_the_first_certificate() {
    let pending = Material::pending();
    let mut s = SecretStream::default();
    assert!(s.request(&req(&["default"], "", ""), &pending).is_none());
    assert!(s.update(&pending).is_none());
    let m = material(1);
    let resp = s.update(&m).expect("answered when it arrives");
    assert_eq!(resp.version_info, "1");
    let names: Vec<String> = secrets(&resp).into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["default"]);
}
