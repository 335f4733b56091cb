//! The rights each connection needs for what the settings make lakebackup do, checked without
//! changing anything: a SAS by its own fields (permissions, resource types, services, expiry), a
//! key or an identity by trying each right with a request that cannot change anything
//! (`storage::probe`). A right the settings do not use is not asked for. Each missing right is a
//! failure naming the connection, the right and what would fail without it; neither a SAS nor a
//! key is ever shown.

use std::collections::HashSet;

use futures::future::join_all;
use time::{format_description::well_known::Rfc3339, Duration, OffsetDateTime};

use super::{check, Check, Status};
use crate::{
    app::{App, WorkQueue, BACKUP_STORAGE, JOBS_STORAGE, SOURCE_STORAGE},
    config::{CopyEngine, PRUNE_STORAGE, RESTORE_TARGET_STORAGE},
    storage::{
        connection::StorageAuth,
        sas_grant::{Right, Validity},
        ProbeSite, Probed, StorageAccount,
    },
};

/// A SAS that expires sooner than this is a warning: renew it before every request fails.
const SAS_RENEWAL_WARNING: Duration = Duration::days(14);

/// A container name to try blob rights in when no container is in scope (it need not exist).
const NO_CONTAINER: &str = "lakebackup-doctor-probe";

/// One right a connection needs, and what fails without it.
struct Need {
    right: Right,
    fails: String,
}

fn need(right: Right, fails: impl Into<String>) -> Need {
    Need {
        right,
        fails: fails.into(),
    }
}

/// What checking one right found.
enum Found {
    Granted,
    Missing(String),
    Unknown(String),
}

/// A check per SAS connection: can be read, and is valid now (expired or not yet valid: fail;
/// expiring within two weeks: warn). Made whether or not the account answered.
pub(super) fn sas_validity(app: &App) -> Vec<Check> {
    let now = OffsetDateTime::now_utc();
    connections(app)
        .into_iter()
        .filter_map(|(setting, account)| {
            let grant = account.sas_grant()?;
            let title = format!("{setting}: its SAS");
            let when = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
            Some(match grant.map(|g| g.validity(now)) {
                Err(e) => check(
                    title,
                    Status::Warn,
                    format!("could not be read as a SAS ({e}): its rights are tried instead"),
                ),
                Ok(Validity::Expired(at)) => check(
                    title,
                    Status::Fail,
                    format!(
                        "expired at {}: the service refuses every request made with it; give \
                         {setting} a new SAS",
                        when(at)
                    ),
                ),
                Ok(Validity::NotYet(from)) => check(
                    title,
                    Status::Fail,
                    format!(
                        "valid only from {} (st): the service refuses every request made with it \
                         until then",
                        when(from)
                    ),
                ),
                Ok(Validity::Valid(Some(until))) if until - now < SAS_RENEWAL_WARNING => check(
                    title,
                    Status::Warn,
                    format!(
                        "expires at {}: every request made with it fails from then; give \
                         {setting} a new SAS before",
                        when(until)
                    ),
                ),
                Ok(Validity::Valid(Some(until))) => {
                    check(title, Status::Ok, format!("valid until {}", when(until)))
                }
                Ok(Validity::Valid(None)) => check(
                    title,
                    Status::Ok,
                    "valid (its stored access policy sets its expiry)",
                ),
            })
        })
        .collect()
}

/// Every connection the settings name.
fn connections(app: &App) -> Vec<(&'static str, &StorageAccount)> {
    let mut all = vec![
        (SOURCE_STORAGE, &app.source),
        (BACKUP_STORAGE, &app.backup),
        (JOBS_STORAGE, &app.jobs),
    ];
    if let Some(target) = &app.restore_target {
        all.push((RESTORE_TARGET_STORAGE, target));
    }
    if let Some(pruner) = &app.prune_account {
        all.push((PRUNE_STORAGE, pruner));
    }
    all
}

/// The rights of each connection that answered (`reached`); blob rights are tried in (or for)
/// the first of the lake's containers in scope.
pub(super) async fn rights(app: &App, reached: &HashSet<&str>, scope: &[String]) -> Vec<Check> {
    let lake = scope.first().map(String::as_str);
    let checked = join_all(
        connections(app)
            .into_iter()
            .filter(|(setting, _)| reached.contains(setting))
            .map(|(setting, account)| async move {
                let needs = needs(app, setting, account);
                connection_rights(app, setting, account, needs, lake).await
            }),
    )
    .await;
    checked.into_iter().flatten().collect()
}

/// What `setting` is used for under the current settings.
fn needs(app: &App, setting: &str, account: &StorageAccount) -> Vec<Need> {
    let identity = matches!(account.connection().auth, StorageAuth::Identity { .. });
    match setting {
        SOURCE_STORAGE => lake_needs(app, identity),
        BACKUP_STORAGE => backup_needs(app, identity),
        JOBS_STORAGE => jobs_needs(&app.config.job_ledger),
        RESTORE_TARGET_STORAGE => restore_target_needs(app),
        PRUNE_STORAGE => vec![need(
            Right::DeleteBlobs,
            "prune deletes backups as PRUNE_STORAGE: every deletion is refused",
        )],
        _ => Vec::new(),
    }
}

/// Why a missing tags right may be meant.
const TAGS_OFF: &str = "(BACKUP_TAGS=false says that is intended)";

fn lake_needs(app: &App, identity: bool) -> Vec<Need> {
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
        need(
            Right::Snapshot,
            "no snapshot can be taken: every pass fails to protect the versions it finds",
        ),
    ];
    if config.list_tags {
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
    if config.retention.prunes_snapshots() {
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

fn restore_target_needs(app: &App) -> Vec<Need> {
    let fails = |what: &str| format!("restore --to-account cannot {what}");
    let mut needs = vec![
        need(
            Right::CreateContainers,
            fails("create its target container"),
        ),
        need(Right::ListBlobs, fails("list the target")),
        need(Right::ReadBlobs, fails("read the target")),
        need(Right::WriteBlobs, fails("write any blob")),
        need(
            Right::Snapshot,
            fails("snapshot a blob before overwriting it, so it overwrites nothing"),
        ),
    ];
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

/// One connection's rights: a check of those granted, one per right missing or unknown.
async fn connection_rights(
    app: &App,
    setting: &'static str,
    account: &StorageAccount,
    needs: Vec<Need>,
    lake: Option<&str>,
) -> Vec<Check> {
    let grant = match account.sas_grant() {
        Some(Ok(grant)) => match grant.validity(OffsetDateTime::now_utc()) {
            Validity::Valid(_) => Some(grant),
            // `sas_validity` fails it already: every right would be refused.
            _ => return Vec::new(),
        },
        _ => None,
    };
    // A SAS says what it grants, save what a stored access policy holds: those are tried.
    let mut found: Vec<Option<Found>> = needs
        .iter()
        .map(|need| {
            let allowed = grant.as_ref()?.allows(need.right)?;
            Some(match allowed {
                Ok(()) => Found::Granted,
                Err(lacks) => Found::Missing(lacks.to_string()),
            })
        })
        .collect();
    let tried_any = found.iter().any(Option::is_none);
    if tried_any {
        let site = probe_site(app, setting, account, lake).await;
        let site = &site;
        let tried = join_all(needs.iter().zip(&found).map(|(need, found)| async move {
            match found {
                Some(_) => None,
                None => Some(tried(account.probe(need.right, site).await)),
            }
        }))
        .await;
        for (slot, result) in found.iter_mut().zip(tried) {
            if result.is_some() {
                *slot = result;
            }
        }
    }
    let how = if tried_any {
        "each tried by a request that changes nothing, and not refused"
    } else {
        "its SAS grants them"
    };
    report(setting, &needs, found.into_iter().flatten().collect(), how)
}

fn tried(probed: Probed) -> Found {
    match probed {
        Probed::Allowed(_) => Found::Granted,
        Probed::Refused(e) => Found::Missing(format!(
            "refused ({} {}) when tried with a request that changes nothing",
            e.status.unwrap_or(403),
            match &e.code {
                Some(crate::storage::ErrorCode::Other(code)) => code.clone(),
                Some(code) => format!("{code:?}"),
                None => "no error code".into(),
            }
        )),
        Probed::Inconclusive(e) => Found::Unknown(format!("could not be tried: {e}")),
        Probed::NotTried(why) => Found::Unknown(format!("not tried: {why}")),
    }
}

fn report(setting: &str, needs: &[Need], found: Vec<Found>, how: &str) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut granted = Vec::new();
    for (need, found) in needs.iter().zip(found) {
        let title = format!("{setting}: may {}", need.right.describe());
        match found {
            Found::Granted => granted.push(need.right.describe()),
            Found::Missing(why) => {
                checks.push(check(title, Status::Fail, format!("{why}: {}", need.fails)))
            }
            Found::Unknown(why) => checks.push(check(
                title,
                Status::Warn,
                format!("{why}; without it {}", need.fails),
            )),
        }
    }
    if !granted.is_empty() {
        checks.insert(
            0,
            check(
                format!("{setting}: rights"),
                Status::Ok,
                format!("may {} ({how})", granted.join(", ")),
            ),
        );
    }
    checks
}

/// Where `setting`'s rights are tried: the container it works in, and for creating, a container
/// or queue that exists (none is created to try it).
async fn probe_site(
    app: &App,
    setting: &str,
    account: &StorageAccount,
    lake: Option<&str>,
) -> ProbeSite {
    let lake = lake.unwrap_or(NO_CONTAINER);
    let container = match setting {
        BACKUP_STORAGE | PRUNE_STORAGE => app
            .backup_container_of(lake)
            .unwrap_or_else(|_| NO_CONTAINER.to_owned()),
        JOBS_STORAGE => app.config.job_ledger.clone(),
        _ => lake.to_owned(),
    };
    let exists = match account.container(&container) {
        Ok(c) => c.exists().await.unwrap_or(false),
        Err(_) => false,
    };
    let existing_container = if exists {
        Some(container.clone())
    } else {
        account.first_container().await.ok().flatten()
    };
    let existing_queue = if setting == JOBS_STORAGE {
        existing_work_queue(app).await
    } else {
        None
    };
    ProbeSite {
        container,
        existing_container,
        existing_queue,
    }
}

/// A work queue (or its poison queue) that exists in `AzureWebJobsStorage`.
async fn existing_work_queue(app: &App) -> Option<String> {
    for queue in [WorkQueue::Shards, WorkQueue::Backups, WorkQueue::Events] {
        let Some(name) = queue.name(&app.config) else {
            continue;
        };
        for name in [name.clone(), format!("{name}-poison")] {
            if let Ok(Some(_)) = app.jobs.queue(&name).ok()?.depth().await {
                return Some(name);
            }
        }
    }
    None
}
