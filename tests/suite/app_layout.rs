//! The Function App files agree with the server: every function folder is routed, bindings use
//! the names the handlers read, and host.json starts `lakebackup serve`.

use std::{fs, path::Path};

use serde_json::Value;

fn read_json(path: &str) -> Value {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    serde_json::from_str(&fs::read_to_string(&full).unwrap())
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn host_json_runs_the_custom_handler() {
    let host = read_json("host.json");
    assert_eq!(host["version"], "2.0");
    assert_eq!(
        host["extensionBundle"]["id"],
        "Microsoft.Azure.Functions.ExtensionBundle"
    );
    assert!(host["extensionBundle"]["version"]
        .as_str()
        .unwrap()
        .starts_with("[4."));
    let handler = &host["customHandler"]["description"];
    assert_eq!(handler["defaultExecutablePath"], "lakebackup");
    assert_eq!(handler["arguments"][0], "serve");
    let settings = read_json("local.settings.json");
    assert_eq!(settings["Values"]["FUNCTIONS_WORKER_RUNTIME"], "custom");
}

#[test]
fn function_folders_match_the_routes_and_binding_names() {
    let producer = read_json("HttpSnapshotIncBackupContainerProducer/function.json");
    let bindings = producer["bindings"].as_array().unwrap();
    assert_eq!(bindings[0]["type"], "httpTrigger");
    assert_eq!(
        bindings[0]["name"],
        lakebackup::host::protocol::HTTP_REQUEST_BINDING
    );
    assert_eq!(bindings[0]["authLevel"], "function");
    assert_eq!(bindings[0]["methods"], serde_json::json!(["get", "post"]));
    assert_eq!(
        bindings[1]["name"],
        lakebackup::host::protocol::HTTP_RESPONSE_BINDING
    );

    let consumer = read_json("QueueCreateBlobBackupADFv2/function.json");
    assert_eq!(consumer["bindings"][0]["type"], "queueTrigger");
    assert_eq!(consumer["bindings"][0]["queueName"], "%BACKUP_QUEUE_NAME%");
    assert_eq!(consumer["bindings"][0]["connection"], "AzureWebJobsStorage");

    let shards = read_json("QueueSnapshotBackupShard/function.json");
    assert_eq!(shards["bindings"][0]["type"], "queueTrigger");
    assert_eq!(
        shards["bindings"][0]["queueName"],
        "%BACKUP_QUEUE_NAME%-shards"
    );
    assert_eq!(
        shards["bindings"][0]["name"],
        consumer["bindings"][0]["name"]
    );

    let events = read_json("QueueBlobEvents/function.json");
    assert_eq!(events["bindings"][0]["type"], "queueTrigger");
    assert_eq!(events["bindings"][0]["queueName"], "%EVENTS_QUEUE_NAME%");
    assert_eq!(
        events["bindings"][0]["name"],
        consumer["bindings"][0]["name"]
    );

    let reconciler = read_json("HttpSnapshotIncBackupStorageReconciliation/function.json");
    assert_eq!(reconciler["bindings"][0]["type"], "timerTrigger");
    assert_eq!(
        reconciler["bindings"][0]["schedule"],
        "%RECONCILE_SCHEDULE%"
    );

    for name in lakebackup::host::dispatch::FUNCTIONS.map(|f| f.name) {
        assert!(Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(name)
            .join("function.json")
            .exists());
    }
}

#[test]
fn adf_artifacts_take_the_parameters_the_consumer_sends() {
    let pipeline = read_json("QueueCreateBlobBackupADFv2/adf/pipeline/lakebackup-copy-blob.json");
    let sent = serde_json::to_value(lakebackup::adf::PipelineParameters {
        container: String::new(),
        container_backup: String::new(),
        blob_name: String::new(),
        blob_name_backup: String::new(),
    })
    .unwrap();
    let mut sent: Vec<&String> = sent.as_object().unwrap().keys().collect();
    let mut declared: Vec<&String> = pipeline["properties"]["parameters"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    sent.sort();
    declared.sort();
    assert_eq!(sent, declared);

    let copy = &pipeline["properties"]["activities"][0];
    assert_eq!(copy["type"], "Copy");
    assert_eq!(copy["typeProperties"]["source"]["type"], "BinarySource");
    assert_eq!(copy["typeProperties"]["sink"]["type"], "BinarySink");
    for reference in [&copy["inputs"][0], &copy["outputs"][0]] {
        let name = reference["referenceName"].as_str().unwrap();
        let dataset = read_json(&format!(
            "QueueCreateBlobBackupADFv2/adf/dataset/{name}.json"
        ));
        assert_eq!(dataset["properties"]["type"], "Binary");
        let linked = dataset["properties"]["linkedServiceName"]["referenceName"]
            .as_str()
            .unwrap();
        let service = read_json(&format!(
            "QueueCreateBlobBackupADFv2/adf/linkedService/{linked}.json"
        ));
        assert_eq!(service["properties"]["type"], "AzureBlobStorage");
        // Managed identity: an endpoint and no secret of any kind.
        let properties = service["properties"]["typeProperties"].as_object().unwrap();
        assert!(properties.contains_key("serviceEndpoint"));
        assert!(!properties
            .keys()
            .any(|k| k.contains("connectionString") || k.contains("sasUri")));
        let declared: Vec<&String> = dataset["properties"]["parameters"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        let passed: Vec<&String> = reference["parameters"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(declared, passed);
    }
}

#[test]
fn the_web_activity_pipeline_posts_what_the_producer_reads_and_follows_its_202() {
    let pipeline = read_json(
        "HttpSnapshotIncBackupContainerProducer/adf/pipeline/lakebackup-snapshot-after-ingestion.json",
    );
    let web = &pipeline["properties"]["activities"][0];
    assert_eq!(web["type"], "WebActivity");
    let properties = &web["typeProperties"];
    assert_eq!(properties["method"], "POST");
    // A JSON object (ADF escapes each value), never JSON built by string concatenation.
    let body = properties["body"].as_object().unwrap();
    let mut fields: Vec<&String> = body.keys().collect();
    fields.sort();
    assert_eq!(fields, ["container", "prefix"]);
    assert_eq!(
        properties["turnOffAsync"], false,
        "the activity must follow the 202's Location"
    );
    // Each call is answered within PRODUCER_WAIT_SECONDS (default 200) plus a few seconds.
    let timeout = properties["httpRequestTimeout"].as_str().unwrap();
    let seconds: u64 = timeout
        .split(':')
        .map(|part| part.parse::<u64>().unwrap())
        .fold(0, |total, part| total * 60 + part);
    assert!((210..=600).contains(&seconds), "{timeout}");
    // No function key in the pipeline: it is read from Key Vault with the factory's identity,
    // and that read's output is secure (never logged).
    let text = pipeline.to_string();
    assert!(
        !text.contains("code=<") && !text.contains("<function-key>"),
        "{text}"
    );
    let read = &pipeline["properties"]["activities"][1];
    assert_eq!(read["typeProperties"]["authentication"]["type"], "MSI");
    assert_eq!(read["policy"]["secureOutput"], true);
    assert_eq!(web["dependsOn"][0]["activity"], read["name"]);
}

/// The `%Setting%` names the Functions host resolves in host.json and each function.json.
fn host_resolved_settings() -> std::collections::BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names = std::collections::BTreeSet::new();
    let mut files = vec![root.join("host.json")];
    for entry in std::fs::read_dir(root).unwrap() {
        let function = entry.unwrap().path().join("function.json");
        if function.exists() {
            files.push(function);
        }
    }
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        names.extend(lakebackup::host::bindings::referenced_settings(&text));
    }
    names
}

#[test]
fn every_setting_the_host_resolves_has_a_local_value_and_a_readme_row() {
    let names = host_resolved_settings();
    for expected in [
        "BACKUP_QUEUE_NAME",
        "RECONCILE_SCHEDULE",
        "EVENTS_QUEUE_NAME",
    ] {
        assert!(names.contains(expected), "{names:?}");
    }
    let local = read_json("local.settings.json");
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for name in &names {
        let value = local["Values"][name].as_str().unwrap_or_default();
        assert!(
            !value.is_empty(),
            "{name} has no value in local.settings.json"
        );
        assert!(
            readme.contains(&format!("| `{name}` |")),
            "{name} has no row in the README's settings table"
        );
    }
}

#[test]
fn serve_finds_the_bindings_the_host_could_not_resolve_or_names_otherwise() {
    use lakebackup::{app::Config, host::bindings, settings::Settings};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let local = read_json("local.settings.json");
    let values: std::collections::HashMap<String, String> = local["Values"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    let settings = Settings::from_pairs(values.clone());
    let config = Config::from_settings(&settings).unwrap();
    assert_eq!(bindings::check(root, &settings, &config), []);

    // Without the setting, the worker would use its default; the host could bind nothing.
    let mut unset = values.clone();
    unset.remove("BACKUP_QUEUE_NAME");
    let settings = Settings::from_pairs(unset);
    let config = Config::from_settings(&settings).unwrap();
    let problems = bindings::check(root, &settings, &config);
    let functions: Vec<&str> = problems.iter().map(|p| p.function.as_str()).collect();
    assert_eq!(
        functions,
        ["QueueCreateBlobBackupADFv2", "QueueSnapshotBackupShard"],
        "{problems:?}"
    );
    assert!(problems[0].message.contains("BACKUP_QUEUE_NAME"));
}

#[test]
fn the_roles_in_deploy_split_writing_backups_from_deleting_them() {
    let role = |file: &str| -> (Vec<String>, Vec<String>) {
        let path = format!("{}/deploy/{file}", env!("CARGO_MANIFEST_DIR"));
        let role: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let list = |key: &str| -> Vec<String> {
            role[key]
                .as_array()
                .unwrap_or_else(|| panic!("{file}: {key}"))
                .iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(role["IsCustom"], true, "{file}");
        (list("Actions"), list("DataActions"))
    };
    let (actions, data) = role("backup-writer-role.json");
    let all: Vec<&String> = actions.iter().chain(&data).collect();
    for forbidden in ["delete", "Delete", "immutableStorage", "move/action", "*"] {
        assert!(
            all.iter().all(|a| !a.contains(forbidden)),
            "the writer may not {forbidden}: {all:?}"
        );
    }
    assert!(data.iter().any(|a| a.ends_with("/blobs/write")));
    let (_, data) = role("backup-pruner-role.json");
    assert!(
        data.iter().any(|a| a.ends_with("/blobs/delete")),
        "{data:?}"
    );
    assert!(
        data.iter()
            .all(|a| !a.ends_with("/write") && !a.ends_with("add/action")),
        "the pruner writes nothing: {data:?}"
    );
    let (actions, _) = role("adf-pipeline-runner-role.json");
    assert!(
        actions.iter().any(|a| a.ends_with("pipelines/read")),
        "doctor reads the pipeline"
    );
}
