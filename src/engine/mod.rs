//! The engines: everything the functions and commands do, below the thin trigger modules of
//! [`crate::functions`] and above the storage seam.
//!
//! - [`backup`]: one exact version into its own backup blob (decide, settle, copy, stamp).
//! - [`protect`]: one listed version backed up and snapshotted, as shards and events do it.
//! - [`lives`]: the records of a name's lives (seen deleted, seen again).
//! - [`vault`]: what the backup side holds for one directory level, or one name.
//! - [`retention`]: one directory level pruned by a retention policy (prune jobs, and
//!   reconciliations).
//! - [`jobs`]: sharded work over a container, queued or run here, with its ledger.
//! - [`events`]: one blob event → its version protected, a life ended, or a job.
//! - [`reconcile`], [`sweep`]: a job per container; a dry run that writes nothing.
//! - [`restore`], [`verify`], [`prune`]: the admin's commands.

pub mod backup;
pub mod events;
pub mod jobs;
pub mod lake;
pub mod lives;
pub mod protect;
pub mod prune;
pub mod reconcile;
pub mod restore;
pub mod retention;
pub mod sweep;
pub mod vault;
pub mod verify;
