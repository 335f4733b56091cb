//! The five functions (and restore, verify and prune), one module each; each takes typed input and returns a typed summary,
//! knowing nothing of the protocol that triggered it.

pub mod consumer;
pub mod events;
pub mod producer;
pub mod prune;
pub mod reconciler;
pub mod restore;
pub mod shard;
pub mod sweep;
pub mod verify;
