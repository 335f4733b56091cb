//! The doctor's check of the queues: each work queue exists, each poison queue is empty.

use futures::future::join_all;

use super::{check, Check, Status};
use crate::app::{App, WorkQueue};

/// The work queues exist; each poison queue is empty.
pub(super) async fn queues(app: &App, reached: bool) -> Vec<Check> {
    if !reached {
        return Vec::new();
    }
    let mut names: Vec<(String, bool)> = Vec::new();
    for queue in [WorkQueue::Backups, WorkQueue::Shards, WorkQueue::Events] {
        if let Some(name) = queue.name(&app.config) {
            names.push((format!("{name}-poison"), true));
            names.push((name, false));
        }
    }
    join_all(names.into_iter().map(|(name, poison)| async move {
        let depth = match app.jobs.queue(&name) {
            Ok(queue) => queue.depth().await,
            Err(e) => Err(e),
        };
        let title = format!("AzureWebJobsStorage: queue {name}");
        match (depth, poison) {
            (Ok(None), false) => check(title, Status::Warn, "does not exist yet (the functions create it when they first start)"),
            (Ok(None), true) | (Ok(Some(0)), true) => check(title, Status::Ok, "empty"),
            (Ok(Some(depth)), true) => check(
                title,
                Status::Warn,
                format!("holds {depth} message(s) that could never be handled: read them, fix the cause, put them back on the queue"),
            ),
            (Ok(Some(depth)), false) => check(title, Status::Ok, format!("exists, {depth} message(s) waiting")),
            (Err(e), _) => check(title, Status::Warn, format!("could not be read: {e}")),
        }
    }))
    .await
}
