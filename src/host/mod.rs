//! The Functions custom-handler layer: protocol payloads and the HTTP server.

pub mod protocol;
pub mod server;
pub mod standalone;
