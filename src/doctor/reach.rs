//! Whether each connection answers its credentials, asked where lakebackup works with it: at the
//! account only where lakebackup needs the account (the lake's containers listed when
//! `RECONCILE_CONTAINERS` is unset, a restore target whose container each restore names, or no
//! container in scope known), else in each container in scope (List Blobs of nothing), so a
//! role assigned on a container, or a container SAS, is reached where it is valid. A refusal for
//! want of a permission still says the credential was accepted: what it lacks is for `rights` to
//! say. A refusal for another reason (a network rule, a signature or token not accepted) fails,
//! saying so; a container that answers so is left out of the rights checks.

use std::collections::HashMap;

use futures::{future::join_all, StreamExt};

use super::{check, Check, Status};
use crate::{
    app::{App, BACKUP_STORAGE, JOBS_STORAGE, SOURCE_STORAGE},
    config::{PRUNE_STORAGE, RESTORE_TARGET_STORAGE},
    storage::{connection::StorageAuth, Refusal, StorageAccount, StorageError},
};

/// The lake's containers in scope, and how they are known.
#[derive(Debug)]
pub(super) enum LakeScope {
    /// Named by `RECONCILE_CONTAINERS`.
    Named(Vec<String>),
    /// Listed from the lake (`RECONCILE_CONTAINERS` unset).
    Listed(Vec<String>),
    /// Not known: listing the lake failed.
    Unknown(StorageError),
}

impl LakeScope {
    pub(super) fn containers(&self) -> Option<&[String]> {
        match self {
            LakeScope::Named(names) | LakeScope::Listed(names) => Some(names),
            LakeScope::Unknown(_) => None,
        }
    }
}

/// Whether a container in scope exists, as reaching it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Presence {
    Exists,
    Absent,
    /// Listing its blobs was refused for want of a permission: it may exist.
    Unknown,
}

/// Where a connection answered: its rights are judged there.
#[derive(Debug, Clone, Default)]
pub(super) struct Places {
    /// Containers in scope that answered: allowed, absent, or refused for want of a permission.
    pub containers: Vec<(String, Presence)>,
    /// No container is in scope: rights are tried at the account (in a container of a reserved
    /// name), which answered.
    pub account: bool,
    /// Why no container is in scope, when none is and the account is not tried either.
    pub no_place: Option<String>,
}

/// What one request that reached for an account or container found.
enum Answer {
    /// Answered: allowed, or the container is absent.
    Fine(Presence),
    /// Refused for want of a permission: the credential was accepted.
    MayNot,
    /// Refused for another reason: the code, and why in words.
    Blocked(String, &'static str),
    /// No answer, or one that says nothing of the credential.
    Failed(StorageError),
}

fn answer_of(result: Result<(), StorageError>) -> Answer {
    match result {
        Ok(()) => Answer::Fine(Presence::Exists),
        Err(e) if e.status == Some(404) => Answer::Fine(Presence::Absent),
        Err(e) => match e.refusal() {
            Some(Refusal::MissingRight) => Answer::MayNot,
            Some(Refusal::Other(why)) => Answer::Blocked(e.code_name(), why),
            None => Answer::Failed(e),
        },
    }
}

/// Where each connection is reached: the account, or these containers.
enum Target {
    Account,
    Containers(Vec<String>),
}

/// Every connection the settings name.
pub(super) fn connections(app: &App) -> Vec<(&'static str, &StorageAccount)> {
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

fn target(app: &App, setting: &str, scope: &LakeScope) -> Target {
    match (setting, scope) {
        (SOURCE_STORAGE, LakeScope::Named(names)) => Target::Containers(names.clone()),
        (BACKUP_STORAGE | PRUNE_STORAGE, LakeScope::Named(names) | LakeScope::Listed(names)) => {
            Target::Containers(
                names
                    .iter()
                    .filter_map(|name| app.backup_container_of(name).ok())
                    .collect(),
            )
        }
        (JOBS_STORAGE, _) => Target::Containers(vec![app.config.job_ledger.clone()]),
        _ => Target::Account,
    }
}

/// Each connection reached (where it answered), and a check per connection.
pub(super) async fn reach_all(
    app: &App,
    scope: &LakeScope,
) -> (HashMap<&'static str, Places>, Vec<Check>) {
    let reached = join_all(
        connections(app)
            .into_iter()
            .map(|(setting, account)| reach(app, setting, account, scope)),
    )
    .await;
    let mut places = HashMap::new();
    let mut checks = Vec::new();
    for (setting, found, check) in reached {
        if let Some(found) = found {
            places.insert(setting, found);
        }
        checks.push(check);
    }
    (places, checks)
}

async fn reach(
    app: &App,
    setting: &'static str,
    account: &StorageAccount,
    scope: &LakeScope,
) -> (&'static str, Option<Places>, Check) {
    let title = if matches!(account.connection().auth, StorageAuth::Identity { .. }) {
        format!("{setting}: reachable and authorised (a token of its identity obtained)")
    } else {
        format!("{setting}: reachable and authorised")
    };
    let (places, check) = match target(app, setting, scope) {
        Target::Account => reach_account(setting, account, scope, title).await,
        Target::Containers(names) => reach_containers(setting, account, names, title).await,
    };
    (setting, places, check)
}

async fn reach_account(
    setting: &str,
    account: &StorageAccount,
    scope: &LakeScope,
    title: String,
) -> (Option<Places>, Check) {
    match answer_of(account.reach().await) {
        Answer::Fine(_) => {
            let places = match (setting, scope.containers()) {
                // The lake answered the listing that named its containers: they are in scope.
                (SOURCE_STORAGE, Some(names)) => Places {
                    containers: names
                        .iter()
                        .map(|name| (name.clone(), Presence::Exists))
                        .collect(),
                    ..Places::default()
                },
                (SOURCE_STORAGE | BACKUP_STORAGE | PRUNE_STORAGE, None) => Places {
                    no_place: Some(
                        "the lake's containers in scope are not known (see SOURCE_STORAGE: the \
                         lake's containers)"
                            .into(),
                    ),
                    ..Places::default()
                },
                _ => Places {
                    account: true,
                    ..Places::default()
                },
            };
            (
                Some(places),
                check(title, Status::Ok, "it lists its containers"),
            )
        }
        Answer::MayNot => {
            let places = if setting == RESTORE_TARGET_STORAGE {
                // The container a restore writes into is named by each restore.
                Places {
                    account: true,
                    ..Places::default()
                }
            } else {
                Places {
                    no_place: Some(
                        "no container in scope is known, and it may not list the account's \
                         containers"
                            .into(),
                    ),
                    ..Places::default()
                }
            };
            (
                Some(places),
                check(
                    title,
                    Status::Ok,
                    "it answers its credentials, and may not list the account's containers",
                ),
            )
        }
        Answer::Blocked(code, why) => (None, check(title, Status::Fail, blocked(&code, why))),
        Answer::Failed(e) => (None, check(title, Status::Fail, e.to_string())),
    }
}

fn blocked(code: &str, why: &str) -> String {
    format!("refused for another reason than a missing right: {code} ({why})")
}

async fn reach_containers(
    setting: &str,
    account: &StorageAccount,
    names: Vec<String>,
    title: String,
) -> (Option<Places>, Check) {
    let answers: Vec<(String, Answer)> = futures::stream::iter(names)
        .map(|name| async move {
            let answer = match account.container(&name) {
                Ok(container) => answer_of(container.reach().await),
                Err(e) => Answer::Failed(e),
            };
            (name, answer)
        })
        .buffered(8)
        .collect()
        .await;
    let container_sas = account
        .sas_grant()
        .and_then(Result::ok)
        .is_some_and(|grant| grant.is_container_sas());
    let mut places = Places::default();
    let (mut problems, mut absent, mut may_not) = (Vec::new(), Vec::new(), Vec::new());
    for (name, answer) in answers {
        match answer {
            Answer::Fine(presence) => {
                if presence == Presence::Absent {
                    absent.push(name.clone());
                }
                places.containers.push((name, presence));
            }
            Answer::MayNot => {
                may_not.push(name.clone());
                places.containers.push((name, Presence::Unknown));
            }
            Answer::Blocked(code, why) => {
                let sas = if container_sas {
                    " — its SAS is of one container (sr=c), valid there only: it may be for \
                     another container"
                } else {
                    ""
                };
                problems.push(format!("in {name}, {}{sas}", blocked(&code, why)));
            }
            Answer::Failed(e) => problems.push(format!("in {name}: {e}")),
        }
    }
    let answered: Vec<&str> = places.containers.iter().map(|(n, _)| n.as_str()).collect();
    let mut detail = if answered.is_empty() {
        String::new()
    } else {
        format!("it answers in {}", answered.join(", "))
    };
    if !may_not.is_empty() {
        detail.push_str(&format!(
            " (it may not list blobs in {}: see its rights)",
            may_not.join(", ")
        ));
    }
    let mut status = Status::Ok;
    if !absent.is_empty() && setting == SOURCE_STORAGE {
        status = Status::Warn;
        detail.push_str(&format!(
            "; RECONCILE_CONTAINERS names {}, which the lake does not have: nothing there is \
             backed up",
            absent.join(", ")
        ));
    }
    if !problems.is_empty() {
        status = Status::Fail;
        let refused = problems.join("; ");
        detail = if detail.is_empty() {
            refused
        } else {
            format!("{refused}; {detail}")
        };
    }
    let reached = !places.containers.is_empty();
    (reached.then_some(places), check(title, status, detail))
}

/// The lake's containers, when `RECONCILE_CONTAINERS` does not name them: without listing them
/// every reconciliation (and prune or verify without a container) fails, so a listing that fails
/// is a failure. When it names them, nothing lists the lake, and a listing that fails is only a
/// warning: a container added to the lake but not to `RECONCILE_CONTAINERS` is never backed up,
/// and the doctor could not look for one.
pub(super) async fn lake_containers(app: &App, scope: &LakeScope) -> Check {
    let title = "SOURCE_STORAGE: the lake's containers";
    match scope {
        LakeScope::Listed(names) => check(
            title,
            Status::Ok,
            format!(
                "listed (RECONCILE_CONTAINERS is unset): {} in scope",
                names.len()
            ),
        ),
        LakeScope::Unknown(e) => check(
            title,
            Status::Fail,
            format!(
                "{}: RECONCILE_CONTAINERS is unset, so every reconciliation lists the lake's \
                 containers, and fails. Grant listing containers at the account (a role \
                 assigned on the account, or an account SAS with srt=s and l), or name the \
                 containers in RECONCILE_CONTAINERS",
                refusal_text(e)
            ),
        ),
        LakeScope::Named(names) => {
            let listed = crate::storage::listing::list_container_names(&app.source).await;
            match listed {
                Ok(all) => {
                    let unnamed: Vec<&String> = all.iter().filter(|c| !names.contains(c)).collect();
                    if unnamed.is_empty() {
                        check(
                            title,
                            Status::Ok,
                            "RECONCILE_CONTAINERS names every container of the lake",
                        )
                    } else {
                        check(
                            title,
                            Status::Warn,
                            format!(
                                "not named in RECONCILE_CONTAINERS, so never backed up: {}",
                                unnamed
                                    .iter()
                                    .map(|c| c.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        )
                    }
                }
                Err(e) => check(
                    title,
                    Status::Warn,
                    format!(
                        "{} (RECONCILE_CONTAINERS names the containers, so nothing else lists \
                         them): a container added to the lake and not to RECONCILE_CONTAINERS is \
                         never backed up, and the doctor cannot look for one",
                        refusal_text(&e)
                    ),
                ),
            }
        }
    }
}

/// A failure to list, said as a missing right, a refusal for another reason, or as it came.
fn refusal_text(e: &StorageError) -> String {
    match e.refusal() {
        Some(Refusal::MissingRight) => format!(
            "it may not list the account's containers ({} {})",
            e.status.unwrap_or(403),
            e.code_name()
        ),
        Some(Refusal::Other(why)) => format!(
            "listing the account's containers was {}",
            blocked(&e.code_name(), why)
        ),
        None => e.to_string(),
    }
}
