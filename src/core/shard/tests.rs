//! Unit tests of the shard: its message, its ids, its continuations.

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
