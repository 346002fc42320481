use crate::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// A mesh workload identity, `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`,
/// the URI SAN Istio puts in workload certificates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl SpiffeId {
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Result<Self> {
        format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}").parse()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = Error;

    fn from_str(id: &str) -> Result<Self> {
        let err = |reason| Error::Spiffe {
            id: id.to_string(),
            reason,
        };
        let rest = id
            .strip_prefix("spiffe://")
            .ok_or_else(|| err("must start with spiffe://"))?;
        let (td, path) = rest
            .split_once('/')
            .ok_or_else(|| err("expected spiffe://TD/ns/NS/sa/SA"))?;
        // The SPIFFE spec allows only lowercase letters, digits, '.', '-' and '_' here.
        if td.is_empty()
            || !td
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        {
            return Err(err("trust domain must be non-empty [a-z0-9._-]"));
        }
        let parts: Vec<&str> = path.split('/').collect();
        let [ns_key, ns, sa_key, sa] = parts[..] else {
            return Err(err("expected spiffe://TD/ns/NS/sa/SA"));
        };
        if ns_key != "ns" || sa_key != "sa" {
            return Err(err("expected spiffe://TD/ns/NS/sa/SA"));
        }
        for seg in [ns, sa] {
            let valid_chars = seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
            if seg.is_empty() || seg == "." || seg == ".." || !valid_chars {
                return Err(err("namespace and service account must be [A-Za-z0-9._-]"));
            }
        }
        Ok(SpiffeId {
            trust_domain: td.to_string(),
            namespace: ns.to_string(),
            service_account: sa.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_istio_identity() {
        let id: SpiffeId = "spiffe://cluster.local/ns/sample/sa/sleep".parse().unwrap();
        assert_eq!(id.trust_domain, "cluster.local");
        assert_eq!(id.namespace, "sample");
        assert_eq!(id.service_account, "sleep");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/sample/sa/sleep");
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "http://cluster.local/ns/a/sa/b",
            "spiffe://",
            "spiffe://cluster.local",
            "spiffe://Cluster.Local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a/sa/",
            "spiffe://cluster.local/ns/a/sa/b/extra",
            "spiffe://cluster.local/sa/b/ns/a",
            "spiffe://cluster.local/ns/../sa/b",
            "spiffe://cluster.local/ns/a b/sa/c",
            "spiffe://td/ns/a/sa/b?x=1",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad} accepted");
        }
    }
}
