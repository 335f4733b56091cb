//! `lakebackup verify`: proof that the backups are there. For every current blob of a container
//! (or a directory tree): is there a complete backup of its current version, and a snapshot of
//! it? The age of the oldest current version without a backup is the recovery point the lake
//! actually has. With `deep`, each backup's bytes are read and checked: against the version's MD5
//! where the source carried one, against an MD5 recorded by an earlier deep check, or else
//! against the source version's own bytes — and that MD5 is then recorded in the backup's stamp,
//! so later checks need only the backup. A blob whose stored Content-MD5 does not match its own
//! bytes (Azure does not check the MD5 a block list or Set Blob Properties sets) is listed as a
//! warning: its backup holds the bytes as the lake does, with the stored MD5 as is.

use std::time::Instant;

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use serde::Serialize;
use time::OffsetDateTime;
use tracing::{info, Instrument};

use crate::{
    app::App,
    core::{
        backup_index::BackupIndex,
        diff::{BlobVerdict, SnapshotDiff},
        naming,
        version::Version,
    },
    storage::{
        listing::{index_backups, list_backups, list_with_snapshots},
        Container, ErrorCode, StorageError,
    },
};

/// The stamp key holding the MD5 a deep check computed for a backup (base64).
pub use crate::core::stamp::COPIED_MD5_KEY as VERIFIED_MD5_KEY;

#[derive(Debug, Clone)]
pub struct VerifyRequest {
    pub container: String,
    pub prefix: Option<String>,
    pub deep: bool,
}

/// One blob that is not protected as it should be.
#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    pub blob: String,
    /// `no_backup`, `no_snapshot`, `backup_mismatch`, `unchecked`.
    pub problem: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifySummary {
    /// `ok`, `gaps` (some blob is not protected or a backup does not match) or `failed`.
    pub status: &'static str,
    pub container: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    pub deep: bool,
    pub blobs: u64,
    pub backed_up: u64,
    pub without_backup: u64,
    pub without_snapshot: u64,
    /// Backups whose bytes were checked (deep).
    pub checked: u64,
    pub mismatched: u64,
    /// Seconds since the oldest current version without a backup was written: the data a loss
    /// now would take with it. `None` when every current version has a backup.
    pub rpo_seconds: Option<i64>,
    pub gaps: Vec<Gap>,
    /// Blobs protected, with something to know: `stored_md5_mismatch`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Gap>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl VerifySummary {
    pub fn succeeded(&self) -> bool {
        self.status == "ok"
    }
}

pub async fn verify(app: &App, request: &VerifyRequest) -> VerifySummary {
    let span = tracing::info_span!("verify", container = %request.container, deep = request.deep);
    async {
        let started = Instant::now();
        let mut summary = VerifySummary {
            status: "ok",
            container: request.container.clone(),
            prefix: request.prefix.clone(),
            deep: request.deep,
            blobs: 0,
            backed_up: 0,
            without_backup: 0,
            without_snapshot: 0,
            checked: 0,
            mismatched: 0,
            rpo_seconds: None,
            gaps: Vec::new(),
            warnings: Vec::new(),
            error: None,
            duration_ms: 0,
        };
        if let Err(error) = check_all(app, request, &mut summary).await {
            summary.status = "failed";
            summary.error = Some(error.to_string());
        } else if !summary.gaps.is_empty() {
            summary.status = "gaps";
        }
        summary.gaps.sort_by(|a, b| a.blob.cmp(&b.blob));
        summary.warnings.sort_by(|a, b| a.blob.cmp(&b.blob));
        summary.duration_ms = started.elapsed().as_millis() as u64;
        info!(
            status = summary.status,
            blobs = summary.blobs,
            gaps = summary.gaps.len(),
            "verify finished"
        );
        summary
    }
    .instrument(span)
    .await
}

async fn check_all(
    app: &App,
    request: &VerifyRequest,
    summary: &mut VerifySummary,
) -> Result<(), StorageError> {
    naming::validate_container_name(&request.container)
        .map_err(|e| StorageError::other("verifying", e.to_string()))?;
    let vault = app.vault_of(&request.container)?;
    let directory = request.prefix.as_deref().and_then(naming::directory_of);
    let index: BackupIndex = index_backups(list_backups(&vault, directory)?).await?;
    let source = app.source.container(&request.container)?;
    let pages = list_with_snapshots(&source, request.prefix.as_deref())?;
    futures::pin_mut!(pages);
    let mut diff = SnapshotDiff::new();
    let mut oldest_unprotected: Option<OffsetDateTime> = None;
    let mut last = false;
    while !last {
        let verdicts: Vec<BlobVerdict> = match pages.try_next().await? {
            Some(page) => page.into_iter().filter_map(|e| diff.push(e)).collect(),
            None => {
                last = true;
                std::mem::take(&mut diff).finish().into_iter().collect()
            }
        };
        let mut to_check = Vec::new();
        app.progress.saw(verdicts.len() as u64);
        for verdict in verdicts {
            app.progress.did(1);
            summary.blobs += 1;
            let blob = verdict.blob;
            if verdict.needs_snapshot {
                summary.without_snapshot += 1;
                summary.gaps.push(gap(&blob.name, "no_snapshot", None));
            }
            if index.contains(&blob.name, &blob.etag) {
                summary.backed_up += 1;
                if request.deep {
                    to_check.push(blob);
                }
            } else {
                summary.without_backup += 1;
                let written = blob.last_modified;
                oldest_unprotected = Some(oldest_unprotected.map_or(written, |t| t.min(written)));
                summary.gaps.push(gap(&blob.name, "no_backup", None));
            }
        }
        let checks: Vec<(String, Result<Checked, StorageError>)> = futures::stream::iter(to_check)
            .map(|blob| {
                let (vault, source) = (&vault, &source);
                async move {
                    let checked = check_bytes(source, vault, &blob).await;
                    (blob.name, checked)
                }
            })
            .buffer_unordered(app.config.snapshot_concurrency)
            .collect()
            .await;
        for (name, checked) in checks {
            match checked? {
                Checked::Matches => summary.checked += 1,
                Checked::StoredMd5Mismatch => {
                    summary.checked += 1;
                    summary.warnings.push(gap(
                        &name,
                        "stored_md5_mismatch",
                        Some(
                            "the lake's stored Content-MD5 does not match the blob's bytes; the \
                             backup holds the bytes, and the stored MD5 as the lake has it"
                                .into(),
                        ),
                    ));
                }
                Checked::Mismatch(detail) => {
                    summary.checked += 1;
                    summary.mismatched += 1;
                    summary
                        .gaps
                        .push(gap(&name, "backup_mismatch", Some(detail)));
                }
                Checked::Unchecked(detail) => {
                    summary.gaps.push(gap(&name, "unchecked", Some(detail)));
                }
            }
        }
    }
    summary.rpo_seconds =
        oldest_unprotected.map(|t| (OffsetDateTime::now_utc() - t).whole_seconds().max(0));
    Ok(())
}

fn gap(blob: &str, problem: &'static str, detail: Option<String>) -> Gap {
    Gap {
        blob: blob.to_owned(),
        problem,
        detail,
    }
}

enum Checked {
    Matches,
    /// The backup holds the version's bytes, whose stored MD5 is wrong in the lake itself.
    StoredMd5Mismatch,
    Mismatch(String),
    /// Nothing to compare with: the source moved on and neither it nor an earlier check left an
    /// MD5.
    Unchecked(String),
}

/// Reads the backup of `blob`'s current version and checks its bytes.
async fn check_bytes(
    source: &Container,
    vault: &Container,
    blob: &Version,
) -> Result<Checked, StorageError> {
    let name = naming::backup_blob_name(&blob.name, blob.last_modified, &blob.etag)
        .map_err(|e| StorageError::other("naming a backup", e.to_string()))?;
    let backup = vault.blob(&name);
    let (bytes, backup_etag, metadata) = match backup.read(None).await {
        Ok(read) => (read.bytes, read.etag, read.metadata),
        Err(e) if e.is(ErrorCode::BlobNotFound) => {
            return Ok(Checked::Unchecked(
                "the backup vanished during the check".into(),
            ))
        }
        Err(e) => return Err(e),
    };
    let digest = Md5::digest(&bytes).to_vec();
    if bytes.len() as u64 != blob.content_length {
        return Ok(Checked::Mismatch(format!(
            "{} bytes, the version has {}",
            bytes.len(),
            blob.content_length
        )));
    }
    let recorded = metadata
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(VERIFIED_MD5_KEY))
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
    let original = match source.blob(&blob.name).read(Some(&blob.etag)).await {
        Ok(read) => read.bytes,
        Err(e) if e.is(ErrorCode::ConditionNotMet) || e.is(ErrorCode::BlobNotFound) => {
            return Ok(Checked::Unchecked(
                "the source changed during the check".into(),
            ));
        }
        Err(e) => return Err(e),
    };
    let expected = Md5::digest(&original).to_vec();
    if expected == digest {
        let mut stamped = metadata;
        stamped.insert(VERIFIED_MD5_KEY.to_owned(), BASE64.encode(&digest));
        let recorded = backup.set_metadata(&stamped, &backup_etag).await;
        // An immutable backup container refuses it: the check stands, unrecorded.
        if let Err(e) = recorded {
            if !e.is_immutable() {
                return Err(e.context(format!("recording the checked MD5 of {}", backup.what())));
            }
        }
        if stored.is_some() {
            return Ok(Checked::StoredMd5Mismatch);
        }
    }
    Ok(if expected == digest {
        Checked::Matches
    } else {
        Checked::Mismatch("its bytes differ from the version's".into())
    })
}
