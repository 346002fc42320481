//! Service-account tokens as kube-apiserver signs them: ES256 JWTs under a P-256 key of the
//! server's own. Bound tokens (TokenRequest) carry `iss`, `sub`, `aud`, `exp`, `iat`, `nbf`,
//! `jti` and the private `kubernetes.io` claim; legacy Secret tokens carry the older
//! `kubernetes.io/serviceaccount/*` claims under issuer `kubernetes/serviceaccount` and never
//! expire. This module signs and checks signatures, issuers and times only: whether the
//! objects a token names still exist is for `authn`.

use super::error::ApiError;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};

/// The issuer of Secret-based (legacy) tokens, fixed in Kubernetes.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";

/// kube-apiserver's `--service-account-issuer` as clusters made by kubeadm and kind set it.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// An object a token names, by name and uid (so a recreated one does not match).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// The private `kubernetes.io` claim of a bound token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaim {
    pub namespace: String,
    pub serviceaccount: ObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
}

/// A bound token's claims, as kube-apiserver's TokenRequest writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundClaims {
    pub iss: String,
    /// `system:serviceaccount:<namespace>:<name>`.
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: u64,
    pub iat: u64,
    pub nbf: u64,
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaim,
}

/// A legacy Secret token's claims, as kube-controller-manager's token controller wrote them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyClaims {
    pub iss: String,
    pub sub: String,
    #[serde(rename = "kubernetes.io/serviceaccount/namespace")]
    pub namespace: String,
    #[serde(rename = "kubernetes.io/serviceaccount/secret.name")]
    pub secret_name: String,
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.name")]
    pub service_account: String,
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.uid")]
    pub service_account_uid: String,
}

/// A token whose signature, issuer and times are good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    Bound(BoundClaims),
    Legacy(LegacyClaims),
}

/// Why a token is refused; the text is what TokenReview's `status.error` says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT of ours: malformed, another algorithm (`none` included), another key, altered.
    #[error("invalid bearer token: {0}")]
    Invalid(String),
    #[error("token issuer {0:?} is invalid")]
    Issuer(String),
    #[error("service account token has expired")]
    Expired,
    #[error("service account token is not valid yet")]
    NotYetValid,
    #[error("service account token is issued in the future")]
    IssuedInFuture,
    #[error("token audiences {token:?} is invalid for the target audiences {wanted:?}")]
    Audience {
        token: Vec<String>,
        wanted: Vec<String>,
    },
    /// The object the token names (service account, pod or Secret) is gone.
    #[error("{0} has been deleted")]
    Deleted(String),
    #[error("{what} UID ({have}) does not match claim ({claim})")]
    UidMismatch {
        what: &'static str,
        have: String,
        claim: String,
    },
    /// A legacy token whose Secret was deleted or refilled.
    #[error("token has been invalidated")]
    Invalidated,
}

/// The server's signing key and issuer.
pub struct Signer {
    issuer: String,
    /// Names the key in each token's header, as kube-apiserver's `kid` does.
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Signer {
    /// A fresh P-256 key: tokens of one server are refused by every other.
    pub fn generate(issuer: &str) -> Result<Self, meshfed_certs::Error> {
        let key = meshfed_certs::KeyAlgorithm::EcdsaP256.generate()?;
        let kid: [u8; 16] = rand::random();
        Ok(Signer {
            issuer: issuer.to_string(),
            kid: base64_url(&kid),
            // ring signs from PKCS#8 DER (what rcgen serializes) and verifies against the
            // bare uncompressed point (what `public_key_raw` gives), not an SPKI.
            encoding: EncodingKey::from_ec_der(&key.serialize_der()),
            decoding: DecodingKey::from_ec_der(key.public_key_raw()),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn sign(&self, claims: &impl Serialize) -> Result<String, ApiError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| ApiError::new(500, "InternalError", format!("signing a token: {e}")))
    }

    /// Checks the signature (ES256 under this server's key only), the issuer and, for bound
    /// tokens, `exp`, `nbf` and `iat` against `now` (the server's clock, which tests move).
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Verified, TokenError> {
        let mut validation = Validation::new(Algorithm::ES256);
        // Times are checked below against the server's clock, not the wall clock the crate
        // reads; audiences are `authn`'s; legacy tokens have no `exp`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Value>(token, &self.decoding, &validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let claims = data.claims;
        let malformed = |e: serde_json::Error| TokenError::Invalid(format!("claims: {e}"));
        match claims["iss"].as_str() {
            Some(LEGACY_ISSUER) => Ok(Verified::Legacy(
                serde_json::from_value(claims).map_err(malformed)?,
            )),
            Some(iss) if iss == self.issuer => {
                let bound: BoundClaims = serde_json::from_value(claims).map_err(malformed)?;
                check_times(&bound, now)?;
                Ok(Verified::Bound(bound))
            }
            other => Err(TokenError::Issuer(other.unwrap_or_default().to_string())),
        }
    }
}

/// Whole seconds since the epoch: JWT times have no finer unit.
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// JWT times are whole seconds and a token is issued up to a second after its `iat`, so the
/// second named by `exp` still counts: a token asked for N seconds lives at least N seconds.
/// No further leeway (kube's JWT library allows 60 s) so tests see expiry when they expect it.
fn check_times(claims: &BoundClaims, now: SystemTime) -> Result<(), TokenError> {
    let now = unix_seconds(now);
    // go-jose's order: not yet valid, expired, issued in the future.
    if now < claims.nbf {
        return Err(TokenError::NotYetValid);
    }
    if now > claims.exp {
        return Err(TokenError::Expired);
    }
    if now < claims.iat {
        return Err(TokenError::IssuedInFuture);
    }
    Ok(())
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn claims(iat: u64, ttl: u64) -> BoundClaims {
        BoundClaims {
            iss: DEFAULT_ISSUER.into(),
            sub: "system:serviceaccount:sample:sleep".into(),
            aud: vec!["istio-ca".into()],
            exp: iat + ttl,
            iat,
            nbf: iat,
            jti: "j".into(),
            kubernetes: KubernetesClaim {
                namespace: "sample".into(),
                serviceaccount: ObjectRef {
                    name: "sleep".into(),
                    uid: "u".into(),
                },
                pod: None,
                secret: None,
            },
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn b64_json(v: &Value) -> String {
        base64_url(v.to_string().as_bytes())
    }

    /// kube-apiserver signs service-account tokens ES256 with a `kid` and verifies them back.
    #[test]
    fn signs_es256_with_a_kid_and_verifies_its_own_tokens() {
        let signer = Signer::generate(DEFAULT_ISSUER).unwrap();
        let token = signer.sign(&claims(1000, 600)).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some(signer.kid.as_str()));
        assert_eq!(
            signer.verify(&token, at(1000)).unwrap(),
            Verified::Bound(claims(1000, 600))
        );
    }

    /// `exp`, `nbf` and `iat` bound a token's life (RFC 7519 4.1.4, 4.1.5), on the clock given.
    #[test]
    fn a_bound_token_lives_from_nbf_to_exp() {
        let signer = Signer::generate(DEFAULT_ISSUER).unwrap();
        let token = signer.sign(&claims(1000, 600)).unwrap();
        assert!(signer.verify(&token, at(1600)).is_ok());
        assert_eq!(signer.verify(&token, at(1601)), Err(TokenError::Expired));
        let mut early = claims(1000, 600);
        early.nbf = 1100;
        let token = signer.sign(&early).unwrap();
        assert_eq!(
            signer.verify(&token, at(1050)),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(
            signer.verify(&token, at(999)),
            Err(TokenError::NotYetValid),
            "nbf is checked first, as go-jose does"
        );
    }

    /// A token signed by another cluster's API server is not this one's.
    #[test]
    fn another_servers_key_is_refused() {
        let (ours, theirs) = (
            Signer::generate(DEFAULT_ISSUER).unwrap(),
            Signer::generate(DEFAULT_ISSUER).unwrap(),
        );
        let token = theirs.sign(&claims(1000, 600)).unwrap();
        assert!(matches!(
            ours.verify(&token, at(1000)),
            Err(TokenError::Invalid(_))
        ));
    }

    /// Changing any claim breaks the signature, even one that would grant more.
    #[test]
    fn a_tampered_token_is_refused() {
        let signer = Signer::generate(DEFAULT_ISSUER).unwrap();
        let token = signer.sign(&claims(1000, 600)).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged = claims(1000, 600);
        forged.sub = "system:serviceaccount:istio-system:istiod".into();
        forged.kubernetes.namespace = "istio-system".into();
        let payload = b64_json(&serde_json::to_value(&forged).unwrap());
        let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
        assert!(matches!(
            signer.verify(&tampered, at(1000)),
            Err(TokenError::Invalid(_))
        ));
    }

    /// The `none` algorithm (RFC 7518 3.6) and HMAC under the public key are refused: only
    /// ES256 under the server's key is accepted.
    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let signer = Signer::generate(DEFAULT_ISSUER).unwrap();
        let payload = b64_json(&serde_json::to_value(claims(1000, 600)).unwrap());
        let none = format!(
            "{}.{payload}.",
            b64_json(&serde_json::json!({"alg": "none", "typ": "JWT"}))
        );
        assert!(matches!(
            signer.verify(&none, at(1000)),
            Err(TokenError::Invalid(_))
        ));
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(1000, 600),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(matches!(
            signer.verify(&hs, at(1000)),
            Err(TokenError::Invalid(_))
        ));
    }

    /// Only this server's issuer and the legacy one are accepted; legacy tokens never expire.
    #[test]
    fn issuers_and_legacy_tokens() {
        let signer = Signer::generate(DEFAULT_ISSUER).unwrap();
        let mut other = claims(1000, 600);
        other.iss = "https://elsewhere".into();
        let token = signer.sign(&other).unwrap();
        assert_eq!(
            signer.verify(&token, at(1000)),
            Err(TokenError::Issuer("https://elsewhere".into()))
        );
        let legacy = LegacyClaims {
            iss: LEGACY_ISSUER.into(),
            sub: "system:serviceaccount:default:robot".into(),
            namespace: "default".into(),
            secret_name: "robot-token".into(),
            service_account: "robot".into(),
            service_account_uid: "u".into(),
        };
        let token = signer.sign(&legacy).unwrap();
        assert_eq!(
            signer.verify(&token, at(u64::from(u32::MAX))),
            Ok(Verified::Legacy(legacy))
        );
    }
}
