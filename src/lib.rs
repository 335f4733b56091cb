//! lakebackup: keeps an Azure data lake recoverable with ETag-diffed snapshots and version-keeping
//! backups in a second storage account. See `ARCHITECTURE.md` for the map.

pub mod adf;
pub mod app;
pub mod config;
pub mod core;
pub mod doctor;
pub mod engine;
pub mod functions;
pub mod host;
pub mod settings;
pub mod storage;
pub mod telemetry;
