//! The Functions custom-handler layer: protocol payloads, the HTTP server, the check of the
//! names the host binds, and `lakebackup run`.

pub mod bindings;
pub mod protocol;
pub mod server;
pub mod standalone;
