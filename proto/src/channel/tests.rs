//! The flag rules, the token header and the checks made before dialing; the one connect here
//! is to a listener that never answers (the handshakes are in `tests/ads_tls.rs`).

use super::*;
use meshfed_certs::{CertificateAuthority, KeyAlgorithm, RootOptions};
use tonic::service::Interceptor;

fn root_pem() -> String {
    let opts = RootOptions {
        org: "test".into(),
        days: 1,
        key: KeyAlgorithm::EcdsaP256,
    };
    CertificateAuthority::new_root(&opts)
        .expect("root")
        .root_pem()
        .to_string()
}

fn flags(address: &str) -> XdsFlags {
    XdsFlags {
        address: address.into(),
        ..Default::default()
    }
}

#[test]
fn addresses_are_taken_apart_with_ipv6_brackets_off() {
    let t = Target::parse("meshfed-federation.istio-system.svc:15012").expect("parses");
    assert_eq!(t.host, "meshfed-federation.istio-system.svc");
    assert_eq!(t.port, Some(15012));
    assert!(!t.https);
    let t = Target::parse("https://[fd00::1]:15012").expect("parses");
    assert_eq!(
        (t.host.as_str(), t.authority.as_str()),
        ("fd00::1", "[fd00::1]:15012")
    );
    assert!(t.https);
    assert_eq!(Target::parse("http://10.0.0.1").expect("parses").port, None);
    for bad in [
        "",
        "ftp://istiod:15012",
        "http://:15012",
        "istiod:15012/path",
        "a b:1",
    ] {
        assert!(Target::parse(bad).is_err(), "{bad:?}");
    }
}

/// Istio's plaintext port: a bare `host:port` stays plaintext, as `--xds` always was.
#[test]
fn without_tls_flags_a_bare_address_is_plaintext() {
    let server = flags("127.0.0.1:15010").resolve().expect("plaintext");
    assert_eq!(server.address, "http://127.0.0.1:15010");
    assert!(server.tls.is_none() && server.token_file.is_none());
}

/// A ServiceAccount token is a credential: never sent in plaintext, refused at start.
#[test]
fn a_token_over_plaintext_is_refused() {
    let mut f = flags("meshfed-federation.istio-system.svc:15010");
    f.token_file = Some("/var/run/secrets/tokens/istio-token".into());
    let err = f.resolve().expect_err("refused");
    assert!(matches!(err, Error::TokenWithoutTls), "{err}");
    assert!(err.to_string().contains("only ever sent over TLS"), "{err}");
    let mut f = flags("127.0.0.1:15010");
    f.server_name = Some("istiod.istio-system.svc".into());
    assert!(matches!(f.resolve(), Err(Error::ServerNameWithoutTls)));
}

/// An XdsServer built by hand with a token and no TLS does not connect either.
#[tokio::test]
async fn a_hand_made_plaintext_server_with_a_token_does_not_connect() {
    let mut server = XdsServer::plaintext("http://127.0.0.1:9");
    server.token_file = Some("/nonexistent".into());
    assert!(matches!(
        server.connect().await,
        Err(Error::TokenWithoutTls)
    ));
    let server = XdsServer::plaintext("https://127.0.0.1:9");
    assert!(matches!(
        server.connect().await,
        Err(Error::HttpsWithoutTls(_))
    ));
}

#[test]
fn a_ca_root_turns_tls_on_and_the_host_is_the_default_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root-cert.pem");
    std::fs::write(&root, root_pem()).expect("write");
    let mut f = flags("istiod.istio-system.svc:15012");
    f.ca_root = Some(root);
    f.token_file = Some(dir.path().join("token"));
    let server = f.resolve().expect("tls");
    assert_eq!(server.address, "https://istiod.istio-system.svc:15012");
    let tls = server.tls.expect("tls on");
    assert_eq!(tls.server_name, None);
    assert!(tls.roots_pem.starts_with(b"-----BEGIN CERTIFICATE-----"));
    assert_eq!(server.token_file, Some(dir.path().join("token")));
}

/// Istio's proxies find the mesh root at /var/run/secrets/istio/root-cert.pem.
#[test]
fn https_defaults_the_root_to_istios_mount() {
    if std::path::Path::new(DEFAULT_CA_ROOT).exists() {
        return; // inside a pod: the default would load
    }
    let err = flags("https://istiod.istio-system.svc:15012")
        .resolve()
        .expect_err("no root here");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("--xds-ca-root {DEFAULT_CA_ROOT} (the default")),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text}");
}

#[test]
fn bad_roots_are_one_line_errors_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("missing.pem", None),
        ("empty.pem", Some(String::new())),
        (
            "key.pem",
            Some("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into()),
        ),
        (
            "garbage.pem",
            Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into()),
        ),
    ];
    for (name, contents) in cases {
        let path = dir.path().join(name);
        if let Some(c) = contents {
            std::fs::write(&path, c).expect("write");
        }
        let mut f = flags("127.0.0.1:15012");
        f.ca_root = Some(path.clone());
        let err = f.resolve().expect_err(name);
        let text = err.to_string();
        assert!(matches!(err, Error::Roots { .. }), "{text}");
        assert!(
            text.starts_with(&format!("--xds-ca-root {}: ", path.display())),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
    }
}

#[test]
fn tls_needs_a_port_and_a_valid_server_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root.pem");
    std::fs::write(&root, root_pem()).expect("write");
    let mut f = flags("istiod.istio-system.svc");
    f.ca_root = Some(root.clone());
    assert!(matches!(f.clone().resolve(), Err(Error::NoPort(_))));
    f.address = "istiod.istio-system.svc:15012".into();
    f.server_name = Some("not a name!".into());
    assert!(matches!(f.resolve(), Err(Error::ServerName(_))));
}

/// An IP address is checked as an IP SAN (rustls's IpAddress name), a name as a DNS SAN.
#[test]
fn an_ip_server_name_is_an_ip_address() {
    assert!(matches!(
        tls::server_name("127.0.0.1"),
        Ok(rustls::pki_types::ServerName::IpAddress(_))
    ));
    assert!(matches!(
        tls::server_name("fd00::1"),
        Ok(rustls::pki_types::ServerName::IpAddress(_))
    ));
    assert!(matches!(
        tls::server_name("istiod.istio-system.svc"),
        Ok(rustls::pki_types::ServerName::DnsName(_))
    ));
}

#[test]
fn the_client_offers_h2() {
    let config = tls::client_config(root_pem().as_bytes(), "root").expect("config");
    assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
}

/// Istio's agent sends `authorization: Bearer <token>`; kubelet's file may end in a newline.
#[test]
fn the_token_file_becomes_a_sensitive_bearer_header() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("istio-token");
    std::fs::write(&path, "eyJhbGciOi.abc.def\n").expect("write");
    let mut bearer = Bearer::from_file(&path).expect("token");
    let request = bearer.call(tonic::Request::new(())).expect("intercepted");
    let value = request.metadata().get("authorization").expect("header");
    assert_eq!(value.to_str().ok(), Some("Bearer eyJhbGciOi.abc.def"));
    assert!(value.is_sensitive());
    assert_eq!(format!("{bearer:?}"), "Bearer <redacted>");

    let mut none = Bearer::none();
    let request = none.call(tonic::Request::new(())).expect("intercepted");
    assert!(request.metadata().get("authorization").is_none());
}

#[test]
fn unreadable_empty_or_malformed_tokens_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("istio-token");
    for contents in [None, Some("\n"), Some("a\u{1}b")] {
        if let Some(c) = contents {
            std::fs::write(&path, c).expect("write");
        }
        let err = Bearer::from_file(&path).expect_err("refused");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("--xds-token-file {}: ", path.display())),
            "{text}"
        );
    }
}

#[test]
fn causes_are_chained_once() {
    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Repeats(#[source] std::io::Error);
    #[derive(Debug, thiserror::Error)]
    #[error("transport error")]
    struct Terse(#[source] std::io::Error);
    let io = || std::io::Error::other("refused");
    assert_eq!(causes(&Repeats(io())), "outer: refused");
    assert_eq!(causes(&Terse(io())), "transport error: refused");
}

/// A TLS server built by hand (the agent builds one for the CA from its own flags): its
/// address, port, server name and roots are checked without dialing, as a connect would.
#[test]
fn check_refuses_what_a_connect_would_before_dialing() {
    let tls_server = |address: &str, name: Option<&str>, roots: &[u8]| XdsServer {
        address: address.into(),
        tls: Some(ClientTls {
            roots_pem: roots.to_vec(),
            server_name: name.map(str::to_string),
        }),
        token_file: Some("/nonexistent/token".into()),
    };
    let root = root_pem();
    let root = root.as_bytes();
    // The token is read at connect, not checked here.
    assert!(
        tls_server("https://127.0.0.1:15012", None, root)
            .check()
            .is_ok()
    );
    assert!(matches!(
        tls_server("https://istiod:", None, root).check(),
        Err(Error::NoPort(_))
    ));
    assert!(matches!(
        tls_server("https://fd00::1:15012", None, root).check(),
        Err(Error::Address(_))
    ));
    assert!(matches!(
        tls_server("https://istiod:15012", Some("not a name!"), root).check(),
        Err(Error::ServerName(_))
    ));
    assert!(matches!(
        tls_server("https://istiod:15012", None, b"").check(),
        Err(Error::Roots { .. })
    ));
    let mut plain = XdsServer::plaintext("http://127.0.0.1:15010");
    assert!(plain.check().is_ok());
    plain.token_file = Some("/var/run/secrets/tokens/istio-token".into());
    assert!(matches!(plain.check(), Err(Error::TokenWithoutTls)));
}

/// A server that takes the TCP connection and never answers the ClientHello fails the
/// connect within the bound given, not the default 10 s.
#[tokio::test]
async fn a_handshake_that_never_finishes_fails_within_the_bound() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let server = XdsServer {
        address: format!("https://{addr}"),
        tls: Some(ClientTls {
            roots_pem: root_pem().into_bytes(),
            server_name: None,
        }),
        token_file: None,
    };
    let started = std::time::Instant::now();
    let connected = tokio::time::timeout(
        CONNECT_TIMEOUT / 2,
        server.connect_within(std::time::Duration::from_millis(300)),
    )
    .await
    .expect("the bound given, not the default");
    assert!(matches!(connected, Err(Error::Connect(_))), "{connected:?}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    held.abort();
}
