//! The verify kind of job work: one directory level of a lake container checked against the same
//! level of its `{c}bak`, within the shard's budget.
//!
//! A part lists the lake's level with snapshots and the backups' level (one listing each), and
//! judges each current blob in its own name order: is there a complete backup of its current
//! version, and a snapshot of it? With `deep`, each backup's bytes are read and checked: against
//! the version's MD5 where the source carried one, against an MD5 recorded by an earlier deep
//! check, or else against the source version's own bytes — and that MD5 is then recorded in the
//! backup's stamp, so later checks need only the backup (an immutable backup container refuses
//! the record; the check stands). A blob whose stored Content-MD5 does not match its own bytes
//! (Azure does not check the MD5 a block list or Set Blob Properties sets) is a warning: its
//! backup holds the bytes as the lake does, with the stored MD5 as is.
//!
//! Each problem is one line (`VerifyLine`); a blob with any is counted `failed` and named in the
//! notes, so a job that found one ends failed. A blob whose check failed on the service is a
//! problem of its own (`unchecked`, with the reason), never a blocker. The first part fans out
//! the level's sub-directories; when the budget runs out (only deep checks take it), the
//! continuation lists the level again and goes on after the last name checked, in the part's own
//! name order.

use std::collections::BTreeMap;

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use tracing::Instrument;

use super::{
    runner::{each_within_budget, options_of, LineSink, PartDone, Stop},
    Fanout, JobError,
};
use crate::{
    app::App,
    core::{
        diff::{diff_listing, BlobVerdict},
        job::{FAILED, VERIFY_COUNTS},
        naming,
        restore_plan::{filter_reaches, level_prefix},
        shard::Shard,
        stamp::COPIED_MD5_KEY,
        version::Version,
    },
    engine::vault::BackupLevel,
    storage::{
        listing::{list_directory_with_snapshots, ListingScope},
        Blob, Container, ErrorCode, StorageError,
    },
};

/// One problem verify found with one blob: a JSON line of the job's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyLine {
    pub blob: String,
    /// A gap: `no_backup`, `no_snapshot`, `backup_mismatch` or `unchecked`. A warning (the blob
    /// is protected, with something to know): `stored_md5_mismatch`.
    pub problem: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When a version without a backup was written (RFC 3339): how old the data is that a loss
    /// now would take with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written: Option<String>,
}

impl VerifyLine {
    fn new(blob: &str, problem: &str, detail: Option<String>) -> Self {
        Self {
            blob: blob.to_owned(),
            problem: problem.to_owned(),
            detail,
            written: None,
        }
    }

    /// The blob is protected; the line says something worth knowing about it.
    pub fn is_warning(&self) -> bool {
        self.problem == STORED_MD5_MISMATCH
    }
}

const STORED_MD5_MISMATCH: &str = "stored_md5_mismatch";

/// Runs one part of a verify shard.
pub(super) async fn run_part(
    app: &App,
    shard: &Shard,
    fanout: &Fanout<'_>,
    sink: Option<LineSink<'_>>,
    stop: Stop<'_>,
) -> Result<PartDone, JobError> {
    let options = options_of(shard, shard.verify.as_ref())?;
    let source = app.source.container(&shard.container)?;
    let vault = app.vault_of(&shard.container)?;
    let backups = BackupLevel::of_directory(app, &shard.container, &shard.prefix).await?;
    let (names, subdirectories) = lake_level(&source, &shard.prefix, &options.filter).await?;
    if shard.part == 0 {
        for sub in subdirectories {
            fanout.push(app, shard.child(&sub)).await?;
        }
    }
    // Every part judges its whole level: names after the previous part's last, in name order.
    let verdicts: Vec<BlobVerdict> = names
        .into_iter()
        .filter(|(name, _)| {
            shard
                .after
                .as_deref()
                .is_none_or(|after| name.as_str() > after)
                && stop.admits(name)
        })
        .flat_map(|(_, entries)| diff_listing(entries))
        .collect();
    if shard.part == 0 {
        app.progress.saw(verdicts.len() as u64);
    }
    let deadline = stop.deadline(app.config.shard_budget);
    let mut done = PartDone::new(&VERIFY_COUNTS);
    let mut last_done = None;
    let finished = each_within_budget(
        verdicts,
        deadline,
        app.config.snapshot_concurrency,
        |verdict| {
            let backed_up = backups
                .index
                .contains(&verdict.blob.name, &verdict.blob.etag);
            let span = tracing::info_span!("blob", blob = %verdict.blob.name);
            let (source, vault) = (&source, &vault);
            async move {
                let checked = if backed_up && options.deep {
                    Some(check_bytes(source, vault, &verdict.blob).await)
                } else {
                    None
                };
                (verdict, backed_up, checked)
            }
            .instrument(span)
        },
        |(verdict, backed_up, checked)| {
            app.progress.did(1);
            let blob = &verdict.blob;
            let mut problems = Vec::new();
            done.count("blobs", 1);
            if verdict.needs_snapshot {
                done.count("without_snapshot", 1);
                problems.push(VerifyLine::new(&blob.name, "no_snapshot", None));
            }
            if backed_up {
                done.count("backed_up", 1);
            } else {
                done.count("without_backup", 1);
                problems.push(VerifyLine {
                    written: blob.last_modified.format(&Rfc3339).ok(),
                    ..VerifyLine::new(&blob.name, "no_backup", None)
                });
            }
            let checked = checked.map(|checked| {
                checked.unwrap_or_else(|e| {
                    Checked::Unchecked(format!("the check failed on the service: {e}"))
                })
            });
            match checked {
                None => {}
                Some(Checked::Matches) => done.count("checked", 1),
                Some(Checked::StoredMd5Mismatch) => {
                    done.count("checked", 1);
                    let line = VerifyLine::new(
                        &blob.name,
                        STORED_MD5_MISMATCH,
                        Some(
                            "the lake's stored Content-MD5 does not match the blob's bytes; the \
                             backup holds the bytes, and the stored MD5 as the lake has it"
                                .into(),
                        ),
                    );
                    done.notes.warn(&blob.name, STORED_MD5_MISMATCH);
                    done.line(sink, &line);
                }
                Some(Checked::Mismatch(detail)) => {
                    done.count("checked", 1);
                    done.count("mismatched", 1);
                    problems.push(VerifyLine::new(&blob.name, "backup_mismatch", Some(detail)));
                }
                Some(Checked::Unchecked(detail)) => {
                    done.count("unchecked", 1);
                    problems.push(VerifyLine::new(&blob.name, "unchecked", Some(detail)));
                }
            }
            if !problems.is_empty() {
                done.count(FAILED, 1);
                let reasons: Vec<&str> = problems.iter().map(|p| p.problem.as_str()).collect();
                done.notes.fail(&blob.name, reasons.join(", "));
            }
            for problem in &problems {
                done.line(sink, problem);
            }
            last_done = Some(verdict.blob.name);
        },
    )
    .await;
    if !finished {
        done.continuation = Some(shard.continuation(None, last_done.as_deref()));
    }
    Ok(done)
}

/// The lake's level under `filter`: each name's base and snapshots, by name, and the
/// sub-directories the filter reaches into.
async fn lake_level(
    source: &Container,
    directory: &str,
    filter: &str,
) -> Result<(BTreeMap<String, Vec<Version>>, Vec<String>), StorageError> {
    let listing_prefix = level_prefix(directory, filter);
    let pages = list_directory_with_snapshots(
        source,
        ListingScope {
            prefix: (!listing_prefix.is_empty()).then_some(listing_prefix.as_str()),
            ..Default::default()
        },
    )?;
    futures::pin_mut!(pages);
    let mut names: BTreeMap<String, Vec<Version>> = BTreeMap::new();
    let mut subdirectories = Vec::new();
    while let Some(page) = pages.try_next().await? {
        subdirectories.extend(
            page.directories()
                .filter(|sub| filter_reaches(filter, sub))
                .map(str::to_owned),
        );
        for entry in page.into_items() {
            // A hierarchical namespace's directory is no blob to back up.
            if entry.name.starts_with(filter) && !entry.is_directory_placeholder() {
                names.entry(entry.name.clone()).or_default().push(entry);
            }
        }
    }
    Ok((names, subdirectories))
}

/// What a deep check of one backup found.
enum Checked {
    Matches,
    /// The backup holds the version's bytes, whose stored MD5 is wrong in the lake itself.
    StoredMd5Mismatch,
    Mismatch(String),
    /// Nothing to compare with: the source moved on and neither it nor an earlier check left an
    /// MD5 (or the check itself failed).
    Unchecked(String),
}

/// Adds the MD5 of the bytes checked to a backup's metadata, only if it is still version
/// `etag`: the one change a backup ever gets. Its metadata is taken with its names as written
/// ([`Blob::state`]; the read's are lowercased), so nothing else of it changes. A backup
/// changed or gone since it was read is left as it is (another check recorded first).
async fn record_checked_md5(backup: &Blob, etag: &str, digest: &[u8]) -> Result<(), StorageError> {
    let Some(state) = backup.state().await? else {
        return Ok(());
    };
    if state.etag() != etag {
        return Ok(());
    }
    let mut stamped = state.metadata().clone();
    stamped.insert(COPIED_MD5_KEY.to_owned(), BASE64.encode(digest));
    backup.set_metadata(&stamped, etag).await
}

/// Reads the backup of `blob`'s current version and checks its bytes: hashed as they are read,
/// in bounded chunks pinned to the backup's ETag, so memory does not grow with the blob.
async fn check_bytes(
    source: &Container,
    vault: &Container,
    blob: &Version,
) -> Result<Checked, StorageError> {
    let name = naming::backup_blob_name(&blob.name, blob.last_modified, &blob.etag)
        .map_err(|e| StorageError::other("naming a backup", e.to_string()))?;
    let backup = vault.blob(&name);
    let read = match backup.read_chunks(None).await {
        Ok(read) => read,
        Err(e) if e.is(ErrorCode::BlobNotFound) => {
            return Ok(Checked::Unchecked(
                "the backup vanished during the check".into(),
            ))
        }
        Err(e) => return Err(e),
    };
    if read.length != blob.content_length {
        return Ok(Checked::Mismatch(format!(
            "{} bytes, the version has {}",
            read.length, blob.content_length
        )));
    }
    let (backup_etag, metadata) = (read.etag.clone(), read.metadata.clone());
    let digest = match read.md5().await {
        Ok(digest) => digest,
        // Pinned to the ETag first read: the backup was replaced or removed meanwhile.
        Err(e) if e.is(ErrorCode::ConditionNotMet) || e.is(ErrorCode::BlobNotFound) => {
            return Ok(Checked::Unchecked(
                "the backup changed during the check".into(),
            ))
        }
        Err(e) => return Err(e),
    };
    let recorded = metadata
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(COPIED_MD5_KEY))
        .and_then(|(_, v)| BASE64.decode(v).ok());
    let stored = blob.content_md5.clone().filter(|md5| !md5.is_empty());
    if let Some(recorded) = recorded {
        // Computed from the bytes when they were copied or first checked.
        return Ok(if recorded != digest {
            Checked::Mismatch("its bytes differ from those it was copied with".into())
        } else if stored.as_ref().is_some_and(|stored| *stored != recorded) {
            Checked::StoredMd5Mismatch
        } else {
            Checked::Matches
        });
    }
    if stored.as_ref() == Some(&digest) {
        return Ok(Checked::Matches);
    }
    // No MD5 to trust: the stored one is absent, or does not match the backup. The source
    // version's own bytes decide, and their MD5 is recorded so that the next check needs only
    // the backup.
    let original = source.blob(&blob.name);
    let expected = match original.read_chunks(Some(&blob.etag)).await {
        Ok(read) => read.md5().await,
        Err(e) => Err(e),
    };
    let expected = match expected {
        Ok(expected) => expected,
        Err(e) if e.is(ErrorCode::ConditionNotMet) || e.is(ErrorCode::BlobNotFound) => {
            return Ok(Checked::Unchecked(
                "the source changed during the check".into(),
            ));
        }
        Err(e) => return Err(e),
    };
    if expected != digest {
        return Ok(Checked::Mismatch(
            "its bytes differ from the version's".into(),
        ));
    }
    // An immutable backup container or an identity that may only read refuses the record, and
    // another check may have recorded it first: the check stands, unrecorded.
    if let Err(e) = record_checked_md5(&backup, &backup_etag, &digest).await {
        if !e.is_immutable() && !e.is(ErrorCode::ConditionNotMet) && !e.is_permission_refusal() {
            return Err(e.context(format!("recording the checked MD5 of {}", backup.what())));
        }
    }
    Ok(if stored.is_some() {
        Checked::StoredMd5Mismatch
    } else {
        Checked::Matches
    })
}
