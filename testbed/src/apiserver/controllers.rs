//! What kube-apiserver and kube-controller-manager do that clients rely on: ClusterIP
//! allocation, namespace defaults and cascading deletion, and the service-account token
//! controller. Nothing else runs: there is no kubelet, scheduler or endpoints controller.

use super::error::{ApiError, ApiResult};
use super::resources::{ResourceId, by_kind};
use super::store::{Identity, Inner, Key};
use base64::Engine;
use serde_json::{Value, json};
use std::net::Ipv4Addr;

pub const SA_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
pub const SA_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";

pub fn on_create(inner: &mut Inner, res: ResourceId, ns: &str, obj: &mut Value) -> ApiResult<()> {
    if res == by_kind("Service") {
        allocate_cluster_ip(inner, obj)?;
    } else if res == by_kind("Namespace") {
        obj["status"]["phase"] = "Active".into();
    } else if res == by_kind("Secret") {
        merge_string_data(obj);
        if is_sa_token_secret(obj) {
            fill_token_secret(inner, ns, obj);
        }
    }
    Ok(())
}

/// `stringData` is write-only: kube-apiserver merges it into `data` (base64) and drops it.
fn merge_string_data(secret: &mut Value) {
    let Some(Value::Object(plain)) = secret.as_object_mut().and_then(|o| o.remove("stringData"))
    else {
        return;
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    for (k, v) in plain {
        secret["data"][k] = b64.encode(v.as_str().unwrap_or_default()).into();
    }
}

pub fn after_create(inner: &mut Inner, res: ResourceId, ns: &str, obj: &Value) {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if res == by_kind("Namespace") {
        let sa =
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
        let _ = inner.create(by_kind("ServiceAccount"), &name, sa);
    } else if res == by_kind("ServiceAccount") {
        // Token secrets created before their service account are filled now.
        let secrets: Vec<Key> = namespaced_keys(inner, by_kind("Secret"), ns)
            .into_iter()
            .filter(|k| {
                inner.objects.get(k).is_some_and(|s| {
                    sa_of_secret(s) == Some(name.as_str()) && s["data"]["token"].is_null()
                })
            })
            .collect();
        for key in secrets {
            if let Some(current) = inner.objects.get(&key).cloned() {
                let mut next = current.clone();
                fill_token_secret(inner, ns, &mut next);
                let _ = inner.replace(key, current, next);
            }
        }
    }
}

pub fn on_update(
    inner: &mut Inner,
    res: ResourceId,
    current: &Value,
    next: &mut Value,
) -> ApiResult<()> {
    if res == by_kind("Service") {
        let old_ip = &current["spec"]["clusterIP"];
        match next["spec"].get("clusterIP") {
            None | Some(Value::Null) => {
                next["spec"]["clusterIP"] = old_ip.clone();
                next["spec"]["clusterIPs"] = current["spec"]["clusterIPs"].clone();
            }
            Some(ip) if ip != old_ip => {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    "spec.clusterIP: Invalid value: field is immutable",
                ));
            }
            _ => {}
        }
    } else if res == by_kind("Secret") {
        merge_string_data(next);
        let ns = current["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if is_sa_token_secret(next) && next["data"]["token"].is_null() {
            fill_token_secret(inner, &ns, next);
        }
    }
    Ok(())
}

pub fn after_delete(inner: &mut Inner, res: ResourceId, ns: &str, obj: &Value) {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if res == by_kind("Namespace") {
        let doomed: Vec<Key> = inner
            .objects
            .keys()
            .filter(|(_, n, _)| *n == name)
            .cloned()
            .collect();
        for key in doomed {
            let _ = inner.delete(&key);
        }
    } else if res == by_kind("ServiceAccount") {
        inner
            .tokens
            .retain(|_, id| id.service_account.as_ref() != Some(&(ns.to_string(), name.clone())));
        let secrets: Vec<Key> = namespaced_keys(inner, by_kind("Secret"), ns)
            .into_iter()
            .filter(|k| {
                inner.objects.get(k).is_some_and(|s| {
                    is_sa_token_secret(s) && sa_of_secret(s) == Some(name.as_str())
                })
            })
            .collect();
        for key in secrets {
            let _ = inner.delete(&key);
        }
    } else if res == by_kind("Secret")
        && is_sa_token_secret(obj)
        && let Some(token) = decoded(&obj["data"]["token"])
    {
        inner.tokens.remove(&token);
    }
}

fn namespaced_keys(inner: &Inner, res: ResourceId, ns: &str) -> Vec<Key> {
    inner
        .objects
        .keys()
        .filter(|(r, n, _)| *r == res && n == ns)
        .cloned()
        .collect()
}

fn is_sa_token_secret(obj: &Value) -> bool {
    obj["type"].as_str() == Some(SA_TOKEN_TYPE)
}

fn sa_of_secret(obj: &Value) -> Option<&str> {
    obj["metadata"]["annotations"][SA_NAME_ANNOTATION].as_str()
}

fn decoded(v: &Value) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_str()?)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// Fills `token`, `ca.crt` and `namespace` if the named service account exists.
fn fill_token_secret(inner: &mut Inner, ns: &str, secret: &mut Value) {
    let Some(sa) = sa_of_secret(secret).map(str::to_string) else {
        return;
    };
    if !inner
        .objects
        .contains_key(&(by_kind("ServiceAccount"), ns.to_string(), sa.clone()))
    {
        return;
    }
    let token = new_token();
    let b64 = base64::engine::general_purpose::STANDARD;
    secret["data"]["token"] = b64.encode(&token).into();
    secret["data"]["ca.crt"] = b64.encode(&inner.ca_pem).into();
    secret["data"]["namespace"] = b64.encode(ns).into();
    let identity = Identity {
        user: format!("system:serviceaccount:{ns}:{sa}"),
        expires: None,
        service_account: Some((ns.to_string(), sa)),
    };
    inner.tokens.insert(token, identity);
}

/// An opaque bearer token: 32 random bytes, URL-safe base64.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn allocate_cluster_ip(inner: &Inner, svc: &mut Value) -> ApiResult<()> {
    let spec = &mut svc["spec"];
    if spec["type"].is_null() {
        spec["type"] = "ClusterIP".into();
    }
    if spec["type"] == "ExternalName" || spec["clusterIP"] == "None" {
        return Ok(());
    }
    let ip = match spec["clusterIP"].as_str().filter(|s| !s.is_empty()) {
        Some(ip) => ip.to_string(),
        None => free_cluster_ip(inner)?.to_string(),
    };
    default_ports(spec);
    spec["clusterIP"] = ip.clone().into();
    spec["clusterIPs"] = json!([ip]);
    spec["ipFamilies"] = json!(["IPv4"]);
    spec["ipFamilyPolicy"] = "SingleStack".into();
    if matches!(spec["type"].as_str(), Some("NodePort" | "LoadBalancer")) {
        let mut next = 30000 + inner.objects.len() as u64 % 2000;
        if let Some(ports) = spec["ports"].as_array_mut() {
            for port in ports.iter_mut().filter(|p| p["nodePort"].is_null()) {
                port["nodePort"] = next.into();
                next += 1;
            }
        }
    }
    Ok(())
}

/// As kube-apiserver defaults them: protocol TCP, targetPort = port.
fn default_ports(spec: &mut Value) {
    if spec["sessionAffinity"].is_null() {
        spec["sessionAffinity"] = "None".into();
    }
    for port in spec["ports"].as_array_mut().into_iter().flatten() {
        if port["protocol"].is_null() {
            port["protocol"] = "TCP".into();
        }
        if port["targetPort"].is_null() {
            port["targetPort"] = port["port"].clone();
        }
    }
}

/// The lowest free address of the service CIDR, skipping .0 and .1 (the apiserver's own).
fn free_cluster_ip(inner: &Inner) -> ApiResult<Ipv4Addr> {
    let (base, prefix) = inner.service_cidr;
    let size = 1u32 << (32 - u32::from(prefix));
    let used: std::collections::HashSet<&str> = inner
        .objects
        .iter()
        .filter(|((r, _, _), _)| *r == by_kind("Service"))
        .filter_map(|(_, s)| s["spec"]["clusterIP"].as_str())
        .collect();
    (2..size - 1)
        .map(|i| Ipv4Addr::from(base + i))
        .find(|ip| !used.contains(ip.to_string().as_str()))
        .ok_or_else(|| ApiError::new(500, "InternalError", "service CIDR exhausted"))
}
