//! The queue probes: a harmless request on a queue by name (Peek Messages, Delete or Update
//! Message of an id no queue holds, Create Queue on one that exists), and Put Message on a queue
//! of a reserved random name that does not exist.

use azure_core::http::RequestContent;
use azure_storage_queue::models::{QueueClientPeekMessagesOptions, QueueMessage};

use super::unique_suffix;
use crate::storage::{StorageAccount, StorageError, StorageResultExt};

/// A message id no queue holds: a random one, shaped as the service's (a GUID).
pub(super) fn no_such_message() -> String {
    let hex = unique_suffix();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A harmless request on a queue named by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueProbe {
    /// Peek Messages: reads the first message, changes nothing (RBAC `messages/read`; SAS `r`).
    Peek,
    /// Delete Message of an id no queue holds (RBAC `messages/process/action` or
    /// `messages/delete`; SAS `p`).
    DeleteMessage,
    /// Update Message of an id no queue holds (RBAC `messages/write`; SAS `u`).
    UpdateMessage,
    /// Create Queue on a queue the caller saw exist (RBAC `queues/write`).
    Create,
}

impl StorageAccount {
    /// A harmless request on `name`: nothing is added, taken, hidden or removed.
    pub(super) async fn try_queue(
        &self,
        probe: QueueProbe,
        name: &str,
    ) -> Result<(), StorageError> {
        let queue = self.queue(name)?;
        let client = queue.sdk();
        let operation = || format!("trying {probe:?} on queue {name}");
        // Shaped as the service's own: a GUID and a base64 receipt.
        let (id, receipt) = (no_such_message(), "AgAAAAMAAAAAAAAA");
        match probe {
            QueueProbe::Peek => {
                let options = QueueClientPeekMessagesOptions {
                    number_of_messages: Some(1),
                    ..Default::default()
                };
                client
                    .peek_messages(Some(options))
                    .await
                    .during(operation)?;
            }
            QueueProbe::DeleteMessage => {
                client
                    .delete_message(&id, receipt, None)
                    .await
                    .during(operation)?;
            }
            QueueProbe::UpdateMessage => {
                client
                    .update_message(&id, receipt, 0, None)
                    .await
                    .during(operation)?;
            }
            QueueProbe::Create => {
                client.create(None).await.during(operation)?;
            }
        }
        Ok(())
    }

    /// Put Message on `name`, which the caller made sure no one uses (a random name).
    pub(super) async fn try_send(&self, name: &str) -> Result<(), StorageError> {
        let queue = self.queue(name)?;
        let operation = || "trying to send messages (a queue that does not exist)".to_owned();
        let message: RequestContent<_, _> = QueueMessage {
            message_text: Some(String::new()),
        }
        .try_into()
        .during(operation)?;
        queue
            .sdk()
            .send_message(message, None)
            .await
            .during(operation)?;
        Ok(())
    }
}
