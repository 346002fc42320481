//! What the agent has done so far (for logs, the CLI and tests), and why a certificate
//! request failed, in the words the `meshfed_agent_csr_failures_total` metric uses.

use std::fmt;

/// Why a request to the CA did not give a certificate the agent would serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureReason {
    /// Not reachable: refused, timed out, TLS failed, or gRPC UNAVAILABLE.
    Unavailable,
    /// gRPC UNAUTHENTICATED: the CA did not accept the token.
    Unauthenticated,
    /// gRPC PERMISSION_DENIED: the token is valid but may not have this identity.
    PermissionDenied,
    /// An answer that failed the checks (key, SAN, chain, validity); never served.
    InvalidResponse,
    /// The token file could not be read or is not a usable header value.
    Token,
    /// Anything else (another gRPC code, the CSR could not be made).
    Other,
}

impl FailureReason {
    pub const ALL: [FailureReason; 6] = [
        FailureReason::Unavailable,
        FailureReason::Unauthenticated,
        FailureReason::PermissionDenied,
        FailureReason::InvalidResponse,
        FailureReason::Token,
        FailureReason::Other,
    ];

    /// The metric's `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            FailureReason::Unavailable => "unavailable",
            FailureReason::Unauthenticated => "unauthenticated",
            FailureReason::PermissionDenied => "permission_denied",
            FailureReason::InvalidResponse => "invalid_response",
            FailureReason::Token => "token",
            FailureReason::Other => "other",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Counts since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Credentials that replaced served ones (file changes loaded, or certificates renewed).
    pub reloads: u64,
    /// Changes refused because they failed the checks, or requests to the CA that failed
    /// (the last good material stays served).
    pub failures: u64,
    pub last_error: Option<String>,
    /// CA mode: attempts to get a certificate (each with a new key, and the token as read
    /// at that moment).
    pub requests: u64,
    /// CA mode: why the last request failed.
    pub last_reason: Option<FailureReason>,
}
