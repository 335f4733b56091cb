//! The pure core: the ETag diff, backup naming, the lives of a name, a version's properties, the
//! messages and a job's arithmetic. No I/O here; everything is unit-tested in place.

pub mod backup_index;
pub mod counts;
pub mod diff;
pub mod etag;
pub mod event;
pub mod job;
pub mod life;
pub mod message;
pub mod naming;
pub mod properties;
pub mod restore_plan;
pub mod retention;
pub mod shard;
pub mod stamp;
pub mod version;
