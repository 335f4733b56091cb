//! The doctor's checks of the accounts: the backup account (and `PRUNE_STORAGE`,
//! `RESTORE_TARGET_STORAGE`) apart from the lake's; soft delete and the namespace (flat or
//! hierarchical, and what is protected in it) on the lake; soft delete on the backup account and an immutability policy or legal hold on each
//! `{c}bak` in scope.

use futures::StreamExt;

use super::{check, reach, Check, Status};
use crate::{
    app::{App, BACKUP_STORAGE, SOURCE_STORAGE},
    config::CopyEngine,
    storage::{ContainerProtection, Namespace, StorageAccount, StorageError},
};

/// The backup account is not the lake's, and `PRUNE_STORAGE` is the backup account.
pub(super) fn accounts_apart(app: &App) -> Vec<Check> {
    let mut checks = vec![if app.backup.same_blob_service(&app.source) {
        check(
            "BACKUP_STORAGE: another account than the lake's",
            Status::Fail,
            "BACKUP_STORAGE is SOURCE_STORAGE's own account: an incident that takes the lake's \
             account (deletion, ransomware with its keys, a region) takes the backups with it",
        )
    } else {
        check(
            "BACKUP_STORAGE: another account than the lake's",
            Status::Ok,
            "the backups live in an account of their own",
        )
    }];
    if let Some(pruner) = &app.prune_account {
        if !pruner.same_blob_service(&app.backup) {
            checks.push(check(
                "PRUNE_STORAGE: the backup account",
                Status::Fail,
                "PRUNE_STORAGE names another account than BACKUP_STORAGE: prune would find \
                 nothing it judged there",
            ));
        }
    }
    checks.extend(restore_target_apart(app));
    checks
}

/// `RESTORE_TARGET_STORAGE`, when set, is neither the backup account (a restore would write the
/// lake's data among the backups) nor the lake's (`--to-account` would write into the lake).
/// Accounts are compared as the service knows them, however their endpoints are spelled.
pub(super) fn restore_target_apart(app: &App) -> Option<Check> {
    let target = app.restore_target.as_ref()?;
    let title = "RESTORE_TARGET_STORAGE: another account than the lake's and the backups'";
    Some(if target.same_blob_service(&app.backup) {
        check(
            title,
            Status::Fail,
            "RESTORE_TARGET_STORAGE is BACKUP_STORAGE's own account: restore --to-account would \
             write the lake's data among the backups; name a clean account",
        )
    } else if target.same_blob_service(&app.source) {
        check(
            title,
            Status::Warn,
            "RESTORE_TARGET_STORAGE is SOURCE_STORAGE's own account: restore --to-account writes \
             into the lake itself (a restore into the lake needs no --to-account); after a \
             compromise, restore into a clean account",
        )
    } else {
        check(
            title,
            Status::Ok,
            "a restore --to-account writes into an account of its own",
        )
    })
}

/// Soft delete and the namespace on the lake's account (when it answers).
pub(super) async fn lake_account(app: &App, reached: bool, scope: &reach::LakeScope) -> Vec<Check> {
    if !reached {
        return Vec::new();
    }
    let (soft_delete, namespace) = futures::join!(
        soft_delete(
            SOURCE_STORAGE,
            &app.source,
            "a blob deleted or overwritten between two passes (without events) is lost for good",
        ),
        namespace(app, scope)
    );
    vec![
        soft_delete,
        check(
            "SOURCE_STORAGE: container soft delete",
            Status::Warn,
            "not visible to the data plane: check it with `az storage account \
             blob-service-properties show -n <account> -g <resource-group> --query \
             containerDeleteRetentionPolicy`; without it a deleted container is gone at once \
             (its backups stay in {c}bak)",
        ),
        namespace,
    ]
}

/// Which namespace the lake runs in (`storage::namespace`, the answer every backup uses), and
/// what lakebackup protects in it.
async fn namespace(app: &App, scope: &reach::LakeScope) -> Check {
    let title = "SOURCE_STORAGE: namespace";
    // Asked at the account, or where a connection may not ask there, in a container in scope.
    let container = scope
        .containers()
        .and_then(|names| names.first())
        .map_or("", String::as_str);
    match app.source.namespace(container).await {
        Ok(Namespace::Flat) => check(
            title,
            Status::Ok,
            "flat (Blob Storage): each version is kept by a snapshot in the lake and a \
             version-keeping backup in BACKUP_STORAGE, with its properties, metadata and index \
             tags",
        ),
        Ok(Namespace::Hierarchical) => check(
            title,
            Status::Ok,
            "hierarchical (ADLS Gen2): each version is kept by a version-keeping backup in \
             BACKUP_STORAGE pinned to the ETag listed, with its properties, metadata and access \
             control (owner, group, permissions, ACL) kept per version; no snapshots and no \
             index tags (Azure has none here), so a version that lives shorter than one pass or \
             event can be missed; every directory (empty ones included) is a version with its \
             access control and default ACL, and a restore into such an account sets each path's \
             owner, group, permissions and ACLs back exactly (owners and groups take a superuser \
             or Storage Blob Data Owner)",
        ),
        Ok(Namespace::Unknown) => check(
            title,
            Status::Warn,
            "unknown: this connection may not read the account's information (Get Account \
             Information, at the account or in the container); backups run as on a flat account \
             (a hierarchical one refuses their snapshots and tags, loudly), and a restore into \
             this account refuses to run: grant a role that may read the account's properties",
        ),
        Err(e) => check(title, Status::Warn, format!("could not be read: {e}")),
    }
}

pub(super) async fn soft_delete(name: &str, account: &StorageAccount, protects: &str) -> Check {
    let title = format!("{name}: blob soft delete");
    match account.blob_service_setup().await {
        Ok(setup) => match setup.blob_soft_delete_days {
            Some(days) => check(title, Status::Ok, format!("on, {days} days")),
            None => check(
                title,
                Status::Warn,
                format!("off: {protects}. Turn it on (`az storage account blob-service-properties update -n <account> -g <resource-group> --enable-delete-retention true --delete-retention-days 14`)"),
            ),
        },
        Err(e) => check(
            title,
            Status::Warn,
            format!("could not be read (the identity may lack the right to read the service's properties): {e}"),
        ),
    }
}

/// An immutability policy or legal hold on each `{c}bak` in scope; soft delete on the account
/// (when it answers).
pub(super) async fn backup_account(
    app: &App,
    reached: bool,
    scope: &reach::LakeScope,
) -> Vec<Check> {
    if !reached {
        return Vec::new();
    }
    let soft_delete = soft_delete(
        BACKUP_STORAGE,
        &app.backup,
        "a backup deleted by mistake or by an attacker with delete rights is gone at once",
    )
    .await;
    let mut checks = vec![soft_delete];
    let Some(containers) = scope.containers() else {
        checks.push(check(
            "BACKUP_STORAGE: immutability of {c}bak",
            Status::Warn,
            "the lake's containers in scope are not known (see SOURCE_STORAGE: the lake's \
             containers)",
        ));
        return checks;
    };
    for result in protections(app, containers).await {
        let (vault, protection) = match result {
            Ok(found) => found,
            Err(e) => {
                checks.push(check(
                    "BACKUP_STORAGE: immutability",
                    Status::Warn,
                    e.to_string(),
                ));
                continue;
            }
        };
        checks.push(immutability(app, &vault, protection));
    }
    checks
}

/// What protects a `{c}bak` (`None`: it does not exist yet), or why it could not be read.
type Protection = Result<Option<ContainerProtection>, StorageError>;

/// What protects each container's `{c}bak`, by its name.
async fn protections(
    app: &App,
    containers: &[String],
) -> Vec<Result<(String, Protection), StorageError>> {
    futures::stream::iter(containers.to_vec())
        .map(|container| async move {
            let vault = app.backup_container_of(&container);
            let protection = match &vault {
                Ok(vault) => app.backup.container(vault)?.protection().await,
                Err(e) => Err(StorageError::other(
                    "naming a backup container",
                    e.to_string(),
                )),
            };
            Ok::<_, StorageError>((vault.unwrap_or_default(), protection))
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
}

/// The verdict on `{c}bak` `vault`'s protection: a time-based policy or legal hold, which the
/// `adf` engine's second write (the stamp) cannot pass.
fn immutability(app: &App, vault: &str, protection: Protection) -> Check {
    let title = format!("BACKUP_STORAGE: immutability of {vault}");
    match protection {
        Ok(Some(p)) if !p.immutability_policy && !p.legal_hold && p.version_level_worm => check(
            title,
            Status::Warn,
            "version-level immutability is enabled, which alone protects nothing: check that \
             the container has a default time-based policy",
        ),
        Ok(Some(p)) if p.immutability_policy || p.legal_hold => {
            let what: Vec<&str> = [
                (p.immutability_policy, "a time-based retention policy"),
                (p.legal_hold, "a legal hold"),
            ]
            .into_iter()
            .filter_map(|(on, what)| on.then_some(what))
            .collect();
            if app.config.copy_engine == CopyEngine::Adf {
                // ADF writes the backup, then lakebackup stamps it: a second write.
                check(
                    title,
                    Status::Fail,
                    format!(
                        "{}, but BACKUP_COPY_ENGINE=adf stamps each backup after Data \
                         Factory wrote it, which the policy refuses: no backup would ever \
                         count. Use BACKUP_COPY_ENGINE=direct (one create-only write)",
                        what.join(", ")
                    ),
                )
            } else {
                check(
                    title,
                    Status::Ok,
                    format!(
                        "{}: no backup can be deleted or overwritten",
                        what.join(", ")
                    ),
                )
            }
        }
        Ok(Some(_)) => check(
            title,
            Status::Warn,
            "no immutability policy or legal hold: anyone with delete rights on the backup \
             account (a compromised app identity, ransomware) can destroy the backups; add a \
             time-based retention policy (lakebackup writes every backup create-only)",
        ),
        Ok(None) => check(
            title,
            Status::Warn,
            "not created yet (the first backup creates it): give it an immutability policy then",
        ),
        Err(e) => check(title, Status::Warn, format!("could not be read: {e}")),
    }
}
