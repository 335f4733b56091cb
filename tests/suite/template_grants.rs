//! What `deploy/azuredeploy.json` grants, beyond `template`'s checks: each role assignment named
//! after its scope, its principal and its role (in a nested deployment, where the principal's id
//! is a parameter); the event subscription's dead letters in a container of the app's storage
//! that only the topic's identity may write; the factory's data roles, read and create only.

use serde_json::Value;

use crate::template::{calls, is_inner_deployment, resources, templates};

/// An expression's text without its brackets.
fn bare(value: &Value) -> String {
    let text = value.as_str().unwrap_or_default();
    text.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

fn azuredeploy() -> Value {
    templates()
        .into_iter()
        .find(|(name, _)| name == "azuredeploy.json")
        .unwrap()
        .1
}

/// The nested deployment that holds the role assignments, and its template.
fn roles_deployment(template: &Value) -> (Value, Value) {
    let deployment = template["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| is_inner_deployment(r))
        .expect("the role assignments' deployment")
        .clone();
    let inner = deployment["properties"]["template"].clone();
    (deployment, inner)
}

/// The (scope, role) of each role assignment of `principal` (a parameter of the roles'
/// deployment), and the condition each carries.
fn grants_of(inner: &Value, principal: &str) -> Vec<(String, String, Option<String>)> {
    inner["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| bare(&r["properties"]["principalId"]) == format!("parameters('{principal}')"))
        .map(|r| {
            (
                bare(&r["scope"]),
                bare(&r["properties"]["roleDefinitionId"]),
                r["condition"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[test]
fn each_role_assignment_is_named_after_its_scope_principal_and_role() {
    let template = azuredeploy();
    let (deployment, inner) = roles_deployment(&template);
    let assignments = inner["resources"].as_array().unwrap();
    for assignment in assignments {
        let name = bare(&assignment["name"]);
        let args = calls(&name, "guid");
        assert!(name.starts_with("guid(") && args.len() == 1, "{name}");
        for part in [
            bare(&assignment["scope"]),
            bare(&assignment["properties"]["principalId"]),
            bare(&assignment["properties"]["roleDefinitionId"]),
        ] {
            assert!(args[0].contains(&part), "{name} does not hold {part}");
        }
    }
    // The principals are the deployment's parameters, read from the identities it depends on.
    let parameters = &deployment["properties"]["parameters"];
    for (principal, of) in [
        ("appPrincipalId", "Microsoft.Web/sites"),
        ("topicPrincipalId", "Microsoft.EventGrid/systemTopics"),
    ] {
        let value = bare(&parameters[principal]["value"]);
        assert!(
            value.starts_with(&format!("reference(resourceId('{of}'"))
                && value.ends_with(".identity.principalId"),
            "{principal}: {value}"
        );
        assert!(
            deployment["dependsOn"].as_array().unwrap().iter().any(|d| d
                .as_str()
                .unwrap()
                .starts_with(&format!("[resourceId('{of}'"))),
            "the roles' deployment waits for {of}"
        );
    }
    // Every assignment of the template is in it: none names a principal it cannot know.
    let top = template["resources"].as_array().unwrap();
    assert!(top
        .iter()
        .all(|r| r["type"] != "Microsoft.Authorization/roleAssignments"));
}

#[test]
fn undeliverable_events_go_to_a_container_only_the_topic_may_write() {
    let template = azuredeploy();
    let top = template["resources"].as_array().unwrap();
    let subscription = top
        .iter()
        .find(|r| r["type"] == "Microsoft.EventGrid/systemTopics/eventSubscriptions")
        .unwrap();
    let dead_letter = &subscription["properties"]["deadLetterWithResourceIdentity"];
    assert_eq!(dead_letter["identity"]["type"], "SystemAssigned");
    let destination = &dead_letter["deadLetterDestination"];
    assert_eq!(destination["endpointType"], "StorageBlob");
    assert_eq!(
        bare(&destination["properties"]["resourceId"]),
        "resourceId('Microsoft.Storage/storageAccounts', parameters('functionStorageName'))"
    );
    let container = bare(&destination["properties"]["blobContainerName"]);
    // A container of the template, in the app's storage.
    let own = resources(&template);
    let containers = &own["Microsoft.Storage/storageAccounts/blobServices/containers"];
    assert!(
        containers.contains(&vec![
            "parameters('functionStorageName')".to_owned(),
            "default".to_owned(),
            container.clone(),
        ]),
        "{containers:?}"
    );
    // The topic's identity: send to the events queue, write the dead-letter container; nothing
    // else. Its scopes are that queue and that container.
    let (deployment, inner) = roles_deployment(&template);
    assert_eq!(
        bare(&deployment["properties"]["parameters"]["deadLetterContainer"]["value"]),
        container
    );
    let mut grants: Vec<(String, String)> = grants_of(&inner, "topicPrincipalId")
        .into_iter()
        .map(|(scope, role, condition)| {
            assert_eq!(condition, None);
            (scope, role)
        })
        .collect();
    grants.sort();
    let role = |name: &str| {
        format!("subscriptionResourceId('Microsoft.Authorization/roleDefinitions', variables('roles').{name})")
    };
    assert_eq!(
        grants,
        [
            (
                "variables('deadLetterScope')".to_owned(),
                role("blobDataContributor")
            ),
            (
                "variables('eventsQueueScope')".to_owned(),
                role("queueDataMessageSender")
            ),
        ]
    );
    let variables = &inner["variables"];
    assert!(bare(&variables["deadLetterScope"])
        .contains("/blobServices/default/containers/{1}', parameters('functionStorageName'), parameters('deadLetterContainer')"));
    assert_eq!(
        variables["roles"]["blobDataContributor"],
        "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
    );
    // Delivery is retried before an event is dead-lettered.
    assert!(subscription["properties"]["retryPolicy"]["maxDeliveryAttempts"].as_u64() > Some(1));
}

#[test]
fn the_factory_may_read_the_lake_and_write_backups_and_delete_nothing() {
    let template = azuredeploy();
    let (deployment, inner) = roles_deployment(&template);
    assert_eq!(
        bare(&deployment["properties"]["parameters"]["factoryPrincipalId"]["value"]),
        "parameters('dataFactoryPrincipalId')"
    );
    let mut grants = grants_of(&inner, "factoryPrincipalId");
    grants.sort();
    let only_when_given = Some("[not(empty(parameters('factoryPrincipalId')))]".to_owned());
    assert_eq!(
        grants,
        [
            ("variables('backupScope')".to_owned(), "parameters('writerRoleId')".to_owned(), only_when_given.clone()),
            (
                "variables('lakeScope')".to_owned(),
                "subscriptionResourceId('Microsoft.Authorization/roleDefinitions', variables('roles').blobDataReader)".to_owned(),
                only_when_given,
            ),
        ]
    );
    // Storage Blob Data Reader; the writer role has no delete.
    assert_eq!(
        inner["variables"]["roles"]["blobDataReader"],
        "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
    );
    let writer = template["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["type"] == "Microsoft.Authorization/roleDefinitions"
                && r["name"] == "[variables('writerRoleName')]"
        })
        .unwrap();
    let actions = writer["properties"]["permissions"].to_string();
    assert!(!actions.contains("delete"), "{actions}");
    assert_eq!(
        bare(&deployment["properties"]["parameters"]["writerRoleId"]["value"]),
        "subscriptionResourceId('Microsoft.Authorization/roleDefinitions', variables('writerRoleName'))"
    );
}
