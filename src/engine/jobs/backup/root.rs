//! The root directory of a lake with a hierarchical namespace (`/`: its owner, group,
//! permissions, access ACL and default ACL) backed up once a pass, by the first part of the
//! container's root level. The root is no listed entry (List Blobs shows what is under it), so
//! it is read with Get Access Control and kept as the directory version whose name is empty
//! (`_{time}_{etag}` at the root of `{c}bak`). A restore sets only the root's access control,
//! so a new version is written only when that access control (owner, group, permissions, ACL
//! with its default entries) differs from the newest root backup's, whatever the ETag: a
//! directory's ETag may move when a child is created or deleted, and a version per such move
//! would grow the vault every pass, never pruned.

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
        let newest = level.newest_root();
        let recorded = newest.map(|newest| newest.recorded_access());
        if recorded.is_some() && recorded.flatten().as_ref() == root.properties.access.as_ref() {
            return;
        }
        // Its access control changed since the newest root backup (if any): when, nothing
        // says (the ETag and Last-Modified may have moved with a child's write since), so a
        // later version is named as seen now, never earlier than the change.
        let root = match newest {
            Some(_) => Version {
                last_modified: seen_at(),
                ..root
            },
            None => root,
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
