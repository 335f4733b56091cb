//! The five functions, one thin trigger module each: the trigger's typed input → one engine call
//! → a typed outcome. None imports another, and none knows the host's payloads: the host layer
//! (`host::dispatch`) decodes a delivery, calls the function through one table, and puts a
//! message the function finds unusable on its poison queue.

pub mod backup_requests;
pub mod blob_events;
pub mod producer;
pub mod reconciliation;
pub mod shards;

/// One queue message, as a queue function receives it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The message's text, decoded from the queue's base64.
    pub text: String,
    pub message_id: String,
    /// The host gives the message up if this delivery fails too (`maxDequeueCount`).
    pub last_attempt: bool,
}

/// What a queue function made of a message.
#[derive(Debug)]
pub enum Handled<T> {
    Done(T),
    /// The message can never succeed (not the contract, an invalid name, another account's):
    /// the host layer moves it to the poison queue unchanged, and says why.
    Unusable(String),
}
