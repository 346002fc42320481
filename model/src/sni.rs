use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("not an Istio outbound name: {0:?}")]
    Format(String),
    #[error("bad port in {0:?}")]
    Port(String),
    #[error("bad hostname in {0:?}")]
    Host(String),
}

/// An Istio outbound cluster: service port, optional DestinationRule subset and FQDN.
/// The same thing travels as SNI (`outbound_.5000_.v1_.helloworld.sample.svc.cluster.local`;
/// without a subset `outbound_.5000_._.helloworld...`) and as the xDS cluster name (`outbound|5000|v1|helloworld...`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterName {
    pub port: u16,
    pub subset: Option<String>,
    pub host: String,
}

impl ClusterName {
    pub fn new(port: u16, subset: Option<&str>, host: &str) -> Self {
        ClusterName {
            port,
            subset: subset.filter(|s| !s.is_empty()).map(str::to_string),
            host: host.to_ascii_lowercase(),
        }
    }

    /// Parses the SNI form; hostnames are case-insensitive and come back lowercased.
    pub fn parse_sni(sni: &str) -> Result<Self, NameError> {
        let bad = || NameError::Format(sni.to_string());
        let rest = sni.strip_prefix("outbound_.").ok_or_else(bad)?;
        let (port, rest) = rest.split_once("_.").ok_or_else(bad)?;
        // No subset is the empty string: `outbound_.5000_._.host`.
        let (subset, host) = match rest.strip_prefix("_.") {
            Some(host) => (None, host),
            None => match rest.split_once("_.").ok_or_else(bad)? {
                ("", _) => return Err(bad()),
                (s, host) => (Some(s), host),
            },
        };
        Self::checked(port, subset, host, sni)
    }

    /// Parses the xDS cluster name form `outbound|port|subset|fqdn`.
    pub fn parse_cluster(name: &str) -> Result<Self, NameError> {
        let mut parts = name.split('|');
        let (Some("outbound"), Some(port), Some(subset), Some(host), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(NameError::Format(name.to_string()));
        };
        Self::checked(port, Some(subset).filter(|s| !s.is_empty()), host, name)
    }

    fn checked(
        port: &str,
        subset: Option<&str>,
        host: &str,
        whole: &str,
    ) -> Result<Self, NameError> {
        let port: u16 = port
            .parse()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| NameError::Port(whole.to_string()))?;
        if !valid_host(host) {
            return Err(NameError::Host(whole.to_string()));
        }
        // Istio validates subset names as DNS labels.
        if subset.is_some_and(|s| !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')) {
            return Err(NameError::Format(whole.to_string()));
        }
        Ok(Self::new(port, subset, host))
    }

    pub fn sni(&self) -> String {
        format!(
            "outbound_.{}_.{}_.{}",
            self.port,
            self.subset.as_deref().unwrap_or(""),
            self.host
        )
    }

    pub fn cluster(&self) -> String {
        format!(
            "outbound|{}|{}|{}",
            self.port,
            self.subset.as_deref().unwrap_or(""),
            self.host
        )
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cluster())
    }
}

/// A DNS name: dot-separated labels of letters, digits and hyphens, 253 bytes at most.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "helloworld.sample.svc.cluster.local";

    #[test]
    fn sni_round_trips_with_and_without_subset() {
        let c = ClusterName::parse_sni("outbound_.5000_.v1_.helloworld.sample.svc.cluster.local")
            .unwrap();
        assert_eq!(c, ClusterName::new(5000, Some("v1"), HOST));
        assert_eq!(
            c.cluster(),
            "outbound|5000|v1|helloworld.sample.svc.cluster.local"
        );
        let c = ClusterName::parse_sni("outbound_.5000_._.HelloWorld.sample.svc.cluster.local")
            .unwrap();
        assert_eq!(c.subset, None);
        assert_eq!(
            c.sni(),
            "outbound_.5000_._.helloworld.sample.svc.cluster.local"
        );
        assert_eq!(ClusterName::parse_cluster(&c.cluster()).unwrap(), c);
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "helloworld.sample.svc.cluster.local",
            "outbound_.5000_.v1_.",
            "outbound_.0_._.a.b",
            "outbound_.70000_._.a.b",
            "outbound_.x_._.a.b",
            "outbound_.5000_.._.a.b",
            "outbound_.5000_.__.a.b",
            "inbound_.5000_._.a.b",
            "outbound_.5000_._.a..b",
            "outbound_.5000_._.a_b.c",
            "outbound_.5000_.v 1_.a.b",
        ] {
            assert!(ClusterName::parse_sni(bad).is_err(), "{bad} accepted");
        }
        assert!(ClusterName::parse_cluster("outbound|5000|v1").is_err());
        assert!(ClusterName::parse_cluster("inbound|5000||a.b").is_err());
    }
}
