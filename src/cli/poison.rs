//! `lakebackup poison list|show|replay`: the poison queues read (never taken from), and their
//! messages moved back to their work queues; JSON lines, the summary last.

use std::process::ExitCode;

use lakebackup::{
    app::App,
    host::poison::{self, PoisonQueue},
};

use super::{
    args::{PoisonCommand, QueueArg},
    output::{print_json_line, print_last_line},
};

/// Runs one `poison` command.
pub async fn poison(app: &App, command: PoisonCommand) -> ExitCode {
    match command {
        PoisonCommand::List { queue } => list(app, queue, None).await,
        PoisonCommand::Show { id, queue } => list(app, queue, Some(&id)).await,
        PoisonCommand::Replay {
            queue,
            count,
            dry_run,
        } => replay(app, queue, count, dry_run).await,
    }
}

/// The poison queues `queue` names (all of them when `None`).
fn chosen(app: &App, queue: Option<QueueArg>) -> Vec<PoisonQueue> {
    let wanted = queue.map(lakebackup::app::WorkQueue::from);
    poison::poison_queues(app)
        .into_iter()
        .filter(|q| wanted.is_none_or(|w| q.work == w))
        .collect()
}

/// `list`, or with `only` `show`: a line per message, then each queue's depth. `show` exits 1
/// when no queue shows a message of that id.
async fn list(app: &App, queue: Option<QueueArg>, only: Option<&str>) -> ExitCode {
    let queues = chosen(app, queue);
    if queues.is_empty() {
        let error = "EVENTS_QUEUE_NAME is not set: there is no events queue";
        return print_last_line(
            &serde_json::json!({"status": "failed", "error": error}),
            false,
        );
    }
    let mut depths = Vec::new();
    let mut found = false;
    for queue in &queues {
        match poison::peek(app, queue, lakebackup::storage::MAX_PEEK).await {
            Ok((depth, messages)) => {
                for message in messages {
                    if only.is_none_or(|id| id == message.id) {
                        found = true;
                        print_json_line(&message);
                    }
                }
                depths.push(serde_json::json!({"queue": queue.name, "depth": depth}));
            }
            Err(e) => {
                let summary = serde_json::json!({"status": "failed", "queue": queue.name, "error": e.to_string()});
                return print_last_line(&summary, false);
            }
        }
    }
    if let Some(id) = only.filter(|_| !found) {
        let error = format!(
            "no message {id:?} among the first {} of each poison queue (a message another \
             reader has taken is hidden until its visibility window ends)",
            lakebackup::storage::MAX_PEEK
        );
        let summary = serde_json::json!({"status": "failed", "error": error, "queues": depths});
        return print_last_line(&summary, false);
    }
    print_last_line(&serde_json::json!({"status": "ok", "queues": depths}), true)
}

/// `replay`: a line per message replayed or refused, then the totals; exit 1 when one was
/// refused (it stays in the poison queue) or the replay stopped on an error.
async fn replay(app: &App, queue: QueueArg, count: u64, dry_run: bool) -> ExitCode {
    let Some(queue) = chosen(app, Some(queue)).into_iter().next() else {
        let error = "EVENTS_QUEUE_NAME is not set: there is no events queue";
        return print_last_line(
            &serde_json::json!({"status": "failed", "error": error}),
            false,
        );
    };
    let on_line = |line: &poison::ReplayLine| print_json_line(line);
    let result = poison::replay(app, &queue, count, dry_run, &on_line).await;
    let mut summary = serde_json::json!({
        "queue": queue.name,
        "work_queue": queue.work_name,
        "dry_run": dry_run,
    });
    let succeeded = match result {
        Ok(done) => {
            summary["replayed"] = done.replayed.into();
            summary["refused"] = done.refused.into();
            if let Some(unseen) = done.unseen {
                // A dry run's counts are a floor, not a forecast.
                summary["complete"] = false.into();
                summary["unseen"] = unseen.into();
            }
            let refused = done.refused > 0 && !dry_run;
            summary["status"] = if refused { "refused" } else { "done" }.into();
            done.refused == 0 || dry_run
        }
        Err(e) => {
            summary["status"] = "failed".into();
            summary["error"] = e.to_string().into();
            false
        }
    };
    print_last_line(&summary, succeeded)
}
