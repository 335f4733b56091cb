//! Azurite for the tests: the library's launcher, so the tests and the demo start it one way.

pub use lakebackup_devtools::azurite::*;
