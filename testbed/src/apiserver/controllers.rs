//! What kube-apiserver and kube-controller-manager do that clients rely on: ClusterIP
//! allocation, namespace defaults and cascading deletion, and the service-account token
//! controller. Nothing else runs: there is no kubelet, scheduler or endpoints controller.
//!
//! They are the store's [`Hooks`]: the store runs them inside each write and hands them a
//! [`Txn`], so the objects and tokens they change go through the store's own bookkeeping.

use super::authn::Authenticator;
use super::error::{ApiError, ApiResult};
use super::jwt::{LEGACY_ISSUER, LegacyClaims};
use super::resources::{ResourceId, by_kind};
use super::store::{Hooks, Identity, Key, Txn};
use base64::Engine;
use serde_json::{Value, json};
use std::net::Ipv4Addr;
use std::sync::Arc;

pub const SA_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
pub const SA_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";

/// The controllers of one API server, run by its store inside every write.
pub struct Controllers {
    /// Goes into every service-account token secret as `ca.crt`.
    ca_pem: String,
    /// ClusterIPs come from here: base address and prefix length.
    service_cidr: (u32, u8),
    /// Signs the legacy tokens put into token Secrets.
    auth: Arc<Authenticator>,
}

impl Controllers {
    pub fn new(ca_pem: String, service_cidr: (u32, u8), auth: Arc<Authenticator>) -> Self {
        Controllers {
            ca_pem,
            service_cidr,
            auth,
        }
    }

    /// Fills `token` (a legacy service-account JWT, as kube-controller-manager's token
    /// controller signs one), `ca.crt` and `namespace` if the named service account exists,
    /// and records the token so it dies with its Secret or account.
    fn fill_token_secret(&self, txn: &mut Txn<'_>, ns: &str, secret: &mut Value) {
        let Some(sa) = sa_of_secret(secret).map(str::to_string) else {
            return;
        };
        let Some(account) = txn.get(by_kind("ServiceAccount"), ns, &sa) else {
            return;
        };
        let claims = LegacyClaims {
            iss: LEGACY_ISSUER.into(),
            sub: format!("system:serviceaccount:{ns}:{sa}"),
            namespace: ns.to_string(),
            secret_name: secret["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .into(),
            service_account: sa.clone(),
            service_account_uid: account["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .into(),
        };
        let token = match self.auth.signer().sign(&claims) {
            Ok(token) => token,
            Err(e) => {
                tracing::warn!(error = %e.message, secret = ?secret["metadata"]["name"], "token secret left unfilled");
                return;
            }
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        secret["data"]["token"] = b64.encode(&token).into();
        secret["data"]["ca.crt"] = b64.encode(&self.ca_pem).into();
        secret["data"]["namespace"] = b64.encode(ns).into();
        let identity = Identity {
            user: format!("system:serviceaccount:{ns}:{sa}"),
            groups: Vec::new(),
            service_account: Some((ns.to_string(), sa)),
        };
        txn.add_token(token, identity);
    }
}

impl Hooks for Controllers {
    fn on_create(
        &self,
        txn: &mut Txn<'_>,
        res: ResourceId,
        ns: &str,
        obj: &mut Value,
    ) -> ApiResult<()> {
        if res == by_kind("Service") {
            allocate_cluster_ip(txn, self.service_cidr, obj)?;
        } else if res == by_kind("Namespace") {
            obj["status"]["phase"] = "Active".into();
        } else if res == by_kind("Secret") {
            merge_string_data(obj);
            if is_sa_token_secret(obj) {
                self.fill_token_secret(txn, ns, obj);
            }
        }
        Ok(())
    }

    fn after_create(&self, txn: &mut Txn<'_>, res: ResourceId, ns: &str, obj: &Value) {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        if res == by_kind("Namespace") {
            let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
            let _ = txn.create(by_kind("ServiceAccount"), name, sa);
        } else if res == by_kind("ServiceAccount") {
            // Token secrets created before their service account are filled now.
            let waiting = secrets_of(txn, ns, name, |s| s["data"]["token"].is_null());
            for (_, _, secret) in waiting {
                if let Some(mut next) = txn.get(by_kind("Secret"), ns, &secret) {
                    self.fill_token_secret(txn, ns, &mut next);
                    let _ = txn.replace(by_kind("Secret"), ns, next);
                }
            }
        }
    }

    fn on_update(
        &self,
        txn: &mut Txn<'_>,
        res: ResourceId,
        current: &Value,
        next: &mut Value,
    ) -> ApiResult<()> {
        if res == by_kind("Service") {
            keep_cluster_ip(current, next)?;
        } else if res == by_kind("Secret") {
            merge_string_data(next);
            let ns = current["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default();
            // A token the Secret no longer holds is invalid, as kube's legacy validator
            // compares the presented token with the Secret's.
            if is_sa_token_secret(current)
                && next["data"]["token"] != current["data"]["token"]
                && let Some(old) = decoded(&current["data"]["token"])
            {
                txn.revoke_token(&old);
            }
            if is_sa_token_secret(next) && next["data"]["token"].is_null() {
                self.fill_token_secret(txn, ns, next);
            }
        }
        Ok(())
    }

    fn after_delete(&self, txn: &mut Txn<'_>, res: ResourceId, ns: &str, obj: &Value) {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        if res == by_kind("Namespace") {
            for (r, n, object) in txn.keys(None, name) {
                let _ = txn.delete(r, &n, &object);
            }
        } else if res == by_kind("ServiceAccount") {
            txn.revoke_service_account(ns, name);
            for (r, n, secret) in secrets_of(txn, ns, name, is_sa_token_secret) {
                let _ = txn.delete(r, &n, &secret);
            }
        } else if res == by_kind("Secret")
            && is_sa_token_secret(obj)
            && let Some(token) = decoded(&obj["data"]["token"])
        {
            txn.revoke_token(&token);
        }
    }
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

/// A Service's clusterIP is immutable; an update that leaves it out keeps the old one.
fn keep_cluster_ip(current: &Value, next: &mut Value) -> ApiResult<()> {
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
    Ok(())
}

/// The keys of the secrets in `ns` annotated as service account `sa`'s that pass `filter`.
fn secrets_of(txn: &Txn<'_>, ns: &str, sa: &str, filter: impl Fn(&Value) -> bool) -> Vec<Key> {
    txn.keys(Some(by_kind("Secret")), ns)
        .into_iter()
        .filter(|(r, n, name)| {
            txn.get(*r, n, name)
                .is_some_and(|s| sa_of_secret(&s) == Some(sa) && filter(&s))
        })
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

/// An opaque bearer token (the admin's static one): 32 random bytes, URL-safe base64.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn allocate_cluster_ip(txn: &Txn<'_>, cidr: (u32, u8), svc: &mut Value) -> ApiResult<()> {
    let spec = &mut svc["spec"];
    if spec["type"].is_null() {
        spec["type"] = "ClusterIP".into();
    }
    if spec["type"] == "ExternalName" || spec["clusterIP"] == "None" {
        return Ok(());
    }
    let ip = match spec["clusterIP"].as_str().filter(|s| !s.is_empty()) {
        Some(ip) => ip.to_string(),
        None => free_cluster_ip(txn, cidr)?.to_string(),
    };
    default_ports(spec);
    spec["clusterIP"] = ip.clone().into();
    spec["clusterIPs"] = json!([ip]);
    spec["ipFamilies"] = json!(["IPv4"]);
    spec["ipFamilyPolicy"] = "SingleStack".into();
    if matches!(spec["type"].as_str(), Some("NodePort" | "LoadBalancer")) {
        let mut next = 30000 + txn.object_count() as u64 % 2000;
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
fn free_cluster_ip(txn: &Txn<'_>, (base, prefix): (u32, u8)) -> ApiResult<Ipv4Addr> {
    let size = 1u32 << (32 - u32::from(prefix));
    let used: std::collections::HashSet<Ipv4Addr> = txn
        .all(by_kind("Service"))
        .filter_map(|s| s["spec"]["clusterIP"].as_str()?.parse().ok())
        .collect();
    (2..size - 1)
        .map(|i| Ipv4Addr::from(base + i))
        .find(|ip| !used.contains(ip))
        .ok_or_else(|| ApiError::new(500, "InternalError", "service CIDR exhausted"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::store::Store;

    /// Controllers with CA "CA" and service CIDR 10.96.0.0/16.
    fn store() -> Arc<Store> {
        crate::apiserver::authn::fixture().1
    }

    #[test]
    fn a_token_secret_is_filled_when_its_account_appears_and_revoked_with_it() {
        let store = store();
        let (sa, secret) = (by_kind("ServiceAccount"), by_kind("Secret"));
        let meta = json!({"name": "t", "annotations": {SA_NAME_ANNOTATION: "robot"}});
        let body = json!({"metadata": meta, "type": SA_TOKEN_TYPE});
        store.create(secret, "default", body).unwrap();
        assert!(store.get(secret, "default", "t").unwrap()["data"]["token"].is_null());
        let before = store.resource_version();
        store
            .create(sa, "default", json!({"metadata": {"name": "robot"}}))
            .unwrap();
        let filled = store.get(secret, "default", "t").unwrap();
        // Filled through the store: a new resourceVersion, after the account's.
        assert_eq!(
            filled["metadata"]["resourceVersion"],
            (before + 2).to_string()
        );
        assert_eq!(decoded(&filled["data"]["ca.crt"]).as_deref(), Some("CA"));
        let token = decoded(&filled["data"]["token"]).unwrap();
        let who = store.identity(&token).unwrap();
        assert_eq!(who.user, "system:serviceaccount:default:robot");
        store.delete(sa, "default", "robot").unwrap();
        assert!(store.get(secret, "default", "t").is_err());
        assert!(store.identity(&token).is_none());
    }

    #[test]
    fn deleting_a_namespace_deletes_what_is_in_it() {
        let store = store();
        let (ns, svc) = (by_kind("Namespace"), by_kind("Service"));
        store
            .create(ns, "", json!({"metadata": {"name": "sample"}}))
            .unwrap();
        let body = json!({"metadata": {"name": "hello"}, "spec": {"ports": [{"port": 80}]}});
        let created = store.create(svc, "sample", body).unwrap();
        assert_eq!(created["spec"]["clusterIP"], "10.96.0.2");
        assert!(
            store
                .get(by_kind("ServiceAccount"), "sample", "default")
                .is_ok()
        );
        store.delete(ns, "", "sample").unwrap();
        assert!(store.get(svc, "sample", "hello").is_err());
        assert!(
            store
                .get(by_kind("ServiceAccount"), "sample", "default")
                .is_err()
        );
    }
}
