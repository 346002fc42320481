//! meshfed's scenario tests (under `tests/`) and the judges: clients we did not write, such as
//! gRPC's own proxyless xDS clients, that decide whether our protocols are right.

pub mod federation;
pub mod judges;
pub mod kubectl;
pub mod metrics;
pub mod proxyless;
pub mod workloads;
