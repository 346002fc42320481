//! placeholder until the network module lands
