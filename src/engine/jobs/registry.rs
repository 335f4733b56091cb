//! The registry: every kind of job work, named once. From this one list come the shard's
//! [`Work`] (the kind and its options, read from and written to a shard's message), and the
//! only places that go from a kind's name or a shard's work to its type: running a delivered
//! shard, and reading a status's counts. A new kind is its own file and one line here.

use serde_json::{Map, Value};

use super::{
    backup::BackupKind,
    kind::{Kind, Registered},
    prune::PruneKind,
    restore::RestoreKind,
    runner::{self, Delivered, Fanout, PartReport},
    verify::VerifyKind,
    JobError, Shard,
};
use crate::{
    app::App,
    core::{
        counts::{Counts, KindCounts},
        shard::{read_options, write_options, ShardWork},
    },
};

macro_rules! registry {
    ($($variant:ident => $kind:ty),+ $(,)?) => {
        /// The work a shard does: one kind of work, with its options. A shard can carry no
        /// other kind's.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Work {
            $($variant(<$kind as Kind>::Options),)+
        }

        impl ShardWork for Work {
            fn kind(&self) -> &'static str {
                match self {
                    $(Work::$variant(_) => <$kind as Kind>::NAME,)+
                }
            }

            fn write(&self, object: &mut Map<String, Value>) {
                match self {
                    $(Work::$variant(options) => write_options(<$kind as Kind>::FIELD, options, object),)+
                }
            }

            fn read(kind: Option<&str>, object: &Map<String, Value>) -> Result<Self, String> {
                // A shard without a kind is a backup's, as every earlier release wrote them.
                let kind = kind.unwrap_or(BackupKind::NAME);
                $(if kind == <$kind as Kind>::NAME {
                    return Ok(Work::$variant(read_options(kind, <$kind as Kind>::FIELD, object)?));
                })+
                Err(format!("no kind of work is named {kind:?}"))
            }
        }

        $(impl Registered for $kind {
            fn wrap(options: Self::Options) -> Work {
                Work::$variant(options)
            }
        })+

        /// Runs a shard the queue delivered, of whatever kind (see [`runner::run_delivered`]).
        pub async fn run_delivered(
            app: &App,
            shard: &Shard,
            last_attempt: bool,
        ) -> Result<Delivered, JobError> {
            match &shard.work {
                $(Work::$variant(options) => {
                    runner::run_delivered::<$kind>(app, shard, options, last_attempt).await
                })+
            }
        }

        /// Runs one part of a shard of whatever kind, its lines kept in the report.
        pub async fn run_part(
            app: &App,
            shard: &Shard,
            fanout: &Fanout<'_>,
        ) -> Result<PartReport, JobError> {
            match &shard.work {
                $(Work::$variant(options) => {
                    runner::run_part_reported::<$kind>(app, shard, options, fanout, None).await
                })+
            }
        }

        /// The names of the counts the kind named `kind` keeps (none for an unknown one).
        pub fn count_names(kind: &str) -> &'static [&'static str] {
            $(if kind == <$kind as Kind>::NAME {
                return <<$kind as Kind>::Counts as KindCounts>::NAMES;
            })+
            &[]
        }

        /// How many units the counts of a job of the kind named `kind` say were not done.
        pub fn not_done(kind: &str, counts: &Counts) -> u64 {
            $(if kind == <$kind as Kind>::NAME {
                return <$kind as Kind>::not_done(
                    &<<$kind as Kind>::Counts as KindCounts>::from_counts(counts),
                );
            })+
            0
        }
    };
}

impl Work {
    /// A backup's work, with no options but the defaults (no pruning).
    pub fn backup() -> Self {
        Work::Backup(Default::default())
    }
}

registry! {
    Backup => BackupKind,
    Restore => RestoreKind,
    Verify => VerifyKind,
    Prune => PruneKind,
}
