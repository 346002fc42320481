use super::build::{client_hello, records};
use super::*;
use proptest::prelude::*;

const SNI: &str = "outbound_.5000_.v1_.helloworld.sample.svc.cluster.local";

fn done(sni: Option<&str>, consumed: usize) -> Parsed {
    Parsed::Done {
        sni: sni.map(str::to_string),
        consumed,
    }
}

#[test]
fn reads_sni_from_one_record_and_waits_for_the_rest() {
    let wire = records(&client_hello(Some(SNI), &[]), 16_384);
    assert_eq!(parse(&wire), Ok(done(Some(SNI), wire.len())));
    for cut in 0..wire.len() {
        assert_eq!(parse(&wire[..cut]), Ok(Parsed::NeedMore), "cut at {cut}");
    }
}

#[test]
fn reassembles_a_hello_spanning_many_records() {
    let big = client_hello(
        Some(SNI),
        &[(0x0a0a, vec![]), (21, vec![0; 3000]), (0x1a1a, vec![1])],
    );
    let wire = records(&big, 100);
    assert!(wire.len() > 3000);
    assert_eq!(parse(&wire), Ok(done(Some(SNI), wire.len())));
}

#[test]
fn sni_is_lowercased_and_optional() {
    let wire = records(&client_hello(Some("Outbound_.5000_._.A.b"), &[]), 512);
    assert_eq!(
        parse(&wire),
        Ok(done(Some("outbound_.5000_._.a.b"), wire.len()))
    );
    let wire = records(&client_hello(None, &[(0x2a2a, vec![])]), 512);
    assert_eq!(parse(&wire), Ok(done(None, wire.len())));
}

#[test]
fn refuses_what_is_not_a_client_hello() {
    assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(HelloError::NotTls));
    assert_eq!(parse(b"\x16\x02\x00\x00\x05"), Err(HelloError::NotTls));
    // A ServerHello (type 2).
    let mut msg = client_hello(Some(SNI), &[]);
    msg[0] = 2;
    assert_eq!(parse(&records(&msg, 512)), Err(HelloError::NotClientHello));
    // An alert record in the middle of the handshake.
    let mut wire = records(&client_hello(Some(SNI), &[]), 40);
    wire[45] = 21;
    assert!(matches!(parse(&wire), Err(HelloError::Malformed(_))));
    // Oversized handshake length.
    assert_eq!(
        parse(&[22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff]),
        Err(HelloError::TooLarge)
    );
    assert_eq!(parse(&[22, 3, 1, 0x7f, 0xff]), Err(HelloError::TooLarge));
}

#[test]
fn malformed_server_names_are_refused() {
    let bad_chars = records(&client_hello(Some("a b"), &[]), 512);
    assert!(matches!(parse(&bad_chars), Err(HelloError::Malformed(_))));
    let mut msg = client_hello(Some(SNI), &[]);
    let mut dup = client_hello(None, &[(0, vec![0, 5, 0, 0, 2, b'a', b'b'])]);
    assert!(matches!(
        parse(&records(&dup, 512)),
        Ok(Parsed::Done { .. })
    ));
    dup = client_hello(Some("x"), &[(0, vec![0, 4, 0, 0, 1, b'a'])]);
    assert!(matches!(
        parse(&records(&dup, 512)),
        Err(HelloError::Malformed(_))
    ));
    // Truncate the extensions block inside the message.
    let len = msg.len();
    msg.truncate(len - 3);
    let body_len = (msg.len() - 4) as u32;
    msg[1..4].copy_from_slice(&body_len.to_be_bytes()[1..]);
    assert!(matches!(
        parse(&records(&msg, 512)),
        Err(HelloError::Malformed(_))
    ));
}

#[test]
fn parses_a_real_rustls_client_hello() {
    use std::sync::Arc;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore::empty();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(SNI).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut wire = Vec::new();
    conn.write_tls(&mut wire).unwrap();
    assert_eq!(parse(&wire), Ok(done(Some(SNI), wire.len())));
}

fn grease() -> impl Strategy<Value = u16> {
    (0u16..16).prop_map(|i| 0x0a0a + 0x1010 * i)
}

fn extension() -> impl Strategy<Value = (u16, Vec<u8>)> {
    prop_oneof![
        (grease(), proptest::collection::vec(any::<u8>(), 0..8)),
        (1u16..0xffff, proptest::collection::vec(any::<u8>(), 0..600)),
    ]
}

fn host() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\\.[a-z0-9]{1,10}){0,5}"
}

proptest! {
    /// However records are sized and however reads are split, the SNI comes out.
    #[test]
    fn sni_survives_any_record_and_read_split(
        sni in proptest::option::of(host()),
        exts in proptest::collection::vec(extension(), 0..6),
        record_size in 1usize..2000,
        read_sizes in proptest::collection::vec(1usize..700, 1..20),
    ) {
        let wire = records(&client_hello(sni.as_deref(), &exts), record_size);
        let mut seen = 0;
        let mut reads = read_sizes.iter().cycle();
        loop {
            seen = (seen + reads.next().copied().unwrap_or(1)).min(wire.len());
            match parse(&wire[..seen]) {
                Ok(Parsed::NeedMore) => prop_assert!(seen < wire.len()),
                Ok(Parsed::Done { sni: got, consumed }) => {
                    prop_assert_eq!(seen, wire.len());
                    prop_assert_eq!(consumed, wire.len());
                    prop_assert_eq!(got, sni.clone());
                    break;
                }
                Err(e) => prop_assert!(false, "error {e:?}"),
            }
        }
    }

    /// Arbitrary input never panics, and a verdict never changes as more bytes arrive.
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..3000), cut in 0usize..3000) {
        let cut = cut.min(data.len());
        let early = parse(&data[..cut]);
        let late = parse(&data);
        if let Err(e) = early {
            prop_assert_eq!(late, Err(e));
        }
    }

    /// Any single corrupted byte is either still a valid hello or an error: never a panic.
    #[test]
    fn corrupted_hellos_are_handled(pos in 0usize..400, byte in any::<u8>()) {
        let mut wire = records(&client_hello(Some(SNI), &[(0x0a0a, vec![])]), 128);
        let i = pos % wire.len();
        wire[i] = byte;
        let _ = parse(&wire);
    }
}
