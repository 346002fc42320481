//! Wire-format checks against hand-encoded bytes, so a renumbered field fails here
//! rather than silently breaking compatibility with Istio's agent.

use crate::{ca, nds};
use prost::Message;

/// Encodes a protobuf varint.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Encodes a length-delimited field.
fn ld(field: u32, bytes: &[u8], out: &mut Vec<u8>) {
    varint(u64::from(field << 3 | 2), out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

#[test]
fn name_info_field_numbers_match_istio() {
    let info = nds::name_table::NameInfo {
        ips: vec!["240.240.0.1".into()],
        registry: "Kubernetes".into(),
        shortname: "helloworld".into(),
        namespace: "sample".into(),
        ..Default::default()
    };
    let mut want = Vec::new();
    ld(1, b"240.240.0.1", &mut want);
    ld(2, b"Kubernetes", &mut want);
    ld(3, b"helloworld", &mut want);
    ld(4, b"sample", &mut want);
    assert_eq!(info.encode_to_vec(), want);
}

#[test]
fn name_table_map_is_field_one_and_round_trips() {
    let host = "helloworld.sample.svc.cluster.local";
    let info = nds::name_table::NameInfo {
        ips: vec!["10.96.0.7".into()],
        ..Default::default()
    };
    let table = nds::NameTable {
        table: [(host.to_string(), info.clone())].into_iter().collect(),
        name_info: None,
    };
    // A map entry is a nested message {key = 1, value = 2} in field 1.
    let mut entry = Vec::new();
    ld(1, host.as_bytes(), &mut entry);
    ld(2, &info.encode_to_vec(), &mut entry);
    let mut want = Vec::new();
    ld(1, &entry, &mut want);
    let bytes = table.encode_to_vec();
    assert_eq!(bytes, want);
    assert_eq!(nds::NameTable::decode(bytes.as_slice()).ok(), Some(table));
}

#[test]
fn name_table_name_info_is_field_two() {
    let table = nds::NameTable {
        table: Default::default(),
        name_info: Some(nds::name_table::NameInfo {
            registry: "Kubernetes".into(),
            ..Default::default()
        }),
    };
    let mut inner = Vec::new();
    ld(2, b"Kubernetes", &mut inner);
    let mut want = Vec::new();
    ld(2, &inner, &mut want);
    assert_eq!(table.encode_to_vec(), want);
}

#[test]
fn certificate_request_field_numbers_match_istio() {
    let req = ca::IstioCertificateRequest {
        csr: "PEM".into(),
        validity_duration: 86_400,
        metadata: Some(prost_types::Struct {
            fields: [(
                "ClusterID".to_string(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue("cluster1".into())),
                },
            )]
            .into_iter()
            .collect(),
        }),
    };
    let bytes = req.encode_to_vec();
    // csr = 1 (string), validity_duration = 3 (varint), metadata = 4 (message).
    assert_eq!(&bytes[..5], &[0x0a, 3, b'P', b'E', b'M']);
    assert_eq!(bytes[5], 3 << 3);
    let mut v = Vec::new();
    varint(86_400, &mut v);
    assert_eq!(&bytes[6..6 + v.len()], v.as_slice());
    assert_eq!(bytes[6 + v.len()], 4 << 3 | 2);
    assert_eq!(
        ca::IstioCertificateRequest::decode(bytes.as_slice()).ok(),
        Some(req)
    );
}

#[test]
fn certificate_response_chain_is_field_one() {
    let resp = ca::IstioCertificateResponse {
        cert_chain: vec!["leaf".into(), "root".into()],
    };
    let mut want = Vec::new();
    ld(1, b"leaf", &mut want);
    ld(1, b"root", &mut want);
    assert_eq!(resp.encode_to_vec(), want);
}

#[test]
fn service_path_matches_istio() {
    use ca::istio_certificate_service_server::IstioCertificateServiceServer;
    use tonic::server::NamedService;
    struct Nop;
    #[tonic::async_trait]
    impl ca::istio_certificate_service_server::IstioCertificateService for Nop {
        async fn create_certificate(
            &self,
            _: tonic::Request<ca::IstioCertificateRequest>,
        ) -> Result<tonic::Response<ca::IstioCertificateResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }
    }
    let name = <IstioCertificateServiceServer<Nop> as NamedService>::NAME;
    assert_eq!(
        format!("/{name}/CreateCertificate"),
        ca::CREATE_CERTIFICATE_PATH
    );
}
