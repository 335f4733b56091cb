//! A shard as its queue message writes it: the position's fields, `kind` (absent for backup) and
//! the kind's options as that kind writes them — the same JSON earlier releases wrote — and the
//! reading of such a message, checked.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{is_job_id, Phase, Shard, ShardWork};

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

/// The kind of a shard whose message names none: backup's, as every earlier release wrote them
/// (the registry checks that its backup kind has this name).
pub const UNNAMED_KIND: &str = "backup";

impl<W: ShardWork> Serialize for Shard<W> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
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

impl<W: ShardWork> Shard<W> {
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
        if kind != UNNAMED_KIND {
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
}
