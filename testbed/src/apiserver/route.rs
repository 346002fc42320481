//! Turning a request path and query into what it addresses.

use super::error::{ApiError, ApiResult};
use super::resources::{self, RESOURCES, ResourceId};
use std::collections::HashMap;

#[derive(Debug, PartialEq)]
pub enum Target {
    Health,
    Version,
    CoreVersions,
    Groups,
    Group(String),
    ResourceList(String, String),
    OpenApi,
    Resource(ResourcePath),
}

#[derive(Debug, PartialEq)]
pub struct ResourcePath {
    pub res: ResourceId,
    pub version: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The legacy `/watch/` path prefix.
    pub watch_prefix: bool,
}

pub fn route(path: &str) -> ApiResult<Target> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let not_found = || {
        ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    };
    Ok(match segs[..] {
        ["healthz" | "readyz" | "livez", ..] => Target::Health,
        ["version"] => Target::Version,
        ["openapi", ..] => Target::OpenApi,
        ["api"] => Target::CoreVersions,
        ["api", "v1"] => Target::ResourceList(String::new(), "v1".into()),
        ["apis"] => Target::Groups,
        ["apis", group] => Target::Group(group.into()),
        ["apis", group, version] if resources::has_group_version(group, version) => {
            Target::ResourceList(group.into(), version.into())
        }
        ["api", "v1", ref rest @ ..] => {
            Target::Resource(resource_path("", "v1", rest).ok_or_else(not_found)?)
        }
        ["apis", group, version, ref rest @ ..] => {
            Target::Resource(resource_path(group, version, rest).ok_or_else(not_found)?)
        }
        _ => return Err(not_found()),
    })
}

fn resource_path(group: &str, version: &str, rest: &[&str]) -> Option<ResourcePath> {
    let (watch_prefix, rest) = match rest {
        ["watch", tail @ ..] => (true, tail),
        _ => (false, rest),
    };
    let namespaced =
        |plural: &str| resources::find(group, version, plural).filter(|&r| RESOURCES[r].namespaced);
    let (namespace, plural, tail) = match rest {
        ["namespaces", ns, plural, tail @ ..] if namespaced(plural).is_some() => {
            (Some(ns.to_string()), *plural, tail)
        }
        [plural, tail @ ..] => (None, *plural, tail),
        [] => return None,
    };
    let res = resources::find(group, version, plural)?;
    if tail.len() > 2 {
        return None;
    }
    Some(ResourcePath {
        res,
        version: version.to_string(),
        namespace,
        name: tail.first().map(|s| s.to_string()),
        subresource: tail.get(1).map(|s| s.to_string()),
        watch_prefix,
    })
}

pub fn query(q: Option<&str>) -> HashMap<String, String> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::by_kind;

    fn res(path: &str) -> ResourcePath {
        match route(path).unwrap() {
            Target::Resource(r) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn core_namespaced_and_cluster_paths() {
        let r = res("/api/v1/namespaces/sample/services/helloworld/status");
        assert_eq!(
            (
                r.res,
                r.namespace.as_deref(),
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            (
                by_kind("Service"),
                Some("sample"),
                Some("helloworld"),
                Some("status")
            )
        );
        let r = res("/api/v1/namespaces/sample");
        assert_eq!(
            (r.res, r.namespace, r.name.as_deref()),
            (by_kind("Namespace"), None, Some("sample"))
        );
        let r = res("/api/v1/namespaces/sample/status");
        assert_eq!(
            (r.name.as_deref(), r.subresource.as_deref()),
            (Some("sample"), Some("status"))
        );
        let r = res("/api/v1/pods");
        assert_eq!((r.res, r.namespace, r.name), (by_kind("Pod"), None, None));
        let r = res("/api/v1/watch/namespaces/a/pods");
        assert!(r.watch_prefix);
        let r = res("/api/v1/namespaces/a/serviceaccounts/sa/token");
        assert_eq!(r.subresource.as_deref(), Some("token"));
    }

    #[test]
    fn group_paths_and_discovery() {
        let r = res("/apis/networking.istio.io/v1alpha3/namespaces/sample/destinationrules/dr");
        assert_eq!(
            (r.res, r.version.as_str()),
            (by_kind("DestinationRule"), "v1alpha3")
        );
        assert_eq!(
            route("/apis/discovery.k8s.io/v1").unwrap(),
            Target::ResourceList("discovery.k8s.io".into(), "v1".into())
        );
        assert_eq!(route("/apis").unwrap(), Target::Groups);
        assert!(route("/apis/apps/v1/deployments").is_err());
        assert!(route("/api/v1/namespaces/a/pods/b/c/d").is_err());
    }

    #[test]
    fn query_is_percent_decoded() {
        let q = query(Some(
            "labelSelector=app%3Dhello%2Cversion+in+%28v1%29&watch=true",
        ));
        assert_eq!(q["labelSelector"], "app=hello,version in (v1)");
        assert_eq!(q["watch"], "true");
    }
}
