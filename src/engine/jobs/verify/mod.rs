//! The verify kind of job work: one directory level of a lake container checked against the same
//! level of its `{c}bak`, within the shard's budget.
//!
//! A part lists the lake's level with snapshots and the backups' level (one listing each), and
//! judges each current blob in its own name order: is there a complete backup of its current
//! version, and a snapshot of it? With `deep`, each backup's bytes are read and checked
//! ([`check`]). A blob whose stored Content-MD5 does not match its own bytes (Azure does not
//! check the MD5 a block list or Set Blob Properties sets) is a warning: its backup holds the
//! bytes as the lake does, with the stored MD5 as is.
//!
//! On a lake with a hierarchical namespace (no snapshots there), a blob needs no snapshot, and
//! each file's access control, listed in bulk with the level, is compared with the one its
//! backup recorded ([`access`]): an ACL change keeps the ETag, and a difference is a problem of
//! its own (`access_differs`).
//!
//! Each problem is one line ([`VerifyLine`]); a blob with any is counted `failed` and named in
//! the notes, so a job that found one ends failed. A blob whose check failed on the service is a
//! problem of its own (`unchecked`, with the reason), never a blocker. The first part fans out
//! the level's sub-directories; when the budget runs out (only deep checks take it), the
//! continuation lists the level again and goes on after the last name checked, in the part's own
//! name order.

mod access;
mod check;

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use tracing::Instrument;

use self::{
    access::RecordedAccess,
    check::{check_bytes, Checked},
};
use super::{
    budget::each_within_budget,
    kind::{Kind, Part, PartDone},
    JobError,
};
use crate::{
    core::{
        diff::{diff_listing, BlobVerdict},
        restore_plan::{filter_reaches, level_prefix},
        version::Version,
    },
    engine::{
        lake::{LakeLevel, Missing},
        vault::{Names, VaultLevel},
    },
    kind_counts,
    storage::{Container, StorageError},
};

/// The verify kind.
#[derive(Debug)]
pub struct VerifyKind;

/// What a verify job checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyOptions {
    /// Only names starting with it (empty: every name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filter: String,
    /// Also read each backup's bytes and check them against the version.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deep: bool,
}

kind_counts! {
    /// What a verify counts, per current blob of the lake. `failed`: blobs with any gap (no
    /// backup, no snapshot, a backup that does not match, one that could not be checked, an
    /// access control other than its backup's), each named in the notes, so a job that found
    /// one ends failed.
    pub struct VerifyCounts {
        blobs,
        backed_up,
        without_backup,
        without_snapshot,
        checked,
        mismatched,
        unchecked,
        access_differs,
        failed,
        /// Directories of a hierarchical namespace judged (a backup of their version, with
        /// their access control); not in `blobs` nor `backed_up`, their gaps counted with the
        /// files'.
        directories,
    }
}

/// What is wrong with a blob, or worth knowing about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    NoBackup,
    NoSnapshot,
    BackupMismatch,
    Unchecked,
    /// A hierarchical namespace's file whose owner, group, permissions or ACL differ from those
    /// its version's backup recorded.
    AccessDiffers,
    /// A warning: the blob is protected; the lake's own stored MD5 is wrong.
    StoredMd5Mismatch,
}

impl Problem {
    pub fn as_str(self) -> &'static str {
        match self {
            Problem::NoBackup => "no_backup",
            Problem::NoSnapshot => "no_snapshot",
            Problem::BackupMismatch => "backup_mismatch",
            Problem::Unchecked => "unchecked",
            Problem::AccessDiffers => "access_differs",
            Problem::StoredMd5Mismatch => "stored_md5_mismatch",
        }
    }
}

/// One problem verify found with one blob: a line of the job's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyLine {
    pub blob: String,
    pub problem: Problem,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When a version without a backup was written (RFC 3339): how old the data is that a loss
    /// now would take with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written: Option<String>,
}

impl VerifyLine {
    fn new(blob: &str, problem: Problem, detail: Option<String>) -> Self {
        Self {
            blob: blob.to_owned(),
            problem,
            detail,
            written: None,
        }
    }

    /// The blob is protected; the line says something worth knowing about it.
    pub fn is_warning(&self) -> bool {
        self.problem == Problem::StoredMd5Mismatch
    }
}

impl Kind for VerifyKind {
    const NAME: &'static str = "verify";
    const FIELD: Option<&'static str> = Some("verify");
    type Options = VerifyOptions;
    type Counts = VerifyCounts;
    type Line = VerifyLine;

    fn run_part(part: Part<'_, Self>) -> BoxFuture<'_, Result<PartDone<Self>, JobError>> {
        Box::pin(run_part(part))
    }

    fn not_done(counts: &VerifyCounts) -> u64 {
        counts.failed
    }
}

async fn run_part(part: Part<'_, VerifyKind>) -> Result<PartDone<VerifyKind>, JobError> {
    let Part {
        app,
        shard,
        options,
        fanout,
        sink,
        stop,
    } = part;
    let source = app.source.container(&shard.container)?;
    let vault = app.vault_of(&shard.container)?;
    // A hierarchical namespace takes no snapshots; its files' access control is compared.
    let hierarchical = app.source.namespace(&shard.container).await?.is_hierarchical();
    let (backups, recorded) = level_backups(app, &shard.container, &shard.prefix, hierarchical)
        .await?;
    let (names, subdirectories) =
        lake_level(&source, &shard.prefix, &options.filter, hierarchical).await?;
    if shard.part == 0 {
        for sub in subdirectories {
            fanout.push(app, shard.child(&sub)).await?;
        }
    }
    // Every part judges its whole level: names after the previous part's last, in name order.
    let after = shard.after.as_deref();
    let verdicts: Vec<BlobVerdict> = names
        .into_iter()
        .filter(|(name, _)| after.is_none_or(|after| name.as_str() > after) && stop.admits(name))
        .flat_map(|(_, entries)| diff_listing(entries))
        .map(|mut verdict| {
            verdict.needs_snapshot &= !hierarchical;
            verdict
        })
        .collect();
    if shard.part == 0 {
        app.progress.saw(verdicts.len() as u64);
    }
    let mut done = PartDone::new();
    if hierarchical && shard.starts_container() && options.filter.is_empty() {
        judge_root(app, &shard.container, &backups, &mut done, sink).await;
    }
    let mut last_done = None;
    let finished = each_within_budget(
        verdicts,
        stop.deadline(app.config.shard_budget),
        app.config.snapshot_concurrency,
        |verdict| {
            let backed_up = backups
                .index
                .contains(&verdict.blob.name, &verdict.blob.etag);
            let span = tracing::info_span!("blob", blob = %verdict.blob.name);
            let (source, vault) = (&source, &vault);
            async move {
                // A directory has no bytes to check.
                let deep = options.deep && !verdict.blob.is_directory_placeholder();
                let checked = match backed_up && deep {
                    true => Some(check_bytes(source, vault, &verdict.blob).await),
                    false => None,
                };
                (verdict, backed_up, checked)
            }
            .instrument(span)
        },
        |(verdict, backed_up, checked)| {
            app.progress.did(1);
            let access = backed_up
                .then(|| recorded.differs(&verdict.blob))
                .flatten();
            judge(&mut done, sink, &verdict, backed_up, checked, access);
            last_done = Some(verdict.blob.name);
        },
    )
    .await;
    if !finished {
        done.continuation = Some(shard.continuation(None, last_done.as_deref()));
    }
    Ok(done)
}

/// Counts one blob and reports its problems; `access` says how its access control differs from
/// its backup's.
fn judge(
    done: &mut PartDone<VerifyKind>,
    sink: Option<super::kind::LineSink<'_, VerifyLine>>,
    verdict: &BlobVerdict,
    backed_up: bool,
    checked: Option<Result<Checked, StorageError>>,
    access: Option<String>,
) {
    let blob = &verdict.blob;
    let counts = &mut done.counts;
    let mut problems = Vec::new();
    let directory = blob.is_directory_placeholder();
    match directory {
        true => counts.directories += 1,
        false => counts.blobs += 1,
    }
    if verdict.needs_snapshot {
        counts.without_snapshot += 1;
        problems.push(VerifyLine::new(&blob.name, Problem::NoSnapshot, None));
    }
    if backed_up {
        counts.backed_up += u64::from(!directory);
    } else {
        counts.without_backup += 1;
        problems.push(VerifyLine {
            written: blob.last_modified.format(&Rfc3339).ok(),
            ..VerifyLine::new(&blob.name, Problem::NoBackup, None)
        });
    }
    if let Some(detail) = access {
        counts.access_differs += 1;
        problems.push(VerifyLine::new(
            &blob.name,
            Problem::AccessDiffers,
            Some(detail),
        ));
    }
    let checked = checked.map(|checked| {
        checked
            .unwrap_or_else(|e| Checked::Unchecked(format!("the check failed on the service: {e}")))
    });
    judge_bytes(done, sink, &blob.name, checked, &mut problems);
    if !problems.is_empty() {
        done.counts.failed += 1;
        let reasons: Vec<&str> = problems.iter().map(|p| p.problem.as_str()).collect();
        done.notes.fail(&blob.name, reasons.join(", "));
    }
    for problem in problems {
        done.line(sink, problem);
    }
}

/// The level's backups, and (on a hierarchical namespace) the access control each version's
/// newest backup records, the root directory's included.
async fn level_backups(
    app: &crate::app::App,
    container: &str,
    directory: &str,
    hierarchical: bool,
) -> Result<(VaultLevel, RecordedAccess), StorageError> {
    let mut recorded = RecordedAccess::default();
    let all = Names::Prefix("");
    let backups = VaultLevel::list(app, container, directory, all, false, |backup| {
        if hierarchical {
            recorded.note(&backup);
        }
    })
    .await?;
    Ok((backups, recorded))
}

/// Judges the container's root directory (a hierarchical namespace's `/`, read with Get
/// Access Control): backed up when the root has a backup at all, and its access control
/// against the newest one's, whatever the ETag (a restore sets only the root's access control,
/// and the backup writes a root version only when that changes: a child's write may move the
/// root's ETag). Named `/` in lines and notes.
async fn judge_root(
    app: &crate::app::App,
    container: &str,
    backups: &VaultLevel,
    done: &mut PartDone<VerifyKind>,
    sink: Option<super::kind::LineSink<'_, VerifyLine>>,
) {
    const ROOT: &str = "/";
    let root = match crate::engine::backup::root_directory(app, container).await {
        Ok(root) => root,
        Err(e) => {
            done.counts.directories += 1;
            done.counts.unchecked += 1;
            done.counts.failed += 1;
            let detail = format!("its access control could not be read: {e}");
            done.notes.fail(ROOT, Problem::Unchecked.as_str());
            done.line(sink, VerifyLine::new(ROOT, Problem::Unchecked, Some(detail)));
            return;
        }
    };
    let newest = backups.newest_root();
    let backed_up = newest.is_some();
    let access = match (newest, root.properties.access.as_ref()) {
        (Some(newest), Some(now)) => access::differs_from(now, newest.recorded_access().as_ref()),
        _ => None,
    };
    let verdict = BlobVerdict {
        blob: Version {
            name: ROOT.to_owned(),
            ..root
        },
        needs_snapshot: false,
        snapshots: 0,
    };
    judge(done, sink, &verdict, backed_up, None, access);
}

/// Counts what a deep check of `blob`'s backup found: a warning reported at once, a problem
/// added to `problems`.
fn judge_bytes(
    done: &mut PartDone<VerifyKind>,
    sink: Option<super::kind::LineSink<'_, VerifyLine>>,
    blob: &str,
    checked: Option<Checked>,
    problems: &mut Vec<VerifyLine>,
) {
    let counts = &mut done.counts;
    match checked {
        None => {}
        Some(Checked::Matches) => counts.checked += 1,
        Some(Checked::StoredMd5Mismatch) => {
            counts.checked += 1;
            let detail = "the lake's stored Content-MD5 does not match the blob's bytes; the \
                          backup holds the bytes, and the stored MD5 as the lake has it";
            let line = VerifyLine::new(blob, Problem::StoredMd5Mismatch, Some(detail.into()));
            done.notes.warn(blob, Problem::StoredMd5Mismatch.as_str());
            done.line(sink, line);
        }
        Some(Checked::Mismatch(detail)) => {
            counts.checked += 1;
            counts.mismatched += 1;
            problems.push(VerifyLine::new(blob, Problem::BackupMismatch, Some(detail)));
        }
        Some(Checked::Unchecked(detail)) => {
            counts.unchecked += 1;
            problems.push(VerifyLine::new(blob, Problem::Unchecked, Some(detail)));
        }
    }
}

/// The lake's level under `filter`: each name's base and snapshots, by name (with their
/// access control when `access`), and the sub-directories the filter reaches into.
async fn lake_level(
    source: &Container,
    directory: &str,
    filter: &str,
    access: bool,
) -> Result<(BTreeMap<String, Vec<Version>>, Vec<String>), StorageError> {
    let LakeLevel {
        names,
        mut subdirectories,
    } = LakeLevel::list_with_access(
        source,
        &level_prefix(directory, filter),
        Missing::Fails,
        access,
        |name| name.starts_with(filter),
    )
    .await?;
    subdirectories.retain(|sub| filter_reaches(filter, sub));
    Ok((names, subdirectories))
}
