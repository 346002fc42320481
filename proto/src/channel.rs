//! How meshfed's own gRPC clients reach the federation: its xDS clients (the gateway, the DNS
//! proxy, the test bed sidecar) in plaintext (istiod's port 15010) or as Istio's gateways and
//! agents reach istiod's secure port 15012, and the agent's CA client as Istio's agent reaches
//! istiod's CA: TLS checked against the mesh root and a server name, ALPN `h2`, and the pod's
//! ServiceAccount token as `authorization: Bearer <token>` gRPC metadata, read from its file at
//! every connect (kubelet rotates projected tokens).
//!
//! tonic is built without its TLS features: [`tls`] does the handshake in a connector
//! (tokio-rustls, ring). [`XdsServer::connect`] gives a connected [`Channel`] and the
//! [`Bearer`] interceptor to put in front of it. The types are named for xDS, their first
//! use; nothing in them is xDS's.

mod bearer;
mod flags;
mod tls;

pub use bearer::Bearer;
pub use flags::XdsFlags;

use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// Where Istio mounts the mesh root for its proxies: the root `--xds-ca-root` defaults to
/// when the xDS address is `https://`.
pub const DEFAULT_CA_ROOT: &str = "/var/run/secrets/istio/root-cert.pem";

/// A TCP connect and TLS handshake that take longer than this fail (and are retried);
/// [`XdsServer::connect_within`] takes another bound.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A gRPC server of the federation (its xDS server, or its CA) and how to reach it.
#[derive(Debug, Clone)]
pub struct XdsServer {
    /// `http://host:port`, `https://host:port` or `host:port`. With [`tls`](Self::tls) the
    /// scheme is not read: TLS is on.
    pub address: String,
    /// TLS settings; None is plaintext.
    pub tls: Option<ClientTls>,
    /// A ServiceAccount token file, read at every connect and sent as `Bearer` metadata.
    /// Only ever sent over TLS: with no `tls` a connect fails instead.
    pub token_file: Option<PathBuf>,
}

/// What the server's certificate is checked against.
#[derive(Clone)]
pub struct ClientTls {
    /// PEM root certificate(s) the server's certificate must chain to.
    pub roots_pem: Vec<u8>,
    /// The name checked in the server's certificate (an IP address is checked as an IP
    /// SAN); None is the host of the address.
    pub server_name: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("roots_pem", &format_args!("{} bytes", self.roots_pem.len()))
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// Why a server cannot be reached: at start a configuration mistake (one line naming the
/// xDS flag; callers with flags of their own map the variants), at a connect what failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--xds {0:?}: not an address (host:port, http://host:port or https://host:port)")]
    Address(String),
    #[error("--xds {0:?}: TLS needs a port (istiod's secure port is 15012)")]
    NoPort(String),
    #[error("--xds {0:?}: https:// needs TLS settings (a CA root)")]
    HttpsWithoutTls(String),
    #[error("--xds-server-name {0:?}: not a DNS name or an IP address")]
    ServerName(String),
    #[error("--xds-server-name is only checked over TLS: give --xds-ca-root or an https:// --xds")]
    ServerNameWithoutTls,
    #[error("--xds-ca-root {path}: {reason}")]
    Roots { path: String, reason: String },
    #[error(
        "--xds-token-file: a token is only ever sent over TLS: give --xds-ca-root or an https:// --xds"
    )]
    TokenWithoutTls,
    #[error("--xds-token-file {path}: {reason}")]
    Token { path: String, reason: String },
    #[error("{0}")]
    Connect(String),
}

impl XdsServer {
    /// A plaintext server at `url` (`http://host:port`), as the clients always took it.
    pub fn plaintext(url: impl Into<String>) -> XdsServer {
        XdsServer {
            address: url.into(),
            tls: None,
            token_file: None,
        }
    }

    /// Connects: the token is read first (no handshake is wasted on a missing token), then
    /// TCP, then TLS when configured, within [`CONNECT_TIMEOUT`]. Put the [`Bearer`] in
    /// front of the channel (`Client::with_interceptor`).
    pub async fn connect(&self) -> Result<(Channel, Bearer), Error> {
        self.connect_within(CONNECT_TIMEOUT).await
    }

    /// [`connect`](Self::connect) with the TCP connect and TLS handshake bounded by
    /// `timeout`, for callers whose requests have a bound of their own.
    pub async fn connect_within(&self, timeout: Duration) -> Result<(Channel, Bearer), Error> {
        let bearer = match (&self.token_file, &self.tls) {
            (Some(_), None) => return Err(Error::TokenWithoutTls),
            (Some(path), Some(_)) => Bearer::from_file(path)?,
            (None, _) => Bearer::none(),
        };
        let connected = match &self.tls {
            None => {
                let authority = self.plaintext_authority()?;
                endpoint("http", &authority, timeout)?.connect().await
            }
            Some(settings) => {
                let dial = self.tls_dial(settings)?;
                // `https` only names the scheme in the requests: the connector does the TLS.
                endpoint("https", &dial.authority, timeout)?
                    .connect_with_connector(tls::connector(dial.authority, dial.name, dial.config))
                    .await
            }
        };
        let channel = connected.map_err(|e| Error::Connect(causes(&e)))?;
        Ok((channel, bearer))
    }

    /// What a connect checks before it dials, the token aside: the address, and with TLS its
    /// port, the server name and the roots. For callers that want a configuration mistake
    /// at start rather than at every retry.
    pub fn check(&self) -> Result<(), Error> {
        match (&self.tls, &self.token_file) {
            (None, Some(_)) => Err(Error::TokenWithoutTls),
            (None, None) => self.plaintext_authority().map(drop),
            (Some(settings), _) => self.tls_dial(settings).map(drop),
        }
    }

    fn plaintext_authority(&self) -> Result<String, Error> {
        let target = Target::parse(&self.address)?;
        // Without its TLS features tonic would speak plaintext to an https:// URL.
        if target.https {
            return Err(Error::HttpsWithoutTls(self.address.clone()));
        }
        Ok(target.authority)
    }

    fn tls_dial(&self, settings: &ClientTls) -> Result<TlsDial, Error> {
        let target = Target::parse(&self.address)?;
        if target.port.is_none() {
            return Err(Error::NoPort(self.address.clone()));
        }
        let name = tls::server_name(settings.server_name.as_deref().unwrap_or(&target.host))?;
        let config = tls::client_config(&settings.roots_pem, "the xDS CA root")?;
        Ok(TlsDial {
            authority: target.authority,
            name,
            config,
        })
    }
}

/// Where a TLS connect dials and what its handshake checks.
struct TlsDial {
    authority: String,
    name: rustls::pki_types::ServerName<'static>,
    config: std::sync::Arc<rustls::ClientConfig>,
}

/// A plaintext server at a URL, so callers that held a URL string pass it unchanged.
impl From<String> for XdsServer {
    fn from(url: String) -> XdsServer {
        XdsServer::plaintext(url)
    }
}

impl From<&str> for XdsServer {
    fn from(url: &str) -> XdsServer {
        XdsServer::plaintext(url)
    }
}

impl std::fmt::Display for XdsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.address)?;
        if let Some(tls) = &self.tls {
            f.write_str(" (TLS")?;
            if let Some(name) = &tls.server_name {
                write!(f, " as {name}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

fn endpoint(scheme: &str, authority: &str, timeout: Duration) -> Result<Endpoint, Error> {
    Endpoint::from_shared(format!("{scheme}://{authority}"))
        .map(|e| e.connect_timeout(timeout))
        .map_err(|_| Error::Address(authority.to_string()))
}

/// An address taken apart: `host:port` as connected to, the bare host (an IPv6 address
/// without brackets), and whether the scheme was `https`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    authority: String,
    host: String,
    port: Option<u16>,
    https: bool,
}

impl Target {
    fn parse(address: &str) -> Result<Target, Error> {
        let bad = || Error::Address(address.to_string());
        let url = if address.contains("://") {
            address.to_string()
        } else {
            format!("http://{address}")
        };
        let uri: Uri = url.parse().map_err(|_| bad())?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad()),
        };
        let authority = uri.authority().ok_or_else(bad)?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() || !matches!(uri.path(), "" | "/") {
            return Err(bad());
        }
        Ok(Target {
            authority: authority.as_str().to_string(),
            host: host.to_string(),
            port: authority.port_u16(),
            https,
        })
    }
}

/// An error and its sources on one line (tonic's transport error alone says only
/// "transport error", the handshake's reason is below it); a source whose text is already
/// there (rustls's TLS error repeats its source's) is left out.
pub fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
