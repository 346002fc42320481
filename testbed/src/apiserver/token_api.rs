//! The two token endpoints of kube-apiserver. TokenRequest (`POST
//! .../serviceaccounts/NAME/token`) issues a bound service-account JWT; TokenReview (`POST
//! /apis/authentication.k8s.io/v1/tokenreviews`) says who a token is, for the audiences asked,
//! and is never stored. Both answer 201 Created; any other verb gets 405.

use super::authn::Authenticator;
use super::error::{ApiError, ApiResult};
use super::handlers::Request;
use super::jwt::{BoundClaims, KubernetesClaim, ObjectRef, unix_seconds};
use super::resources::by_kind;
use super::store::{Store, rfc3339};
use hyper::Method;
use serde_json::{Map, Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// TokenRequest's default lifetime, as kube-apiserver's.
pub const DEFAULT_EXPIRATION_SECONDS: u64 = 3600;

/// What a bound token is for: TokenRequest's `spec` with its service account.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenSpec {
    pub namespace: String,
    pub service_account: String,
    /// None asked: the API server's own audiences.
    pub audiences: Vec<String>,
    pub expiration_seconds: u64,
    pub bound_object: Option<BoundObject>,
}

/// `spec.boundObjectRef`: the token dies with this object (a Pod or a Secret).
#[derive(Debug, Clone, PartialEq)]
pub struct BoundObject {
    pub kind: String,
    pub api_version: String,
    pub name: String,
    /// If given, the object must still have it.
    pub uid: String,
}

/// An issued token, its expiry and the audiences it names.
#[derive(Debug, Clone, PartialEq)]
pub struct Issued {
    pub token: String,
    pub expires: SystemTime,
    pub audiences: Vec<String>,
}

/// Answers the token endpoints; None for every other path.
pub fn serve(
    auth: &Authenticator,
    store: &Store,
    method: &Method,
    req: &Request,
) -> ApiResult<Option<Value>> {
    let path = req.path;
    let review = path.res == by_kind("TokenReview");
    let request =
        path.res == by_kind("ServiceAccount") && path.subresource.as_deref() == Some("token");
    if !review && !request {
        return Ok(None);
    }
    if method != Method::POST || (review && path.name.is_some()) {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on this resource; only create is"),
        ));
    }
    if review {
        token_review(auth, store, req).map(Some)
    } else {
        token_request(auth, store, req).map(Some)
    }
}

/// Signs a bound token as kube-apiserver's TokenRequest does: the service account must exist,
/// the bound object too (a Pod must run as that account), and the claims name their uids.
/// Unlike Kubernetes (10 minutes at least) any lifetime from 1 s is accepted, so tests can
/// watch a token expire.
pub fn issue(
    auth: &Authenticator,
    store: &Store,
    spec: &TokenSpec,
    now: SystemTime,
) -> ApiResult<Issued> {
    let ns = spec.namespace.as_str();
    let sa = store.get(by_kind("ServiceAccount"), ns, &spec.service_account)?;
    if spec.expiration_seconds == 0 {
        return Err(ApiError::new(
            422,
            "Invalid",
            "spec.expirationSeconds must be positive",
        ));
    }
    let (pod, secret) = match &spec.bound_object {
        Some(bound) => bind(store, ns, &spec.service_account, bound)?,
        None => (None, None),
    };
    let audiences = if spec.audiences.is_empty() {
        auth.api_audiences().to_vec()
    } else {
        spec.audiences.clone()
    };
    let iat = unix_seconds(now);
    let exp = iat.saturating_add(spec.expiration_seconds);
    let claims = BoundClaims {
        iss: auth.signer().issuer().to_string(),
        sub: format!("system:serviceaccount:{ns}:{}", spec.service_account),
        aud: audiences.clone(),
        exp,
        iat,
        nbf: iat,
        jti: super::store::uid(),
        kubernetes: KubernetesClaim {
            namespace: ns.to_string(),
            serviceaccount: object_ref(&sa),
            pod,
            secret,
        },
    };
    Ok(Issued {
        token: auth.signer().sign(&claims)?,
        expires: UNIX_EPOCH + Duration::from_secs(exp),
        audiences,
    })
}

/// The pod or Secret a token is bound to, checked as kube-apiserver checks it.
fn bind(
    store: &Store,
    ns: &str,
    sa: &str,
    bound: &BoundObject,
) -> ApiResult<(Option<ObjectRef>, Option<ObjectRef>)> {
    let core = bound.api_version.is_empty() || bound.api_version == "v1";
    let obj = match bound.kind.as_str() {
        "Pod" | "Secret" if core => store.get(by_kind(&bound.kind), ns, &bound.name)?,
        _ => {
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {}, Kind={}",
                bound.api_version, bound.kind
            )));
        }
    };
    let found = object_ref(&obj);
    if !bound.uid.is_empty() && bound.uid != found.uid {
        return Err(ApiError::conflict(format!(
            "the UID in the bound object reference ({}) does not match the UID in record ({}). The object might have been deleted and then recreated",
            bound.uid, found.uid
        )));
    }
    if bound.kind == "Secret" {
        return Ok((None, Some(found)));
    }
    // Kubernetes' admission gives every pod an account; "default" when it names none.
    let runs_as = obj["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default");
    if runs_as != sa {
        return Err(ApiError::bad_request(format!(
            "cannot bind token for serviceaccount {sa:?} to pod running with serviceaccount {runs_as:?}"
        )));
    }
    Ok((Some(found), None))
}

fn object_ref(obj: &Value) -> ObjectRef {
    ObjectRef {
        name: obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        uid: obj["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn body(req: &Request) -> ApiResult<Value> {
    if req.body.is_empty() {
        Ok(json!({}))
    } else {
        req.json_body()
    }
}

fn token_request(auth: &Authenticator, store: &Store, req: &Request) -> ApiResult<Value> {
    let body = body(req)?;
    let spec = &body["spec"];
    let expiration_seconds = match &spec["expirationSeconds"] {
        Value::Null => DEFAULT_EXPIRATION_SECONDS,
        v => v.as_u64().ok_or_else(|| {
            ApiError::new(422, "Invalid", "spec.expirationSeconds must be positive")
        })?,
    };
    let bound_object = spec
        .get("boundObjectRef")
        .filter(|b| b.is_object())
        .map(|b| {
            let field = |k: &str| b[k].as_str().unwrap_or_default().to_string();
            BoundObject {
                kind: field("kind"),
                api_version: field("apiVersion"),
                name: field("name"),
                uid: field("uid"),
            }
        });
    let token_spec = TokenSpec {
        namespace: req.ns().to_string(),
        service_account: req.name()?.to_string(),
        audiences: strings(&spec["audiences"]),
        expiration_seconds,
        bound_object,
    };
    let issued = issue(auth, store, &token_spec, req.now)?;
    let mut out_spec =
        json!({"audiences": issued.audiences, "expirationSeconds": expiration_seconds});
    if let Some(binding) = spec.get("boundObjectRef") {
        out_spec["boundObjectRef"] = binding.clone();
    }
    Ok(json!({
        "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": token_spec.service_account, "namespace": token_spec.namespace, "creationTimestamp": rfc3339(req.now)},
        "spec": out_spec,
        "status": {"token": issued.token, "expirationTimestamp": rfc3339(issued.expires)},
    }))
}

/// As kube-apiserver: `authenticated` with the user and the audiences both sides share, or
/// not with the reason in `status.error` (still 201: the review itself succeeded).
fn token_review(auth: &Authenticator, store: &Store, req: &Request) -> ApiResult<Value> {
    let body = req.json_body()?;
    let spec = &body["spec"];
    let token = spec["token"].as_str().unwrap_or_default();
    if token.is_empty() {
        return Err(ApiError::bad_request(
            "token is required for TokenReview in authentication",
        ));
    }
    let status = match auth.authenticate(store, token, &strings(&spec["audiences"]), req.now) {
        Ok(who) => {
            let extra: Map<String, Value> = who
                .user
                .extra
                .into_iter()
                .map(|(k, v)| (k, json!(v)))
                .collect();
            json!({
                "authenticated": true,
                "user": {"username": who.user.username, "uid": who.user.uid, "groups": who.user.groups, "extra": extra},
                "audiences": who.audiences,
            })
        }
        Err(e) => json!({"authenticated": false, "user": {}, "error": e.to_string()}),
    };
    let mut metadata = body["metadata"].clone();
    if !metadata.is_object() {
        metadata = json!({});
    }
    metadata["creationTimestamp"] = Value::Null;
    Ok(json!({
        "kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
        "metadata": metadata, "spec": spec, "status": status,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::authn::fixture;
    use super::super::route::{self, Target};
    use super::*;
    use base64::Engine;
    use std::collections::HashMap;

    /// POSTs (or `method`s) `body` to `path` through [`serve`], as the server does.
    fn call(
        auth: &Authenticator,
        store: &Store,
        method: Method,
        path: &str,
        body: &Value,
    ) -> ApiResult<Option<Value>> {
        let Ok(Target::Resource(path)) = route::route(path) else {
            panic!("{path} is no resource");
        };
        let bytes = serde_json::to_vec(body).unwrap();
        let req = Request {
            path: &path,
            query: &HashMap::new(),
            body: &bytes,
            content_type: "application/json",
            table: false,
            now: SystemTime::now(),
        };
        serve(auth, store, &method, &req)
    }

    const SLEEP_TOKEN: &str = "/api/v1/namespaces/sample/serviceaccounts/sleep/token";
    const REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

    fn sample(store: &Store) {
        let (ns, sa, pod) = (
            by_kind("Namespace"),
            by_kind("ServiceAccount"),
            by_kind("Pod"),
        );
        store
            .create(ns, "", json!({"metadata": {"name": "sample"}}))
            .unwrap();
        store
            .create(sa, "sample", json!({"metadata": {"name": "sleep"}}))
            .unwrap();
        let body =
            json!({"metadata": {"name": "sleep-1"}, "spec": {"serviceAccountName": "sleep"}});
        store.create(pod, "sample", body).unwrap();
        let body = json!({"metadata": {"name": "other-1"}, "spec": {}});
        store.create(pod, "sample", body).unwrap();
    }

    fn uid(store: &Store, kind: &str, name: &str) -> String {
        let obj = store.get(by_kind(kind), "sample", name).unwrap();
        obj["metadata"]["uid"].as_str().unwrap().to_string()
    }

    /// The JWT's payload as sent, not as our own types read it.
    fn payload(token: &str) -> Value {
        let part = token.split('.').nth(1).unwrap();
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap();
        serde_json::from_slice(&raw).unwrap()
    }

    /// TokenRequest's token carries kube-apiserver's bound-token claims: `iss`, `sub`, `aud`
    /// (an array), `exp` = `iat` + expirationSeconds, `nbf`, `jti` and `kubernetes.io` with
    /// the namespace, the account's and the bound pod's names and uids.
    #[test]
    fn token_request_issues_kubernetes_bound_token_claims() {
        let (auth, store) = fixture();
        sample(&store);
        let body = json!({"spec": {"audiences": ["istio-ca"], "expirationSeconds": 1200,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "sleep-1"}}});
        let out = call(&auth, &store, Method::POST, SLEEP_TOKEN, &body)
            .unwrap()
            .unwrap();
        assert_eq!(out["kind"], "TokenRequest");
        assert_eq!(out["spec"]["audiences"], json!(["istio-ca"]));
        let claims = payload(out["status"]["token"].as_str().unwrap());
        let iat = claims["iat"].as_u64().unwrap();
        assert!(iat.abs_diff(unix_seconds(SystemTime::now())) <= 2);
        assert_eq!(claims["exp"].as_u64(), Some(iat + 1200));
        assert_eq!(claims["nbf"].as_u64(), Some(iat));
        assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 32));
        assert_eq!(
            out["status"]["expirationTimestamp"],
            rfc3339(UNIX_EPOCH + Duration::from_secs(iat + 1200))
        );
        let mut rest = claims.clone();
        for k in ["iat", "exp", "nbf", "jti"] {
            rest.as_object_mut().unwrap().remove(k);
        }
        assert_eq!(
            rest,
            json!({
                "iss": "https://kubernetes.default.svc.cluster.local",
                "sub": "system:serviceaccount:sample:sleep",
                "aud": ["istio-ca"],
                "kubernetes.io": {
                    "namespace": "sample",
                    "serviceaccount": {"name": "sleep", "uid": uid(&store, "ServiceAccount", "sleep")},
                    "pod": {"name": "sleep-1", "uid": uid(&store, "Pod", "sleep-1")},
                },
            })
        );
    }

    /// No audience asked: the API server's own; no lifetime asked: an hour.
    #[test]
    fn token_request_defaults() {
        let (auth, store) = fixture();
        sample(&store);
        let out = call(&auth, &store, Method::POST, SLEEP_TOKEN, &json!({}))
            .unwrap()
            .unwrap();
        assert_eq!(out["spec"]["audiences"], json!([auth.api_audiences()[0]]));
        assert_eq!(out["spec"]["expirationSeconds"], 3600);
        let claims = payload(out["status"]["token"].as_str().unwrap());
        assert_eq!(
            claims["aud"],
            json!(["https://kubernetes.default.svc.cluster.local"])
        );
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            3600
        );
        assert!(claims["kubernetes.io"].get("pod").is_none());
    }

    /// kube-apiserver's refusals: a missing account or pod (404), a pod running as another
    /// account or an unsupported kind (400), a stale uid (409), a zero lifetime (422).
    #[test]
    fn token_request_refusals() {
        let (auth, store) = fixture();
        sample(&store);
        let code = |path: &str, spec: Value| {
            call(&auth, &store, Method::POST, path, &json!({"spec": spec}))
                .unwrap_err()
                .code
        };
        let missing = "/api/v1/namespaces/sample/serviceaccounts/missing/token";
        assert_eq!(code(missing, json!({})), 404);
        let pod = |name: &str, uid: &str| json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": name, "uid": uid}});
        assert_eq!(code(SLEEP_TOKEN, pod("gone", "")), 404);
        assert_eq!(code(SLEEP_TOKEN, pod("other-1", "")), 400);
        assert_eq!(code(SLEEP_TOKEN, pod("sleep-1", "not-its-uid")), 409);
        let node =
            json!({"boundObjectRef": {"kind": "Deployment", "apiVersion": "apps/v1", "name": "x"}});
        assert_eq!(code(SLEEP_TOKEN, node), 400);
        assert_eq!(code(SLEEP_TOKEN, json!({"expirationSeconds": 0})), 422);
        assert_eq!(code(SLEEP_TOKEN, json!({"expirationSeconds": -5})), 422);
        let get = call(&auth, &store, Method::GET, SLEEP_TOKEN, &json!({}));
        assert_eq!(get.unwrap_err().code, 405);
    }

    /// TokenReview as kube-apiserver answers it: the user, groups, pod `extra` and shared
    /// audiences; a token for another audience, or none of ours, is `authenticated: false`
    /// with `status.error`; a review without a token is a 400; reviews are not listed.
    #[test]
    fn token_review_answers_as_kube_apiserver() {
        let (auth, store) = fixture();
        sample(&store);
        let body = json!({"spec": {"audiences": ["istio-ca"],
            "boundObjectRef": {"kind": "Pod", "name": "sleep-1"}}});
        let issued = call(&auth, &store, Method::POST, SLEEP_TOKEN, &body)
            .unwrap()
            .unwrap();
        let token = issued["status"]["token"].as_str().unwrap();
        let review = |audiences: Value, token: &str| {
            let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token, "audiences": audiences}});
            call(&auth, &store, Method::POST, REVIEWS, &body)
                .unwrap()
                .unwrap()
        };
        let out = review(json!(["istio-ca"]), token);
        assert_eq!(out["kind"], "TokenReview");
        assert_eq!(out["status"]["authenticated"], true);
        assert_eq!(out["status"]["audiences"], json!(["istio-ca"]));
        let user = &out["status"]["user"];
        assert_eq!(user["username"], "system:serviceaccount:sample:sleep");
        assert_eq!(user["uid"], uid(&store, "ServiceAccount", "sleep"));
        assert_eq!(
            user["groups"],
            json!([
                "system:serviceaccounts",
                "system:serviceaccounts:sample",
                "system:authenticated"
            ])
        );
        assert_eq!(
            user["extra"]["authentication.kubernetes.io/pod-name"],
            json!(["sleep-1"])
        );
        assert_eq!(
            user["extra"]["authentication.kubernetes.io/pod-uid"],
            json!([uid(&store, "Pod", "sleep-1")])
        );

        for (audiences, token) in [
            (json!(["other"]), token),
            (json!([]), token),
            (json!([]), "x.y.z"),
        ] {
            let out = review(audiences, token);
            assert_eq!(out["status"]["authenticated"], false);
            assert!(
                out["status"]["error"]
                    .as_str()
                    .is_some_and(|e| !e.is_empty())
            );
            assert!(out["status"].get("audiences").is_none());
        }
        let empty = call(&auth, &store, Method::POST, REVIEWS, &json!({"spec": {}}));
        assert_eq!(empty.unwrap_err().code, 400);
        let list = call(&auth, &store, Method::GET, REVIEWS, &json!({}));
        assert_eq!(list.unwrap_err().code, 405);
    }
}
