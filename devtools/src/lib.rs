//! What only lakebackup's demo, tests and benchmarks need, kept out of the product (and so out
//! of the Function App package): [`azurite`] starts the pinned emulator on free loopback ports,
//! [`demo`] is the one-command tour.

pub mod azurite;
pub mod demo;
