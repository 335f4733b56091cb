//! Which account a restore shard writes into: exactly the one its job names (an account URL,
//! never a credential), through one of this worker's own connections, or none — then the shard
//! is refused before it writes anything.

use url::Url;

use super::JobError;
use crate::{
    app::App,
    config::RESTORE_TARGET_STORAGE,
    core::restore_plan::RestoreOptions,
    storage::{AccountIdentity, Namespace, StorageAccount},
};

/// Whether the target account has a hierarchical namespace (directories to create, access
/// control to set). Where this worker may not ask ([`Namespace::Unknown`]), the shard is
/// refused before anything is written: taken as flat, a restore into an HNS account would
/// leave out every directory and ACL and report success.
pub(super) async fn hierarchical(
    account: &StorageAccount,
    container: &str,
) -> Result<bool, JobError> {
    match account.namespace(container).await? {
        Namespace::Hierarchical => Ok(true),
        Namespace::Flat => Ok(false),
        Namespace::Unknown => Err(JobError::Refused(format!(
            "the restore target's namespace is unknown: this worker's connection to it may not \
             read its account information (Get Account Information, refused at the account and \
             in container {container}), so whether its directories and access control must be \
             restored cannot be told; nothing was written. Give the connection a right to read \
             it (the account key, a SAS of the account or the container, or a data role such as \
             Storage Blob Data Reader or Owner on the account or the container), then restore \
             again"
        ))),
    }
}

/// The account a restore shard writes into: exactly the one its job names, through whichever of
/// this worker's connections reaches it (`RESTORE_TARGET_STORAGE` for a restore into another
/// account, or `SOURCE_STORAGE` where the named account is the lake's own), compared by
/// [`AccountIdentity`]. Where this worker has no connection to it, the shard is refused before
/// anything is written ([`JobError::Refused`]: no retry can change a worker's settings), and so
/// is a shard of an earlier release that says "another account" without naming it: a worker
/// never guesses. An earlier release's shard into the lake names no account either; the lake is
/// this worker's `SOURCE_STORAGE`, where its versions are read from too.
pub(super) fn restore_account<'a>(
    app: &'a App,
    options: &RestoreOptions,
) -> Result<&'a StorageAccount, JobError> {
    check_sources(app, options)?;
    let Some(url) = options.target_account.as_deref() else {
        if options.to_account {
            return Err(JobError::Refused(
                "this restore shard was queued by an earlier release: it says to write into \
                 another account without naming it, and a worker never guesses which; start \
                 the restore again"
                    .to_owned(),
            ));
        }
        return Ok(&app.source);
    };
    let Some(named) = Url::parse(url)
        .ok()
        .and_then(|url| AccountIdentity::of_endpoint(&url))
    else {
        return Err(JobError::Refused(format!(
            "the restore job names its target account as {url:?}, which is no blob endpoint"
        )));
    };
    let ours = options
        .to_account
        .then_some(app.restore_target.as_ref())
        .flatten()
        .into_iter()
        .chain([&app.source]);
    for account in ours {
        if account.identity().as_ref() == Some(&named) {
            return Ok(account);
        }
    }
    let shown = |account: &StorageAccount| {
        account
            .identity()
            .map_or_else(|| "no blob endpoint".to_owned(), |a| a.display_url())
    };
    let lake = shown(&app.source);
    let what = match (options.to_account, &app.restore_target) {
        (false, _) => format!("SOURCE_STORAGE is {lake}"),
        (true, Some(other)) => format!(
            "{RESTORE_TARGET_STORAGE} is {} (and SOURCE_STORAGE {lake})",
            shown(other)
        ),
        (true, None) => format!("{RESTORE_TARGET_STORAGE} is not set (SOURCE_STORAGE is {lake})"),
    };
    Err(JobError::Refused(format!(
        "the restore job writes into account {named}, but this worker's {what}: it has no \
         connection to the job's target, so it writes nothing; run the job on workers whose {} \
         names {named}",
        if options.to_account {
            RESTORE_TARGET_STORAGE
        } else {
            "SOURCE_STORAGE"
        }
    )))
}

/// Where a restore reads from must be the accounts its job was started with: a worker whose
/// `SOURCE_STORAGE` (the lake, read for its versions and snapshots) or, for a restore from the
/// backup account, `BACKUP_STORAGE` is another account's would restore another lake's data. An
/// earlier release's shard names neither, and is read as before.
fn check_sources(app: &App, options: &RestoreOptions) -> Result<(), JobError> {
    let mut sources = vec![(
        "SOURCE_STORAGE",
        options.lake_account.as_deref(),
        &app.source,
    )];
    if options.from == crate::core::restore_plan::RestoreFrom::Backup {
        sources.push((
            "BACKUP_STORAGE",
            options.backup_account.as_deref(),
            &app.backup,
        ));
    }
    for (setting, named, ours) in sources {
        let Some(named) = named else { continue };
        let matches = Url::parse(named)
            .ok()
            .and_then(|url| AccountIdentity::of_endpoint(&url))
            .is_some_and(|named| ours.identity().as_ref() == Some(&named));
        if !matches {
            let ours = ours
                .identity()
                .map_or_else(|| "no blob endpoint".to_owned(), |a| a.display_url());
            return Err(JobError::Refused(format!(
                "the restore job reads from account {named}, but this worker's {setting} is \
                 {ours}: it would restore another account's data, so it writes nothing; run the \
                 job on workers whose {setting} names {named}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{core::restore_plan::RestoreFrom, settings::Settings};

    const KEY: &str = "Zm9yIHRlc3RzIG9ubHksIG5vdCBhIHJlYWwga2V5IQ==";

    fn connection(url: &str) -> String {
        format!("AccountName=x;AccountKey={KEY};BlobEndpoint={url};QueueEndpoint={url}")
    }

    /// A worker whose lake is `lake`, with `RESTORE_TARGET_STORAGE` at `target` when given.
    fn worker(lake: &str, target: Option<&str>) -> App {
        let mut pairs = vec![
            ("SOURCE_STORAGE", connection(lake)),
            (
                "BACKUP_STORAGE",
                connection("https://vault.blob.core.windows.net"),
            ),
            (
                "AzureWebJobsStorage",
                connection("https://jobs.blob.core.windows.net"),
            ),
        ];
        if let Some(target) = target {
            pairs.push((RESTORE_TARGET_STORAGE, connection(target)));
        }
        App::from_settings(&Settings::from_pairs(pairs)).unwrap()
    }

    fn options(to_account: bool, target_account: Option<&str>) -> RestoreOptions {
        RestoreOptions {
            from: RestoreFrom::Backup,
            as_of: None,
            to_container: None,
            to_account,
            target_account: target_account.map(str::to_owned),
            dry_run: false,
            verify_content: false,
            filter: String::new(),
            exact: false,
            lake_account: None,
            backup_account: None,
            job_started: None,
        }
    }

    fn refusal(app: &App, options: &RestoreOptions) -> String {
        match restore_account(app, options) {
            Err(JobError::Refused(reason)) => reason,
            other => panic!("{other:?}"),
        }
    }

    const LAKE: &str = "https://lake.blob.core.windows.net";
    const X: &str = "https://x.blob.core.windows.net";
    const Y: &str = "https://y.blob.core.windows.net";

    #[test]
    fn a_worker_writes_only_into_the_account_the_job_names() {
        let with_x = worker(LAKE, Some("http://X.blob.core.windows.net/"));
        let into_x = options(true, Some(X));
        let chosen = restore_account(&with_x, &into_x).unwrap();
        assert!(std::ptr::eq(
            chosen,
            with_x.restore_target.as_ref().unwrap()
        ));

        // Another account, or none: refused, both accounts named, no key.
        let with_y = worker(LAKE, Some(Y));
        let reason = refusal(&with_y, &into_x);
        assert!(reason.contains(X) && reason.contains(Y), "{reason}");
        assert!(reason.contains("RESTORE_TARGET_STORAGE"), "{reason}");
        let reason = refusal(&worker(LAKE, None), &into_x);
        assert!(reason.contains(X) && reason.contains("not set"), "{reason}");
        assert!(!reason.contains(KEY), "{reason}");

        // The lake's own account named as "another": its SOURCE_STORAGE reaches it.
        let without = worker(LAKE, None);
        let chosen = restore_account(&without, &options(true, Some(LAKE))).unwrap();
        assert!(std::ptr::eq(chosen, &without.source));

        // Into the lake: only the worker's SOURCE_STORAGE counts, and it must be that lake.
        let lake = worker(LAKE, Some(X));
        assert!(std::ptr::eq(
            restore_account(&lake, &options(false, Some(LAKE))).unwrap(),
            &lake.source
        ));
        let other_lake = worker(X, Some(LAKE));
        let reason = refusal(&other_lake, &options(false, Some(LAKE)));
        assert!(
            reason.contains(LAKE) && reason.contains(X) && reason.contains("SOURCE_STORAGE"),
            "{reason}"
        );
    }

    #[test]
    fn an_earlier_release_shard_into_another_account_is_refused_never_guessed() {
        let app = worker(LAKE, Some(X));
        let reason = refusal(&app, &options(true, None));
        assert!(reason.contains("earlier release"), "{reason}");
        // Into the lake, it wrote into the worker's own lake, and still does.
        assert!(std::ptr::eq(
            restore_account(&app, &options(false, None)).unwrap(),
            &app.source
        ));
        let reason = refusal(&app, &options(true, Some("not a url")));
        assert!(reason.contains("no blob endpoint"), "{reason}");
    }
}
