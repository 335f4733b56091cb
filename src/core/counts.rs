//! What a job counts. Each kind of work counts in a struct of its own ([`KindCounts`], made
//! with [`kind_counts!`]); the ledger keeps a shard's counts as that struct's named numbers, and
//! a job's status adds them up by name ([`Counts`]) whatever the kind, since a status is read
//! without knowing which kind wrote it. Pure.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

/// Named numbers: a shard's counts as its ledger entry keeps them, or a job's totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Counts(BTreeMap<String, u64>);

impl Counts {
    /// Counts with every one of `names` at zero (a status shows them all).
    pub fn zero(names: &[&str]) -> Self {
        Self(names.iter().map(|name| ((*name).to_owned(), 0)).collect())
    }

    /// Each count by name, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &u64)> {
        self.0.iter()
    }

    pub fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    pub fn set(&mut self, name: &str, value: u64) {
        self.0.insert(name.to_owned(), value);
    }

    pub fn add(&mut self, other: &Counts) {
        for (name, value) in &other.0 {
            *self.0.entry(name.clone()).or_default() += value;
        }
    }

    /// As blob metadata (names are valid C# identifiers, values decimal), so a listing of the
    /// ledger carries every count without reading a blob.
    pub fn to_metadata(&self) -> HashMap<String, String> {
        self.0
            .iter()
            .map(|(name, value)| (name.clone(), value.to_string()))
            .collect()
    }

    /// Reads counts back from metadata: every key with a decimal value, lowercased (metadata
    /// names are case-blind); others are not counts.
    pub fn from_metadata(metadata: &HashMap<String, String>) -> Self {
        Self(
            metadata
                .iter()
                .filter_map(|(key, value)| Some((key.to_ascii_lowercase(), value.parse().ok()?)))
                .collect(),
        )
    }
}

/// The counts of one kind of work: a struct of named numbers that add up.
pub trait KindCounts:
    Clone + Default + std::fmt::Debug + PartialEq + Serialize + Send + Sync
{
    /// The names of its counts, in the order a status shows them.
    const NAMES: &'static [&'static str];

    /// Adds `other`'s counts to these.
    fn add(&mut self, other: &Self);

    /// As named numbers (for the ledger and a status).
    fn to_counts(&self) -> Counts;

    /// Read back from named numbers; a missing one is 0.
    fn from_counts(counts: &Counts) -> Self;
}

/// Defines a kind's counts: a struct of `u64` fields, each a count named as the field, with
/// [`KindCounts`] implemented for it.
#[macro_export]
macro_rules! kind_counts {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($(#[$field_meta:meta])* $field:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        $vis struct $name {
            $($(#[$field_meta])* pub $field: u64,)+
        }

        impl $name {
            /// One count by its name (0 for a name it does not keep).
            pub fn get(&self, name: &str) -> u64 {
                $crate::core::counts::KindCounts::to_counts(self).get(name)
            }
        }

        impl $crate::core::counts::KindCounts for $name {
            const NAMES: &'static [&'static str] = &[$(stringify!($field)),+];

            fn add(&mut self, other: &Self) {
                $(self.$field += other.$field;)+
            }

            fn to_counts(&self) -> $crate::core::counts::Counts {
                let mut counts = $crate::core::counts::Counts::default();
                $(counts.set(stringify!($field), self.$field);)+
                counts
            }

            fn from_counts(counts: &$crate::core::counts::Counts) -> Self {
                Self {
                    $($field: counts.get(stringify!($field)),)+
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    kind_counts! {
        /// A kind's counts, for the test.
        struct Sample { found, done, failed }
    }

    #[test]
    fn typed_counts_round_trip_through_named_numbers_and_metadata() {
        let mut a = Sample {
            found: 3,
            done: 2,
            failed: 1,
        };
        a.add(&Sample {
            found: 1,
            ..Default::default()
        });
        let named = a.to_counts();
        assert_eq!((named.get("found"), named.get("failed")), (4, 1));
        assert_eq!(Sample::NAMES, ["found", "done", "failed"]);
        let metadata = named.to_metadata();
        assert_eq!(Counts::from_metadata(&metadata), named);
        let upper: HashMap<_, _> = metadata
            .into_iter()
            .map(|(k, v)| (k.to_uppercase(), v))
            .collect();
        assert_eq!(Counts::from_metadata(&upper), named, "keys are case-blind");
        assert_eq!(Sample::from_counts(&named), a);
        assert_eq!((a.get("done"), a.get("nothing")), (2, 0));
        let garbled = HashMap::from([("found".into(), "many".into())]);
        assert_eq!(Counts::from_metadata(&garbled).get("found"), 0);
    }
}
