//! The resource types the test bed serves, and the discovery documents kubectl reads.

use serde_json::{Value, json};

/// One stored kind. Several versions (Istio's v1, v1beta1, v1alpha3) share one storage.
#[derive(Debug)]
pub struct ResourceType {
    /// "" for the core group.
    pub group: &'static str,
    pub versions: &'static [&'static str],
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub status_subresource: bool,
    /// Only `create` is served and nothing is stored (TokenReview).
    pub create_only: bool,
}

impl ResourceType {
    pub fn singular(&self) -> String {
        self.kind.to_lowercase()
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// kind used in error messages, as kube-apiserver writes it ("services", "destinationrules.networking.istio.io").
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

const CORE: &[&str] = &["v1"];
pub const ISTIO: &[&str] = &["v1", "v1beta1", "v1alpha3"];
const ISTIO_GROUP: &str = "networking.istio.io";
const RBAC: &str = "rbac.authorization.k8s.io";

macro_rules! rt {
    ($group:expr, $versions:expr, $kind:literal, $plural:literal, $namespaced:literal, [$($short:literal),*], $status:literal) => {
        ResourceType {
            group: $group,
            versions: $versions,
            kind: $kind,
            plural: $plural,
            namespaced: $namespaced,
            short_names: &[$($short),*],
            status_subresource: $status,
            create_only: false,
        }
    };
}

pub static RESOURCES: &[ResourceType] = &[
    rt!("", CORE, "Namespace", "namespaces", false, ["ns"], true),
    rt!("", CORE, "Node", "nodes", false, ["no"], true),
    rt!("", CORE, "Service", "services", true, ["svc"], true),
    rt!("", CORE, "Pod", "pods", true, ["po"], true),
    rt!("", CORE, "Secret", "secrets", true, [], false),
    rt!("", CORE, "ConfigMap", "configmaps", true, ["cm"], false),
    rt!(
        "",
        CORE,
        "ServiceAccount",
        "serviceaccounts",
        true,
        ["sa"],
        false
    ),
    rt!("", CORE, "Endpoints", "endpoints", true, ["ep"], false),
    rt!(
        "discovery.k8s.io",
        CORE,
        "EndpointSlice",
        "endpointslices",
        true,
        [],
        false
    ),
    rt!(RBAC, CORE, "Role", "roles", true, [], false),
    rt!(RBAC, CORE, "RoleBinding", "rolebindings", true, [], false),
    rt!(RBAC, CORE, "ClusterRole", "clusterroles", false, [], false),
    rt!(
        RBAC,
        CORE,
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
        [],
        false
    ),
    rt!(
        ISTIO_GROUP,
        ISTIO,
        "DestinationRule",
        "destinationrules",
        true,
        ["dr"],
        false
    ),
    rt!(
        ISTIO_GROUP,
        ISTIO,
        "VirtualService",
        "virtualservices",
        true,
        ["vs"],
        false
    ),
    rt!(
        ISTIO_GROUP,
        ISTIO,
        "ServiceEntry",
        "serviceentries",
        true,
        ["se"],
        false
    ),
    rt!(
        ISTIO_GROUP,
        ISTIO,
        "Gateway",
        "gateways",
        true,
        ["gw"],
        false
    ),
    ResourceType {
        group: "authentication.k8s.io",
        versions: CORE,
        kind: "TokenReview",
        plural: "tokenreviews",
        namespaced: false,
        short_names: &[],
        status_subresource: false,
        create_only: true,
    },
];

/// Index into [`RESOURCES`]: cheap to copy, used as part of storage keys.
pub type ResourceId = usize;

pub fn find(group: &str, version: &str, plural: &str) -> Option<ResourceId> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.plural == plural && r.versions.contains(&version))
}

pub fn by_kind(kind: &str) -> ResourceId {
    RESOURCES
        .iter()
        .position(|r| r.kind == kind)
        .unwrap_or(usize::MAX)
}

fn groups() -> Vec<&'static str> {
    let mut groups: Vec<&str> = RESOURCES
        .iter()
        .map(|r| r.group)
        .filter(|g| !g.is_empty())
        .collect();
    groups.dedup();
    groups
}

fn group_versions(group: &str) -> &'static [&'static str] {
    RESOURCES
        .iter()
        .find(|r| r.group == group)
        .map(|r| r.versions)
        .unwrap_or(&[])
}

pub fn has_group_version(group: &str, version: &str) -> bool {
    group_versions(group).contains(&version)
}

pub fn version_doc() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-meshfed-testbed",
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "n/a", "compiler": "rustc", "platform": "linux/amd64"
    })
}

pub fn core_versions_doc() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
}

/// Whether `group/version` is served: every known one, but only `istio` of the Istio group.
pub fn served(group: &str, version: &str, istio: &[String]) -> bool {
    group != ISTIO_GROUP || istio.iter().any(|v| v == version)
}

/// A group's discovery document, or None when it serves no version.
fn group_doc(group: &str, istio: &[String]) -> Option<Value> {
    let versions: Vec<Value> = group_versions(group)
        .iter()
        .filter(|v| served(group, v, istio))
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first()?.clone();
    Some(json!({"name": group, "versions": versions, "preferredVersion": preferred}))
}

pub fn groups_doc(istio: &[String]) -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .filter_map(|g| group_doc(g, istio))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn single_group_doc(group: &str, istio: &[String]) -> Option<Value> {
    if !groups().contains(&group) {
        return None;
    }
    let mut doc = group_doc(group, istio)?;
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

pub fn resource_list_doc(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.versions.contains(&version))
    {
        let verbs = if r.create_only {
            vec!["create"]
        } else {
            vec![
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
        };
        resources.push(json!({
            "name": r.plural, "singularName": r.singular(), "namespaced": r.namespaced,
            "kind": r.kind, "verbs": verbs, "shortNames": r.short_names,
        }));
        if r.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced,
                "kind": r.kind, "verbs": ["get", "patch", "update"],
            }));
        }
        if r.kind == "ServiceAccount" {
            resources.push(json!({
                "name": "serviceaccounts/token", "singularName": "", "namespaced": true,
                "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest", "verbs": ["create"],
            }));
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": if group.is_empty() { version.to_string() } else { format!("{group}/{version}") }, "resources": resources})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Istio's networking CRDs serve VirtualService (short name `vs`) in v1, v1beta1 and
    /// v1alpha3 from one storage, as DestinationRule; discovery lists it in each version.
    #[test]
    fn virtual_services_are_served_in_every_istio_version() {
        let v1 = find(ISTIO_GROUP, "v1", "virtualservices");
        assert!(v1.is_some());
        for version in ["v1beta1", "v1alpha3"] {
            assert_eq!(find(ISTIO_GROUP, version, "virtualservices"), v1);
            let doc = resource_list_doc(ISTIO_GROUP, version);
            let vs = doc["resources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == "virtualservices")
                .unwrap();
            assert_eq!(vs["kind"], "VirtualService");
            assert_eq!(vs["shortNames"], json!(["vs"]));
        }
        assert_ne!(v1, find(ISTIO_GROUP, "v1", "destinationrules"));
    }

    #[test]
    fn istio_kinds_resolve_in_every_version_to_one_storage() {
        let v1 = find("networking.istio.io", "v1", "destinationrules");
        assert!(v1.is_some());
        assert_eq!(
            find("networking.istio.io", "v1alpha3", "destinationrules"),
            v1
        );
        assert_eq!(
            find("networking.istio.io", "v1beta1", "destinationrules"),
            v1
        );
        assert_eq!(find("networking.istio.io", "v2", "destinationrules"), None);
        assert_eq!(find("", "v1", "destinationrules"), None);
    }

    /// kube-apiserver lists only the versions a CRD serves: an Istio older than 1.22 serves
    /// no networking.istio.io/v1, and a group serving nothing is not listed.
    #[test]
    fn an_older_istio_serves_only_its_versions() {
        let old = ["v1beta1".to_string(), "v1alpha3".to_string()];
        let doc = single_group_doc(ISTIO_GROUP, &old).unwrap();
        assert_eq!(doc["preferredVersion"]["version"], "v1beta1");
        assert_eq!(doc["versions"].as_array().unwrap().len(), 2);
        assert!(!served(ISTIO_GROUP, "v1", &old));
        assert!(served("", "v1", &old));
        let names = |doc: Value| doc["groups"].to_string();
        assert!(names(groups_doc(&old)).contains(ISTIO_GROUP));
        assert!(!names(groups_doc(&[])).contains(ISTIO_GROUP));
    }

    #[test]
    fn discovery_lists_status_and_token_subresources() {
        let doc = resource_list_doc("", "v1");
        let names: Vec<&str> = doc["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        for want in [
            "services",
            "services/status",
            "pods/status",
            "serviceaccounts/token",
            "endpoints",
            "namespaces",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        let groups = groups_doc(&ISTIO.iter().map(|v| v.to_string()).collect::<Vec<_>>());
        let names: Vec<&str> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "discovery.k8s.io",
                "rbac.authorization.k8s.io",
                "networking.istio.io",
                "authentication.k8s.io"
            ]
        );
    }

    /// kube-apiserver lists `tokenreviews` in authentication.k8s.io/v1 with the one verb it
    /// serves, so kubectl and kube-rs can find it.
    #[test]
    fn discovery_lists_tokenreviews_as_create_only() {
        assert!(has_group_version("authentication.k8s.io", "v1"));
        let doc = resource_list_doc("authentication.k8s.io", "v1");
        assert_eq!(doc["groupVersion"], "authentication.k8s.io/v1");
        let resources = doc["resources"].as_array().unwrap();
        assert_eq!(resources.len(), 1);
        let r = &resources[0];
        assert_eq!(
            (&r["name"], &r["kind"], &r["namespaced"], &r["verbs"]),
            (
                &json!("tokenreviews"),
                &json!("TokenReview"),
                &json!(false),
                &json!(["create"])
            )
        );
    }
}
