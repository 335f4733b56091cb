//! The rights each connection needs under the current settings, each with what fails without
//! it and how much that matters: the lake's, the backup account's, the restore target's,
//! `PRUNE_STORAGE`'s and `AzureWebJobsStorage`'s.

use crate::{
    app::{App, BACKUP_STORAGE, JOBS_STORAGE, SOURCE_STORAGE},
    config::{CopyEngine, PRUNE_STORAGE, RESTORE_TARGET_STORAGE},
    doctor::Status,
    storage::{connection::StorageAuth, sas_grant::Right, StorageAccount},
};

/// One right a connection needs, what fails without it, and how much that matters.
pub(super) struct Need {
    pub(super) right: Right,
    pub(super) fails: String,
    /// Fail where the product's own work fails; warn where only an admin's action does.
    pub(super) missing: Status,
}

fn need(right: Right, fails: impl Into<String>) -> Need {
    Need {
        right,
        fails: fails.into(),
        missing: Status::Fail,
    }
}

/// What `setting` is used for under the current settings, in an account whose namespace is
/// `hierarchical` or flat.
pub(super) fn needs(
    app: &App,
    setting: &str,
    account: &StorageAccount,
    hierarchical: bool,
) -> Vec<Need> {
    let identity = matches!(account.connection().auth, StorageAuth::Identity { .. });
    match setting {
        SOURCE_STORAGE => lake_needs(app, identity, hierarchical),
        BACKUP_STORAGE => backup_needs(app, identity),
        JOBS_STORAGE => jobs_needs(&app.config.job_ledger),
        RESTORE_TARGET_STORAGE => restore_target_needs(app, hierarchical),
        PRUNE_STORAGE => vec![need(
            Right::DeleteBlobs,
            "prune deletes backups as PRUNE_STORAGE: every deletion is refused",
        )],
        _ => Vec::new(),
    }
}

/// Why a missing tags right may be meant.
const TAGS_OFF: &str = "(BACKUP_TAGS=false says that is intended)";

/// A hierarchical lake takes no snapshots and has no index tags: its copies are pinned to the
/// listed ETag instead, so neither right is needed (nor the deletion of snapshots).
fn lake_needs(app: &App, identity: bool, hierarchical: bool) -> Vec<Need> {
    let config = &app.config;
    let mut needs = vec![
        need(
            Right::ListBlobs,
            "no pass can list the lake: nothing is backed up",
        ),
        need(
            Right::ReadBlobs,
            "no version can be read or copied: nothing is backed up",
        ),
    ];
    if !hierarchical {
        needs.push(need(
            Right::Snapshot,
            "no snapshot can be taken: every pass fails to protect the versions it finds",
        ));
    }
    needs.push(
        // Backups never write into the lake; a restore into it does. Restores are an admin's
        // action, which may run with another identity or into another account: a warning.
        Need {
            right: Right::WriteBlobs,
            fails: "restores into the lake (in place, or into another of its containers) fail: \
                    restore into another account (RESTORE_TARGET_STORAGE, restore \
                    --to-account), or grant it before restoring"
                .into(),
            missing: Status::Warn,
        },
    );
    if config.list_tags && !hierarchical {
        needs.push(need(
            Right::ReadTags,
            format!(
                "listings refuse tags: blobs are backed up without their index tags {TAGS_OFF}"
            ),
        ));
    }
    if config.copy_engine == CopyEngine::Adf && config.use_lease {
        needs.push(need(
            Right::Lease,
            "BACKUP_USE_LEASE: no Data Factory copy can lease its source",
        ));
    }
    // What the code deletes in the lake: snapshots past RETENTION_SNAPSHOT_DAYS, nothing else.
    if config.retention.prunes_snapshots() && !hierarchical {
        needs.push(need(
            Right::DeleteBlobs,
            "RETENTION_SNAPSHOT_DAYS: no snapshot in the lake can be pruned",
        ));
    }
    if identity {
        needs.push(need(
            Right::DelegationKey,
            "versions above COPY_THROUGH_WORKER_MAX_BYTES are copied server-side through a \
             user-delegation SAS: their backups fail",
        ));
    }
    needs
}

fn backup_needs(app: &App, identity: bool) -> Vec<Need> {
    let config = &app.config;
    let mut needs = vec![
        need(
            Right::CreateContainers,
            "each process creates the {c}bak containers it writes into: every backup fails",
        ),
        need(
            Right::ListBlobs,
            "{c}bak cannot be listed: every pass fails",
        ),
        need(
            Right::ReadBlobs,
            "backups cannot be read: a backup already there cannot be judged, and verify and \
             restore fail",
        ),
        need(Right::WriteBlobs, "no backup can be written or stamped"),
    ];
    if config.list_tags {
        needs.push(need(
            Right::WriteTags,
            format!("backups cannot carry their index tags {TAGS_OFF}"),
        ));
        needs.push(need(
            Right::ReadTags,
            format!("restore and verify cannot read the backups' tags {TAGS_OFF}"),
        ));
    }
    if config.retention.prunes_backups() && app.prune_account.is_none() {
        needs.push(need(
            Right::DeleteBlobs,
            "RETENTION_* prunes backups as BACKUP_STORAGE (PRUNE_STORAGE is unset): every \
             deletion is refused. Grant delete, or set PRUNE_STORAGE to an identity that may \
             delete and prune there",
        ));
    }
    if identity {
        needs.push(need(
            Right::DelegationKey,
            "restores copy large backups server-side through a user-delegation SAS: they fail",
        ));
    }
    needs
}

fn restore_target_needs(app: &App, hierarchical: bool) -> Vec<Need> {
    let fails = |what: &str| format!("restore --to-account cannot {what}");
    let mut needs = vec![
        need(
            Right::CreateContainers,
            fails("create its target container"),
        ),
        need(Right::ListBlobs, fails("list the target")),
        need(Right::ReadBlobs, fails("read the target")),
        need(Right::WriteBlobs, fails("write any blob")),
    ];
    if hierarchical {
        return needs;
    }
    needs.push(need(
        Right::Snapshot,
        fails("snapshot a blob before overwriting it, so it overwrites nothing"),
    ));
    if app.config.list_tags {
        needs.push(need(
            Right::WriteTags,
            format!("restore --to-account cannot write blobs' index tags {TAGS_OFF}"),
        ));
    }
    needs
}

fn jobs_needs(ledger: &str) -> Vec<Need> {
    vec![
        need(
            Right::CreateQueues,
            "each process creates the queues it sends to: no shard, request or poison message \
             can be queued",
        ),
        need(
            Right::SendMessages,
            "no shard, backup request or poison message can be queued: no job runs",
        ),
        need(
            Right::ReceiveMessages,
            "no queued work can be taken: nothing runs",
        ),
        need(
            Right::DeleteMessages,
            "work done cannot be removed from its queue: every message comes back until it is \
             poisoned",
        ),
        need(
            Right::UpdateMessages,
            "a message being worked on cannot be kept hidden (lakebackup run, and the Functions \
             host on long invocations): it is delivered again meanwhile",
        ),
        need(
            Right::CreateContainers,
            format!("each process creates the jobs' ledger ({ledger}): no job can start"),
        ),
        need(
            Right::ListBlobs,
            format!("the jobs' ledger ({ledger}) cannot be listed: no job's status"),
        ),
        need(
            Right::ReadBlobs,
            format!("the jobs' ledger ({ledger}) cannot be read: no job's status"),
        ),
        need(
            Right::WriteBlobs,
            format!("the jobs' ledger ({ledger}) cannot be written: no job can start"),
        ),
    ]
}
