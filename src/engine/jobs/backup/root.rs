//! The root directory of a lake with a hierarchical namespace (`/`: its owner, group,
//! permissions, access ACL and default ACL) backed up once a pass, by the first part of the
//! container's root level. The root is no listed entry (List Blobs shows what is under it), so
//! it is read with Get Access Control and kept as the directory version whose name is empty
//! (`_{time}_{etag}` at the root of `{c}bak`), a new version when its ETag or its access
//! control changes — as any directory's.

use tracing::warn;

use super::{slot::seen_at, Part};
use crate::{
    core::version::Version,
    engine::{
        backup::{self, BackupOutcome},
        vault::VaultLevel,
    },
};

/// How a failure or warning names the root directory.
pub(super) const ROOT: &str = "/";

impl Part<'_> {
    /// Backs up the container's root directory where `level` (the root of `{c}bak`) holds no
    /// backup of it as it is now; a failure is the root's, named in the job's failures.
    pub(super) async fn back_up_root(&mut self, level: &VaultLevel) {
        let container = &self.shard.container;
        let root = match backup::root_directory(self.app, container).await {
            Ok(root) => root,
            Err(e) => return self.root_failed(e.to_string()),
        };
        self.counts.directories += 1;
        let access = root.properties.access.as_ref();
        if level.index.contains_with_access("", &root.etag, access) {
            return;
        }
        // Only its access control changed (the ETag may stay): a version as seen now.
        let root = match level.index.contains_with_access("", &root.etag, None) {
            true => Version {
                last_modified: seen_at(),
                ..root
            },
            false => root,
        };
        match backup::back_up_directory(self.app, container, &root).await {
            Ok(BackupOutcome::BackedUp { .. }) => self.counts.directory_backups += 1,
            Ok(_) => {}
            Err(e) => self.root_failed(format!("backup: {e}")),
        }
    }

    fn root_failed(&mut self, reason: String) {
        warn!(reason, "the root directory not backed up; the rest goes on");
        self.counts.failed += 1;
        self.notes.fail(ROOT, reason);
    }
}
