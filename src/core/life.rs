//! The lives of a name: when the lake was seen to lose a backed-up version (deleted), and when it
//! was seen to have it again (an undeleted blob keeps its ETag), so that a restore "as of T"
//! leaves out exactly what the lake did not hold at T.
//!
//! A life is `(name, ETag)`. Its history is an append-only log of records, each its own empty
//! blob in `{c}bak` beside the name's backups, named by [`naming::record_blob_name`] with the
//! field `{life}~d{n}` (the n-th time it was seen deleted) or `{life}~r{n}` (the n-th time it was
//! seen again), and carrying the time it was seen. `{life}` is the first 12 hex digits of the
//! ETag's SHA-256 (48 bits: a collision between two versions of one name is beyond any lake's
//! history), so a record's name is never longer than its backup's (an Azure ETag has 17
//! characters): a name that fits Azure's limit as a backup fits it as a record. The log runs d1,
//! r1, d2, r2, …; each record is written create-only and only after the previous one was listed,
//! so two passes that see the same change write one record, and the first sets its time. Records
//! sit in the same listing as the backups, so knowing them costs no request of its own, and their
//! timestamp (month 00) keeps them out of every name a backup can have. Pure.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::{
    etag::normalize_etag,
    naming::{self, NamingError},
};

/// The metadata key of a record holding when the change was seen (RFC 3339).
pub const SEEN_KEY: &str = "lakebackup_seen";

/// Where the markers of earlier releases live in a backup container, one per ended life:
/// `.lakebackup-deleted/{name}@{etag}`. Read only to move them beside the backups.
pub const LEGACY_MARKER_PREFIX: &str = ".lakebackup-deleted/";
/// The metadata key of a legacy marker holding when the deletion was first seen.
pub const LEGACY_SEEN_KEY: &str = "lakebackup_deleted_seen";

/// What a record says happened to a life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    /// The lake no longer had the version.
    Deleted,
    /// The lake had the version again after it was seen deleted.
    Revived,
}

/// What names the life of version `etag` in its records: 12 hex digits of its SHA-256.
pub fn life_of(etag: &str) -> String {
    Sha256::digest(normalize_etag(etag).as_bytes())[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One record of a life: the `sequence`-th change of its kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Record {
    pub name: String,
    /// The life: [`life_of`] its version's ETag.
    pub life: String,
    pub change: Change,
    /// 1 for the first deletion (and the revival after it), 2 for the second, …
    pub sequence: u32,
}

impl Record {
    /// The `sequence`-th record of `change` for the life of `name` at version `etag`.
    pub fn new(name: &str, etag: &str, change: Change, sequence: u32) -> Self {
        Record {
            name: name.to_owned(),
            life: life_of(etag),
            change,
            sequence,
        }
    }

    /// The record's place in its life's log: d1 = 0, r1 = 1, d2 = 2, …
    fn position(&self) -> u64 {
        let base = 2 * (u64::from(self.sequence.max(1)) - 1);
        match self.change {
            Change::Deleted => base,
            Change::Revived => base + 1,
        }
    }

    fn at_position(name: &str, life: &str, position: u64) -> Self {
        Record {
            name: name.to_owned(),
            life: life.to_owned(),
            change: if position.is_multiple_of(2) {
                Change::Deleted
            } else {
                Change::Revived
            },
            sequence: u32::try_from(position / 2 + 1).unwrap_or(u32::MAX),
        }
    }

    /// The record's blob name beside the backups of its name.
    pub fn blob_name(&self) -> Result<String, NamingError> {
        let kind = match self.change {
            Change::Deleted => 'd',
            Change::Revived => 'r',
        };
        let field = format!("{}~{kind}{}", self.life, self.sequence);
        naming::record_blob_name(&self.name, &field)
    }

    /// Reads a blob name of a backup container's level back into a record; `None` for a backup
    /// or anything else.
    pub fn parse(blob_name: &str) -> Option<Self> {
        let (name, field) = naming::parse_record_blob_name(blob_name)?;
        let (life, change) = field.rsplit_once('~')?;
        let (change, sequence) = match change.split_at_checked(1)? {
            ("d", n) => (Change::Deleted, n),
            ("r", n) => (Change::Revived, n),
            _ => return None,
        };
        let sequence: u32 = sequence.parse().ok().filter(|n| *n >= 1)?;
        (!life.is_empty()).then(|| Record {
            name,
            life: life.to_owned(),
            change,
            sequence,
        })
    }
}

/// The time in a record's metadata (`None` when it carries no readable one).
pub fn seen_in(metadata: &HashMap<String, String>, key: &str) -> Option<OffsetDateTime> {
    metadata
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .and_then(|(_, v)| OffsetDateTime::parse(v, &Rfc3339).ok())
}

/// The metadata of a record seen at `seen`.
pub fn record_metadata(seen: OffsetDateTime) -> HashMap<String, String> {
    HashMap::from([(
        SEEN_KEY.to_owned(),
        seen.to_offset(time::UtcOffset::UTC)
            .format(&Rfc3339)
            .unwrap_or_default(),
    )])
}

/// Reads a legacy marker's name (`.lakebackup-deleted/{name}@{etag}`): `(name, etag)`.
pub fn parse_legacy_marker(blob_name: &str) -> Option<(&str, &str)> {
    let rest = blob_name.strip_prefix(LEGACY_MARKER_PREFIX)?;
    let (source, etag) = rest.rsplit_once('@')?;
    (!source.is_empty() && !source.ends_with('/') && !etag.is_empty() && !etag.contains('/'))
        .then_some((source, etag))
}

/// One life's records: their positions in its log, and when each was seen.
type Log = Vec<(u64, Option<OffsetDateTime>)>;

/// The lives recorded at one directory level: per `(name, life)`, its records' positions and
/// times, in log order. Asked about a version, it names the version's life by [`life_of`].
#[derive(Debug, Default, Clone)]
pub struct Lives {
    logs: HashMap<(String, String), Log>,
}

impl Lives {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, record: &Record, seen: Option<OffsetDateTime>) {
        let log = self
            .logs
            .entry((record.name.clone(), record.life.clone()))
            .or_default();
        let position = record.position();
        if !log.iter().any(|(p, _)| *p == position) {
            log.push((position, seen));
            log.sort_by_key(|(p, _)| *p);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.logs.is_empty()
    }

    fn log(&self, name: &str, etag: &str) -> Option<&Log> {
        self.logs.get(&(name.to_owned(), life_of(etag)))
    }

    fn last(&self, name: &str, etag: &str) -> Option<&(u64, Option<OffsetDateTime>)> {
        self.log(name, etag).and_then(|log| log.last())
    }

    /// Whether the life's last record says it ended (whenever that was).
    pub fn ended_now(&self, name: &str, etag: &str) -> bool {
        self.last(name, etag)
            .is_some_and(|(p, _)| p.is_multiple_of(2))
    }

    /// Whether the life had been seen ended by `instant`: its last record seen at or before
    /// `instant` is a deletion. A record without a readable time says nothing about any instant.
    pub fn ended_by(&self, name: &str, etag: &str, instant: OffsetDateTime) -> bool {
        self.log(name, etag)
            .and_then(|log| {
                log.iter()
                    .filter(|(_, seen)| seen.is_some_and(|s| s <= instant))
                    .map(|(p, _)| *p)
                    .max()
            })
            .is_some_and(|p| p.is_multiple_of(2))
    }

    /// When the life's last record was seen (`None`: no record, or no readable time).
    pub fn last_seen(&self, name: &str, etag: &str) -> Option<OffsetDateTime> {
        self.last(name, etag).and_then(|(_, seen)| *seen)
    }

    /// The record that says the life ended, unless its last record says so already.
    pub fn next_deletion(&self, name: &str, etag: &str) -> Option<Record> {
        let life = life_of(etag);
        match self.last(name, etag) {
            None => Some(Record::at_position(name, &life, 0)),
            Some((p, _)) if !p.is_multiple_of(2) => Some(Record::at_position(name, &life, p + 1)),
            Some(_) => None,
        }
    }

    /// The record that says the life was seen again, when its last record says it ended.
    pub fn next_revival(&self, name: &str, etag: &str) -> Option<Record> {
        match self.last(name, etag) {
            Some((p, _)) if p.is_multiple_of(2) => {
                Some(Record::at_position(name, &life_of(etag), p + 1))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn records_round_trip_through_their_names() {
        let record = Record::new(
            "raw/2026/part \"q\"@v2.parquet",
            "0x8DC1",
            Change::Revived,
            3,
        );
        assert_eq!(record.life, life_of("\"0x8DC1\""), "quotes do not matter");
        assert_eq!(record.life.len(), 12);
        let name = record.blob_name().unwrap();
        assert_eq!(
            name,
            format!(
                "raw/2026/part \"q\"@v2_00000000T000000Z_{}~r3.parquet",
                record.life
            )
        );
        assert_eq!(Record::parse(&name), Some(record));
        assert_eq!(Record::parse("raw/x_20260101T000000Z_0x1.csv"), None);
        assert_eq!(Record::parse("raw/x_00000000T000000Z_0x1~x1.csv"), None);
        assert_eq!(Record::parse("raw/x_00000000T000000Z_0x1~d0.csv"), None);
        assert!(Record::new(&"a".repeat(1015), "0x1", Change::Deleted, 1)
            .blob_name()
            .is_err());
    }

    #[test]
    fn a_record_fits_wherever_its_backup_does() {
        // An Azure ETag has 17 characters; a record's field has at most 17 up to r99.
        let etag = "0x8DC12AB34CD56EF";
        let when = datetime!(2026-11-24 14:17:34 UTC);
        for length in 960..=1024 {
            let name = format!("d/{}.csv", "n".repeat(length - 6));
            let Ok(backup) = naming::backup_blob_name(&name, when, etag) else {
                continue;
            };
            let record = Record::new(&name, etag, Change::Revived, 99)
                .blob_name()
                .unwrap();
            assert!(record.chars().count() <= backup.chars().count(), "{length}");
        }
    }

    #[test]
    fn legacy_markers_are_read() {
        assert_eq!(
            parse_legacy_marker(".lakebackup-deleted/raw/a@b.csv@0x1"),
            Some(("raw/a@b.csv", "0x1"))
        );
        assert_eq!(parse_legacy_marker(".lakebackup-deleted/raw/x@0x1/y"), None);
        assert_eq!(parse_legacy_marker("raw/x@0x1"), None);
    }

    #[test]
    fn a_life_ends_and_comes_back_in_log_order() {
        let mut lives = Lives::new();
        let d1 = lives.next_deletion("a", "0x1").unwrap();
        assert_eq!((d1.change, d1.sequence), (Change::Deleted, 1));
        assert!(
            lives.next_revival("a", "0x1").is_none(),
            "alive: nothing to revive"
        );
        lives.insert(&d1, Some(datetime!(2026-11-01 10:00 UTC)));
        assert!(lives.ended_now("a", "0x1"));
        assert!(lives.next_deletion("a", "0x1").is_none(), "recorded once");
        let r1 = lives.next_revival("a", "0x1").unwrap();
        assert_eq!((r1.change, r1.sequence), (Change::Revived, 1));
        lives.insert(&r1, Some(datetime!(2026-11-03 10:00 UTC)));
        assert!(!lives.ended_now("a", "0x1"));
        let d2 = lives.next_deletion("a", "0x1").unwrap();
        assert_eq!((d2.change, d2.sequence), (Change::Deleted, 2));
        lives.insert(&d2, Some(datetime!(2026-11-05 10:00 UTC)));

        let ended = |t| lives.ended_by("a", "0x1", t);
        assert!(!ended(datetime!(2026-11-01 09:59 UTC)));
        assert!(ended(datetime!(2026-11-01 10:00 UTC)));
        assert!(ended(datetime!(2026-11-02 00:00 UTC)));
        assert!(!ended(datetime!(2026-11-04 00:00 UTC)), "seen again");
        assert!(ended(datetime!(2026-11-06 00:00 UTC)));
        assert!(!lives.ended_by("b", "0x1", datetime!(2026-11-06 00:00 UTC)));
        assert!(!lives.ended_by("a", "0x2", datetime!(2026-11-06 00:00 UTC)));

        // A record listed twice counts once; one without a time says nothing about instants.
        let mut untimed = Lives::new();
        untimed.insert(&d1, None);
        untimed.insert(&d1, None);
        assert!(untimed.ended_now("a", "0x1"));
        assert!(!untimed.ended_by("a", "0x1", datetime!(2030-01-01 00:00 UTC)));
    }
}
