//! The pure core: the ETag diff, backup naming and the queue message. No I/O here; everything is
//! unit-tested in place.

pub mod backup_index;
pub mod deletion;
pub mod diff;
pub mod etag;
pub mod event;
pub mod job;
pub mod message;
pub mod naming;
pub mod restore_plan;
pub mod retention;
pub mod shard;
pub mod stamp;
