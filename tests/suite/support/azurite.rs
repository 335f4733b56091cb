//! Azurite for the tests: the devtools launcher, so the tests and the demo start it one way.
//!
//! Each test starts its own (in memory, on free ports; about two seconds of Node's CPU). A pool
//! that handed each test an Azurite emptied by the previous one was measured and dropped: a
//! reused Azurite ran the same tests about 45% slower than fresh ones (27 tests: 112 s against
//! 77 s), and once answered a download with errors until the retries ran out.

pub use lakebackup_devtools::azurite::*;
