//! `lakebackup doctor`: is this deployment set up right? Every check it can make with the app's
//! own settings and identity, all at once, each read-only: the settings and the names the host
//! binds; the lake's containers in scope (listed, which must work when `RECONCILE_CONTAINERS` is
//! unset); each connection reachable and authorised where lakebackup works with it — in each
//! container in scope, or at the account where it needs the account (`reach`; its identity's
//! token obtained where it uses one) — and granted each right the settings make it need there
//! (`rights`); the backup account apart from the lake; soft delete and the namespace (and
//! what is protected in it) on the lake; an immutability policy or legal hold on each `{c}bak`
//! in scope and soft delete on the backup account; the queues and the depth of each poison queue; the recent jobs; the ADF
//! pipeline. It never writes: no container, queue, blob or ledger is created, and a right is
//! tried only where trying changes nothing.

mod accounts;
mod jobs;
mod pipeline;
mod queues;
mod reach;
mod rights;
mod settings;

use std::path::Path;

use futures::future::join_all;
use serde::Serialize;

use crate::{
    app::{App, BACKUP_STORAGE, JOBS_STORAGE, SOURCE_STORAGE},
    engine::reconcile::containers_in_scope,
    settings::Settings,
};

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One check: what it is about (the setting or account, and what was checked), its verdict, and
/// what it found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
}

fn check(name: impl Into<String>, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        status,
        detail: detail.into(),
    }
}

/// Every check, and the worst verdict among them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub status: Status,
    pub checks: Vec<Check>,
}

impl Report {
    fn of(checks: Vec<Check>) -> Self {
        let status = checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok);
        Self { status, checks }
    }
}

/// Runs every check against `settings` (and `host_json`'s limits); never writes.
pub async fn doctor(settings: &Settings, host_json: &Path, app_dir: &Path) -> Report {
    let mut app = match App::from_settings(settings) {
        Ok(app) => app,
        // Without valid settings nothing else can be reached: say which one.
        Err(e) => {
            return Report::of(vec![check(
                format!("settings: {}", e.setting),
                Status::Fail,
                e.to_string(),
            )])
        }
    };
    let mut checks = vec![
        settings::timeouts(&mut app, host_json),
        settings::host_bindings(&app, settings, app_dir),
        settings::telemetry(settings),
    ];
    let app = &app;
    let scope = lake_scope(app).await;
    // Each account is reached first: the checks of one that does not answer are not made (each
    // would wait out its own retries), its failure says why.
    let ((places, reach_checks), lake_containers) = futures::join!(
        reach::reach_all(app, &scope),
        reach::lake_containers(app, &scope)
    );
    checks.extend(reach_checks);
    checks.push(lake_containers);
    checks.extend(accounts::accounts_apart(app));
    checks.extend(rights::sas_validity(app));
    let reached = |setting: &str| places.contains_key(setting);
    let groups = join_all([
        Box::pin(accounts::lake_account(app, reached(SOURCE_STORAGE), &scope))
            as std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Check>> + Send + '_>>,
        Box::pin(accounts::backup_account(
            app,
            reached(BACKUP_STORAGE),
            &scope,
        )),
        Box::pin(rights::rights(app, &places)),
        Box::pin(queues::queues(app, reached(JOBS_STORAGE))),
        Box::pin(jobs::recent_jobs(app, settings, reached(JOBS_STORAGE))),
        Box::pin(pipeline::pipeline(app)),
    ])
    .await;
    checks.extend(groups.into_iter().flatten());
    Report::of(checks)
}

/// The lake's containers in scope: where each connection is reached and its rights tried, and
/// whose {c}bak's immutability is read.
async fn lake_scope(app: &App) -> reach::LakeScope {
    match &app.config.reconcile_containers {
        Some(names) => reach::LakeScope::Named(names.clone()),
        None => match containers_in_scope(app, None).await {
            Ok(names) => reach::LakeScope::Listed(names),
            Err(e) => reach::LakeScope::Unknown(e),
        },
    }
}

/// The report as a table: verdict, check, detail.
pub fn table(report: &Report) -> String {
    let width = report
        .checks
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for c in &report.checks {
        out.push_str(&format!(
            "{:<4}  {:<width$}  {}\n",
            c.status.as_str(),
            c.name,
            c.detail
        ));
    }
    out.push_str(&format!("{}\n", report.status.as_str()));
    out
}
