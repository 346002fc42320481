use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Where an endpoint runs: `region/zone/subzone` (any part may be empty), from the
/// `topology.kubernetes.io/region|zone` and `topology.istio.io/subzone` labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub subzone: String,
}

impl Locality {
    pub fn new(region: &str, zone: &str, subzone: &str) -> Self {
        Locality {
            region: region.into(),
            zone: zone.into(),
            subzone: subzone.into(),
        }
    }
}

impl fmt::Display for Locality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.region, self.zone)?;
        if !self.subzone.is_empty() {
            write!(f, "/{}", self.subzone)?;
        }
        Ok(())
    }
}

impl FromStr for Locality {
    type Err = std::convert::Infallible;
    /// Istio's form: up to three `/`-separated parts; missing parts are empty.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, '/').map(str::trim);
        let mut next = || parts.next().unwrap_or("").to_string();
        Ok(Locality {
            region: next(),
            zone: next(),
            subzone: next(),
        })
    }
}

impl Serialize for Locality {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Locality {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(s.parse().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_partial_and_full_localities() {
        let l: Locality = "region1/zone1".parse().unwrap();
        assert_eq!(l, Locality::new("region1", "zone1", ""));
        assert_eq!(l.to_string(), "region1/zone1");
        let l: Locality = "r/z/s".parse().unwrap();
        assert_eq!(l.to_string(), "r/z/s");
        assert_eq!("".parse::<Locality>().unwrap(), Locality::default());
        assert_eq!("region2".parse::<Locality>().unwrap().region, "region2");
    }
}
