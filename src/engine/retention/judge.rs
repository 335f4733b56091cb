//! Judging one level by the policy: which backup versions and snapshots it keeps, and which it
//! no longer does ([`judge_level`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use tracing::info;

use super::{DirectoryScope, Doomed, PruneCounts, PrunePlan, VersionKey, VersionKind};
use crate::{
    app::App,
    core::{
        etag::normalize_etag,
        life::Lives,
        retention::{self, Fate, RetentionPolicy, VersionTime},
        version::Version,
    },
    engine::{
        lake::{LakeLevel, Missing},
        vault::{BackupVersion, Names, VaultLevel},
    },
    storage::StorageError,
};

/// Judges one directory level by the policy: lists `{c}bak`'s level and the lake's, and says
/// what stays and what goes.
pub async fn judge_level(app: &App, scope: &DirectoryScope<'_>) -> Result<PrunePlan, StorageError> {
    Ok(judge_with_kept(app, scope).await?.0)
}

/// Judges one level as [`judge_level`] does, and says which versions it keeps (with their
/// bytes), so that a recorded plan can be checked against it.
pub(super) async fn judge_with_kept(
    app: &App,
    scope: &DirectoryScope<'_>,
) -> Result<(PrunePlan, HashMap<VersionKey, u64>), StorageError> {
    let mut versions: BTreeMap<String, Vec<BackupVersion>> = BTreeMap::new();
    let names = Names::Prefix(scope.prefix);
    let vault = VaultLevel::list(app, scope.container, scope.directory, names, false, |b| {
        versions
            .entry(b.parsed.source_name.clone())
            .or_default()
            .push(b)
    })
    .await?;
    let source = app.source.container(scope.container)?;
    let lake = LakeLevel::list(&source, scope.directory, Missing::IsEmpty, |name| {
        name.starts_with(scope.prefix)
    })
    .await?
    .names;
    let mut judged = Judged::default();
    judged.backups(app, scope, &versions, &vault.lives, &lake);
    if scope.policy.prunes_snapshots() {
        judged.snapshots(scope, &lake);
    }
    let Judged {
        mut counts,
        mut doomed,
        kept,
        ..
    } = judged;
    // The part's own order, so a continuation goes on after the last deletion done.
    doomed.sort_by(|a, b| a.order().cmp(&b.order()));
    if let Some(after) = scope.after {
        // What is kept was counted by the part that started the level.
        counts = PruneCounts::default();
        if let Some(after) = super::position(after, "a continuation's last deletion") {
            doomed.retain(|d| d.order() > (&after.0, &after.1, &after.2));
        }
    }
    let mut subdirectories: Vec<String> = vault.subdirectories.into_iter().collect();
    subdirectories.sort();
    let plan = PrunePlan {
        kept: counts,
        doomed,
        subdirectories,
    };
    Ok((plan, kept))
}

/// A level's judgement as it is made.
#[derive(Default)]
struct Judged {
    counts: PruneCounts,
    doomed: Vec<Doomed>,
    /// The versions whose backup stays: a snapshot of any other version may be its only copy.
    kept_backups: HashSet<(String, String)>,
    /// Every backup version and snapshot kept, with its bytes.
    kept: HashMap<VersionKey, u64>,
}

impl Judged {
    /// Each name's backup versions: those the policy keeps, and the rest doomed.
    fn backups(
        &mut self,
        app: &App,
        scope: &DirectoryScope<'_>,
        versions: &BTreeMap<String, Vec<BackupVersion>>,
        lives: &Lives,
        lake: &BTreeMap<String, Vec<Version>>,
    ) {
        let instants = scope.policy.kept_instants(scope.now);
        for (name, backups) in versions {
            let kept = kept_of_name(scope, &instants, name, backups, lives, lake.get(name));
            app.progress.saw(backups.len() as u64);
            app.progress.did(backups.len() as u64);
            for (backup, kept) in backups.iter().zip(kept) {
                let bytes = backup.backup.content_length;
                if kept {
                    self.counts.versions_kept += 1;
                    self.counts.bytes_kept += bytes;
                    self.kept_backups
                        .insert((name.clone(), backup.parsed.etag.clone()));
                    let key = (
                        name.clone(),
                        VersionKind::Backup,
                        backup.backup.name.clone(),
                    );
                    self.kept.insert(key, bytes);
                } else {
                    self.doomed.push(Doomed {
                        blob: name.clone(),
                        kind: VersionKind::Backup,
                        version: backup.backup.name.clone(),
                        etag: Some(backup.backup.etag.clone()),
                        bytes,
                        gone: false,
                    });
                }
            }
        }
    }

    /// Each name's snapshots: the policy's days of them kept, and always a version's only copy.
    fn snapshots(&mut self, scope: &DirectoryScope<'_>, lake: &BTreeMap<String, Vec<Version>>) {
        let snapshot_policy = RetentionPolicy {
            keep_days: scope.policy.snapshot_days,
            ..Default::default()
        };
        for (name, entries) in lake {
            let Some(base) = entries.iter().find(|e| e.snapshot.is_none()) else {
                continue;
            };
            // A version per ETag: the base's own (its snapshots are never pruned) and each
            // older one its snapshots hold.
            let mut by_etag: BTreeMap<&str, Vec<&Version>> = BTreeMap::new();
            for entry in entries.iter().filter(|e| e.snapshot.is_some()) {
                by_etag.entry(entry.etag.as_str()).or_default().push(entry);
            }
            let older: Vec<(&str, &Vec<&Version>)> = by_etag
                .iter()
                .filter(|(etag, _)| **etag != base.etag.as_str())
                .map(|(etag, snapshots)| (*etag, snapshots))
                .collect();
            let times: Vec<VersionTime> = older
                .iter()
                .map(|(_, snapshots)| snapshots[0].last_modified)
                .chain([base.last_modified])
                .map(|last_modified| VersionTime { last_modified })
                .collect();
            let kept = retention::keep(&snapshot_policy, &times, Fate::Present, scope.now, &[]);
            for ((etag, snapshots), kept) in older.iter().zip(kept) {
                self.snapshots_of_version(scope, name, etag, snapshots, kept);
            }
            let current = by_etag
                .get(base.etag.as_str())
                .map_or(&[][..], Vec::as_slice);
            self.counts.snapshots_kept += current.len() as u64;
            for snapshot in current {
                self.keep_snapshot(name, snapshot);
            }
        }
    }

    fn keep_snapshot(&mut self, name: &str, snapshot: &Version) {
        let version = snapshot.snapshot.clone().unwrap_or_default();
        let key = (name.to_owned(), VersionKind::Snapshot, version);
        self.kept.insert(key, snapshot.content_length);
    }

    /// The snapshots of one older version of `name`, `kept` or not by the policy.
    fn snapshots_of_version(
        &mut self,
        scope: &DirectoryScope<'_>,
        name: &str,
        etag: &str,
        snapshots: &[&Version],
        kept: bool,
    ) {
        // Written after the instant judged at: younger than the judgement.
        let kept = kept || snapshots[0].last_modified > scope.now;
        // Never the only copy: a version without a backup that stays keeps its snapshots.
        let only_copy = !self
            .kept_backups
            .contains(&(name.to_owned(), etag.to_owned()));
        if only_copy && !kept {
            info!(
                blob = name,
                etag, "snapshot kept: its version has no backup that stays"
            );
        }
        for snapshot in snapshots {
            if kept || only_copy {
                self.counts.snapshots_kept += 1;
                self.counts.bytes_kept += snapshot.content_length;
                self.keep_snapshot(name, snapshot);
            } else {
                self.doomed.push(Doomed {
                    blob: name.to_owned(),
                    kind: VersionKind::Snapshot,
                    version: snapshot.snapshot.clone().unwrap_or_default(),
                    etag: None,
                    bytes: snapshot.content_length,
                    gone: false,
                });
            }
        }
    }
}

/// Which of one name's backup versions the policy keeps (in `backups`' order). A version
/// written after the instant the job judges at is younger than the judgement: kept. The rest
/// are judged as the level stood at that instant, the newest of them current then; and the
/// lake's current version keeps its backup whatever the order of versions written in one
/// second says (a backup's name orders them by ETag, which only Azure makes grow).
fn kept_of_name(
    scope: &DirectoryScope<'_>,
    instants: &[time::OffsetDateTime],
    name: &str,
    backups: &[BackupVersion],
    lives: &Lives,
    lake: Option<&Vec<Version>>,
) -> Vec<bool> {
    let policy = scope.policy;
    let judged: Vec<&BackupVersion> = backups.iter().filter(|b| b.written <= scope.now).collect();
    let younger_exist = judged.len() < backups.len();
    let mut kept_judged = if policy.prunes_backups() {
        let times: Vec<VersionTime> = judged
            .iter()
            .map(|b| VersionTime {
                last_modified: b.written,
            })
            .collect();
        // Ordered as restore orders them: by time, then by backup name.
        let newest = judged
            .iter()
            .max_by_key(|b| (b.written, b.backup.name.clone()));
        let in_lake = lake.is_some_and(|entries| entries.iter().any(|e| e.snapshot.is_none()));
        let fate = match newest {
            _ if younger_exist || in_lake => Fate::Present,
            Some(newest) if lives.ended_now(name, &newest.parsed.etag) => lives
                .last_seen(name, &newest.parsed.etag)
                .map_or(Fate::Present, Fate::DeletedAt),
            _ => Fate::Present,
        };
        retention::keep(policy, &times, fate, scope.now, instants).into_iter()
    } else {
        vec![true; judged.len()].into_iter()
    };
    let current = lake
        .and_then(|entries| entries.iter().find(|e| e.snapshot.is_none()))
        .map(|base| normalize_etag(&base.etag).to_owned());
    backups
        .iter()
        .map(|b| {
            let kept = b.written > scope.now || kept_judged.next().unwrap_or(true);
            kept || current.as_deref() == Some(normalize_etag(&b.parsed.etag))
        })
        .collect()
}
