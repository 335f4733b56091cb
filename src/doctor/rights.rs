//! The rights each connection needs for what the settings make lakebackup do, checked without
//! changing anything, where lakebackup uses them: in each container in scope that answered
//! (`reach`), on each work queue and poison queue by name (`queues`), at the account for what
//! only the account grants. A SAS is judged by its own fields (permissions, resource types,
//! services, expiry; a SAS of one container is valid there only, which reaching the containers
//! found), a key or an identity by trying each right with a request that cannot change anything
//! (`storage::probe`). A right the settings do not use is not asked for. Each missing right is a
//! failure naming the connection, the right, where it is missing and what would fail without it
//! (a warning for what only an admin's restore needs); a refusal for another reason than a
//! missing right (a network rule, a signature not accepted) is a failure that says so; neither a
//! SAS nor a key is ever shown.

mod queues;

use std::collections::HashMap;

use futures::{future::join_all, StreamExt};
use time::{format_description::well_known::Rfc3339, Duration, OffsetDateTime};

use super::{
    check,
    reach::{connections, Places, Presence},
    Check, Status,
};
use crate::{
    app::{App, BACKUP_STORAGE, JOBS_STORAGE, SOURCE_STORAGE},
    config::{CopyEngine, PRUNE_STORAGE, RESTORE_TARGET_STORAGE},
    storage::{
        connection::StorageAuth,
        sas_grant::{Right, Service, Validity},
        Probed, StorageAccount,
    },
};

/// A SAS that expires sooner than this is a warning: renew it before every request fails.
const SAS_RENEWAL_WARNING: Duration = Duration::days(14);

/// A container name to try blob rights in at the account, where no container is in scope (it
/// need not exist: an allowed request meets 404 `ContainerNotFound`).
const NO_CONTAINER: &str = "lakebackup-doctor-probe";

/// How many rights are tried at once per connection.
const PROBES_AT_ONCE: usize = 16;

/// One right a connection needs, what fails without it, and how much that matters.
struct Need {
    right: Right,
    fails: String,
    /// Fail where the product's own work fails; warn where only an admin's action does.
    missing: Status,
}

fn need(right: Right, fails: impl Into<String>) -> Need {
    Need {
        right,
        fails: fails.into(),
        missing: Status::Fail,
    }
}

/// What checking one right found in one place.
#[derive(Debug, Clone)]
enum Found {
    Granted,
    /// The right is missing: why.
    Missing(String),
    /// Refused for another reason than a missing right: the code, and why.
    Blocked(String),
    /// Cannot be told: why.
    Unknown(String),
    /// Not tried here, and nothing is lost by it where another place showed the right: why.
    Skipped(String),
}

/// Where a right was checked: a container or queue, or the account (`None`).
type Place = Option<String>;

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

/// The rights of each connection that answered, where it answered.
pub(super) async fn rights(app: &App, places: &HashMap<&'static str, Places>) -> Vec<Check> {
    let checked = join_all(
        connections(app)
            .into_iter()
            .filter_map(|(setting, account)| Some((setting, account, places.get(setting)?)))
            .map(|(setting, account, places)| async move {
                let needs = needs(app, setting, account);
                connection_rights(app, setting, account, needs, places).await
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
    places: &Places,
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
    let by_sas: Vec<Option<Found>> = needs
        .iter()
        .map(|need| {
            let allowed = grant.as_ref()?.allows(need.right)?;
            Some(match allowed {
                Ok(()) => Found::Granted,
                Err(lacks) => Found::Missing(lacks.to_string()),
            })
        })
        .collect();
    let to_try: Vec<Right> = needs
        .iter()
        .zip(&by_sas)
        .filter(|(_, found)| found.is_none())
        .map(|(need, _)| need.right)
        .collect();
    let mut tried = if to_try.is_empty() {
        HashMap::new()
    } else {
        try_rights(app, account, &to_try, places, grant.is_some()).await
    };
    let found: Vec<Found> = needs
        .iter()
        .zip(by_sas)
        .map(|(need, by_sas)| {
            by_sas.unwrap_or_else(|| overall(tried.remove(&need.right).unwrap_or_default()))
        })
        .collect();
    let how = if to_try.is_empty() {
        "its SAS grants them".to_owned()
    } else {
        let mut tried_in: Vec<&str> = places.containers.iter().map(|(n, _)| n.as_str()).collect();
        if setting == JOBS_STORAGE {
            tried_in.push("its work queues");
        }
        let mut how = "each tried by a request that changes nothing, and not refused".to_owned();
        if !tried_in.is_empty() {
            how.push_str(&format!(", in {}", tried_in.join(", ")));
        }
        how
    };
    report(setting, &needs, found, &how)
}

fn is_blob_right(right: Right) -> bool {
    right.service() == Service::Blob
        && !matches!(right, Right::CreateContainers | Right::DelegationKey)
}

/// Tries each of `rights` where it is used: blob rights in every container that answered (or at
/// the account), Create Container on those that exist, queue rights on the queues by name.
async fn try_rights(
    app: &App,
    account: &StorageAccount,
    rights: &[Right],
    places: &Places,
    sas: bool,
) -> HashMap<Right, Vec<(Place, Found)>> {
    let mut found: HashMap<Right, Vec<(Place, Found)>> = HashMap::new();
    let blob_rights: Vec<Right> = rights
        .iter()
        .copied()
        .filter(|r| is_blob_right(*r))
        .collect();
    let containers: Vec<Place> = if places.account {
        vec![None]
    } else {
        places
            .containers
            .iter()
            .map(|(name, _)| Some(name.clone()))
            .collect()
    };
    if containers.is_empty() {
        let why = places
            .no_place
            .clone()
            .unwrap_or_else(|| "no container is in scope".to_owned());
        for right in &blob_rights {
            found
                .entry(*right)
                .or_default()
                .push((None, Found::Unknown(format!("not tried: {why}"))));
        }
    } else {
        let pairs: Vec<(Right, Place)> = blob_rights
            .iter()
            .flat_map(|right| containers.iter().map(move |c| (*right, c.clone())))
            .collect();
        let results: Vec<(Right, Place, Found)> = futures::stream::iter(pairs)
            .map(|(right, place)| async move {
                let container = place.as_deref().unwrap_or(NO_CONTAINER);
                let found = tried(&account.probe_blob(right, container).await);
                (right, place, found)
            })
            .buffer_unordered(PROBES_AT_ONCE)
            .collect()
            .await;
        for (right, place, result) in results {
            found.entry(right).or_default().push((place, result));
        }
    }
    if rights.contains(&Right::CreateContainers) {
        found.insert(
            Right::CreateContainers,
            create_containers(account, places).await,
        );
    }
    if rights.contains(&Right::DelegationKey) {
        let key = tried(&account.probe_delegation_key().await);
        found.insert(Right::DelegationKey, vec![(None, key)]);
    }
    let queue_rights: Vec<Right> = rights
        .iter()
        .copied()
        .filter(|r| r.service() == Service::Queue)
        .collect();
    if !queue_rights.is_empty() {
        found.extend(queues::queue_rights(app, account, &queue_rights, sas).await);
    }
    found
}

/// Create Container tried on each container in scope that exists (none is created to try it);
/// where none does, on any container of the account (a role that may create one is assigned on
/// the account: a container that does not exist has no role of its own).
async fn create_containers(account: &StorageAccount, places: &Places) -> Vec<(Place, Found)> {
    let mut existing = Vec::new();
    for (name, presence) in &places.containers {
        let exists = match presence {
            Presence::Exists => true,
            Presence::Absent => false,
            Presence::Unknown => match account.container(name) {
                Ok(container) => container.exists().await.unwrap_or(false),
                Err(_) => false,
            },
        };
        if exists {
            existing.push(name.clone());
        }
    }
    if existing.is_empty() {
        return match account.first_container().await {
            Ok(Some(any)) => vec![(None, tried(&account.probe_create_container(&any).await))],
            _ => vec![(
                None,
                Found::Unknown(
                    "not tried: no container exists to try it on without creating one".into(),
                ),
            )],
        };
    }
    join_all(existing.into_iter().map(|name| async move {
        let found = tried(&account.probe_create_container(&name).await);
        (Some(name), found)
    }))
    .await
}

fn tried(probed: &Probed) -> Found {
    match probed {
        Probed::Allowed(_) => Found::Granted,
        Probed::Refused(e) => Found::Missing(format!(
            "refused ({} {}) when tried with a request that changes nothing",
            e.status.unwrap_or(403),
            e.code_name()
        )),
        Probed::Blocked(e, why) => Found::Blocked(format!(
            "refused for another reason than a missing right: {} ({why})",
            e.code_name()
        )),
        Probed::Inconclusive(e) => Found::Unknown(format!("could not be tried: {e}")),
        Probed::NotTried(why) => Found::Unknown(format!("not tried: {why}")),
    }
}

/// What the places found, together: missing anywhere is missing (naming where), then refused
/// for another reason, then unknown; granted where every place that was tried granted it.
fn overall(found: Vec<(Place, Found)>) -> Found {
    let first_of = |wanted: fn(&Found) -> Option<&String>| {
        let hits: Vec<(&Place, &String)> = found
            .iter()
            .filter_map(|(place, f)| wanted(f).map(|why| (place, why)))
            .collect();
        let (_, why) = hits.first()?;
        let named: Vec<&str> = hits.iter().filter_map(|(p, _)| p.as_deref()).collect();
        Some(if named.is_empty() {
            (*why).clone()
        } else {
            format!("{why} (in {})", named.join(", "))
        })
    };
    if let Some(why) = first_of(|f| match f {
        Found::Missing(why) => Some(why),
        _ => None,
    }) {
        return Found::Missing(why);
    }
    if let Some(why) = first_of(|f| match f {
        Found::Blocked(why) => Some(why),
        _ => None,
    }) {
        return Found::Blocked(why);
    }
    if let Some(why) = first_of(|f| match f {
        Found::Unknown(why) => Some(why),
        _ => None,
    }) {
        return Found::Unknown(why);
    }
    if found.iter().any(|(_, f)| matches!(f, Found::Granted)) {
        return Found::Granted;
    }
    match first_of(|f| match f {
        Found::Skipped(why) => Some(why),
        _ => None,
    }) {
        Some(why) => Found::Unknown(why),
        None => Found::Unknown("not tried: nowhere to try it".into()),
    }
}

fn report(setting: &str, needs: &[Need], found: Vec<Found>, how: &str) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut granted = Vec::new();
    for (need, found) in needs.iter().zip(found) {
        let title = format!("{setting}: may {}", need.right.describe());
        match found {
            Found::Granted => granted.push(need.right.describe()),
            Found::Missing(why) | Found::Blocked(why) => {
                checks.push(check(title, need.missing, format!("{why}: {}", need.fails)))
            }
            Found::Unknown(why) | Found::Skipped(why) => checks.push(check(
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
