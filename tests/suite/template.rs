//! The deployment templates in `deploy/` (every ARM template there: `azuredeploy.json`, and any
//! other a change adds), checked as far as they can be without Azure: valid JSON; every
//! parameter and variable used is defined (and every one defined is used); each `dependsOn` and
//! `resourceId` names a resource of the template; each resource type carries an API version
//! Azure publishes (cited below); and the Function App's settings are exactly names the worker
//! reads (`lakebackup::settings::SETTING_NAMES`), with those the host must resolve all set. A
//! nested deployment's own template (inner scope) is checked as a template of its own; no role
//! assignment grants a broad role (what else it grants: `template_grants`).

use std::collections::{BTreeMap, BTreeSet};

use lakebackup::settings::{Settings, SETTING_NAMES};
use serde_json::Value;

/// The API versions Azure publishes for each resource type the templates use, and where that
/// is said (learn.microsoft.com/azure/templates/..., the "API version change log" of each type,
/// or the Azure REST API version a generated SDK names):
/// - Microsoft.Web/sites 2023-12-01 (adds `functionAppConfig`, Flex Consumption), 2024-04-01:
///   "API version change log for deployment of Microsoft.Web/sites" (and sites/slots);
///   Microsoft.Web/serverfarms shares the provider's 2024-04-01.
/// - Microsoft.Storage/storageAccounts and its blobServices, containers, queueServices/queues:
///   2023-05-01, 2023-04-01, 2023-01-01, 2022-09-01: the version list of
///   "Microsoft.Storage storageAccounts/blobServices/containers" (2023-05-01 its newest GA then).
/// - Microsoft.Insights/components 2020-02-02: the Application Insights component's REST API
///   version (Azure Native's `applicationinsights.Component`: "Uses Azure REST API version
///   2020-02-02").
/// - Microsoft.OperationalInsights/workspaces 2023-09-01, 2022-10-01: "API version change log
///   for deployment of Microsoft.OperationalInsights/workspaces".
/// - Microsoft.Authorization/roleAssignments and roleDefinitions 2022-04-01 (Azure Native's
///   `authorization.RoleAssignment`: "Uses Azure REST API version 2022-04-01").
/// - Microsoft.EventGrid/systemTopics and systemTopics/eventSubscriptions 2022-06-15:
///   learn.microsoft.com/azure/templates/microsoft.eventgrid/2022-06-15/systemtopics/eventsubscriptions.
/// - Microsoft.Resources/deployments 2022-09-01, 2024-03-01: "API version change log for
///   deployment of Microsoft.Resources/deployments" (expressionEvaluationOptions since
///   2019-07-01).
/// - Microsoft.Insights/scheduledQueryRules 2018-04-16, 2021-08-01, 2022-06-15,
///   2023-03-15-preview, 2023-12-01: "API version change log for deployment of
///   Microsoft.insights/scheduledQueryRules"; Microsoft.Insights/actionGroups 2021-09-01,
///   2022-04-01, 2022-06-01, 2023-01-01: the same change log of actionGroups (for an alerts
///   template in deploy/).
const PUBLISHED: &[(&str, &[&str])] = &[
    ("Microsoft.Web/sites", &["2023-12-01", "2024-04-01"]),
    ("Microsoft.Web/serverfarms", &["2023-12-01", "2024-04-01"]),
    (
        "Microsoft.Storage/storageAccounts",
        &["2022-09-01", "2023-01-01", "2023-04-01", "2023-05-01"],
    ),
    (
        "Microsoft.Storage/storageAccounts/blobServices",
        &["2022-09-01", "2023-01-01", "2023-04-01", "2023-05-01"],
    ),
    (
        "Microsoft.Storage/storageAccounts/blobServices/containers",
        &["2022-09-01", "2023-01-01", "2023-04-01", "2023-05-01"],
    ),
    (
        "Microsoft.Storage/storageAccounts/queueServices/queues",
        &["2022-09-01", "2023-01-01", "2023-04-01", "2023-05-01"],
    ),
    ("Microsoft.Insights/components", &["2020-02-02"]),
    (
        "Microsoft.OperationalInsights/workspaces",
        &["2022-10-01", "2023-09-01"],
    ),
    ("Microsoft.Authorization/roleAssignments", &["2022-04-01"]),
    ("Microsoft.Authorization/roleDefinitions", &["2022-04-01"]),
    ("Microsoft.EventGrid/systemTopics", &["2022-06-15"]),
    (
        "Microsoft.Resources/deployments",
        &["2022-09-01", "2024-03-01"],
    ),
    (
        "Microsoft.EventGrid/systemTopics/eventSubscriptions",
        &["2022-06-15"],
    ),
    (
        "Microsoft.Insights/scheduledQueryRules",
        &[
            "2018-04-16",
            "2021-08-01",
            "2022-06-15",
            "2023-03-15-preview",
            "2023-12-01",
        ],
    ),
    (
        "Microsoft.Insights/actionGroups",
        &["2021-09-01", "2022-04-01", "2022-06-01", "2023-01-01"],
    ),
];

/// Settings the Functions host reads itself (the worker may too): a template may set them.
const HOST_SETTINGS: &[&str] = &["APPLICATIONINSIGHTS_CONNECTION_STRING"];

/// Settings the host resolves in the function folders (`%Setting%`): they must be set.
const REQUIRED: &[&str] = &[
    "SOURCE_STORAGE",
    "BACKUP_STORAGE",
    "AzureWebJobsStorage",
    "BACKUP_QUEUE_NAME",
    "RECONCILE_SCHEDULE",
    "EVENTS_QUEUE_NAME",
];

/// Settings Flex Consumption refuses ("Flex Consumption plan deprecations").
const REFUSED_ON_FLEX: &[&str] = &[
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
];

/// Every ARM template in `deploy/`: (file name, parsed).
pub(crate) fn templates() -> Vec<(String, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let value: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
        let schema = value["$schema"].as_str().unwrap_or_default();
        if schema.contains("deploymentTemplate.json") {
            found.extend(nested(&name, &value));
            found.push((name, value));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        found.iter().any(|(name, _)| name == "azuredeploy.json"),
        "{found:?}"
    );
    found
}

/// The templates of `template`'s nested deployments whose expressions are their own (inner
/// scope): (`file#deployment`, the template).
fn nested(file: &str, template: &Value) -> Vec<(String, Value)> {
    template["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| is_inner_deployment(r))
        .map(|r| {
            let name = r["name"].as_str().unwrap_or_default();
            (
                format!("{file}#{name}"),
                r["properties"]["template"].clone(),
            )
        })
        .collect()
}

pub(crate) fn is_inner_deployment(resource: &Value) -> bool {
    resource["type"] == "Microsoft.Resources/deployments"
        && resource["properties"]["expressionEvaluationOptions"]["scope"] == "inner"
}

/// Every string of `value` that is a template expression (`[...]`, not `[[`); an inner-scope
/// deployment's template is its own (see [`nested`]), its parameters' values are this one's.
fn expressions(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) if s.starts_with('[') && !s.starts_with("[[") && s.ends_with(']') => {
            out.push(s[1..s.len() - 1].to_owned())
        }
        Value::Array(items) => items.iter().for_each(|v| expressions(v, out)),
        Value::Object(map) if map.contains_key("expressionEvaluationOptions") => map
            .iter()
            .filter(|(key, _)| *key != "template")
            .for_each(|(_, v)| expressions(v, out)),
        Value::Object(map) => map.values().for_each(|v| expressions(v, out)),
        _ => {}
    }
}

/// The arguments of each call of `function` in `expression` (not of a function whose name ends
/// with it, like `subscriptionResourceId`), split at their top-level commas.
pub(crate) fn calls(expression: &str, function: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = expression.as_bytes();
    let mut from = 0;
    while let Some(at) = expression[from..].find(&format!("{function}(")) {
        let start = from + at;
        from = start + function.len() + 1;
        if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            continue;
        }
        let (mut depth, mut quoted, mut args, mut current) = (0, false, Vec::new(), String::new());
        for c in expression[from..].chars() {
            match c {
                '\'' => quoted = !quoted,
                '(' if !quoted => depth += 1,
                ')' if !quoted && depth == 0 => break,
                ')' if !quoted => depth -= 1,
                ',' if !quoted && depth == 0 => {
                    args.push(current.trim().to_owned());
                    current.clear();
                    continue;
                }
                _ => {}
            }
            current.push(c);
        }
        args.push(current.trim().to_owned());
        found.push(args);
    }
    found
}

/// A literal `'text'` without its quotes; anything else as it is.
fn unquoted(arg: &str) -> String {
    arg.strip_prefix('\'')
        .and_then(|a| a.strip_suffix('\''))
        .map(str::to_owned)
        .unwrap_or_else(|| arg.to_owned())
}

/// A resource's name as its segments (`a/default/b`), each a literal or an expression.
fn name_segments(name: &str) -> Vec<String> {
    let Some(expression) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) else {
        return name.split('/').map(str::to_owned).collect();
    };
    if let Some(args) = calls(expression, "format").first() {
        if expression.starts_with("format(") {
            let pattern = unquoted(&args[0]);
            return pattern
                .split('/')
                .map(|segment| match segment.strip_prefix('{') {
                    Some(index) => {
                        let i: usize = index.trim_end_matches('}').parse().unwrap();
                        unquoted(&args[i + 1])
                    }
                    None => segment.to_owned(),
                })
                .collect();
        }
    }
    vec![expression.to_owned()]
}

/// The resources of a template: type → the name segments of each.
pub(crate) fn resources(template: &Value) -> BTreeMap<String, Vec<Vec<String>>> {
    let mut by_type: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    for resource in template["resources"].as_array().unwrap() {
        let kind = resource["type"].as_str().unwrap().to_owned();
        let name = resource["name"].as_str().unwrap();
        by_type.entry(kind).or_default().push(name_segments(name));
    }
    by_type
}

#[test]
fn every_template_uses_only_what_it_defines_and_names_only_its_own_resources() {
    for (file, template) in templates() {
        let mut all = Vec::new();
        expressions(&template, &mut all);
        for (kind, defined) in [
            ("parameters", &template["parameters"]),
            ("variables", &template["variables"]),
        ] {
            let defined: BTreeSet<String> = defined
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            let used: BTreeSet<String> = all
                .iter()
                .flat_map(|e| calls(e, kind))
                .map(|args| unquoted(&args[0]))
                .collect();
            let undefined: Vec<_> = used.difference(&defined).collect();
            assert!(
                undefined.is_empty(),
                "{file}: undefined {kind}: {undefined:?}"
            );
            let unused: Vec<_> = defined.difference(&used).collect();
            assert!(unused.is_empty(), "{file}: {kind} never used: {unused:?}");
        }
        let own = resources(&template);
        let mut named = 0;
        for expression in &all {
            for args in calls(expression, "resourceId") {
                named += 1;
                let kind = unquoted(&args[0]);
                let segments: Vec<String> = args[1..].iter().map(|a| unquoted(a)).collect();
                let names = own
                    .get(&kind)
                    .unwrap_or_else(|| panic!("{file}: resourceId of {kind}, no resource of it"));
                assert!(
                    names.contains(&segments),
                    "{file}: resourceId({kind}, {segments:?}) names none of {names:?}"
                );
            }
        }
        // A nested template names none: its deployment's dependsOn holds what it needs.
        assert!(
            named > 0 || file.contains('#'),
            "{file}: no resourceId checked"
        );
        for resource in template["resources"].as_array().unwrap() {
            for dependency in resource["dependsOn"].as_array().into_iter().flatten() {
                let text = dependency.as_str().unwrap();
                assert!(
                    text.starts_with("[resourceId("),
                    "{file}: a dependsOn that is no resourceId of the template: {text}"
                );
            }
        }
    }
}

#[test]
fn every_resource_type_carries_an_api_version_azure_publishes() {
    let published: BTreeMap<&str, &[&str]> = PUBLISHED.iter().copied().collect();
    for (file, template) in templates() {
        for resource in template["resources"].as_array().unwrap() {
            let kind = resource["type"].as_str().unwrap();
            let version = resource["apiVersion"].as_str().unwrap_or_default();
            let known = published
                .get(kind)
                .unwrap_or_else(|| panic!("{file}: {kind} has no cited API versions here"));
            assert!(
                known.contains(&version),
                "{file}: {kind}@{version} is not among {known:?}"
            );
        }
        // reference(resourceId(TYPE, …), VERSION): the version is one of that type's too.
        let mut all = Vec::new();
        expressions(&template, &mut all);
        for args in all.iter().flat_map(|e| calls(e, "reference")) {
            let Some(version) = args.get(1).map(|v| unquoted(v)) else {
                continue;
            };
            let kind = calls(&args[0], "resourceId")
                .first()
                .map(|inner| unquoted(&inner[0]))
                .unwrap_or_else(|| panic!("{file}: reference of {}", args[0]));
            assert!(
                published[kind.as_str()].contains(&version.as_str()),
                "{file}: reference({kind}, {version})"
            );
        }
    }
}

/// Every resource of `template`, its nested deployments' (inner scope) too.
fn all_resources(template: &Value) -> Vec<Value> {
    let own = template["resources"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let inner = own
        .iter()
        .filter(|r| is_inner_deployment(r))
        .flat_map(|r| all_resources(&r["properties"]["template"]));
    inner.chain(own.iter().cloned()).collect()
}

/// The Function App's settings in a template: name → value.
fn app_settings(template: &Value) -> BTreeMap<String, String> {
    template["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["type"] == "Microsoft.Web/sites")
        .flat_map(|site| {
            site["properties"]["siteConfig"]["appSettings"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// A setting's own name: an identity-based connection's `NAME__part` is NAME's.
fn base(name: &str) -> &str {
    name.split_once("__").map_or(name, |(base, _)| base)
}

#[test]
fn the_app_settings_are_exactly_names_the_worker_reads() {
    let (_, template) = templates()
        .into_iter()
        .find(|(name, _)| name == "azuredeploy.json")
        .unwrap();
    let settings = app_settings(&template);
    let names: BTreeSet<&str> = settings.keys().map(|n| base(n)).collect();
    for name in &names {
        assert!(
            SETTING_NAMES.contains(name) || HOST_SETTINGS.contains(name),
            "the template sets {name}, which nothing reads"
        );
    }
    for name in REQUIRED.iter().chain(HOST_SETTINGS) {
        assert!(names.contains(name), "the template does not set {name}");
    }
    for name in REFUSED_ON_FLEX {
        assert!(!names.contains(name), "Flex Consumption refuses {name}");
    }
    // Identity-based connections only: no key or SAS in any setting.
    for (name, value) in &settings {
        for secret in ["AccountKey=", "SharedAccessSignature=", "sig="] {
            assert!(!value.contains(secret), "{name} holds a secret");
        }
    }
    let site = template["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Microsoft.Web/sites")
        .unwrap();
    let config = &site["properties"]["functionAppConfig"];
    assert_eq!(config["runtime"]["name"], "custom");
    assert_eq!(config["deployment"]["storage"]["type"], "blobContainer");
    // The backup account supports version-level immutability and keeps deleted blobs.
    let resources = template["resources"].as_array().unwrap();
    let backup = resources
        .iter()
        .find(|r| r["properties"]["immutableStorageWithVersioning"]["enabled"] == true)
        .expect("an account with immutability support");
    assert_eq!(backup["type"], "Microsoft.Storage/storageAccounts");
    assert!(resources.iter().any(|r| {
        r["type"] == "Microsoft.Storage/storageAccounts/blobServices"
            && r["properties"]["deleteRetentionPolicy"]["enabled"] == true
            && r["properties"]["isVersioningEnabled"] == true
    }));
    // No role assignment grants Owner or Contributor (control plane), nested ones included.
    let all = all_resources(&template);
    let assignments: Vec<&Value> = all
        .iter()
        .filter(|r| r["type"] == "Microsoft.Authorization/roleAssignments")
        .collect();
    assert!(assignments.len() >= 8, "{assignments:#?}");
    for resource in assignments {
        let role = resource["properties"]["roleDefinitionId"].to_string();
        for broad in [
            "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
            "b24988ac-6180-42a0-ab88-20f7382dd24c",
        ] {
            assert!(!role.contains(broad), "a broad role: {role}");
        }
    }
}

/// The worker asks for no setting outside `SETTING_NAMES`: every name read while its state is
/// built from the template's settings (and every optional one set) is listed there.
#[test]
fn the_worker_reads_only_listed_settings() {
    let mut pairs: Vec<(String, String)> = SETTING_NAMES
        .iter()
        .filter(|name| !name.ends_with("_STORAGE") && **name != "AzureWebJobsStorage")
        .map(|name| (name.to_string(), String::new()))
        .collect();
    for connection in [
        "SOURCE_STORAGE",
        "BACKUP_STORAGE",
        "PRUNE_STORAGE",
        "RESTORE_TARGET_STORAGE",
    ] {
        pairs.push((
            format!("{connection}__blobServiceUri"),
            "https://account.blob.core.windows.net".into(),
        ));
    }
    pairs.push((
        "AzureWebJobsStorage__accountName".into(),
        "functions".into(),
    ));
    let settings = Settings::from_pairs(pairs);
    lakebackup::app::App::from_settings(&settings).unwrap();
    lakebackup::host::standalone::reconcile_schedule(&settings).unwrap();
    let read = settings.names_read();
    let unlisted: Vec<&String> = read
        .iter()
        .filter(|name| !SETTING_NAMES.contains(&name.as_str()))
        .collect();
    assert!(
        unlisted.is_empty(),
        "read but not in SETTING_NAMES: {unlisted:?}"
    );
    assert!(read.len() > 20, "{read:?}");
}
