use crate::{Error, Result};
use rcgen::KeyPair;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::EncodePrivateKey;
use std::fmt;
use std::str::FromStr;

/// Key types a CA or workload key may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyAlgorithm {
    #[default]
    EcdsaP256,
    Rsa2048,
    Rsa4096,
}

impl KeyAlgorithm {
    /// Generates a fresh private key of this type.
    pub fn generate(self) -> Result<KeyPair> {
        match self {
            KeyAlgorithm::EcdsaP256 => Ok(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?),
            KeyAlgorithm::Rsa2048 => generate_rsa(2048),
            KeyAlgorithm::Rsa4096 => generate_rsa(4096),
        }
    }
}

/// ring signs with RSA keys but cannot make them, so RustCrypto's rsa generates the key
/// and ring (through rcgen) does all signing.
fn generate_rsa(bits: usize) -> Result<KeyPair> {
    let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, bits)
        .map_err(|e| Error::Invalid(format!("RSA key generation failed: {e}")))?;
    let der = key
        .to_pkcs8_der()
        .map_err(|e| Error::Invalid(format!("RSA key encoding failed: {e}")))?;
    Ok(KeyPair::try_from(der.as_bytes())?)
}

impl FromStr for KeyAlgorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ecdsa-p256" => Ok(KeyAlgorithm::EcdsaP256),
            "rsa-2048" => Ok(KeyAlgorithm::Rsa2048),
            "rsa-4096" => Ok(KeyAlgorithm::Rsa4096),
            other => Err(Error::KeyAlgorithm(other.to_string())),
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::Rsa2048 => "rsa-2048",
            KeyAlgorithm::Rsa4096 => "rsa-4096",
        })
    }
}

/// Decodes a private key from one PEM block. PKCS#8 is native; PKCS#1 RSA keys (what
/// older openssl and Istio's Makefile write) are converted so existing `cacerts` load.
pub(crate) fn key_from_pem_block(label: &str, der: &[u8]) -> std::result::Result<KeyPair, String> {
    match label {
        "PRIVATE KEY" => KeyPair::try_from(der).map_err(|e| format!("unusable private key: {e}")),
        "RSA PRIVATE KEY" => {
            let key = rsa::RsaPrivateKey::from_pkcs1_der(der)
                .map_err(|e| format!("bad PKCS#1 RSA key: {e}"))?;
            let pkcs8 = key
                .to_pkcs8_der()
                .map_err(|e| format!("bad PKCS#1 RSA key: {e}"))?;
            KeyPair::try_from(pkcs8.as_bytes()).map_err(|e| format!("unusable RSA key: {e}"))
        }
        "EC PRIVATE KEY" => Err(
            "SEC1 EC keys are not supported: convert with `openssl pkcs8 -topk8 -nocrypt`".into(),
        ),
        "ENCRYPTED PRIVATE KEY" => Err("encrypted private keys are not supported".into()),
        other => Err(format!("expected a PRIVATE KEY block, found {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for alg in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::Rsa2048,
            KeyAlgorithm::Rsa4096,
        ] {
            assert_eq!(alg.to_string().parse::<KeyAlgorithm>().ok(), Some(alg));
        }
        assert!("ed25519".parse::<KeyAlgorithm>().is_err());
    }

    #[test]
    fn rsa_keys_sign_with_ring() {
        let key = KeyAlgorithm::Rsa2048.generate().unwrap();
        assert_eq!(key.algorithm(), &rcgen::PKCS_RSA_SHA256);
    }

    #[test]
    fn pkcs1_rsa_keys_load() {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let pkcs1 = key.to_pkcs1_der().unwrap();
        let loaded = key_from_pem_block("RSA PRIVATE KEY", pkcs1.as_bytes()).unwrap();
        assert_eq!(loaded.algorithm(), &rcgen::PKCS_RSA_SHA256);
    }

    #[test]
    fn unsupported_blocks_get_a_reason() {
        let err = key_from_pem_block("EC PRIVATE KEY", b"").err().unwrap();
        assert!(err.contains("openssl pkcs8"), "{err}");
        let err = key_from_pem_block("PRIVATE KEY", b"garbage").err().unwrap();
        assert!(err.contains("unusable"), "{err}");
    }
}
