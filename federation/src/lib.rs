//! The federation controller: reads remote secrets, list-watches every cluster's API server
//! and merges what it sees into one registry with the network, cluster and locality of
//! every endpoint.

pub mod merge;
pub mod registry;
pub mod remote_secret;
pub mod secrets;
pub mod watch;
