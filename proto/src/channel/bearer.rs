//! The ServiceAccount token as gRPC metadata (`authorization: Bearer <token>`), as Istio's
//! agent sends it to istiod. The token is read from its file when a connection is made, so
//! a token kubelet rotated is the one sent on the next connect.

use super::Error;
use std::path::Path;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;

/// Adds the `authorization` header to every request, or nothing.
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// No header.
    pub fn none() -> Bearer {
        Bearer(None)
    }

    /// `Bearer <token>` with the token as it is in `path` now (surrounding whitespace, such as
    /// a trailing newline, taken off).
    pub fn from_file(path: &Path) -> Result<Bearer, Error> {
        let bad = |reason: String| Error::Token {
            path: path.display().to_string(),
            reason,
        };
        let token = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        Bearer::from_token(token.trim()).map_err(bad)
    }

    /// `Bearer <token>`; the value is marked sensitive, so HTTP/2 never indexes it.
    pub fn from_token(token: &str) -> Result<Bearer, String> {
        if token.is_empty() {
            return Err("empty".into());
        }
        let mut value = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| "not a token (characters a header cannot carry)".to_string())?;
        value.set_sensitive(true);
        Ok(Bearer(Some(value)))
    }

    /// Whether a header is sent.
    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Never prints the token.
impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = if self.0.is_some() {
            "Bearer <redacted>"
        } else {
            "none"
        };
        f.write_str(shown)
    }
}
