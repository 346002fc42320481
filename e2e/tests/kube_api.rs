//! kube-rs, a client we did not write, against the test bed API server.

mod common;

use common::*;
use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{reflector, watcher as watch_fn};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

fn cm(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": value}})).unwrap()
}

fn name_of(cm: &ConfigMap) -> String {
    cm.metadata.name.clone().unwrap_or_default()
}

#[tokio::test]
async fn watcher_sees_adds_updates_and_deletes_in_order() {
    let server = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
    let mut events = watch_fn(api.clone(), watcher::Config::default()).boxed();
    assert!(matches!(next(&mut events).await.unwrap(), Event::Init));
    assert!(matches!(next(&mut events).await.unwrap(), Event::InitDone));

    api.create(&PostParams::default(), &cm("a", "1"))
        .await
        .unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();
    api.delete("a", &DeleteParams::default()).await.unwrap();
    let seen: Vec<(String, String)> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            match next(&mut events).await.unwrap() {
                Event::Apply(o) => {
                    v.push(("apply".into(), o.data.unwrap_or_default()["v"].clone()))
                }
                Event::Delete(o) => v.push(("delete".into(), name_of(&o))),
                other => panic!("unexpected {other:?}"),
            }
        }
        v
    };
    let want = [("apply", "1"), ("apply", "2"), ("delete", "a")]
        .map(|(a, b)| (a.to_string(), b.to_string()));
    assert_eq!(seen, want);
}

#[tokio::test]
async fn watcher_relists_after_410_and_loses_nothing() {
    let server = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
    for n in ["a", "b"] {
        api.create(&PostParams::default(), &cm(n, "1"))
            .await
            .unwrap();
    }
    let (reader, writer) = reflector::store();
    let mut events = reflector(writer, watch_fn(api.clone(), watcher::Config::default())).boxed();
    while !matches!(next(&mut events).await.unwrap(), Event::InitDone) {}
    assert_eq!(reader.state().len(), 2);

    // Objects change, history is compacted past the watcher's resourceVersion and every
    // watch ends with 410 (whether or not the watcher had reconnected yet): it must relist.
    api.create(&PostParams::default(), &cm("c", "1"))
        .await
        .unwrap();
    server.store().expire_watches();
    api.delete("a", &DeleteParams::default()).await.unwrap();

    let mut relisted = false;
    let want: BTreeSet<String> = ["b", "c"].map(String::from).into();
    loop {
        let ev = next(&mut events).await;
        if matches!(ev, Ok(Event::Init)) {
            relisted = true;
        }
        let names: BTreeSet<String> = reader.state().iter().map(|c| name_of(c)).collect();
        if relisted && names == want && matches!(ev, Ok(Event::Delete(_)) | Ok(Event::InitDone)) {
            break;
        }
    }
    assert_eq!(reader.state().len(), 2, "duplicates in the reflector");
}

#[tokio::test]
async fn resuming_from_a_compacted_resource_version_is_410() {
    let server = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.create(&PostParams::default(), &cm("x", "1"))
        .await
        .unwrap();

    // Before compaction the missed ADDED is replayed...
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    assert!(matches!(next(&mut stream).await.unwrap(), WatchEvent::Added(c) if name_of(&c) == "x"));
    // ...after it the same resourceVersion is gone.
    server.store().compact();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match next(&mut stream).await.unwrap() {
        WatchEvent::Error(e) => assert_eq!(e.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn bookmarks_are_sent_when_asked_for() {
    let server = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match next(&mut stream).await.unwrap() {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected a bookmark, got {other:?}"),
    }
}

#[tokio::test]
async fn label_selector_watch_turns_relabels_into_adds_and_deletes() {
    let server = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
    let mut events = watch_fn(api.clone(), watcher::Config::default().labels("app=hello")).boxed();
    while !matches!(next(&mut events).await.unwrap(), Event::InitDone) {}
    api.create(&PostParams::default(), &cm("other", "1"))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("hello", "1"))
        .await
        .unwrap();
    let label = |v: serde_json::Value| Patch::Merge(json!({"metadata": {"labels": {"app": v}}}));
    api.patch("hello", &PatchParams::default(), &label(json!("hello")))
        .await
        .unwrap();
    match next(&mut events).await.unwrap() {
        Event::Apply(c) => assert_eq!(name_of(&c), "hello"),
        other => panic!("expected hello to enter the selection, got {other:?}"),
    }
    api.patch("hello", &PatchParams::default(), &label(json!(null)))
        .await
        .unwrap();
    match next(&mut events).await.unwrap() {
        Event::Delete(c) => assert_eq!(name_of(&c), "hello"),
        other => panic!("expected hello to leave the selection, got {other:?}"),
    }
}

#[tokio::test]
async fn paginated_list_returns_each_object_once() {
    let server = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"), "1"))
            .await
            .unwrap();
    }
    let (mut names, mut token, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let mut lp = ListParams::default().limit(2);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        names.extend(page.items.iter().map(name_of));
        token = page.metadata.continue_.filter(|c| !c.is_empty());
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4"]);
}

#[tokio::test]
async fn service_account_token_secrets_authenticate_until_the_account_goes() {
    let server = server().await;
    let admin = client(&server).await;
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "default");
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "reader"}})).unwrap(),
    )
    .await
    .unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "reader-token", "annotations": {"kubernetes.io/service-account.name": "reader"}},
        "type": "kubernetes.io/service-account-token"
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let filled = secrets.get("reader-token").await.unwrap().data.unwrap();
    assert_eq!(filled["namespace"].0, b"default");
    assert_eq!(filled["ca.crt"].0, server.ca_pem().as_bytes());
    let token = String::from_utf8(filled["token"].0.clone()).unwrap();

    let as_reader: Api<Namespace> = Api::all(client_with_token(&server, &token).await);
    assert!(as_reader.list(&ListParams::default()).await.is_ok());
    let stranger: Api<Namespace> = Api::all(client_with_token(&server, "not-a-token").await);
    assert_unauthorized(stranger.list(&ListParams::default()).await);

    sas.delete("reader", &DeleteParams::default())
        .await
        .unwrap();
    assert_unauthorized(as_reader.list(&ListParams::default()).await);
    assert!(
        secrets.get_opt("reader-token").await.unwrap().is_none(),
        "token secret outlived its account"
    );
}

fn assert_unauthorized<T: std::fmt::Debug>(r: Result<T, kube::Error>) {
    match r {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 401),
        other => panic!("expected 401, got {other:?}"),
    }
}

#[tokio::test]
async fn token_request_tokens_expire() {
    let server = server().await;
    let sas: Api<ServiceAccount> = Api::namespaced(client(&server).await, "default");
    // No audience: the API server's own, the one a token must name to call it.
    let req = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(600),
            audiences: Vec::new(),
            ..Default::default()
        },
        ..Default::default()
    };
    let resp = sas
        .create_token_request("default", &PostParams::default(), &req)
        .await
        .unwrap();
    let status = resp.status.unwrap();
    let api: Api<ConfigMap> =
        Api::namespaced(client_with_token(&server, &status.token).await, "default");
    assert!(api.list(&ListParams::default()).await.is_ok());
    server.advance_clock(Duration::from_secs(599));
    assert!(
        api.list(&ListParams::default()).await.is_ok(),
        "expired early"
    );
    server.advance_clock(Duration::from_secs(2));
    assert_unauthorized(api.list(&ListParams::default()).await);
    assert!(
        sas.create_token_request("missing", &PostParams::default(), &req)
            .await
            .is_err()
    );
}

fn istio_ca_token_request() -> TokenRequest {
    TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(600),
            audiences: vec!["istio-ca".into()],
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Creates a TokenReview as the federation's CA does (kube-rs, k8s-openapi's type).
async fn review(client: &kube::Client, token: &str, audience: &str) -> TokenReview {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_string()),
            audiences: Some(vec![audience.to_string()]),
        },
        ..Default::default()
    };
    Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
}

/// kube-apiserver's TokenReview through kube-rs, as Istio's CA authenticates a workload: a
/// bound token for `istio-ca` reviews as its service account (uid, groups, the audience),
/// for another audience or after the account is deleted it does not, and it cannot call
/// the API server itself (not its audience).
#[tokio::test]
async fn token_review_through_kube_rs() {
    let server = server().await;
    let admin = client(&server).await;
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    let sleep: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "sleep"}})).unwrap();
    let created = sas.create(&PostParams::default(), &sleep).await.unwrap();
    let token = sas
        .create_token_request("sleep", &PostParams::default(), &istio_ca_token_request())
        .await
        .unwrap()
        .status
        .unwrap()
        .token;

    let status = review(&admin, &token, "istio-ca").await.status.unwrap();
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    assert_eq!(status.audiences, Some(vec!["istio-ca".to_string()]));
    let user = status.user.unwrap();
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:default:sleep")
    );
    assert_eq!(user.uid, created.metadata.uid);
    let groups = user.groups.unwrap_or_default();
    assert!(groups.contains(&"system:serviceaccounts:default".to_string()));

    let other = review(&admin, &token, "other").await.status.unwrap();
    assert_ne!(other.authenticated, Some(true));
    assert!(other.error.is_some_and(|e| e.contains("audiences")));
    let as_sleep: Api<ConfigMap> =
        Api::namespaced(client_with_token(&server, &token).await, "default");
    assert_unauthorized(as_sleep.list(&ListParams::default()).await);

    sas.delete("sleep", &DeleteParams::default()).await.unwrap();
    let gone = review(&admin, &token, "istio-ca").await.status.unwrap();
    assert_ne!(gone.authenticated, Some(true));
    assert!(gone.error.is_some_and(|e| e.contains("has been deleted")));
}

/// Another cluster's API server signs with another key: its tokens do not review here.
#[tokio::test]
async fn token_review_refuses_another_servers_tokens() {
    let (ours, theirs) = (server().await, server().await);
    let token = theirs
        .token(
            "default",
            "default",
            &["istio-ca"],
            Duration::from_secs(600),
        )
        .unwrap();
    let status = review(&client(&ours).await, &token, "istio-ca")
        .await
        .status
        .unwrap();
    assert_ne!(status.authenticated, Some(true));
    let mine = ours
        .token(
            "default",
            "default",
            &["istio-ca"],
            Duration::from_secs(600),
        )
        .unwrap();
    let status = review(&client(&ours).await, &mine, "istio-ca")
        .await
        .status
        .unwrap();
    assert_eq!(status.authenticated, Some(true));
}

#[tokio::test]
async fn status_is_kept_on_create_and_changed_only_through_the_subresource() {
    let server = server().await;
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    let lb = json!({"loadBalancer": {"ingress": [{"ip": "172.31.0.10"}]}});
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "eastwest", "labels": {"topology.istio.io/network": "network1"}},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "tls", "port": 15443}]},
        "status": lb,
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &svc).await.unwrap();
    let spec = created.spec.clone().unwrap();
    assert!(
        spec.cluster_ip.unwrap().starts_with("10.96."),
        "no ClusterIP allocated"
    );
    assert_eq!(spec.ports.unwrap()[0].protocol.as_deref(), Some("TCP"));
    assert_eq!(
        serde_json::to_value(created.status.clone().unwrap()).unwrap(),
        lb
    );

    let wipe = Patch::Merge(json!({"status": null, "metadata": {"labels": {"x": "y"}}}));
    let patched = api
        .patch("eastwest", &PatchParams::default(), &wipe)
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(patched.status.unwrap()).unwrap(),
        lb,
        "main endpoint changed status"
    );

    let moved = json!({"loadBalancer": {"ingress": [{"ip": "172.31.0.11"}]}});
    let patched = api
        .patch_status(
            "eastwest",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": moved})),
        )
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(patched.status.unwrap()).unwrap(),
        moved
    );
    assert_eq!(patched.metadata.labels.unwrap()["x"], "y");
}

#[tokio::test]
async fn update_checks_resource_version_and_bumps_generation() {
    let server = server().await;
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    let svc: Service = serde_json::from_value(
        json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}),
    )
    .unwrap();
    let created = api.create(&PostParams::default(), &svc).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));

    let mut next = created.clone();
    next.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 81;
    let updated = api
        .replace("s", &PostParams::default(), &next)
        .await
        .unwrap();
    assert_eq!(updated.metadata.generation, Some(2));
    assert_eq!(
        updated.spec.as_ref().unwrap().cluster_ip,
        created.spec.as_ref().unwrap().cluster_ip,
        "ClusterIP kept"
    );
    assert_ne!(
        updated.metadata.resource_version,
        created.metadata.resource_version
    );

    // Writing from the stale copy is a conflict, as in Kubernetes.
    match api.replace("s", &PostParams::default(), &next).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 409),
        other => panic!("expected 409, got {other:?}"),
    }
    let mut moved = updated.clone();
    moved.spec.as_mut().unwrap().cluster_ip = Some("10.96.9.9".into());
    match api.replace("s", &PostParams::default(), &moved).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 422),
        other => panic!("expected 422 for a changed ClusterIP, got {other:?}"),
    }
}

#[tokio::test]
async fn secret_string_data_is_stored_as_data() {
    let server = server().await;
    let api: Api<Secret> = Api::namespaced(client(&server).await, "default");
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"cluster2": "kubeconfig"}, "data": {"x": "eQ=="}})).unwrap();
    api.create(&PostParams::default(), &s).await.unwrap();
    let got = api.get("s").await.unwrap();
    assert!(got.string_data.is_none());
    let data = got.data.unwrap();
    assert_eq!(data["cluster2"].0, b"kubeconfig");
    assert_eq!(data["x"].0, b"y");
    api.patch(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"stringData": {"cluster2": "rotated"}})),
    )
    .await
    .unwrap();
    assert_eq!(
        api.get("s").await.unwrap().data.unwrap()["cluster2"].0,
        b"rotated"
    );
}

#[tokio::test]
async fn pagination_across_prefix_namespaces_returns_each_object_once() {
    // "a" sorts before "a-b" as a key but after it as the string "a/..." vs "a-b/...".
    let server = server().await;
    let c = client(&server).await;
    let mut want = Vec::new();
    for ns in ["a", "a-b", "b"] {
        let nss: Api<Namespace> = Api::all(c.clone());
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
        let api: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
        for n in ["x", "z"] {
            api.create(&PostParams::default(), &cm(n, "1"))
                .await
                .unwrap();
            want.push(format!("{ns}/{n}"));
        }
    }
    let api: Api<ConfigMap> = Api::all(c);
    let (mut got, mut token) = (Vec::new(), None::<String>);
    loop {
        let mut lp = ListParams::default().limit(1);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.unwrap();
        got.extend(
            page.items
                .iter()
                .map(|o| format!("{}/{}", o.metadata.namespace.clone().unwrap(), name_of(o))),
        );
        token = page.metadata.continue_.filter(|c| !c.is_empty());
        if token.is_none() {
            break;
        }
    }
    got.sort();
    want.sort();
    assert_eq!(got, want);
}
