//! Where the CA's signing material comes from, as istiod reads it: a `cacerts` directory
//! given on the command line, else the `cacerts` Secret of the system namespace (its data
//! keys read in memory, so the CA key never touches the federation's disk), else no CA.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use meshfed_certs::CertificateAuthority;
use std::path::{Path, PathBuf};

/// The Secret istiod and `meshfed certs cacerts-secret` use.
pub const SECRET_NAME: &str = "cacerts";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("CA material: {0}")]
    Certs(#[from] meshfed_certs::Error),
    #[error("reading the {SECRET_NAME} Secret of {namespace}: {source}")]
    Read {
        namespace: String,
        source: kube::Error,
    },
}

/// Where the signing material was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Dir(PathBuf),
    Secret { namespace: String },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Dir(dir) => write!(f, "{}", dir.display()),
            Origin::Secret { namespace } => write!(f, "Secret {namespace}/{SECRET_NAME}"),
        }
    }
}

/// The intermediate from `dir` if given, else from the Secret; `None` when there is no
/// Secret (the CA is off). Material that exists but does not load is an error, never a
/// silently disabled CA.
pub async fn load(
    dir: Option<&Path>,
    client: &Client,
    namespace: &str,
) -> Result<Option<(CertificateAuthority, Origin)>, Error> {
    if let Some(dir) = dir {
        let ca = CertificateAuthority::load_intermediate(dir)?;
        return Ok(Some((ca, Origin::Dir(dir.to_path_buf()))));
    }
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(SECRET_NAME)
        .await
        .map_err(|source| Error::Read {
            namespace: namespace.to_string(),
            source,
        })?;
    let Some(secret) = secret else {
        return Ok(None);
    };
    let origin = Origin::Secret {
        namespace: namespace.to_string(),
    };
    Ok(Some((from_secret(&secret, namespace)?, origin)))
}

/// The intermediate from a `cacerts` Secret's data keys.
pub fn from_secret(secret: &Secret, namespace: &str) -> Result<CertificateAuthority, Error> {
    let data = secret.data.clone().unwrap_or_default();
    let origin = PathBuf::from(format!("secret {namespace}/{SECRET_NAME}"));
    let ca = CertificateAuthority::intermediate_from(&origin, |name| {
        data.get(name).map(|v| v.0.clone()).ok_or_else(|| {
            meshfed_certs::Error::Invalid(format!(
                "secret {namespace}/{SECRET_NAME} has no {name} key"
            ))
        })
    })?;
    Ok(ca)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn cacerts() -> Vec<(String, Vec<u8>)> {
        crate::ca::test_intermediate()
            .cacerts_files()
            .into_iter()
            .map(|f| (f.name.to_string(), f.contents.into_bytes()))
            .collect()
    }

    /// Istio reads its CA from the `cacerts` Secret's four keys; one missing key is an error
    /// naming the key, never a CA that signs with something else.
    #[test]
    fn a_cacerts_secret_loads_and_a_missing_key_is_named() {
        let files = cacerts();
        let mut secret = Secret {
            data: Some(
                files
                    .iter()
                    .map(|(k, v)| (k.clone(), ByteString(v.clone())))
                    .collect(),
            ),
            ..Default::default()
        };
        let ca = from_secret(&secret, "istio-system").unwrap();
        assert_eq!(ca.chain().len(), 2, "intermediate then root");
        secret.data.as_mut().unwrap().remove("ca-key.pem");
        let err = from_secret(&secret, "istio-system").err().unwrap();
        assert!(err.to_string().contains("no ca-key.pem key"), "{err}");
    }
}
