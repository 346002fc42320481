//! The DNS proxy: answers mesh names from the NameTable the federation controller pushes
//! (NDS), forwards everything else to the upstream resolvers.

pub mod names;
pub mod respond;
