//! What became of each Istio rule: the VirtualServices parsed for a push with every error
//! (refused rules and unknown subsets), the `/debug/configz` listing, and the reporting of
//! errors (a log line per new error, the `meshfed_config_errors` gauge).

use super::{Reason, RuleError, VirtualService, check_subsets, parse};
use crate::registry::Registry;
use crate::xds::rules::{self, Rule};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// The VirtualServices of one push, and every problem found on the way.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Parsed {
    /// Those that validated, sorted by namespace and name.
    pub virtual_services: Vec<VirtualService>,
    /// Errors of refused rules, and unknown subsets of kept ones.
    pub errors: Vec<RuleError>,
}

/// Parses `objects` (namespace, name, object); subsets are checked against `rules`.
pub fn parse_all(objects: &[(String, String, Value)], rules: &[Rule], domain: &str) -> Parsed {
    let mut out = Parsed::default();
    for (ns, name, obj) in objects {
        match parse(ns, name, obj, domain) {
            Ok(vs) => {
                out.errors.extend(check_subsets(&vs, rules));
                out.virtual_services.push(vs);
            }
            Err(errors) => out.errors.extend(errors),
        }
    }
    out
}

/// One rule's line on `/debug/configz`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConfigStatus {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// `ok`, `errors` (refused, or kept with an unknown subset) or `warnings`.
    pub status: &'static str,
    /// Whether the rule is in effect.
    pub applied: bool,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// Every DestinationRule and VirtualService of the registry with its status.
pub fn configz(registry: &Registry) -> Vec<ConfigStatus> {
    let domain = &registry.config().domain;
    let root = &registry.config().system_namespace;
    let drs = registry.destination_rules();
    let mut out: Vec<ConfigStatus> = drs
        .iter()
        .map(|(ns, name, obj)| {
            let applied = Rule::from_object(ns, name, obj, domain).is_some();
            let errors = if applied {
                Vec::new()
            } else {
                vec!["spec.host: a DestinationRule needs a host".to_string()]
            };
            line("DestinationRule", ns, name, applied, errors, Vec::new())
        })
        .collect();
    let rules = rules::from_objects(&drs, domain, root);
    for (ns, name, obj) in registry.virtual_services() {
        let (applied, errors, warnings) = match parse(&ns, &name, &obj, domain) {
            Ok(vs) => (true, check_subsets(&vs, &rules), vs.warnings),
            Err(errors) => (false, errors, Vec::new()),
        };
        let text = |v: Vec<RuleError>| v.iter().map(detail).collect();
        out.push(line(
            "VirtualService",
            &ns,
            &name,
            applied,
            text(errors),
            text(warnings),
        ));
    }
    out
}

fn detail(e: &RuleError) -> String {
    format!("{}: {} ({})", e.field, e.message, e.reason.as_str())
}

fn line(
    kind: &'static str,
    ns: &str,
    name: &str,
    applied: bool,
    errors: Vec<String>,
    warnings: Vec<String>,
) -> ConfigStatus {
    let status = if !errors.is_empty() {
        "errors"
    } else if !warnings.is_empty() {
        "warnings"
    } else {
        "ok"
    };
    ConfigStatus {
        kind,
        namespace: ns.to_string(),
        name: name.to_string(),
        status,
        applied,
        errors,
        warnings,
    }
}

/// Reports `now` against what was reported before (`before`): a warning line for each new
/// error (so an unchanged bad rule is logged once, not on every push), and the
/// `meshfed_config_errors` gauge by reason.
pub fn report(before: &[RuleError], now: &[RuleError]) {
    for e in now.iter().filter(|e| !before.contains(e)) {
        tracing::warn!(kind = "VirtualService", reason = e.reason.as_str(), "{e}");
    }
    let mut by_reason: BTreeMap<Reason, usize> = BTreeMap::new();
    for e in now {
        *by_reason.entry(e.reason).or_default() += 1;
    }
    crate::metrics::config_errors("VirtualService", &by_reason);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(spec: Value) -> Value {
        json!({"metadata": {}, "spec": spec})
    }

    /// Istio keeps the valid rules when one is refused (each config is validated alone), and
    /// a rule naming a subset no DestinationRule defines is kept and reported.
    #[test]
    fn a_refused_rule_does_not_take_others_with_it() {
        let objects = vec![
            (
                "sample".into(),
                "bad".into(),
                obj(
                    json!({"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a"}}], "timeout": "x"}]}),
                ),
            ),
            (
                "sample".into(),
                "good".into(),
                obj(
                    json!({"hosts": ["b"], "http": [{"route": [{"destination": {"host": "b", "subset": "v1"}}]}]}),
                ),
            ),
        ];
        let parsed = parse_all(&objects, &[], "cluster.local");
        assert_eq!(parsed.virtual_services.len(), 1);
        assert_eq!(parsed.virtual_services[0].name, "good");
        let reasons: Vec<(&str, Reason)> = parsed
            .errors
            .iter()
            .map(|e| (e.name.as_str(), e.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                ("bad", Reason::InvalidDuration),
                ("good", Reason::UnknownSubset)
            ]
        );
    }
}
