//! The xDS flags the gateway and the DNS proxy share (`--xds`, `--xds-ca-root`,
//! `--xds-server-name`, `--xds-token-file`), checked at start: a configuration mistake stops
//! the process with one line, and never becomes a retry loop.

use super::{ClientTls, DEFAULT_CA_ROOT, Error, Target, XdsServer, tls};
use std::path::{Path, PathBuf};

/// The flags as given.
#[derive(Debug, Clone, Default)]
pub struct XdsFlags {
    /// `host:port`, `http://host:port` or `https://host:port`.
    pub address: String,
    /// PEM root(s) the server's certificate must chain to; giving it turns TLS on.
    pub ca_root: Option<PathBuf>,
    /// The name checked in the server's certificate; default the host of the address.
    pub server_name: Option<String>,
    /// A ServiceAccount token file sent as `Bearer` metadata; only allowed with TLS.
    pub token_file: Option<PathBuf>,
}

impl XdsFlags {
    /// The server these flags describe. TLS is on with a CA root or an `https://` address
    /// (then the root defaults to [`DEFAULT_CA_ROOT`]); the root file is read and its
    /// certificates checked now, and the server name too. A token or a server name without
    /// TLS is refused: a token must never travel in plaintext.
    pub fn resolve(self) -> Result<XdsServer, Error> {
        let target = Target::parse(&self.address)?;
        let ca_root = match (self.ca_root, target.https) {
            (Some(path), _) => Some((path.display().to_string(), path)),
            (None, true) => Some((
                format!("{DEFAULT_CA_ROOT} (the default with an https:// --xds)"),
                PathBuf::from(DEFAULT_CA_ROOT),
            )),
            (None, false) => None,
        };
        let Some((shown, ca_root)) = ca_root else {
            if self.token_file.is_some() {
                return Err(Error::TokenWithoutTls);
            }
            if self.server_name.is_some() {
                return Err(Error::ServerNameWithoutTls);
            }
            return Ok(XdsServer::plaintext(format!("http://{}", target.authority)));
        };
        if target.port.is_none() {
            return Err(Error::NoPort(self.address));
        }
        tls::server_name(self.server_name.as_deref().unwrap_or(&target.host))?;
        Ok(XdsServer {
            address: format!("https://{}", target.authority),
            tls: Some(ClientTls {
                roots_pem: read_roots(&ca_root, &shown)?,
                server_name: self.server_name,
            }),
            token_file: self.token_file,
        })
    }
}

/// The root file's bytes, once they were seen to hold usable certificates.
fn read_roots(path: &Path, shown: &str) -> Result<Vec<u8>, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::Roots {
        path: shown.to_string(),
        reason: e.to_string(),
    })?;
    tls::client_config(&bytes, shown)?;
    Ok(bytes)
}
