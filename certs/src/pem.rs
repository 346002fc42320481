//! Reading certificates and keys from PEM files with reasons a person can act on.

use crate::key::key_from_pem_block;
use crate::{Error, Result};
use rcgen::KeyPair;
use std::path::Path;
use x509_parser::pem::Pem;

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// The PEM blocks of `data`, read from `path` (named in errors); none is an error.
fn blocks_of(path: &Path, data: &[u8]) -> Result<Vec<Pem>> {
    parse_blocks(data).map_err(|reason| Error::bad_file(path, reason))
}

pub(crate) fn parse_blocks(data: &[u8]) -> std::result::Result<Vec<Pem>, String> {
    let blocks = Pem::iter_from_buffer(data)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("not valid PEM ({e})"))?;
    if blocks.is_empty() {
        return Err("not PEM: no -----BEGIN block found".into());
    }
    Ok(blocks)
}

/// The DER certificates of a PEM file, in file order.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<Vec<u8>>> {
    certs_of(path, &read_file(path)?)
}

/// [`read_certs`] of bytes already read (a Secret's data key).
pub(crate) fn certs_of(path: &Path, data: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut certs = Vec::new();
    for block in blocks_of(path, data)? {
        if block.label != "CERTIFICATE" {
            return Err(Error::bad_file(
                path,
                format!("expected CERTIFICATE blocks, found {:?}", block.label),
            ));
        }
        x509_parser::parse_x509_certificate(&block.contents)
            .map_err(|e| Error::bad_file(path, format!("unparsable certificate: {e}")))?;
        certs.push(block.contents);
    }
    Ok(certs)
}

/// The single private key in a PEM file.
pub(crate) fn read_key(path: &Path) -> Result<KeyPair> {
    key_of(path, &read_file(path)?)
}

/// [`read_key`] of bytes already read.
pub(crate) fn key_of(path: &Path, data: &[u8]) -> Result<KeyPair> {
    let blocks = blocks_of(path, data)?;
    let [block] = &blocks[..] else {
        return Err(Error::bad_file(path, "expected exactly one private key"));
    };
    key_from_pem_block(&block.label, &block.contents)
        .map_err(|reason| Error::bad_file(path, reason))
}

pub(crate) fn to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}
