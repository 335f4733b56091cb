//! The queue rights of `AzureWebJobsStorage`, tried on the queues lakebackup uses, by name: a
//! role may be assigned on one queue (or carry a condition on its name), so a queue of another
//! name says nothing of it. Each queue is asked only what lakebackup does with it: a work queue
//! (`BACKUP_QUEUE_NAME`, its `-shards`, `EVENTS_QUEUE_NAME`) is received from, its messages
//! deleted and kept hidden, and (but the events queue, which Event Grid fills) sent to; a poison
//! queue is sent to; each is created by the process that first uses it.
//!
//! Nothing on a real queue may change, so only harmless requests are sent to it: Peek Messages,
//! and Delete Message and Update Message of a message id no queue holds (404
//! `MessageNotFound` once allowed). Get Messages (it takes a message) and Put Message (it adds
//! one) are never sent to it; their rights are inferred from the RBAC actions of the harmless
//! ones ("Authorize with Microsoft Entra ID", permissions for Queue service operations):
//! - Get Messages needs `messages/process/action`, or `messages/delete` with `messages/read`;
//!   Delete Message needs `process/action` or `delete`, Peek Messages `read`. So Delete Message
//!   refused means Get Messages is too, and Delete and Peek allowed mean it is allowed. (With a
//!   SAS both need `p`.) Delete allowed and Peek refused cannot tell: said so.
//! - Put Message needs `messages/add/action` or `messages/write`; Update Message needs `write`.
//!   So Update Message allowed means Put Message is. Otherwise Put Message is tried on a queue
//!   of a reserved random name (404 `QueueNotFound` once allowed), which only a role on the
//!   account or above reaches: a refusal there is a missing right only when Delete Message on
//!   such a queue is allowed (the role reaches it), else it says nothing, and is said not tried.
//!   A SAS's stored access policy (the only SAS whose rights are tried) signs `a` apart from
//!   `u`: there, Put Message is said not tried.

use std::collections::HashMap;

use futures::future::join_all;

use super::{tried, Found, Place};
use crate::{
    app::{App, WorkQueue},
    storage::{sas_grant::Right, Probed, QueueProbe, StorageAccount},
};

/// A queue lakebackup uses, and what it does with it.
struct QueueUse {
    name: String,
    /// Received from, its messages deleted and kept hidden.
    takes: bool,
    /// Sent to.
    sends: bool,
}

fn queues_in_use(app: &App) -> Vec<QueueUse> {
    let mut uses = Vec::new();
    for (queue, sends) in [
        (WorkQueue::Backups, true),
        (WorkQueue::Shards, true),
        // Event Grid fills it.
        (WorkQueue::Events, false),
    ] {
        if let Some(name) = queue.name(&app.config) {
            uses.push(QueueUse {
                name: format!("{name}-poison"),
                takes: false,
                sends: true,
            });
            uses.push(QueueUse {
                name,
                takes: true,
                sends,
            });
        }
    }
    uses
}

/// What trying Put Message and Delete Message on a queue of a reserved random name found.
struct Elsewhere {
    send: Probed,
    delete: Probed,
}

/// Each of `rights` (queue rights) on each queue that uses it.
pub(super) async fn queue_rights(
    app: &App,
    account: &StorageAccount,
    rights: &[Right],
    sas: bool,
) -> HashMap<Right, Vec<(Place, Found)>> {
    let wanted = |right: Right| rights.contains(&right);
    let elsewhere = if wanted(Right::SendMessages) && !sas {
        let (send, delete) = futures::join!(
            account.probe_queue_elsewhere(Right::SendMessages),
            account.probe_queue_elsewhere(Right::DeleteMessages)
        );
        Some(Elsewhere { send, delete })
    } else {
        None
    };
    let uses = queues_in_use(app);
    let per_queue = join_all(
        uses.iter()
            .map(|queue| one_queue(account, queue, &wanted, sas, elsewhere.as_ref())),
    )
    .await;
    let mut found: HashMap<Right, Vec<(Place, Found)>> = HashMap::new();
    for (queue, results) in uses.iter().zip(per_queue) {
        for (right, result) in results {
            found
                .entry(right)
                .or_default()
                .push((Some(queue.name.clone()), result));
        }
    }
    found
}

async fn one_queue(
    account: &StorageAccount,
    queue: &QueueUse,
    wanted: &impl Fn(Right) -> bool,
    sas: bool,
    elsewhere: Option<&Elsewhere>,
) -> Vec<(Right, Found)> {
    let name = queue.name.as_str();
    let takes = |right| queue.takes && wanted(right);
    let delete = if takes(Right::DeleteMessages) || takes(Right::ReceiveMessages) {
        Some(account.probe_queue(QueueProbe::DeleteMessage, name).await)
    } else {
        None
    };
    let update = if takes(Right::UpdateMessages) || (queue.sends && wanted(Right::SendMessages)) {
        Some(account.probe_queue(QueueProbe::UpdateMessage, name).await)
    } else {
        None
    };
    let mut found = Vec::new();
    if let (true, Some(delete)) = (takes(Right::DeleteMessages), &delete) {
        found.push((Right::DeleteMessages, tried(delete)));
    }
    if let (true, Some(update)) = (takes(Right::UpdateMessages), &update) {
        found.push((Right::UpdateMessages, tried(update)));
    }
    if let (true, Some(delete)) = (takes(Right::ReceiveMessages), &delete) {
        found.push((Right::ReceiveMessages, receive(account, name, delete).await));
    }
    if let (true, Some(update)) = (queue.sends && wanted(Right::SendMessages), &update) {
        found.push((Right::SendMessages, send(name, update, sas, elsewhere)));
    }
    if wanted(Right::CreateQueues) {
        found.push((Right::CreateQueues, create(account, name).await));
    }
    found
}

/// Get Messages, from Delete Message and Peek Messages (see the module's documentation).
async fn receive(account: &StorageAccount, queue: &str, delete: &Probed) -> Found {
    match delete {
        Probed::Refused(e) => Found::Missing(format!(
            "Delete Message is refused ({} {}) when tried with a request that changes nothing, \
             and Get Messages needs the same action (messages/process/action, or \
             messages/delete with messages/read; a SAS's p)",
            e.status.unwrap_or(403),
            e.code_name()
        )),
        Probed::Allowed(_) => match account.probe_queue(QueueProbe::Peek, queue).await {
            Probed::Allowed(_) => Found::Granted,
            Probed::Refused(_) => Found::Unknown(
                "not tried (Get Messages would take a message): Delete Message is allowed and \
                 Peek Messages refused, so only a role with messages/process/action may receive"
                    .into(),
            ),
            other => tried(&other),
        },
        other => tried(other),
    }
}

/// Put Message, from Update Message or a queue of another name (see the module's
/// documentation).
fn send(queue: &str, update: &Probed, sas: bool, elsewhere: Option<&Elsewhere>) -> Found {
    if sas {
        return Found::Unknown(format!(
            "not tried: Put Message would add a message to {queue}, and the SAS's stored access \
             policy, which holds its permissions, cannot be read"
        ));
    }
    match update {
        // messages/write allows Put Message too.
        Probed::Allowed(_) => return Found::Granted,
        Probed::Blocked(..) => return tried(update),
        _ => {}
    }
    let Some(elsewhere) = elsewhere else {
        return Found::Unknown("not tried".into());
    };
    match (&elsewhere.send, &elsewhere.delete) {
        (Probed::Allowed(_), _) => Found::Granted,
        (Probed::Refused(e), Probed::Allowed(_)) => Found::Missing(format!(
            "refused ({} {}) when tried on a queue of another name, which the role reaches, with \
             a request that changes nothing",
            e.status.unwrap_or(403),
            e.code_name()
        )),
        (Probed::Refused(_), _) => Found::Unknown(format!(
            "not tried on {queue} (Put Message would add a message there), and refused on a \
             queue of another name, which a role assigned on the queues alone refuses too: it \
             needs messages/add/action or messages/write on {queue}"
        )),
        (other, _) => tried(other),
    }
}

/// Create Queue on the queue when it exists (else it would create it).
async fn create(account: &StorageAccount, queue: &str) -> Found {
    let depth = match account.queue(queue) {
        Ok(q) => q.depth().await,
        Err(e) => Err(e),
    };
    match depth {
        Ok(Some(_)) => tried(&account.probe_queue(QueueProbe::Create, queue).await),
        Ok(None) => Found::Skipped(
            "not tried: no queue it uses exists to try it on without creating one".into(),
        ),
        Err(e) => Found::Unknown(format!(
            "not tried on {queue}: whether it exists could not be read ({e})"
        )),
    }
}
