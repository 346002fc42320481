//! Who a bearer token is, by kube-apiserver's rules. Two authenticators, as in a cluster:
//! static tokens (the admin's, like `--token-auth-file`) and service-account JWTs. A bound
//! JWT is good while its signature, times and audiences are and while the service account
//! (and the pod or Secret it is bound to) still exists with the uid it names; a legacy Secret
//! JWT also dies with its Secret. Nothing about bound tokens is stored.

use super::jwt::{BoundClaims, LegacyClaims, ObjectRef, Signer, TokenError, Verified};
use super::resources::by_kind;
use super::store::Store;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

/// `authentication.kubernetes.io/pod-name` and friends: the `extra` kube-apiserver gives a
/// user authenticated by a pod-bound token.
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
pub const EXTRA_CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

/// A user as TokenReview's `status.user` describes one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// An authenticated token: its user and the audiences it was accepted for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub user: UserInfo,
    pub audiences: Vec<String>,
}

/// The server's token authority: its signing key and its own audiences.
pub struct Authenticator {
    signer: Signer,
    /// kube-apiserver's `--api-audiences` (default: the issuer): what a token must be for to
    /// call the API server, and what TokenRequest issues when no audience is asked for.
    api_audiences: Vec<String>,
}

impl Authenticator {
    pub fn new(signer: Signer) -> Arc<Self> {
        let api_audiences = vec![signer.issuer().to_string()];
        Arc::new(Authenticator {
            signer,
            api_audiences,
        })
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    pub fn api_audiences(&self) -> &[String] {
        &self.api_audiences
    }

    /// Who `token` is, for one of `wanted` audiences (none: the API server's own).
    pub fn authenticate(
        &self,
        store: &Store,
        token: &str,
        wanted: &[String],
        now: SystemTime,
    ) -> Result<Authenticated, TokenError> {
        let wanted = if wanted.is_empty() {
            &self.api_audiences
        } else {
            wanted
        };
        match store.identity(token) {
            Some(id) if id.service_account.is_none() => {
                // Static tokens know no audience: kube accepts them for its own ones only.
                let audiences = intersect(&self.api_audiences, wanted);
                if audiences.is_empty() {
                    return Err(audience_error(&self.api_audiences, wanted));
                }
                let mut groups = id.groups;
                groups.push("system:authenticated".into());
                let user = UserInfo {
                    username: id.user,
                    groups,
                    ..UserInfo::default()
                };
                Ok(Authenticated { user, audiences })
            }
            _ => self.service_account(store, token, wanted, now),
        }
    }

    fn service_account(
        &self,
        store: &Store,
        token: &str,
        wanted: &[String],
        now: SystemTime,
    ) -> Result<Authenticated, TokenError> {
        let verified = self.signer.verify(token, now)?;
        // A legacy token has no audience: it is good for the API server's own only.
        let token_audiences = match &verified {
            Verified::Bound(claims) => &claims.aud,
            Verified::Legacy(_) => &self.api_audiences,
        };
        let audiences = intersect(token_audiences, wanted);
        if audiences.is_empty() {
            return Err(audience_error(token_audiences, wanted));
        }
        let user = match &verified {
            Verified::Bound(claims) => bound_user(store, claims)?,
            Verified::Legacy(claims) => legacy_user(store, token, claims)?,
        };
        Ok(Authenticated { user, audiences })
    }
}

fn audience_error(token: &[String], wanted: &[String]) -> TokenError {
    TokenError::Audience {
        token: token.to_vec(),
        wanted: wanted.to_vec(),
    }
}

/// The audiences in both, in `a`'s order.
fn intersect(a: &[String], b: &[String]) -> Vec<String> {
    a.iter().filter(|x| b.contains(x)).cloned().collect()
}

fn bound_user(store: &Store, claims: &BoundClaims) -> Result<UserInfo, TokenError> {
    let k = &claims.kubernetes;
    let ns = &k.namespace;
    let sa_uid = live_uid(store, "ServiceAccount", ns, &k.serviceaccount)?;
    let mut user = service_account_user(ns, &k.serviceaccount.name, sa_uid);
    if let Some(pod) = &k.pod {
        live_uid(store, "Pod", ns, pod)?;
        user.extra
            .insert(EXTRA_POD_NAME.into(), vec![pod.name.clone()]);
        user.extra
            .insert(EXTRA_POD_UID.into(), vec![pod.uid.clone()]);
    }
    if let Some(secret) = &k.secret {
        live_uid(store, "Secret", ns, secret)?;
    }
    user.extra.insert(
        EXTRA_CREDENTIAL_ID.into(),
        vec![format!("JTI={}", claims.jti)],
    );
    Ok(user)
}

/// A legacy token is good while the token controller's record of it stands (its Secret and
/// account exist) and the account is still the one it was issued for.
fn legacy_user(store: &Store, token: &str, claims: &LegacyClaims) -> Result<UserInfo, TokenError> {
    let account = Some((claims.namespace.clone(), claims.service_account.clone()));
    if store
        .identity(token)
        .is_none_or(|id| id.service_account != account)
    {
        return Err(TokenError::Invalidated);
    }
    let sa = ObjectRef {
        name: claims.service_account.clone(),
        uid: claims.service_account_uid.clone(),
    };
    let uid = live_uid(store, "ServiceAccount", &claims.namespace, &sa)?;
    Ok(service_account_user(&claims.namespace, &sa.name, uid))
}

/// The uid of the `kind` object `want` names, if it exists with the uid the token claims.
fn live_uid(store: &Store, kind: &str, ns: &str, want: &ObjectRef) -> Result<String, TokenError> {
    let what = match kind {
        "ServiceAccount" => "service account",
        "Pod" => "pod",
        _ => "secret",
    };
    let obj = store
        .get(by_kind(kind), ns, &want.name)
        .map_err(|_| TokenError::Deleted(format!("{what} {ns}/{}", want.name)))?;
    let have = obj["metadata"]["uid"].as_str().unwrap_or_default();
    if have != want.uid {
        return Err(TokenError::UidMismatch {
            what,
            have: have.to_string(),
            claim: want.uid.clone(),
        });
    }
    Ok(have.to_string())
}

/// `system:serviceaccount:<ns>:<name>` in its groups, as kube-apiserver names it.
pub fn service_account_user(ns: &str, name: &str, uid: String) -> UserInfo {
    UserInfo {
        username: format!("system:serviceaccount:{ns}:{name}"),
        uid,
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ],
        extra: BTreeMap::new(),
    }
}

/// An authenticator and a store whose controllers sign with it, as `ApiServer::start` makes.
#[cfg(test)]
pub(super) fn fixture() -> (Arc<Authenticator>, Arc<Store>) {
    let auth = Authenticator::new(Signer::generate(super::jwt::DEFAULT_ISSUER).unwrap());
    let cidr = (u32::from(std::net::Ipv4Addr::new(10, 96, 0, 0)), 16);
    let controllers = super::controllers::Controllers::new("CA".into(), cidr, auth.clone());
    (auth, Store::new(Box::new(controllers), 100))
}

#[cfg(test)]
mod tests {
    use super::super::token_api::{BoundObject, TokenSpec, issue};
    use super::*;
    use serde_json::{Value, json};
    use std::time::Duration;

    fn spec(ns: &str, sa: &str, audiences: &[&str], seconds: u64) -> TokenSpec {
        TokenSpec {
            namespace: ns.into(),
            service_account: sa.into(),
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            expiration_seconds: seconds,
            bound_object: None,
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn uid_of(store: &Store, kind: &str, ns: &str, name: &str) -> String {
        let obj = store.get(by_kind(kind), ns, name).unwrap();
        obj["metadata"]["uid"].as_str().unwrap().to_string()
    }

    /// A bound token authenticates as `system:serviceaccount:<ns>:<sa>` with the account's
    /// uid, the groups kube-apiserver gives service accounts and a credential id (its jti).
    #[test]
    fn a_bound_token_is_its_service_account() {
        let (auth, store) = fixture();
        let now = SystemTime::now();
        let token = issue(
            &auth,
            &store,
            &spec("default", "default", &["istio-ca"], 600),
            now,
        )
        .unwrap()
        .token;
        let who = auth
            .authenticate(&store, &token, &strings(&["istio-ca"]), now)
            .unwrap();
        assert_eq!(who.audiences, ["istio-ca"]);
        assert_eq!(who.user.username, "system:serviceaccount:default:default");
        assert_eq!(
            who.user.uid,
            uid_of(&store, "ServiceAccount", "default", "default")
        );
        assert_eq!(
            who.user.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:default",
                "system:authenticated"
            ]
        );
        let credential = &who.user.extra[EXTRA_CREDENTIAL_ID];
        assert!(credential[0].starts_with("JTI=") && credential[0].len() > 10);
        assert!(!who.user.extra.contains_key(EXTRA_POD_NAME));
    }

    /// kube-apiserver's audience rule: the token must name one of the audiences asked for
    /// (none asked: the API server's own), and the answer is the ones both name.
    #[test]
    fn audiences_must_meet_and_default_to_the_api_servers() {
        let (auth, store) = fixture();
        let now = SystemTime::now();
        let both = &spec("default", "default", &["istio-ca", "vault"], 600);
        let token = issue(&auth, &store, both, now).unwrap().token;
        let asked = strings(&["other", "vault", "istio-ca"]);
        let who = auth.authenticate(&store, &token, &asked, now).unwrap();
        assert_eq!(who.audiences, ["istio-ca", "vault"]);
        assert_eq!(
            auth.authenticate(&store, &token, &strings(&["other"]), now),
            Err(TokenError::Audience {
                token: strings(&["istio-ca", "vault"]),
                wanted: strings(&["other"]),
            })
        );
        assert!(
            auth.authenticate(&store, &token, &[], now).is_err(),
            "an istio-ca token called the API server"
        );
        let plain = issue(&auth, &store, &spec("default", "default", &[], 600), now).unwrap();
        assert_eq!(plain.audiences, [super::super::jwt::DEFAULT_ISSUER]);
        let who = auth.authenticate(&store, &plain.token, &[], now).unwrap();
        assert_eq!(who.audiences, [super::super::jwt::DEFAULT_ISSUER]);
        assert!(
            auth.authenticate(&store, &plain.token, &strings(&["istio-ca"]), now)
                .is_err()
        );
    }

    /// A bound token's life is its `exp`, on the clock the caller gives (the server's).
    #[test]
    fn a_bound_token_expires() {
        let (auth, store) = fixture();
        let now = SystemTime::now();
        let token = issue(&auth, &store, &spec("default", "default", &[], 600), now)
            .unwrap()
            .token;
        let at = |secs| now + Duration::from_secs(secs);
        assert!(auth.authenticate(&store, &token, &[], at(599)).is_ok());
        assert_eq!(
            auth.authenticate(&store, &token, &[], at(601)),
            Err(TokenError::Expired)
        );
    }

    /// kube-apiserver checks the account still exists with the uid the token names: deleting
    /// it, or deleting and recreating it under the same name, refuses its tokens.
    #[test]
    fn a_deleted_or_recreated_service_account_refuses_its_tokens() {
        let (auth, store) = fixture();
        let now = SystemTime::now();
        let sa = by_kind("ServiceAccount");
        store
            .create(sa, "default", json!({"metadata": {"name": "sleep"}}))
            .unwrap();
        let token = issue(&auth, &store, &spec("default", "sleep", &[], 600), now)
            .unwrap()
            .token;
        store.delete(sa, "default", "sleep").unwrap();
        assert_eq!(
            auth.authenticate(&store, &token, &[], now),
            Err(TokenError::Deleted("service account default/sleep".into()))
        );
        store
            .create(sa, "default", json!({"metadata": {"name": "sleep"}}))
            .unwrap();
        assert!(matches!(
            auth.authenticate(&store, &token, &[], now),
            Err(TokenError::UidMismatch {
                what: "service account",
                ..
            })
        ));
    }

    /// A pod-bound token carries the pod in TokenReview's `extra` and dies with the pod.
    #[test]
    fn a_pod_bound_token_names_its_pod_and_dies_with_it() {
        let (auth, store) = fixture();
        let now = SystemTime::now();
        let pod =
            json!({"metadata": {"name": "sleep-1"}, "spec": {"serviceAccountName": "default"}});
        store.create(by_kind("Pod"), "default", pod).unwrap();
        let mut bound = spec("default", "default", &["istio-ca"], 600);
        bound.bound_object = Some(BoundObject {
            kind: "Pod".into(),
            api_version: "v1".into(),
            name: "sleep-1".into(),
            uid: String::new(),
        });
        let token = issue(&auth, &store, &bound, now).unwrap().token;
        let ca = strings(&["istio-ca"]);
        let who = auth.authenticate(&store, &token, &ca, now).unwrap();
        assert_eq!(who.user.extra[EXTRA_POD_NAME], ["sleep-1"]);
        assert_eq!(
            who.user.extra[EXTRA_POD_UID],
            [uid_of(&store, "Pod", "default", "sleep-1")]
        );
        store.delete(by_kind("Pod"), "default", "sleep-1").unwrap();
        assert_eq!(
            auth.authenticate(&store, &token, &ca, now),
            Err(TokenError::Deleted("pod default/sleep-1".into()))
        );
    }

    /// A token bound to a Secret dies with the Secret, as kube-apiserver checks it.
    #[test]
    fn a_secret_bound_token_dies_with_its_secret() {
        let (auth, store) = fixture();
        let now = SystemTime::now();
        let secret = json!({"metadata": {"name": "s"}, "type": "Opaque"});
        store.create(by_kind("Secret"), "default", secret).unwrap();
        let mut bound = spec("default", "default", &[], 600);
        bound.bound_object = Some(BoundObject {
            kind: "Secret".into(),
            api_version: "v1".into(),
            name: "s".into(),
            uid: uid_of(&store, "Secret", "default", "s"),
        });
        let token = issue(&auth, &store, &bound, now).unwrap().token;
        assert!(auth.authenticate(&store, &token, &[], now).is_ok());
        store.delete(by_kind("Secret"), "default", "s").unwrap();
        assert_eq!(
            auth.authenticate(&store, &token, &[], now),
            Err(TokenError::Deleted("secret default/s".into()))
        );
    }

    /// A legacy Secret token has no audience, so it is good for the API server only, and it
    /// dies when its Secret is deleted or given another token.
    #[test]
    fn legacy_tokens_are_for_the_api_server_and_die_with_their_secret() {
        let (auth, store) = fixture();
        let now = SystemTime::now();
        let secret = by_kind("Secret");
        let annotations = json!({"kubernetes.io/service-account.name": "default"});
        let body = |name: &str| {
            json!({"metadata": {"name": name, "annotations": annotations},
                   "type": "kubernetes.io/service-account-token"})
        };
        let token_of = |name: &str| {
            let s = store.get(secret, "default", name).unwrap();
            let b64 = s["data"]["token"].as_str().unwrap().to_string();
            use base64::Engine;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            String::from_utf8(raw).unwrap()
        };
        store.create(secret, "default", body("a")).unwrap();
        let token = token_of("a");
        let who = auth.authenticate(&store, &token, &[], now).unwrap();
        assert_eq!(who.user.username, "system:serviceaccount:default:default");
        assert!(
            auth.authenticate(&store, &token, &strings(&["istio-ca"]), now)
                .is_err()
        );
        store.delete(secret, "default", "a").unwrap();
        assert_eq!(
            auth.authenticate(&store, &token, &[], now),
            Err(TokenError::Invalidated)
        );
        store.create(secret, "default", body("b")).unwrap();
        let old = token_of("b");
        store
            .update(secret, "default", "b", |s| {
                let mut s = s.clone();
                s["data"]["token"] = Value::Null;
                Ok(s)
            })
            .unwrap();
        assert_eq!(
            auth.authenticate(&store, &old, &[], now),
            Err(TokenError::Invalidated)
        );
        assert!(auth.authenticate(&store, &token_of("b"), &[], now).is_ok());
    }

    /// A static token knows no audience: kube accepts it for the API server's own only.
    #[test]
    fn static_tokens_are_for_the_api_server_only() {
        let (auth, store) = fixture();
        let now = SystemTime::now();
        store.add_token(
            "static".into(),
            super::super::store::Identity {
                user: "admin".into(),
                groups: vec!["system:masters".into()],
                service_account: None,
            },
        );
        let who = auth.authenticate(&store, "static", &[], now).unwrap();
        assert_eq!(who.user.username, "admin");
        assert_eq!(who.user.groups, ["system:masters", "system:authenticated"]);
        assert!(
            auth.authenticate(&store, "static", &strings(&["istio-ca"]), now)
                .is_err()
        );
        assert!(matches!(
            auth.authenticate(&store, "nope", &[], now),
            Err(TokenError::Invalid(_))
        ));
    }
}
