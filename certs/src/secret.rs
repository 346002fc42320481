//! The `cacerts` Secret that Istio's istiod (and meshfed) read their CA from.

use crate::files::{CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT};
use crate::pem::read_file;
use crate::{Error, Result};
use base64::Engine;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Secret<'a> {
    api_version: &'a str,
    kind: &'a str,
    metadata: Metadata<'a>,
    #[serde(rename = "type")]
    type_: &'a str,
    data: BTreeMap<&'a str, String>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    name: &'a str,
    namespace: &'a str,
}

/// The Secret YAML for the four `cacerts` files in `ca_dir`, ready for `kubectl apply -f -`.
/// The CA is loaded first, so a directory whose key does not fit its certificate is refused.
pub fn cacerts_secret_yaml(ca_dir: &Path, namespace: &str) -> Result<String> {
    crate::CertificateAuthority::load_intermediate(ca_dir)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut data = BTreeMap::new();
    for name in [CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT] {
        data.insert(name, b64.encode(read_file(&ca_dir.join(name))?));
    }
    let secret = Secret {
        api_version: "v1",
        kind: "Secret",
        metadata: Metadata {
            name: "cacerts",
            namespace,
        },
        type_: "Opaque",
        data,
    };
    serde_yaml::to_string(&secret).map_err(|e| Error::Invalid(format!("YAML encoding failed: {e}")))
}
