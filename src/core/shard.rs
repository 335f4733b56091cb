//! The shard: the unit of work at lake scale. One shard is one directory level of one container
//! (or one name of it), from a continuation on: `(job, container, prefix, marker)`, and the work
//! it does there — one kind of work with that kind's options ([`ShardWork`]; the job engine's
//! registry says which kinds there are). It does its work on the blobs at its own level, queues
//! each sub-directory as a new shard (the fan-out) and, when its time budget is spent, queues
//! its own continuation. Built with serde like the backup request; its id in the job's ledger is
//! its exact position. Pure.
//!
//! A backup continuation says where to go on by the service's own marker and the identity of the
//! last entry dealt with, never by comparing names: the service lists in an order of its own (UTF-16
//! code units on flat accounts, path segment by segment with a hierarchical namespace), which no
//! byte-wise comparison reproduces.
//!
//! The message's JSON is the same as earlier releases wrote: the position's fields, `kind`
//! (absent for backup), and the kind's options as that kind writes them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::naming::{self, NamingError};

/// The work a shard does: one kind of work, with its options. The job engine's registry
/// implements it for the one enum of the kinds there are.
pub trait ShardWork: Clone + std::fmt::Debug + PartialEq + Send + Sync {
    /// The kind's name in messages, the ledger and statuses (`backup`, `restore`, ...).
    fn kind(&self) -> &'static str;

    /// Writes the kind's options into the shard's JSON object (its `kind` is written beside).
    fn write(&self, object: &mut Map<String, Value>);

    /// Reads the work of the kind named `kind` (absent: the first kind, backup) from the shard's
    /// JSON object.
    fn read(kind: Option<&str>, object: &Map<String, Value>) -> Result<Self, String>;
}

/// One directory level of a container, from `marker` on, and the work done there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard<W> {
    /// The job this shard belongs to (every shard a root shard fans out into carries its id).
    pub job: String,
    pub container: String,
    /// The directory: empty for the container's root, else ending in `/`.
    pub prefix: String,
    /// Where the listing goes on; absent at the start of the directory.
    pub marker: Option<String>,
    /// Which part of the directory this is: 0 for its start, n for its n-th continuation.
    pub part: u32,
    /// The name (a blob's, or a sub-directory's) of the last entry the previous part dealt
    /// with, on the first pages listed from `marker`: the entries up to and including that name's
    /// run are skipped. Found by equality, never by order; when the listing no longer holds it,
    /// nothing is skipped (redoing is harmless, every step is idempotent). A part that plans its
    /// whole level in its own name order (restore, verify, prune) goes on after this name in
    /// that order (no marker): the order is its own, never the service's.
    pub after: Option<String>,
    /// With `after`: the first entry the previous part did not deal with, found by equality:
    /// skipping stops before it, so an `after` deleted since does not make a part redo the
    /// entries before it.
    pub resume_at: Option<String>,
    /// What is left of the directory: its listing, or only its deletions.
    pub phase: Phase,
    /// The one name of the directory this shard is narrowed to (a job over one blob): only that
    /// name is dealt with; nothing is fanned out.
    pub only: Option<String>,
    /// What the shard does there.
    pub work: W,
}

/// What a shard part does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// List the directory level and repair what it shows.
    #[default]
    Listing,
    /// The listing was spread over several parts, or the deletions did not fit the budget: list
    /// the whole level again, names only, and record which backed-up names it no longer holds.
    Deletions,
}

impl Phase {
    fn is_listing(&self) -> bool {
        *self == Phase::Listing
    }
}

fn is_zero(part: &u32) -> bool {
    *part == 0
}

/// A shard's position, as its message writes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Position {
    job: String,
    container: String,
    #[serde(default)]
    prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    marker: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    part: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resume_at: Option<String>,
    #[serde(default, skip_serializing_if = "Phase::is_listing")]
    phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    only: Option<String>,
}

impl<W: ShardWork> Shard<W> {
    /// The first shard of a job over `container` (or just its directory `prefix`).
    pub fn root(job: &str, container: &str, prefix: &str, work: W) -> Self {
        Self {
            job: job.to_owned(),
            container: container.to_owned(),
            prefix: prefix.to_owned(),
            marker: None,
            part: 0,
            after: None,
            resume_at: None,
            phase: Phase::Listing,
            only: None,
            work,
        }
    }

    /// The shard over the one blob `name`, of `work`.
    pub fn one_blob(job: &str, container: &str, name: &str, work: W) -> Self {
        let directory = naming::directory_of(name).unwrap_or("");
        Self {
            only: Some(name.to_owned()),
            ..Self::root(job, container, directory, work)
        }
    }

    /// The shard of sub-directory `prefix` (as listed under this one), of the same work.
    pub fn child(&self, prefix: &str) -> Self {
        Self::root(&self.job, &self.container, prefix, self.work.clone())
    }

    /// The rest of this directory, listed from `marker` (`None`: from its start), the first
    /// pages' entries through `after`'s run skipped.
    pub fn continuation(&self, marker: Option<&str>, after: Option<&str>) -> Self {
        Self {
            marker: marker.map(str::to_owned),
            part: self.part.saturating_add(1),
            after: after.map(str::to_owned),
            resume_at: None,
            ..self.clone()
        }
    }

    /// This continuation, going on at `resume_at`: the first entry its part did not deal with.
    pub fn resuming_at(self, resume_at: Option<String>) -> Self {
        Self { resume_at, ..self }
    }

    /// The part that records the directory's deletions (its listing is done).
    pub fn deletions(&self) -> Self {
        Self {
            marker: None,
            after: None,
            resume_at: None,
            phase: Phase::Deletions,
            part: self.part.saturating_add(1),
            ..self.clone()
        }
    }

    /// The start of the level this shard lists: its directory, or its one blob's name.
    pub fn listing_prefix(&self) -> &str {
        self.only.as_deref().unwrap_or(&self.prefix)
    }

    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }

    /// The message as JSON: the position's fields, the kind, the kind's options.
    fn to_value(&self) -> Value {
        let position = Position {
            job: self.job.clone(),
            container: self.container.clone(),
            prefix: self.prefix.clone(),
            marker: self.marker.clone(),
            part: self.part,
            after: self.after.clone(),
            resume_at: self.resume_at.clone(),
            phase: self.phase,
            only: self.only.clone(),
        };
        let Ok(Value::Object(mut object)) = serde_json::to_value(position) else {
            unreachable!("a struct of strings serializes to an object")
        };
        let kind = self.work.kind();
        // Backup, the first kind, is written without its name, as every earlier release did.
        if kind != "backup" {
            object.insert("kind".to_owned(), Value::String(kind.to_owned()));
        }
        self.work.write(&mut object);
        Value::Object(object)
    }

    /// Reads and checks a shard message.
    pub fn parse(text: &str) -> Result<Self, String> {
        let not_a_shard = |e: &dyn std::fmt::Display| {
            format!("not a shard {{\"job\",\"container\",\"prefix\",\"marker\"}}: {e}")
        };
        let object: Map<String, Value> =
            serde_json::from_str(text.trim()).map_err(|e| not_a_shard(&e))?;
        let position: Position =
            serde_json::from_value(Value::Object(object.clone())).map_err(|e| not_a_shard(&e))?;
        let kind = match object.get("kind") {
            None => None,
            Some(Value::String(kind)) => Some(kind.as_str()),
            Some(other) => return Err(format!("the shard's kind {other} is no name")),
        };
        let work = W::read(kind, &object)?;
        let shard = Self {
            job: position.job,
            container: position.container,
            prefix: position.prefix,
            marker: position.marker,
            part: position.part,
            after: position.after,
            resume_at: position.resume_at,
            phase: position.phase,
            only: position.only,
            work,
        };
        shard.validate().map_err(|e| e.to_string())?;
        if !is_job_id(&shard.job) {
            return Err(format!(
                "the shard's job id {:?} is not 1 to 64 letters, digits, '-' and '_'",
                shard.job
            ));
        }
        Ok(shard)
    }

    fn validate(&self) -> Result<(), NamingError> {
        naming::validate_container_name(&self.container)?;
        if !self.prefix.is_empty() {
            naming::validate_blob_name(&self.prefix)?;
        }
        if let Some(name) = &self.only {
            naming::validate_blob_name(name)?;
            if naming::directory_of(name).unwrap_or("") != self.prefix {
                return Err(NamingError::InvalidBlob {
                    name: name.clone(),
                    reason: "is not directly in the shard's directory",
                });
            }
        }
        Ok(())
    }

    /// The shard's id within its job: its exact position — the directory, which part of it, of
    /// which kind of work, and where a continuation goes on (its marker and the last entry before
    /// it, its phase) — so a shard queued twice (a retried parent) is one entry, not two, and
    /// two continuations that go on from different places are two.
    pub fn id(&self) -> String {
        let mut hash = self.part_hash();
        if let Some(marker) = &self.marker {
            hash.update(b"\0marker\0");
            hash.update(marker.as_bytes());
        }
        if let Some(after) = &self.after {
            hash.update(b"\0after\0");
            hash.update(after.as_bytes());
        }
        if self.phase == Phase::Deletions {
            hash.update(b"\0deletions");
        }
        hex_id(hash)
    }

    /// The id an earlier release gave a continuation (its directory part, without its position),
    /// when it differs from [`Shard::id`]: a job in flight across an upgrade has its
    /// continuations entered under these.
    pub fn legacy_id(&self) -> Option<String> {
        let positioned =
            self.marker.is_some() || self.after.is_some() || self.phase == Phase::Deletions;
        positioned.then(|| hex_id(self.part_hash()))
    }

    fn part_hash(&self) -> Sha256 {
        let mut hash = Sha256::new();
        for part in [
            self.container.as_bytes(),
            b"\0",
            self.prefix.as_bytes(),
            b"\0",
            self.part.to_string().as_bytes(),
        ] {
            hash.update(part);
        }
        if let Some(name) = &self.only {
            hash.update(b"\0only\0");
            hash.update(name.as_bytes());
        }
        let kind = self.work.kind();
        if kind != "backup" {
            hash.update(b"\0kind\0");
            hash.update(kind.as_bytes());
        }
        hash
    }
}

impl<W: ShardWork> Serialize for Shard<W> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

fn hex_id(hash: Sha256) -> String {
    hash.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `job` has the shape of a job id (it names blobs in the job's ledger).
pub fn is_job_id(job: &str) -> bool {
    (1..=64).contains(&job.len())
        && job
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A job id unique enough to tell jobs apart: the start time, in nanoseconds, in hex.
pub fn new_job_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("job-{nanos:x}")
}

/// A directory prefix as a user may give it: `raw/2026` and `raw/2026/` both mean the directory.
pub fn directory_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_start_matches('/');
    if trimmed.is_empty() || trimmed.ends_with('/') {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/")
    }
}

/// Reads one kind's options from the shard's JSON object: under `field` when the kind writes
/// them there, else from the object itself (its fields beside the position's).
pub fn read_options<T: serde::de::DeserializeOwned>(
    kind: &str,
    field: Option<&str>,
    object: &Map<String, Value>,
) -> Result<T, String> {
    let value = match field {
        Some(field) => object
            .get(field)
            .cloned()
            .ok_or_else(|| format!("a {kind} shard carries its {field} options"))?,
        None => Value::Object(object.clone()),
    };
    serde_json::from_value(value).map_err(|e| format!("the {kind} shard's options: {e}"))
}

/// Writes one kind's options into the shard's JSON object: under `field`, or beside the
/// position's fields.
pub fn write_options<T: Serialize>(
    field: Option<&str>,
    options: &T,
    object: &mut Map<String, Value>,
) {
    let Ok(value) = serde_json::to_value(options) else {
        return;
    };
    match (field, value) {
        (Some(field), value) => {
            object.insert(field.to_owned(), value);
        }
        (None, Value::Object(fields)) => object.extend(fields),
        (None, _) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two kinds of work, for the tests: one written beside the position, one under a field.
    #[derive(Debug, Clone, PartialEq)]
    enum TestWork {
        Plain { flag: bool },
        Fielded { filter: String },
    }

    #[derive(Serialize, Deserialize)]
    struct Plain {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        flag: bool,
    }

    impl ShardWork for TestWork {
        fn kind(&self) -> &'static str {
            match self {
                TestWork::Plain { .. } => "backup",
                TestWork::Fielded { .. } => "fielded",
            }
        }

        fn write(&self, object: &mut Map<String, Value>) {
            match self {
                TestWork::Plain { flag } => write_options(None, &Plain { flag: *flag }, object),
                TestWork::Fielded { filter } => write_options(Some("fielded"), filter, object),
            }
        }

        fn read(kind: Option<&str>, object: &Map<String, Value>) -> Result<Self, String> {
            match kind.unwrap_or("backup") {
                "backup" => Ok(TestWork::Plain {
                    flag: read_options::<Plain>("backup", None, object)?.flag,
                }),
                "fielded" => Ok(TestWork::Fielded {
                    filter: read_options("fielded", Some("fielded"), object)?,
                }),
                other => Err(format!("no kind {other}")),
            }
        }
    }

    fn root() -> Shard<TestWork> {
        Shard::root("job-1", "lake", "", TestWork::Plain { flag: false })
    }

    #[test]
    fn shards_round_trip_and_fan_out() {
        let json = |text: &str| serde_json::from_str::<Value>(text).unwrap();
        assert_eq!(
            json(&root().to_json()),
            json(r#"{"job":"job-1","container":"lake","prefix":""}"#),
            "as earlier releases wrote a backup shard"
        );
        let child = root().child("raw/\"q\" 2026/");
        let next = child
            .continuation(Some("2!84!MDAwMDQ2"), Some("raw/x"))
            .resuming_at(Some("raw/y".into()));
        assert_eq!(Shard::parse(&next.to_json()).unwrap(), next);
        let flagged = Shard::root("job-2", "lake", "", TestWork::Plain { flag: true }).child("a/");
        assert_eq!(flagged.work, TestWork::Plain { flag: true }, "inherited");
        assert!(flagged.to_json().contains(r#""flag":true"#));
        let deletions = next.deletions();
        assert_eq!(
            (deletions.phase, deletions.part, deletions.marker.as_deref()),
            (Phase::Deletions, 2, None)
        );
        assert_eq!(Shard::parse(&deletions.to_json()).unwrap(), deletions);
        let fielded = Shard::root(
            "job-3",
            "lake",
            "d/",
            TestWork::Fielded {
                filter: "d/x".into(),
            },
        );
        let text = fielded.to_json();
        assert_eq!(
            (&json(&text)["kind"], &json(&text)["fielded"]),
            (&Value::from("fielded"), &Value::from("d/x")),
            "{text}"
        );
        assert_eq!(Shard::parse(&text).unwrap(), fielded);
        let one = Shard::one_blob(
            "job-3",
            "lake",
            "raw/a.csv",
            TestWork::Plain { flag: false },
        );
        assert_eq!(
            (one.prefix.as_str(), one.listing_prefix()),
            ("raw/", "raw/a.csv")
        );
        assert_eq!(Shard::parse(&one.to_json()).unwrap(), one);
        let mut stray = one.clone();
        stray.prefix = "other/".into();
        assert!(Shard::<TestWork>::parse(&stray.to_json()).is_err());
        assert_eq!(
            (
                child.part,
                next.part,
                next.continuation(None, Some("raw/y")).part
            ),
            (0, 1, 2)
        );
        for bad in [
            "nope",
            r#"{"job":"j","container":"Bad!","prefix":""}"#,
            r#"{"job":" ","container":"lake","prefix":""}"#,
            r#"{"job":"../x","container":"lake","prefix":""}"#,
            r#"{"job":"j","container":"lake","kind":"nothing"}"#,
            r#"{"job":"j","container":"lake","kind":"fielded"}"#,
        ] {
            assert!(Shard::<TestWork>::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_name_an_exact_position_and_nothing_else() {
        let again = Shard::root("job-2", "lake", "", TestWork::Plain { flag: true });
        assert_eq!(
            root().id(),
            again.id(),
            "neither the job nor a backup's options"
        );
        let next = root().continuation(Some("marker-a"), Some("x"));
        assert_ne!(root().id(), next.id());
        assert_eq!(
            next.id(),
            root().continuation(Some("marker-a"), Some("x")).id(),
            "the same position is the same part"
        );
        for elsewhere in [
            root().continuation(Some("marker-b"), Some("x")),
            root().continuation(Some("marker-a"), Some("y")),
            root().continuation(Some("marker-a"), None),
            root().deletions(),
        ] {
            assert_ne!(next.id(), elsewhere.id(), "{elsewhere:?}");
        }
        assert_ne!(root().child("a/").id(), root().id());
        let fielded = Shard::root(
            "job-1",
            "lake",
            "",
            TestWork::Fielded {
                filter: String::new(),
            },
        );
        assert_ne!(fielded.id(), root().id(), "another kind of work");
        assert_eq!(root().id().len(), 32);
        // An earlier release named a continuation by its part alone.
        assert_eq!(root().legacy_id(), None);
        let legacy = next.legacy_id().unwrap();
        assert_ne!(legacy, next.id());
        assert_eq!(
            Some(legacy),
            root().continuation(Some("marker-b"), None).legacy_id()
        );
    }

    #[test]
    fn user_prefixes_name_directories() {
        assert_eq!(directory_prefix(""), "");
        assert_eq!(directory_prefix("raw/2026"), "raw/2026/");
        assert_eq!(directory_prefix("/raw/2026/"), "raw/2026/");
    }
}
