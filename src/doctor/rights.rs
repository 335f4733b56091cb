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

mod needs;
mod queues;
mod sas;

use needs::Need;
pub(super) use sas::sas_validity;

use std::collections::HashMap;

use futures::{future::join_all, StreamExt};

use super::{
    check,
    reach::{connections, Places, Presence},
    Check, Status,
};
use time::OffsetDateTime;

use crate::{
    app::{App, JOBS_STORAGE},
    storage::{
        sas_grant::{Right, Service, Validity},
        Namespace, Probed, StorageAccount,
    },
};

/// A container name to try blob rights in at the account, where no container is in scope (it
/// need not exist: an allowed request meets 404 `ContainerNotFound`).
const NO_CONTAINER: &str = "lakebackup-doctor-probe";

/// How many rights are tried at once per connection.
const PROBES_AT_ONCE: usize = 16;

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

/// The rights of each connection that answered, where it answered.
pub(super) async fn rights(app: &App, places: &HashMap<&'static str, Places>) -> Vec<Check> {
    let checked = join_all(
        connections(app)
            .into_iter()
            .filter_map(|(setting, account)| Some((setting, account, places.get(setting)?)))
            .map(|(setting, account, places)| async move {
                let hierarchical = hierarchical(account, places).await;
                let needs = needs::needs(app, setting, account, hierarchical);
                connection_rights(app, setting, account, needs, places).await
            }),
    )
    .await;
    checked.into_iter().flatten().collect()
}

/// Whether the account has a hierarchical namespace (the answer the product itself uses, asked
/// in a container in scope where the account may not be asked): no snapshot or index tag is
/// used there, so no right to them is needed. Unknown or unreadable counts as flat, which
/// checks more (the namespace's own check says why it could not be told).
async fn hierarchical(account: &StorageAccount, places: &Places) -> bool {
    let container = places
        .containers
        .first()
        .map_or("", |(name, _)| name.as_str());
    matches!(
        account.namespace(container).await,
        Ok(Namespace::Hierarchical)
    )
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
