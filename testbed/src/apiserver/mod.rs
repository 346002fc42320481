//! A small Kubernetes API server that real clients (kubectl, kube-rs) accept: HTTPS with its
//! own CA, bearer tokens (a static admin token and signed service-account JWTs), discovery,
//! CRUD, patch, watch, TokenRequest, TokenReview and the service-account token controller,
//! all in memory. RBAC objects are stored, never enforced; there is no admission and no
//! controller but the token and namespace ones (see README).

mod authn;
mod controllers;
mod error;
mod handlers;
mod jwt;
mod patch;
mod present;
mod protobuf;
mod resources;
mod route;
mod selector;
mod store;
mod token_api;
mod watch;

pub use error::ApiError;
pub use jwt::DEFAULT_ISSUER;
pub use store::Store;

use crate::Error;
use authn::{Authenticator, UserInfo};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshfed_certs::{CertificateAuthority, KeyAlgorithm, RootOptions};
use route::Target;
use serde_json::Value;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use store::Identity;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

type Body = BoxBody<Bytes, Infallible>;

#[derive(Debug, Clone)]
pub struct ApiServerConfig {
    pub listen: SocketAddr,
    pub cluster_name: String,
    /// ClusterIPs are allocated from here.
    pub service_cidr: (Ipv4Addr, u8),
    /// Extra names for the serving certificate (the listen address is always included).
    pub extra_sans: Vec<String>,
    pub bookmark_interval: Duration,
    /// Events kept for watches to resume from; older resourceVersions get 410 Gone.
    pub event_history: usize,
    /// `iss` of bound service-account tokens, and the API server's own audience
    /// (kube-apiserver's `--service-account-issuer` and default `--api-audiences`).
    pub service_account_issuer: String,
    /// The `networking.istio.io` versions served, newest first (older Istio CRDs serve fewer:
    /// no v1 before Istio 1.22).
    pub istio_versions: Vec<String>,
}

impl ApiServerConfig {
    pub fn new(listen: SocketAddr, cluster_name: &str) -> Self {
        ApiServerConfig {
            listen,
            cluster_name: cluster_name.to_string(),
            service_cidr: (Ipv4Addr::new(10, 96, 0, 0), 16),
            extra_sans: Vec::new(),
            bookmark_interval: Duration::from_secs(15),
            event_history: 10_000,
            service_account_issuer: DEFAULT_ISSUER.to_string(),
            istio_versions: resources::ISTIO.iter().map(|v| v.to_string()).collect(),
        }
    }
}

struct Shared {
    store: Arc<Store>,
    /// Signs service-account tokens and says who a token is.
    auth: Arc<Authenticator>,
    bookmark_interval: Duration,
    /// Seconds added to the wall clock for token times (tests move time forward).
    clock_offset: AtomicU64,
    istio_versions: Vec<String>,
}

impl Shared {
    fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_secs(self.clock_offset.load(Ordering::Relaxed))
    }
}

/// A running API server; dropping it stops it.
pub struct ApiServer {
    addr: SocketAddr,
    cluster_name: String,
    admin_token: String,
    ca_pem: String,
    shared: Arc<Shared>,
    tls: Arc<rustls::ServerConfig>,
    tasks: JoinSet<()>,
}

impl ApiServer {
    pub async fn start(cfg: ApiServerConfig) -> Result<Self, Error> {
        let ca = CertificateAuthority::new_root(&RootOptions {
            org: format!("meshfed testbed {}", cfg.cluster_name),
            days: 365,
            key: KeyAlgorithm::EcdsaP256,
        })?;
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| Error::io(format!("binding {}", cfg.listen), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("local address", e))?;
        let tls = tls_config(&ca, &cfg, addr.ip())?;
        let auth = Authenticator::new(jwt::Signer::generate(&cfg.service_account_issuer)?);
        let controllers = controllers::Controllers::new(
            ca.cert_pem().to_string(),
            (u32::from(cfg.service_cidr.0), cfg.service_cidr.1),
            auth.clone(),
        );
        let store = Store::new(Box::new(controllers), cfg.event_history);
        // The admin's token stays opaque, a static token as kube-apiserver's
        // `--token-auth-file` gives: it is no service account's and never expires.
        let admin_token = controllers::new_token();
        store.add_token(
            admin_token.clone(),
            Identity {
                user: "admin".into(),
                groups: vec!["system:masters".into()],
                service_account: None,
            },
        );
        let shared = Arc::new(Shared {
            store,
            auth,
            bookmark_interval: cfg.bookmark_interval,
            clock_offset: AtomicU64::new(0),
            istio_versions: cfg.istio_versions.clone(),
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(listener, tls.clone(), shared.clone()));
        tracing::info!(%addr, cluster = %cfg.cluster_name, "test bed API server listening");
        Ok(ApiServer {
            addr,
            cluster_name: cfg.cluster_name,
            admin_token,
            ca_pem: ca.cert_pem().to_string(),
            shared,
            tls,
            tasks,
        })
    }

    /// Stops serving (closing every connection and watch) but keeps the objects: an outage.
    pub async fn stop(&mut self) {
        self.tasks.shutdown().await;
    }

    /// Serves again on the same address with the same objects, after [`ApiServer::stop`].
    /// Must run where the address can be bound (the cluster's network namespace).
    pub async fn resume(&mut self) -> Result<(), Error> {
        self.stop().await;
        let listener = TcpListener::bind(self.addr)
            .await
            .map_err(|e| Error::io(format!("binding {}", self.addr), e))?;
        self.tasks
            .spawn(accept_loop(listener, self.tls.clone(), self.shared.clone()));
        Ok(())
    }

    pub fn is_serving(&self) -> bool {
        !self.tasks.is_empty()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Stores an object directly (no HTTP), as if created by a client: for seeding large
    /// test states quickly. `kind` is e.g. "Pod"; cluster-scoped kinds take `namespace` "".
    pub fn insert(
        &self,
        kind: &str,
        namespace: &str,
        object: serde_json::Value,
    ) -> Result<Value, ApiError> {
        let res = resources::by_kind(kind);
        if resources::RESOURCES.get(res).is_none_or(|r| r.create_only) {
            return Err(ApiError::bad_request(format!("unknown kind {kind}")));
        }
        self.shared.store.create(res, namespace, object)
    }

    /// Stores many objects of one kind directly, in one critical section and without watch
    /// events (see [`Store::insert_many`]: open watches end with 410 Gone and relist): for
    /// seeding states of millions of objects. Each object is created as [`ApiServer::insert`]
    /// creates it. Returns how many were stored; stops at the first refused object.
    pub fn insert_many(
        &self,
        kind: &str,
        namespace: &str,
        objects: impl IntoIterator<Item = serde_json::Value>,
    ) -> Result<usize, ApiError> {
        let res = resources::by_kind(kind);
        if resources::RESOURCES.get(res).is_none_or(|r| r.create_only) {
            return Err(ApiError::bad_request(format!("unknown kind {kind}")));
        }
        self.shared.store.insert_many(res, namespace, objects)
    }

    /// Replaces a stored object directly (no HTTP), as an update by a client would; watchers
    /// see MODIFIED. For driving benchmarks without a client's overhead.
    pub fn replace(
        &self,
        kind: &str,
        namespace: &str,
        object: serde_json::Value,
    ) -> Result<Value, ApiError> {
        let res = resources::by_kind(kind);
        if res >= resources::RESOURCES.len() {
            return Err(ApiError::bad_request(format!("unknown kind {kind}")));
        }
        let name = object["metadata"]["name"]
            .as_str()
            .ok_or_else(|| ApiError::bad_request("metadata.name is required"))?
            .to_string();
        self.shared
            .store
            .update(res, namespace, &name, move |_| Ok(object))
    }

    /// The `iss` of this server's bound service-account tokens, also its own audience.
    pub fn issuer(&self) -> &str {
        self.shared.auth.signer().issuer()
    }

    /// A bound token of service account `namespace/service_account` for `audiences` (none:
    /// the API server's own), living `ttl` (whole seconds, rounded up), issued exactly as
    /// TokenRequest issues one and on the server's clock: a JWT signed with this server's
    /// key, which TokenReview accepts until it expires or the account is deleted. For tokens
    /// the test bed hands out without a client, e.g. `istio-ca` tokens in token files.
    pub fn token(
        &self,
        namespace: &str,
        service_account: &str,
        audiences: &[&str],
        ttl: Duration,
    ) -> Result<String, ApiError> {
        self.issue(namespace, service_account, audiences, ttl, None)
    }

    /// A token bound to pod `namespace/pod`, for the account the pod runs as (its
    /// `spec.serviceAccountName`, "default" if none), as kubelet requests one for a projected
    /// `serviceAccountToken` volume: it also dies with the pod, and TokenReview names the pod
    /// in `extra`. Otherwise as [`ApiServer::token`].
    pub fn pod_token(
        &self,
        namespace: &str,
        pod: &str,
        audiences: &[&str],
        ttl: Duration,
    ) -> Result<String, ApiError> {
        let obj = self
            .shared
            .store
            .get(resources::by_kind("Pod"), namespace, pod)?;
        let sa = obj["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default");
        let bound = token_api::BoundObject {
            kind: "Pod".into(),
            api_version: "v1".into(),
            name: pod.to_string(),
            uid: obj["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        };
        self.issue(namespace, sa, audiences, ttl, Some(bound))
    }

    fn issue(
        &self,
        namespace: &str,
        service_account: &str,
        audiences: &[&str],
        ttl: Duration,
        bound_object: Option<token_api::BoundObject>,
    ) -> Result<String, ApiError> {
        let spec = token_api::TokenSpec {
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            expiration_seconds: ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0),
            bound_object,
        };
        let shared = &self.shared;
        token_api::issue(&shared.auth, &shared.store, &spec, shared.now()).map(|i| i.token)
    }

    /// Moves the clock used for token times forward: tokens issued before expire, and tokens
    /// issued after carry the moved time.
    pub fn advance_clock(&self, by: Duration) {
        self.shared
            .clock_offset
            .fetch_add(by.as_secs(), Ordering::Relaxed);
    }

    /// A kubeconfig with one cluster, context and admin user (inline CA and token).
    pub fn kubeconfig(&self) -> String {
        crate::kubeconfig::render(
            &self.cluster_name,
            &self.url(),
            &self.ca_pem,
            &self.cluster_name,
            &self.admin_token,
        )
    }

    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), Error> {
        crate::kubeconfig::write(path, &self.kubeconfig())
    }

    /// Stops accepting and closes every connection, watches included.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }

    /// Serves until the task is cancelled (the CLI waits for a signal instead).
    pub async fn wait(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

fn tls_config(
    ca: &CertificateAuthority,
    cfg: &ApiServerConfig,
    ip: IpAddr,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
        "kubernetes.default.svc".to_string(),
    ];
    if !ip.is_unspecified() {
        names.push(ip.to_string());
    }
    names.extend(cfg.extra_sans.iter().cloned());
    names.dedup();
    let cert = ca.issue_server(&names, Duration::from_secs(365 * 86_400))?;
    use rustls::pki_types::pem::PemObject;
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert.chain_pem().as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
        .map_err(|e| Error::Tls(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| Error::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

async fn accept_loop(listener: TcpListener, tls: Arc<rustls::ServerConfig>, shared: Arc<Shared>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut conns = JoinSet::new();
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let (acceptor, shared) = (acceptor.clone(), shared.clone());
        conns.spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                tracing::debug!(%peer, "TLS handshake failed");
                return;
            };
            let service = hyper::service::service_fn(move |req| handle(req, shared.clone()));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
        // Reap finished connections so the set does not grow without bound.
        while conns.try_join_next().is_some() {}
    }
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<Body>, Infallible> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let response = match serve(req, &shared).await {
        Ok(r) => r,
        Err(e) => json_response(
            StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &e.status(),
        ),
    };
    tracing::debug!(%method, %path, status = response.status().as_u16(), "request");
    Ok(response)
}

fn header<'a>(req: &'a Request<Incoming>, name: &str) -> &'a str {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The caller, for the API server's own audience: a token for another one (`istio-ca`) does
/// not call the API server, as in Kubernetes.
fn authenticate(req: &Request<Incoming>, shared: &Shared) -> Result<UserInfo, ApiError> {
    let token = header(req, "authorization")
        .strip_prefix("Bearer ")
        .map(str::trim)
        .unwrap_or("");
    match shared
        .auth
        .authenticate(&shared.store, token, &[], shared.now())
    {
        Ok(who) => Ok(who.user),
        Err(e) => {
            tracing::debug!(error = %e, "bearer token refused");
            Err(ApiError::unauthorized())
        }
    }
}

async fn serve(req: Request<Incoming>, shared: &Shared) -> Result<Response<Body>, ApiError> {
    let target = route::route(req.uri().path())?;
    if target == Target::Health {
        return Ok(text_response(StatusCode::OK, "ok"));
    }
    let who = authenticate(&req, shared)?;
    tracing::trace!(user = %who.username, "authenticated");
    let served = |group: &str, version: &str| {
        resources::served(group, version, &shared.istio_versions)
            .then_some(())
            .ok_or_else(|| ApiError::not_found("version", version))
    };
    match &target {
        Target::ResourceList(g, v) => served(g, v)?,
        Target::Resource(p) => served(resources::RESOURCES[p.res].group, &p.version)?,
        _ => {}
    }
    let istio = &shared.istio_versions;
    let doc = match target {
        Target::Version => resources::version_doc(),
        Target::CoreVersions => resources::core_versions_doc(),
        Target::Groups => resources::groups_doc(istio),
        Target::Group(g) => resources::single_group_doc(&g, istio)
            .ok_or_else(|| ApiError::not_found("group", &g))?,
        Target::ResourceList(g, v) => resources::resource_list_doc(&g, &v),
        Target::OpenApi => {
            return Err(ApiError::new(
                404,
                "NotFound",
                "OpenAPI is not served by the test bed",
            ));
        }
        Target::Resource(path) => return resource(req, path, shared).await,
        Target::Health => return Ok(text_response(StatusCode::OK, "ok")),
    };
    Ok(json_response(StatusCode::OK, &doc))
}

async fn resource(
    req: Request<Incoming>,
    path: route::ResourcePath,
    shared: &Shared,
) -> Result<Response<Body>, ApiError> {
    let query = route::query(req.uri().query());
    let table = present::wants_table(header(&req, "accept"));
    let content_type = header(&req, "content-type").to_string();
    let method = req.method().clone();
    let watching = path.watch_prefix || query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let mut body = req
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("reading body: {e}")))?
        .to_bytes();
    if content_type.starts_with(protobuf::CONTENT_TYPE) && method != Method::DELETE {
        body = Bytes::from(serde_json::to_vec(&protobuf::to_json(&body)?).unwrap_or_default());
    }
    let hreq = handlers::Request {
        path: &path,
        query: &query,
        body: &body,
        content_type: &content_type,
        table,
        now: shared.now(),
    };
    let store = &shared.store;
    if let Some(doc) = token_api::serve(&shared.auth, store, &method, &hreq)? {
        return Ok(json_response(StatusCode::CREATED, &doc));
    }
    let (status, doc) = match method {
        Method::GET if watching && path.name.is_none() => return watch_response(&hreq, shared),
        Method::GET if path.name.is_none() && !table => {
            let body = handlers::list_text(store, &hreq)?;
            return Ok(bytes_response(StatusCode::OK, body));
        }
        Method::GET if path.name.is_none() => (StatusCode::OK, handlers::list(store, &hreq)?),
        Method::GET => (StatusCode::OK, handlers::get(store, &hreq)?),
        Method::POST => (StatusCode::CREATED, handlers::create(store, &hreq)?),
        Method::PUT => (StatusCode::OK, handlers::update(store, &hreq)?),
        Method::PATCH => (StatusCode::OK, handlers::patch(store, &hreq)?),
        Method::DELETE => (StatusCode::OK, handlers::delete(store, &hreq)?),
        other => {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                format!("{other} is not supported"),
            ));
        }
    };
    Ok(json_response(status, &doc))
}

fn watch_response(req: &handlers::Request, shared: &Shared) -> Result<Response<Body>, ApiError> {
    let q = req.query;
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(1800u64);
    let params = watch::WatchParams {
        res: req.path.res,
        version: req.path.version.clone(),
        namespace: req.path.namespace.clone(),
        selector: req.selector()?,
        from: watch::WatchParams::parse_rv(q.get("resourceVersion"))?,
        send_initial_events: q.get("sendInitialEvents").is_some_and(|v| v == "true"),
        bookmarks: q.get("allowWatchBookmarks").is_some_and(|v| v == "true"),
        timeout: Duration::from_secs(timeout),
        bookmark_interval: shared.bookmark_interval,
        table: req.table,
    };
    let stream =
        watch::start(shared.store.clone(), params).map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let body = BodyExt::boxed(StreamBody::new(stream));
    let content_type = if req.table {
        "application/json;as=Table;v=v1;g=meta.k8s.io"
    } else {
        "application/json"
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", content_type)
        .body(body)
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed())))
}

fn bytes_response(status: StatusCode, json: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(json)).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

fn json_response(status: StatusCode, doc: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(doc).unwrap_or_default();
    let content_type = if doc["kind"] == "Table" {
        "application/json;as=Table;v=v1;g=meta.k8s.io"
    } else {
        "application/json"
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(bytes)).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

fn text_response(status: StatusCode, text: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from_static(text.as_bytes())).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn server() -> ApiServer {
        let cfg = ApiServerConfig::new("127.0.0.1:0".parse().unwrap(), "cluster1");
        ApiServer::start(cfg).await.unwrap()
    }

    fn review(server: &ApiServer, token: &str, audiences: &[&str]) -> Result<UserInfo, String> {
        let shared = &server.shared;
        let audiences: Vec<String> = audiences.iter().map(|a| a.to_string()).collect();
        shared
            .auth
            .authenticate(&shared.store, token, &audiences, shared.now())
            .map(|a| a.user)
            .map_err(|e| e.to_string())
    }

    /// `ApiServer::token` issues what TokenRequest does, and its expiry follows the server's
    /// clock as tests move it (kube-apiserver refuses a token past its `exp`).
    #[tokio::test]
    async fn library_tokens_expire_on_the_moved_clock() {
        let server = server().await;
        let token = server
            .token(
                "default",
                "default",
                &["istio-ca"],
                Duration::from_secs(600),
            )
            .unwrap();
        let who = review(&server, &token, &["istio-ca"]).unwrap();
        assert_eq!(who.username, "system:serviceaccount:default:default");
        server.advance_clock(Duration::from_secs(599));
        assert!(
            review(&server, &token, &["istio-ca"]).is_ok(),
            "expired early"
        );
        server.advance_clock(Duration::from_secs(2));
        assert_eq!(
            review(&server, &token, &["istio-ca"]),
            Err("service account token has expired".into())
        );
        // Issued after the move, on the moved clock: good for its whole life again.
        let fresh = server
            .token("default", "default", &[], Duration::from_millis(1500))
            .unwrap();
        assert!(review(&server, &fresh, &[]).is_ok());
        server.advance_clock(Duration::from_secs(3));
        assert!(review(&server, &fresh, &[]).is_err());
    }

    /// `ApiServer::pod_token` binds to the pod as kubelet's projected tokens are, for the
    /// account the pod runs as; another server's key does not verify it.
    #[tokio::test]
    async fn pod_tokens_name_their_pod_and_account() {
        let (server, other) = (server().await, server().await);
        let pod = serde_json::json!({"metadata": {"name": "p"}, "spec": {}});
        server.insert("Pod", "default", pod).unwrap();
        let token = server
            .pod_token("default", "p", &["istio-ca"], Duration::from_secs(60))
            .unwrap();
        let who = review(&server, &token, &["istio-ca"]).unwrap();
        assert_eq!(who.username, "system:serviceaccount:default:default");
        assert_eq!(who.extra[authn::EXTRA_POD_NAME], ["p"]);
        assert!(
            review(&other, &token, &["istio-ca"])
                .is_err_and(|e| e.starts_with("invalid bearer token"))
        );
        assert!(
            server
                .pod_token("default", "gone", &[], Duration::from_secs(60))
                .is_err()
        );
        assert!(
            server
                .token("default", "nobody", &[], Duration::from_secs(60))
                .is_err()
        );
    }

    /// Every namespace has a `default` ServiceAccount with a uid, the built-in ones too, as
    /// kube-controller-manager's service-account controller makes them.
    #[tokio::test]
    async fn every_namespace_has_a_default_service_account() {
        let server = server().await;
        let ns = serde_json::json!({"metadata": {"name": "sample"}});
        server.insert("Namespace", "", ns).unwrap();
        for ns in [
            "default",
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "sample",
        ] {
            let sa = server
                .store()
                .get(resources::by_kind("ServiceAccount"), ns, "default")
                .unwrap();
            assert!(
                sa["metadata"]["uid"]
                    .as_str()
                    .is_some_and(|u| u.len() == 36),
                "{ns}"
            );
        }
    }
}
