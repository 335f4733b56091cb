//! Planning one level of a restore: each name's version current at the instant — from the
//! level's backups (and the lake's own version now), or from the lake's snapshots — against what
//! the target's same level holds, one listing each.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::TryStreamExt;
use tracing::warn;

use super::Part;
use crate::{
    core::{
        etag::normalize_etag,
        life::Lives,
        properties::{Access, BlobProperties},
        restore_plan::{
            plan, version_at, version_with_lake, written_by_job, Plan, Restorable, VersionSource,
        },
        stamp,
        version::Version,
    },
    engine::{
        lake::{LakeLevel, Missing},
        vault::{BackupVersion, Names, VaultLevel},
    },
    storage::{
        listing::{list_directory, ListingScope},
        Container, ErrorCode, StorageError,
    },
};

/// A level planned: its candidates in name order, after the previous part's last name.
pub(super) struct Level {
    pub(super) candidates: Vec<Candidate>,
    pub(super) subdirectories: Vec<String>,
    /// What the job should know about how the level was planned.
    pub(super) warnings: Vec<String>,
}

/// One blob's chosen version (or none) and what its target holds.
pub(super) struct Candidate {
    pub(super) blob: String,
    pub(super) plan: Plan,
    /// The target blob's version the plan was made against; `None`: the target had no such
    /// blob.
    pub(super) target: Option<Version>,
    /// That version has a complete backup already.
    pub(super) current_kept: bool,
    /// The target holds the chosen version because this job wrote it (a delivery that died
    /// before it recorded the write): reported restored.
    pub(super) written_by_job: bool,
    /// The chosen version's access control (a hierarchical namespace's, from its backup's
    /// stamp), which a target with a hierarchical namespace is given exactly.
    pub(super) access: Option<Access>,
    /// The chosen version is a directory of a hierarchical namespace.
    pub(super) directory: bool,
}

/// One directory level of the backup container, as a restore chooses from it.
struct BackupChoices {
    /// Per source name in scope, the backup version current at the instant (`None`: backups
    /// exist, but all are newer); in name order.
    choices: BTreeMap<String, Option<Restorable>>,
    /// The lives recorded for the level's names.
    lives: Lives,
    /// Every version of the level with a complete backup: `(name, ETag)`.
    backed_up: HashSet<(String, String)>,
    subdirectories: Vec<String>,
    /// The root directory's version current at the instant (a hierarchical namespace's `/`,
    /// named `""`), where the level is the container's root and the restore covers it all.
    root: Option<Restorable>,
}

/// A listed entry of the lake (the blob, or one of its snapshots) as a version to restore. A
/// snapshot has no tags of its own: the blob's stay as they are.
fn snapshot_restorable(entry: Version) -> Restorable {
    let source = match &entry.snapshot {
        Some(id) => VersionSource::Snapshot(id.clone()),
        None => VersionSource::Base,
    };
    let version = Version {
        properties: BlobProperties {
            tags: None,
            ..entry.properties.clone()
        },
        ..entry
    };
    Restorable { version, source }
}

/// A complete backup as the version of the lake it holds: its facts in the lake — its name, the
/// ETag it had there, when it was written, its user metadata (the backup's without the stamp,
/// which never goes back into the lake), type, content headers, MD5 and tags, and its tier from
/// the stamp — read from the backup blob, pinned to the backup's own ETag.
fn restorable_backup(b: BackupVersion) -> Restorable {
    let metadata = b.backup.metadata_or_empty();
    let source = VersionSource::Backup {
        name: b.backup.name.clone(),
        etag: b.backup.etag.clone(),
    };
    let version = Version {
        name: b.parsed.source_name,
        snapshot: None,
        etag: b.parsed.etag,
        last_modified: b.written,
        metadata: Some(stamp::user_metadata(&metadata)),
        properties: BlobProperties {
            access_tier: stamp::stamped_access_tier(&metadata),
            access: stamp::stamped_access(&metadata),
            directory: stamp::stamped_directory(&metadata),
            ..b.backup.properties.clone()
        },
        copy_status: None,
        ..b.backup
    };
    Restorable { version, source }
}

/// The root directory's version chosen, as a candidate named `""`.
fn root_candidate(root: Restorable) -> Candidate {
    Candidate {
        blob: String::new(),
        access: root.version.properties.access.clone(),
        plan: Plan::Restore(Box::new(root)),
        target: None,
        current_kept: false,
        written_by_job: false,
        directory: true,
    }
}

impl Part<'_> {
    /// The names of the level still to do, in name order: those after the previous part's last
    /// (the order is this part's own, over a complete listing of the level).
    fn still_to_do(&self, name: &str) -> bool {
        self.shard.after.as_deref().is_none_or(|after| name > after)
    }

    /// The prefix the level is listed with (in `{c}bak` with `backups`, else in the lake and
    /// the target): the directory, narrowed to the filter.
    fn listing_prefix(&self, backups: bool) -> Option<String> {
        Some(self.options.level_prefix(&self.shard.prefix, backups)).filter(|p| !p.is_empty())
    }

    /// From the backup account: the level's backups and records of lives.
    pub(super) async fn plan_from_backup(&self) -> Result<Level, StorageError> {
        let app = self.app;
        let tags = app.config.list_tags && !app.backup.tags_refused();
        let level = match self.backup_choices(tags).await {
            // Without the right to read the backups' tags, they are restored without them.
            Err(e) if tags && e.is_tags_refusal() => {
                warn!(error = %e, "the backup account refused to show tags: restoring without them");
                app.backup.refuse_tags();
                self.backup_choices(false).await?
            }
            other => other?,
        };
        let mut targets = self.target_level().await?;
        // The lake's versions now are versions too: one written at or before the instant is
        // the version of the instant, backed up yet or not. In place they are the targets;
        // elsewhere the lake's level is listed as well.
        let mut warnings = Vec::new();
        let mut lake_now = if self.in_place {
            HashMap::new()
        } else {
            self.lake_level(&mut warnings).await?
        };
        let mut names: BTreeMap<String, Option<Restorable>> = level.choices;
        for name in lake_now.keys() {
            names.entry(name.clone()).or_insert(None);
        }
        // The root directory first (it always stands: only its access control is restored).
        let root = level.root.filter(|_| self.still_to_do(""));
        let mut candidates: Vec<Candidate> = root.map(root_candidate).into_iter().collect();
        for (blob, backup_choice) in names {
            if !self.still_to_do(&blob) {
                continue;
            }
            let current = targets.remove(&blob);
            let in_lake = if self.in_place {
                current.clone()
            } else {
                lake_now.remove(&blob)
            };
            let written_by_this_job =
                |plan: &Plan| self.job_wrote(plan, backup_choice.as_ref(), current.as_ref());
            let chosen = version_with_lake(backup_choice.clone(), in_lake, self.as_of);
            let chosen = chosen.as_ref();
            // Deletions count only for an instant: without one, restore brings back every blob.
            let deleted_by_then = match (chosen, self.as_of) {
                (Some(chosen), Some(instant)) => {
                    level.lives.ended_by(&blob, &chosen.version.etag, instant)
                }
                _ => false,
            };
            let plan = if deleted_by_then {
                Plan::Deleted
            } else {
                plan(chosen, current.as_ref())
            };
            // The level's backups are the lake container's: they say whether a version of the
            // lake is kept, never one of another container.
            let current_kept = self.in_place
                && current.as_ref().is_some_and(|current| {
                    level
                        .backed_up
                        .contains(&(blob.clone(), normalize_etag(&current.etag).to_owned()))
                });
            candidates.push(Candidate {
                written_by_job: written_by_this_job(&plan),
                access: chosen.and_then(|c| c.version.properties.access.clone()),
                directory: chosen.is_some_and(|c| c.version.properties.directory),
                blob,
                plan,
                target: current,
                current_kept,
            });
        }
        Ok(Level {
            candidates,
            subdirectories: level.subdirectories,
            warnings,
        })
    }

    /// Whether the target, found unchanged, holds `original` (the version chosen from the
    /// backups or snapshots, the lake's own set aside) because this job wrote it
    /// ([`written_by_job`]).
    fn job_wrote(
        &self,
        plan: &Plan,
        original: Option<&Restorable>,
        target: Option<&Version>,
    ) -> bool {
        *plan == Plan::Unchanged && written_by_job(original, target, self.job_started)
    }

    /// The lake's versions now at the level, for a restore into another container: what
    /// cannot be read is said once, and the restore goes on from the backups alone.
    async fn lake_level(
        &self,
        warnings: &mut Vec<String>,
    ) -> Result<HashMap<String, Version>, StorageError> {
        match self.list_level(&self.lake, false, false).await {
            // A blob still being copied into, or whose copy failed, is no version of the lake.
            Ok(mut level) => {
                level.retain(|_, version| version.copy_complete());
                Ok(level)
            }
            Err(e) if e.is(ErrorCode::ContainerNotFound) => Ok(HashMap::new()),
            Err(e) if e.is_transient() || e.status == Some(403) => {
                warn!(error = %e, "the lake could not be listed: restoring from the backups alone");
                warnings.push(format!(
                    "the lake's container {} could not be read ({e}): versions written since \
                     the last backup pass were not considered",
                    self.shard.container
                ));
                Ok(HashMap::new())
            }
            Err(e) => Err(e),
        }
    }

    async fn backup_choices(&self, tags: bool) -> Result<BackupChoices, StorageError> {
        let mut best: BTreeMap<String, Option<Restorable>> = BTreeMap::new();
        let mut backed_up = HashSet::new();
        let as_of = self.as_of;
        let names = match self.options.exact {
            true => Names::Exactly(&self.options.filter),
            false => Names::Prefix(&self.options.filter),
        };
        let listing_prefix = self.listing_prefix(true).unwrap_or_default();
        let level = VaultLevel::list(
            self.app,
            &self.shard.container,
            &listing_prefix,
            names,
            tags,
            |b| {
                backed_up.insert((
                    b.parsed.source_name.clone(),
                    normalize_etag(&b.parsed.etag).to_owned(),
                ));
                let slot = best.entry(b.parsed.source_name.clone()).or_insert(None);
                let candidates: Vec<Restorable> = slot
                    .take()
                    .into_iter()
                    .chain([restorable_backup(b)])
                    .collect();
                *slot = version_at(&candidates, as_of).cloned();
            },
        )
        .await?;
        let mut subdirectories: Vec<String> = level.subdirectories.into_iter().collect();
        subdirectories.sort();
        let roots: Vec<Restorable> = level.root.into_iter().map(restorable_backup).collect();
        Ok(BackupChoices {
            choices: best,
            backed_up,
            lives: level.lives,
            subdirectories,
            root: version_at(&roots, as_of).cloned(),
        })
    }

    /// From the lake's own snapshots: the level's blobs with their snapshots, one name's
    /// versions grouped by equality of names.
    pub(super) async fn plan_from_snapshots(&self) -> Result<Level, StorageError> {
        let (names, subdirectories) = self.lake_versions().await?;
        let mut targets = if self.in_place {
            HashMap::new()
        } else {
            self.target_level().await?
        };
        let mut candidates = Vec::new();
        for (blob, entries) in names {
            if !self.still_to_do(&blob) {
                continue;
            }
            let versions: Vec<Restorable> = entries.into_iter().map(snapshot_restorable).collect();
            let chosen = version_at(&versions, self.as_of);
            let current = match self.in_place {
                true => versions
                    .iter()
                    .find(|v| v.source == VersionSource::Base)
                    .map(|base| base.version.clone()),
                false => targets.remove(&blob),
            };
            let plan = plan(chosen, current.as_ref());
            let snapshots: Vec<Restorable> = versions
                .iter()
                .filter(|v| v.source != VersionSource::Base)
                .cloned()
                .collect();
            let original = version_at(&snapshots, self.as_of);
            candidates.push(Candidate {
                written_by_job: self.job_wrote(&plan, original, current.as_ref()),
                plan,
                target: current,
                // Whether the version now current has a backup is the backup engine's to find
                // out, before anything overwrites it.
                current_kept: false,
                // A lake with snapshots has no hierarchical namespace.
                access: None,
                directory: false,
                blob,
            });
        }
        Ok(Level {
            candidates,
            subdirectories,
            warnings: Vec::new(),
        })
    }

    /// The lake's level with snapshots: each name's entries in scope, grouped by equality of
    /// names, and the level's sub-directories.
    async fn lake_versions(
        &self,
    ) -> Result<(BTreeMap<String, Vec<Version>>, Vec<String>), StorageError> {
        let level = LakeLevel::list(
            &self.lake,
            self.listing_prefix(false).as_deref().unwrap_or(""),
            Missing::Fails,
            |name| self.options.in_scope(name),
        )
        .await?;
        Ok((level.names, level.subdirectories))
    }

    /// What the target's level holds, by name (with tags when they can be read); nothing when
    /// the target container does not exist yet.
    async fn target_level(&self) -> Result<HashMap<String, Version>, StorageError> {
        // A hierarchical namespace has no index tags: it is never asked for them.
        let mut tags = self.app.config.list_tags
            && !self.target_account.tags_refused()
            && !self.target_hierarchical;
        loop {
            match self.list_level(&self.target, tags, self.target_hierarchical).await {
                Err(e) if tags && e.is_tags_refusal() => {
                    warn!(error = %e, "the target refused to show tags: comparing without them");
                    self.target_account.refuse_tags();
                    tags = false;
                }
                Err(e) if e.is(ErrorCode::ContainerNotFound) => return Ok(HashMap::new()),
                other => return other,
            }
        }
    }

    /// What `container`'s level holds, by name, narrowed to the filter. With `hierarchical`
    /// (a target with a hierarchical namespace) each path's access control is listed too, and
    /// its directories are kept (a restore gives them their access control); otherwise
    /// directory placeholders are no blobs to restore.
    async fn list_level(
        &self,
        container: &Container,
        tags: bool,
        hierarchical: bool,
    ) -> Result<HashMap<String, Version>, StorageError> {
        let pages = list_directory(
            container,
            ListingScope {
                prefix: self.listing_prefix(false).as_deref(),
                tags,
                copy: true,
                permissions: hierarchical,
                ..Default::default()
            },
        )?;
        futures::pin_mut!(pages);
        let mut level = HashMap::new();
        while let Some(page) = pages.try_next().await? {
            for version in page.into_items() {
                let keep = hierarchical || !version.is_directory_placeholder();
                if self.options.in_scope(&version.name) && keep {
                    level.insert(version.name.clone(), version);
                }
            }
        }
        Ok(level)
    }
}
