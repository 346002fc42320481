//! Label selectors (equality and set based) and the field selectors the test bed supports.

use super::error::{ApiError, ApiResult};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed `labelSelector` and `fieldSelector` pair; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    labels: Vec<Requirement>,
    fields: Vec<(String, String, bool)>,
}

impl Selector {
    /// A malformed selector is a 400 Bad Request, as in kube-apiserver.
    pub fn parse(label: Option<&str>, field: Option<&str>) -> ApiResult<Self> {
        let labels = match label {
            Some(s) if !s.trim().is_empty() => parse_labels(s)?,
            _ => Vec::new(),
        };
        let mut fields = Vec::new();
        for term in field
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            let (key, value, equal) = if let Some((k, v)) = term.split_once("!=") {
                (k, v, false)
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k, v, true)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector term {term:?}"
                )));
            };
            if !matches!(key.trim(), "metadata.name" | "metadata.namespace") {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {}",
                    key.trim()
                )));
            }
            fields.push((key.trim().to_string(), value.trim().to_string(), equal));
        }
        Ok(Selector { labels, fields })
    }

    /// The empty selector: every object matches without being read.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        let label = |k: &str| labels.get(k).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|r| match r {
            Requirement::Eq(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEq(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|(key, want, equal)| {
                let field = key.strip_prefix("metadata.").unwrap_or(key);
                let have = obj["metadata"][field].as_str().unwrap_or("");
                (have == want) == *equal
            })
    }
}

/// Splits on commas that are not inside parentheses: `a in (x,y),b` is two terms.
fn split_terms(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut terms) = (0, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&s[start..]);
    terms
}

fn parse_labels(s: &str) -> ApiResult<Vec<Requirement>> {
    split_terms(s)
        .into_iter()
        .map(|t| parse_term(t.trim()))
        .collect()
}

fn parse_term(t: &str) -> ApiResult<Requirement> {
    let bad = || ApiError::bad_request(format!("unable to parse requirement: {t:?}"));
    if let Some(key) = t.strip_prefix('!') {
        return valid_key(key.trim())
            .map(|k| Requirement::NotExists(k.into()))
            .ok_or_else(bad);
    }
    for (op, ctor) in [(" notin ", false), (" in ", true)] {
        if let Some((key, set)) = t.split_once(op) {
            let set = set
                .trim()
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(bad)?;
            let values: Vec<String> = set.split(',').map(|v| v.trim().to_string()).collect();
            let key = valid_key(key.trim()).ok_or_else(bad)?.to_string();
            return Ok(if ctor {
                Requirement::In(key, values)
            } else {
                Requirement::NotIn(key, values)
            });
        }
    }
    if let Some((k, v)) = t.split_once("!=") {
        let key = valid_key(k.trim()).ok_or_else(bad)?;
        return Ok(Requirement::NotEq(key.into(), v.trim().into()));
    }
    if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
        let key = valid_key(k.trim()).ok_or_else(bad)?;
        return Ok(Requirement::Eq(key.into(), v.trim().into()));
    }
    valid_key(t)
        .map(|k| Requirement::Exists(k.into()))
        .ok_or_else(bad)
}

fn valid_key(k: &str) -> Option<&str> {
    let ok = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    ok.then_some(k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns1", "labels": labels}})
    }

    fn sel(s: &str) -> Selector {
        Selector::parse(Some(s), None).unwrap()
    }

    #[test]
    fn equality_and_set_based_selectors() {
        let o = obj(json!({"app": "helloworld", "version": "v1"}));
        assert!(sel("app=helloworld").matches(&o));
        assert!(sel("app==helloworld,version=v1").matches(&o));
        assert!(!sel("app=helloworld,version=v2").matches(&o));
        assert!(sel("version in (v1, v2)").matches(&o));
        assert!(!sel("version notin (v1,v2)").matches(&o));
        assert!(sel("version in (v1,v2),app").matches(&o));
        assert!(sel("!tier").matches(&o));
        assert!(!sel("!app").matches(&o));
        assert!(sel("tier!=db").matches(&o));
        assert!(
            sel("topology.istio.io/network")
                .matches(&obj(json!({"topology.istio.io/network": "n"})))
        );
    }

    #[test]
    fn field_selectors_on_name_and_namespace() {
        let o = obj(json!({}));
        let f = |s| Selector::parse(None, Some(s)).unwrap();
        assert!(f("metadata.name=a").matches(&o));
        assert!(f("metadata.namespace=ns1,metadata.name!=b").matches(&o));
        assert!(!f("metadata.namespace!=ns1").matches(&o));
        assert!(Selector::parse(None, Some("spec.nodeName=x")).is_err());
    }

    #[test]
    fn malformed_selectors_are_errors() {
        for bad in ["a in x", "=v", "a b", "!"] {
            assert!(
                Selector::parse(Some(bad), None).is_err(),
                "{bad:?} accepted"
            );
        }
    }
}
