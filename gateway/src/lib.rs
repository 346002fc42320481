//! The east-west gateway: reads the SNI of each TLS connection, routes it to a local
//! endpoint of that mesh service and copies bytes both ways. It never terminates TLS and
//! never routes a name that is not in its route table.

pub mod balance;
pub mod clienthello;
pub mod routes;
