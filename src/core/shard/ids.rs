//! Job ids and the names a shard is identified by: a job id's shape and a new one, a shard id
//! from its position's hash, and a directory prefix as a user may give it.

use sha2::{Digest, Sha256};

pub(super) fn hex_id(hash: Sha256) -> String {
    hash.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `job` has the shape of a job id (it names blobs in the job's ledger).
pub fn is_job_id(job: &str) -> bool {
    (1..=64).contains(&job.len())
        && job
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A job id unique enough to tell jobs apart: the start time, in nanoseconds, in hex.
pub fn new_job_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("job-{nanos:x}")
}

/// A directory prefix as a user may give it: `raw/2026` and `raw/2026/` both mean the directory.
pub fn directory_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_start_matches('/');
    if trimmed.is_empty() || trimmed.ends_with('/') {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/")
    }
}
