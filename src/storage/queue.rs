//! A storage queue, as the worker uses one: messages put on it that never expire, taken with a
//! visibility window that can be renewed, deleted once handled; and, for the operators' `poison`
//! commands, read without being taken (peeked). The SDK's client stays behind it.

use std::time::Duration;

use azure_core::http::RequestContent;
use azure_storage_queue::{
    models::{
        QueueClientPeekMessagesOptions, QueueClientReceiveMessagesOptions,
        QueueClientSendMessageOptions, QueueMessage,
    },
    QueueClient,
};

use super::{StorageError, StorageResultExt};

/// One queue of one account.
pub struct Queue {
    client: QueueClient,
    name: String,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Queue({})", self.name)
    }
}

/// A message taken off a queue: hidden from others until its window ends.
#[derive(Debug, Clone)]
pub struct TakenMessage {
    pub id: String,
    /// The receipt that proves this taker holds it (renewed with each window).
    pub pop_receipt: String,
    /// The text exactly as it stands on the queue.
    pub text: String,
    /// How many times it has been taken, this time included.
    pub dequeue_count: u64,
    /// When it was put on the queue.
    pub inserted: Option<time::OffsetDateTime>,
}

/// A message read without being taken: it stays visible, and its dequeue count is unchanged.
#[derive(Debug, Clone)]
pub struct PeekedMessage {
    pub id: String,
    /// The text exactly as it stands on the queue.
    pub text: String,
    /// How many times it has been taken so far.
    pub dequeue_count: u64,
    /// When it was put on the queue.
    pub inserted: Option<time::OffsetDateTime>,
}

/// The most messages one peek returns (Azure's limit for Peek Messages).
pub const MAX_PEEK: usize = 32;

/// The longest a message may stay invisible (Azure's limit).
const MAX_INVISIBLE_SECONDS: u64 = 7 * 86_400;

fn seconds(window: Duration) -> i32 {
    window.as_secs().min(MAX_INVISIBLE_SECONDS) as i32
}

impl Queue {
    pub(super) fn new(client: QueueClient, name: &str) -> Self {
        Self {
            client,
            name: name.to_owned(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The SDK's client: for the rest of `storage`, never outside it.
    pub(in crate::storage) fn sdk(&self) -> &QueueClient {
        &self.client
    }

    /// Creates the queue unless it exists.
    pub async fn create_if_missing(&self) -> Result<(), StorageError> {
        self.client
            .create(None)
            .await
            .during(|| format!("creating queue {}", self.name))?;
        Ok(())
    }

    /// Puts `text` on the queue as it is, invisible for `delay` when given. It never expires: a
    /// message that vanished unprocessed would be work never done.
    pub async fn send(
        &self,
        text: String,
        delay: Option<Duration>,
        what: &str,
    ) -> Result<(), StorageError> {
        let message: RequestContent<QueueMessage, _> = QueueMessage {
            message_text: Some(text),
        }
        .try_into()
        .during(|| format!("encoding {what}"))?;
        self.client
            .send_message(
                message,
                Some(QueueClientSendMessageOptions {
                    message_time_to_live: Some(-1),
                    visibility_timeout: delay.map(seconds),
                    ..Default::default()
                }),
            )
            .await
            .during(|| format!("queueing {what}"))?;
        Ok(())
    }

    /// Takes up to `count` messages (at most 32), each hidden for `window`. A message the
    /// service sends without an id or receipt cannot be handled, and reappears by itself.
    pub async fn take(
        &self,
        count: usize,
        window: Duration,
    ) -> Result<Vec<TakenMessage>, StorageError> {
        let received = self
            .client
            .receive_messages(Some(QueueClientReceiveMessagesOptions {
                number_of_messages: Some(count.clamp(1, 32) as i32),
                visibility_timeout: Some(seconds(window).max(1)),
                ..Default::default()
            }))
            .await
            .during(|| format!("taking messages from {}", self.name))?
            .into_model()
            .during(|| format!("taking messages from {}", self.name))?;
        Ok(received
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|message| {
                Some(TakenMessage {
                    id: message.message_id?,
                    pop_receipt: message.pop_receipt?,
                    text: message.message_text.unwrap_or_default(),
                    dequeue_count: message.dequeue_count.unwrap_or(1).max(1) as u64,
                    inserted: message.insertion_time,
                })
            })
            .collect())
    }

    /// Reads up to `count` messages from the front of the queue (at most [`MAX_PEEK`]) without
    /// taking them; none when the queue does not exist. Messages others have taken (invisible)
    /// are not among them.
    pub async fn peek(&self, count: usize) -> Result<Vec<PeekedMessage>, StorageError> {
        let operation = || format!("reading messages of {}", self.name);
        let options = QueueClientPeekMessagesOptions {
            number_of_messages: Some(count.clamp(1, MAX_PEEK) as i32),
            ..Default::default()
        };
        let peeked = match self.client.peek_messages(Some(options)).await {
            Ok(response) => response.into_model().during(operation)?,
            Err(e) if e.http_status() == Some(azure_core::http::StatusCode::NotFound) => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(StorageError::new(operation(), e)),
        };
        Ok(peeked
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|message| {
                Some(PeekedMessage {
                    id: message.message_id?,
                    text: message.message_text.unwrap_or_default(),
                    dequeue_count: message.dequeue_count.unwrap_or(0).max(0) as u64,
                    inserted: message.insertion_time,
                })
            })
            .collect())
    }

    /// Hides a taken message for `window` more; returns its new receipt.
    pub async fn hide(
        &self,
        id: &str,
        pop_receipt: &str,
        window: Duration,
    ) -> Result<String, StorageError> {
        let response = self
            .client
            .update_message(id, pop_receipt, seconds(window), None)
            .await
            .during(|| format!("extending the visibility of message {id}"))?;
        Ok(response
            .headers()
            .get_optional_str(&azure_core::http::headers::HeaderName::from_static(
                "x-ms-popreceipt",
            ))
            .map(str::to_owned)
            .unwrap_or_else(|| pop_receipt.to_owned()))
    }

    /// Deletes a taken message.
    pub async fn delete(&self, id: &str, pop_receipt: &str) -> Result<(), StorageError> {
        self.client
            .delete_message(id, pop_receipt, None)
            .await
            .during(|| format!("deleting message {id}"))?;
        Ok(())
    }
}
