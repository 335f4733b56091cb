//! Deleting one doomed version of a level, as the pruning identity and pinned to the ETag it
//! was judged at; or, for a plan carried out again, looking whether the delivery before
//! deleted it.

use tracing::{info, warn};

use super::{DirectoryScope, Doomed, PruneAction, PruneOutcome, Replay, VersionKind};
use crate::{
    app::App,
    storage::{Container, ErrorCode, StorageError},
};

pub(super) async fn delete(
    app: &App,
    scope: &DirectoryScope<'_>,
    vault: &Container,
    doomed: Doomed,
    replay: Replay,
) -> PruneAction {
    let mut action = PruneAction {
        blob: doomed.blob,
        kind: doomed.kind,
        version: doomed.version,
        action: PruneOutcome::Delete,
        bytes: doomed.bytes,
        reason: None,
    };
    if scope.dry_run {
        return action;
    }
    if doomed.gone {
        return looked_at(app, scope, vault, action).await;
    }
    let deleted = async {
        let doomed_blob = match doomed.kind {
            // Deleted as the pruning identity (PRUNE_STORAGE), which may differ from the writer.
            VersionKind::Backup => app.pruner().container(vault.name())?.blob(&action.version),
            VersionKind::Snapshot => app
                .source
                .container(scope.container)?
                .blob(&action.blob)
                .at_snapshot(&action.version)?,
        };
        let what = || format!("pruning {} {}", action.kind.as_str(), action.version);
        match doomed_blob.delete(doomed.etag.as_deref()).await {
            Ok(()) => Ok(Gone::Now),
            // A conditional delete of a blob that is gone answers 412 (Azure's contract for
            // If-Match on a missing resource) or 404: only a look tells whether the delivery
            // before deleted it or it is another blob now.
            Err(e)
                if replay == Replay::Yes
                    && (e.is(ErrorCode::ConditionNotMet) || e.is(ErrorCode::BlobNotFound)) =>
            {
                match doomed_blob.probe().await {
                    Ok(None) => Ok(Gone::Before),
                    Ok(Some(_)) => Err(e.context(what())),
                    Err(probe) => Err(probe.context(what())),
                }
            }
            Err(e) => Err(e.context(what())),
        }
    }
    .await;
    match deleted {
        Ok(gone) => {
            if gone == Gone::Now {
                info!(
                    blob = action.blob,
                    kind = action.kind.as_str(),
                    version = action.version,
                    "pruned"
                );
            }
            action.action = PruneOutcome::Deleted;
        }
        Err(e) => {
            let (verdict, reason) = judge_refusal(&e);
            if verdict == PruneOutcome::Error {
                warn!(error = %e, version = action.version, "pruning a version failed");
                action.reason = Some(e.to_string());
            } else {
                info!(version = action.version, reason, "not pruned");
                action.reason = Some(reason.to_owned());
            }
            action.action = verdict;
        }
    }
    action
}

/// A version a recorded plan dooms that the level no longer lists: deleted by the delivery
/// before when it is gone, else left alone (it is not this level's to delete).
async fn looked_at(
    app: &App,
    scope: &DirectoryScope<'_>,
    vault: &Container,
    mut action: PruneAction,
) -> PruneAction {
    let probed = async {
        match action.kind {
            VersionKind::Backup => {
                let blob = app.pruner().container(vault.name())?.blob(&action.version);
                blob.probe().await.map(|found| found.is_some())
            }
            VersionKind::Snapshot => {
                let blob = app
                    .source
                    .container(scope.container)?
                    .blob(&action.blob)
                    .at_snapshot(&action.version)?;
                blob.probe().await.map(|found| found.is_some())
            }
        }
    }
    .await;
    match probed {
        Ok(false) => action.action = PruneOutcome::Deleted,
        Ok(true) => {
            warn!(
                version = action.version,
                "a recorded deletion not in the level judged: left alone"
            );
            action.action = PruneOutcome::Changed;
            action.reason = Some("not judged doomed in this level: left alone".to_owned());
        }
        Err(e) => {
            action.action = PruneOutcome::Error;
            action.reason = Some(e.context("looking for a planned deletion").to_string());
        }
    }
    action
}

/// Who deleted a planned version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gone {
    Now,
    /// The delivery before, which died part-way through the same plan.
    Before,
}

/// How a refused deletion counts: `refused` (immutable, held, leased, not this identity's to
/// delete), `changed` (not the blob judged, or gone already) or `error`.
pub fn judge_refusal(error: &StorageError) -> (PruneOutcome, &'static str) {
    if error.is_immutable() {
        (
            PruneOutcome::Refused,
            "immutable (a WORM policy or legal hold): kept",
        )
    } else if error.is_leased() {
        (PruneOutcome::Refused, "leased: kept")
    } else if error.is_permission_refusal() {
        (
            PruneOutcome::Refused,
            "this identity may not delete (a writer without delete rights): kept; prune with \
             PRUNE_STORAGE set to an identity that may",
        )
    } else if error.is(ErrorCode::ConditionNotMet) || error.is(ErrorCode::BlobNotFound) {
        (
            PruneOutcome::Changed,
            "changed or gone since it was judged: left alone",
        )
    } else {
        (PruneOutcome::Error, "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(status: u16, code: &str) -> StorageError {
        StorageError::refused("pruning", status, ErrorCode::parse(code))
    }

    #[test]
    fn immutable_held_or_leased_blobs_are_refusals_not_errors() {
        for (status, code, verdict) in [
            (409, "BlobImmutableDueToPolicy", PruneOutcome::Refused),
            (409, "BlobImmutableDueToLegalHold", PruneOutcome::Refused),
            (412, "LeaseIdMissing", PruneOutcome::Refused),
            (412, "ConditionNotMet", PruneOutcome::Changed),
            (404, "BlobNotFound", PruneOutcome::Changed),
            (
                403,
                "AuthorizationPermissionMismatch",
                PruneOutcome::Refused,
            ),
            (403, "AuthenticationFailed", PruneOutcome::Error),
        ] {
            assert_eq!(judge_refusal(&refusal(status, code)).0, verdict, "{code}");
        }
    }
}
