//! The poison queues at hand (`lakebackup poison list|show|replay`): what each holds, read
//! without taking it, with the reason recorded when it was poisoned; and its messages moved
//! back to their work queue, byte for byte, once their cause is fixed.
//!
//! A replay sends a message to the work queue *first*, and only then deletes it from the poison
//! queue (with the receipt of its take): a process killed in between leaves the message in both
//! queues — a duplicate, which every function tolerates — and never in neither. A message the
//! function could not read (its typed parse fails: [`dispatch::readable`]) would only be poisoned
//! again: it is refused with that reason and left in the poison queue.

use std::{collections::HashMap, time::Duration};

use serde::Serialize;

use super::dispatch;
use crate::{
    app::{poison_reason_name, App, WorkQueue},
    storage::{Queue, StorageError, MAX_PEEK},
};

/// How long a message taken for a replay stays hidden from others: far longer than its send
/// and delete take, and renewed for each message just before its send (a batch's last message
/// waits for the others' sends: the take's window alone could lapse). A process killed
/// mid-replay leaves its taken messages to reappear in the poison queue after it.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(30);

/// How long a refused message stays hidden while the replay runs on, so that it is not taken
/// again (renewed whenever it is); made visible again at the end.
pub const REFUSED_WINDOW: Duration = Duration::from_secs(15 * 60);

/// One poison queue and the work queue its messages came from.
#[derive(Debug, Clone)]
pub struct PoisonQueue {
    pub work: WorkQueue,
    pub work_name: String,
    pub name: String,
}

/// The poison queues of the work queues this app has (`EVENTS_QUEUE_NAME` only when set).
pub fn poison_queues(app: &App) -> Vec<PoisonQueue> {
    [WorkQueue::Backups, WorkQueue::Shards, WorkQueue::Events]
        .into_iter()
        .filter_map(|work| {
            let work_name = work.name(&app.config)?;
            Some(PoisonQueue {
                work,
                name: format!("{work_name}-poison"),
                work_name,
            })
        })
        .collect()
}

/// One poisoned message as `poison list` and `show` print it.
#[derive(Debug, Clone, Serialize)]
pub struct PoisonedMessage {
    pub queue: String,
    pub work_queue: String,
    pub id: String,
    pub inserted: Option<String>,
    pub dequeue_count: u64,
    /// The text exactly as it stands on the queue (a replay sends exactly this).
    pub raw: String,
    /// The text the function reads (base64 decoded).
    pub text: String,
    /// Why it was poisoned, as recorded then; `None` where nothing was recorded (a message
    /// poisoned by an earlier release, or by the Functions host itself after its last retry).
    pub reason: Option<String>,
    /// Why the function could not read it, when it could not: a replay refuses it.
    pub unreadable: Option<String>,
}

/// The messages at the front of `queue` (up to [`MAX_PEEK`], Azure's limit for reading without
/// taking), each with its recorded reason; and the queue's depth (`None`: it does not exist).
pub async fn peek(
    app: &App,
    queue: &PoisonQueue,
    count: usize,
) -> Result<(Option<u64>, Vec<PoisonedMessage>), StorageError> {
    let poison = app.jobs.queue(&queue.name)?;
    let depth = poison.depth().await?;
    if depth.is_none() {
        return Ok((None, Vec::new()));
    }
    let peeked = poison.peek(count.min(MAX_PEEK)).await?;
    let mut messages = Vec::new();
    for message in peeked {
        messages.push(PoisonedMessage {
            queue: queue.name.clone(),
            work_queue: queue.work_name.clone(),
            id: message.id,
            inserted: message.inserted.map(rfc3339),
            dequeue_count: message.dequeue_count,
            text: dispatch::decoded_text(&message.text),
            reason: recorded_reason(app, &queue.name, &message.text).await,
            unreadable: dispatch::readable(queue.work, &message.text).err(),
            raw: message.text,
        });
    }
    Ok((depth, messages))
}

/// The reason recorded when `raw` was poisoned into `poison`; `None` when none was (or the
/// ledger cannot be read: the listing goes on without it).
async fn recorded_reason(app: &App, poison: &str, raw: &str) -> Option<String> {
    let ledger = app.jobs.container(&app.config.job_ledger).ok()?;
    let state = ledger
        .blob(&poison_reason_name(poison, raw))
        .probe()
        .await
        .ok()??;
    let reason = state
        .metadata()
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case("reason"))
        .map(|(_, value)| value.clone())?;
    Some(
        percent_encoding::percent_decode_str(&reason)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// What a replay did (or, in a dry run, would do) with one message.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayLine {
    pub queue: String,
    pub work_queue: String,
    pub id: String,
    /// `replayed`, `refused`; in a dry run `would_replay`, `would_refuse`.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a replay did in all.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplaySummary {
    pub replayed: u64,
    pub refused: u64,
    /// A dry run sees only the front of the queue (Azure reads at most [`MAX_PEEK`] messages
    /// without taking them, and cannot page): what it could not see, said so. `None` when it
    /// saw every message it was asked about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unseen: Option<String>,
}

/// Moves up to `count` messages of `queue` back to its work queue (byte for byte; sent, then
/// deleted), refusing those the function could not read; each line handed to `on_line` when
/// done. A dry run reads the front of the queue (up to [`MAX_PEEK`]) and changes nothing.
///
/// Messages are taken a batch at a time; each one's window is renewed just before its send
/// (so a slow batch never loses a receipt), and a message whose renewal fails (its window
/// lapsed and another reader took it) is left to that reader, unsent. A refused message is
/// hidden for [`REFUSED_WINDOW`] (renewed when it comes back), and all of them made visible
/// at the end. The replay ends when `count` are replayed or a take comes back empty: never
/// while a readable message may be left.
pub async fn replay(
    app: &App,
    queue: &PoisonQueue,
    count: u64,
    dry_run: bool,
    on_line: &(dyn Fn(&ReplayLine) + Sync),
) -> Result<ReplaySummary, StorageError> {
    let line = |id: &str, action, reason| ReplayLine {
        queue: queue.name.clone(),
        work_queue: queue.work_name.clone(),
        id: id.to_owned(),
        action,
        reason,
    };
    if dry_run {
        return preview(app, queue, count, &|id, action, reason| {
            on_line(&line(id, action, reason))
        })
        .await;
    }
    let mut summary = ReplaySummary::default();
    let poison = app.jobs.queue(&queue.name)?;
    if poison.depth().await?.is_none() {
        return Ok(summary);
    }
    let work = app.queue(queue.work).await?;
    let mut refused: HashMap<String, String> = HashMap::new();
    let outcome = async {
        while summary.replayed < count {
            // A batch never holds more than is left to replay.
            let wanted = (count - summary.replayed).min(MAX_PEEK as u64) as usize;
            let taken = poison.take(wanted, REPLAY_WINDOW).await?;
            if taken.is_empty() {
                break;
            }
            for message in taken {
                if let Err(reason) = dispatch::readable(queue.work, &message.text) {
                    if !refused.contains_key(&message.id) {
                        summary.refused += 1;
                        on_line(&line(&message.id, "refused", Some(reason)));
                    }
                    // Failing this, it comes back after its window and is hidden again then.
                    let receipt = poison
                        .hide(&message.id, &message.pop_receipt, REFUSED_WINDOW)
                        .await
                        .unwrap_or(message.pop_receipt);
                    refused.insert(message.id, receipt);
                    continue;
                }
                if summary.replayed >= count {
                    // Not this run's: visible again at once (failing that, after its window).
                    poison
                        .hide(&message.id, &message.pop_receipt, Duration::ZERO)
                        .await
                        .ok();
                    continue;
                }
                let Ok(receipt) = poison
                    .hide(&message.id, &message.pop_receipt, REPLAY_WINDOW)
                    .await
                else {
                    // Its window lapsed: another reader may hold it now.
                    continue;
                };
                move_back(&poison, work, &message.text, &message.id, &receipt).await?;
                summary.replayed += 1;
                on_line(&line(&message.id, "replayed", None));
                forget_reason(app, &queue.name, &message.text).await;
            }
        }
        Ok::<(), StorageError>(())
    }
    .await;
    for (id, receipt) in refused {
        // Failing this, it reappears by itself after the window.
        poison.hide(&id, &receipt, Duration::ZERO).await.ok();
    }
    outcome.map(|()| summary)
}

/// A dry run: the front of the queue, each message as a replay would take it, and what the
/// peek could not reach said so.
async fn preview(
    app: &App,
    queue: &PoisonQueue,
    count: u64,
    on_line: &(dyn Fn(&str, &'static str, Option<String>) + Sync),
) -> Result<ReplaySummary, StorageError> {
    let mut summary = ReplaySummary::default();
    let (depth, messages) = peek(app, queue, MAX_PEEK).await?;
    let seen = messages.len() as u64;
    for message in messages {
        if summary.replayed >= count {
            break;
        }
        match message.unreadable {
            Some(reason) => {
                summary.refused += 1;
                on_line(&message.id, "would_refuse", Some(reason));
            }
            None => {
                summary.replayed += 1;
                on_line(&message.id, "would_replay", None);
            }
        }
    }
    let depth = depth.unwrap_or(0);
    if summary.replayed < count && depth > seen {
        summary.unseen = Some(format!(
            "a dry run reads only the first {MAX_PEEK} messages (Azure's limit for reading              without taking, which cannot page); the queue holds about {depth}: at least {}              would be replayed, and the other {} are unseen",
            summary.replayed,
            depth - seen
        ));
    }
    Ok(summary)
}

/// The reason recorded when `raw` was poisoned into `poison`, deleted once it is replayed
/// (failing that, it stays: a reason for a message no longer there is harmless).
async fn forget_reason(app: &App, poison: &str, raw: &str) {
    if let Ok(ledger) = app.jobs.container(&app.config.job_ledger) {
        ledger
            .blob(&poison_reason_name(poison, raw))
            .delete(None)
            .await
            .ok();
    }
}

/// Sends a message's text to the work queue exactly as it stands, then deletes it from the
/// poison queue (with the receipt of its latest window): never the other way round.
async fn move_back(
    poison: &Queue,
    work: &Queue,
    text: &str,
    id: &str,
    receipt: &str,
) -> Result<(), StorageError> {
    work.send(text.to_owned(), None, "a message back to its work queue")
        .await?;
    poison.delete(id, receipt).await
}

fn rfc3339(instant: time::OffsetDateTime) -> String {
    instant
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
