//! The identity the agent asks for: `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`. Namespace and
//! service account come from the flags (or `POD_NAMESPACE`/`SERVICE_ACCOUNT`), else from the
//! ServiceAccount token's claims. The token is read unverified, only to build the request:
//! the CA verifies it (TokenReview) and signs nothing but the caller's own identity.

use super::Error;
use base64::Engine;
use meshfed_certs::SpiffeId;
use serde_json::Value;
use std::path::Path;

/// The namespace and service account a Kubernetes ServiceAccount token names.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Claims {
    pub namespace: Option<String>,
    pub service_account: Option<String>,
}

/// The claims of a JWT's payload: `kubernetes.io.namespace` and
/// `kubernetes.io.serviceaccount.name` (bound tokens), else `sub` =
/// `system:serviceaccount:NS:SA` (every ServiceAccount token). Nothing is verified.
pub fn claims(token: &str) -> Claims {
    let payload = token.trim().split('.').nth(1).unwrap_or_default();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .unwrap_or(Value::Null);
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let k8s = &json["kubernetes.io"];
    let sub = json["sub"]
        .as_str()
        .and_then(|s| s.strip_prefix("system:serviceaccount:"))
        .and_then(|s| s.split_once(':'));
    Claims {
        namespace: text(&k8s["namespace"]).or_else(|| sub.map(|(ns, _)| ns.to_string())),
        service_account: text(&k8s["serviceaccount"]["name"])
            .or_else(|| sub.map(|(_, sa)| sa.to_string())),
    }
}

/// The identity for `namespace`/`service_account` where given (empty counts as unset), the
/// token's claims for the rest.
pub fn resolve(
    trust_domain: &str,
    namespace: Option<&str>,
    service_account: Option<&str>,
    token_file: &Path,
) -> Result<SpiffeId, Error> {
    let given = |v: Option<&str>| v.filter(|s| !s.is_empty()).map(str::to_string);
    let (mut ns, mut sa) = (given(namespace), given(service_account));
    if ns.is_none() || sa.is_none() {
        let token = std::fs::read_to_string(token_file).map_err(|error| Error::Token {
            path: token_file.to_path_buf(),
            error,
        })?;
        let from_token = claims(&token);
        ns = ns.or(from_token.namespace);
        sa = sa.or(from_token.service_account);
    }
    let (Some(ns), Some(sa)) = (ns, sa) else {
        return Err(Error::Identity(format!(
            "cannot tell the workload's namespace and service account: give --namespace and \
             --service-account (or POD_NAMESPACE and SERVICE_ACCOUNT), or a ServiceAccount token \
             in {} that names them",
            token_file.display()
        )));
    };
    Ok(SpiffeId::new(trust_domain, &ns, &sa)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64(payload))
    }

    /// A bound (projected) ServiceAccount token carries the `kubernetes.io` claim; a legacy
    /// one only `sub`. Both name the pod's namespace and service account.
    #[test]
    fn claims_come_from_the_kubernetes_claim_or_sub() {
        let bound = jwt(
            r#"{"sub":"system:serviceaccount:other:x","kubernetes.io":{"namespace":"sample",
            "serviceaccount":{"name":"sleep","uid":"1"},"pod":{"name":"p"}}}"#,
        );
        let want = Claims {
            namespace: Some("sample".into()),
            service_account: Some("sleep".into()),
        };
        assert_eq!(claims(&bound), want);
        assert_eq!(
            claims(&jwt(r#"{"sub":"system:serviceaccount:sample:sleep"}"#)),
            want
        );
        assert_eq!(
            claims(&format!("{}\n", jwt(r#"{"sub":"alice"}"#))),
            Claims::default()
        );
        assert_eq!(claims("not a jwt"), Claims::default());
    }

    #[test]
    fn flags_win_and_the_token_fills_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("token");
        std::fs::write(
            &token,
            jwt(r#"{"sub":"system:serviceaccount:sample:sleep"}"#),
        )
        .expect("write");
        let id = resolve("td.local", None, Some("other"), &token).expect("resolved");
        assert_eq!(id.to_string(), "spiffe://td.local/ns/sample/sa/other");
        let missing = dir.path().join("missing");
        let id = resolve("cluster.local", Some("a"), Some("b"), &missing).expect("no token read");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/a/sa/b");
        let err = resolve("cluster.local", Some(""), Some("b"), &missing).expect_err("no ns");
        assert!(matches!(err, Error::Token { .. }), "{err}");
        std::fs::write(&token, "opaque").expect("write");
        let err = resolve("cluster.local", None, None, &token).expect_err("no claims");
        assert!(err.to_string().contains("--namespace"), "{err}");
    }
}
