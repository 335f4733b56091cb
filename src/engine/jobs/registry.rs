//! The registry: every kind of job work, named once. From that one list (the `registry!` call
//! in [`super`], `module::Type => Variant` per kind) come the kinds' modules, the shard's
//! [`Work`](super::Work) (the kind and its options, read from and written to a shard's message), and the
//! only places that go from a kind's name or a shard's work to its type: running a delivered
//! shard, and reading a status's counts. A new kind is its own file and one line there.

macro_rules! registry {
    ($($module:ident :: $kind:ident => $variant:ident),+ $(,)?) => {
        $(pub mod $module;)+
        $(pub use self::$module::$kind;)+
        /// The work a shard does: one kind of work, with its options. A shard can carry no
        /// other kind's.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Work {
            $($variant(<$kind as Kind>::Options),)+
        }

        impl $crate::core::shard::ShardWork for Work {
            fn kind(&self) -> &'static str {
                match self {
                    $(Work::$variant(_) => <$kind as Kind>::NAME,)+
                }
            }

            fn write(&self, object: &mut ::serde_json::Map<String, ::serde_json::Value>) {
                match self {
                    $(Work::$variant(options) => $crate::core::shard::write_options(<$kind as Kind>::FIELD, options, object),)+
                }
            }

            fn read(
                kind: Option<&str>,
                object: &::serde_json::Map<String, ::serde_json::Value>,
            ) -> Result<Self, String> {
                let kind = kind.unwrap_or($crate::core::shard::UNNAMED_KIND);
                $(if kind == <$kind as Kind>::NAME {
                    return Ok(Work::$variant($crate::core::shard::read_options(kind, <$kind as Kind>::FIELD, object)?));
                })+
                Err(format!("no kind of work is named {kind:?}"))
            }
        }

        $(impl $crate::engine::jobs::kind::Registered for $kind {
            fn wrap(options: Self::Options) -> Work {
                Work::$variant(options)
            }
        })+

        /// Runs a shard the queue delivered, of whatever kind (see [`runner::run_delivered`]).
        pub async fn run_delivered(
            app: &$crate::app::App,
            shard: &Shard,
            last_attempt: bool,
        ) -> Result<$crate::engine::jobs::runner::Delivered, JobError> {
            match &shard.work {
                $(Work::$variant(options) => {
                    $crate::engine::jobs::runner::run_delivered::<$kind>(app, shard, options, last_attempt).await
                })+
            }
        }

        /// Runs one part of a shard of whatever kind, its lines kept in the report.
        pub async fn run_part(
            app: &$crate::app::App,
            shard: &Shard,
            fanout: &$crate::engine::jobs::runner::Fanout<'_>,
        ) -> Result<$crate::engine::jobs::runner::PartReport, JobError> {
            match &shard.work {
                $(Work::$variant(options) => {
                    $crate::engine::jobs::runner::run_part_reported::<$kind>(app, shard, options, fanout, None).await
                })+
            }
        }

        /// The names of the counts the kind named `kind` keeps (none for an unknown one).
        pub fn count_names(kind: &str) -> &'static [&'static str] {
            $(if kind == <$kind as Kind>::NAME {
                return <<$kind as Kind>::Counts as $crate::core::counts::KindCounts>::NAMES;
            })+
            &[]
        }

        /// How many units the counts of a job of the kind named `kind` say were not done.
        pub fn not_done(kind: &str, counts: &$crate::core::counts::Counts) -> u64 {
            $(if kind == <$kind as Kind>::NAME {
                return <$kind as Kind>::not_done(
                    &<<$kind as Kind>::Counts as $crate::core::counts::KindCounts>::from_counts(
                        counts,
                    ),
                );
            })+
            0
        }
    };
}

pub(super) use registry;

#[cfg(test)]
mod tests {
    use crate::{
        core::shard::UNNAMED_KIND,
        engine::jobs::{backup::BackupKind, Kind, Shard, Work},
    };

    #[test]
    fn a_shard_that_names_no_kind_is_a_backup_and_a_backup_names_none() {
        assert_eq!(BackupKind::NAME, UNNAMED_KIND);
        let earlier = r#"{"job":"job-1","container":"lake","prefix":"d/"}"#;
        let shard = Shard::parse(earlier).unwrap();
        assert_eq!(shard.work, Work::backup());
        let written = serde_json::to_value(&shard).unwrap();
        assert!(written.get("kind").is_none(), "{written}");
        assert_eq!(Shard::parse(&written.to_string()).unwrap(), shard);
    }
}
