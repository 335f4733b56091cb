//! The Functions custom-handler layer: the host's payloads, the one table of functions, the
//! HTTP server the host calls, the check of the names the host binds, and `lakebackup run`; and
//! the poison queues the host (and `run`) fill, read and replayed (`lakebackup poison`).

pub mod bindings;
pub mod dispatch;
pub mod poison;
pub mod protocol;
pub mod server;
pub mod standalone;
