//! Unit tests of what a SAS grants, read from its fields.

use super::*;
use time::macros::datetime;

const SIG: &str = "sig=c2lnbmF0dXJl%3D";

fn grant(query: &str) -> SasGrant {
    SasGrant::parse(&format!("{query}&{SIG}")).unwrap()
}

#[test]
fn an_account_sas_grants_by_service_resource_type_and_permission() {
    let list_only = grant("sv=2022-11-02&ss=b&srt=sco&sp=rl&se=2030-01-01T00%3A00%3A00Z");
    assert!(list_only.is_account_sas());
    assert_eq!(list_only.allows(Right::ListBlobs), Some(Ok(())));
    assert_eq!(list_only.allows(Right::ReadBlobs), Some(Ok(())));
    assert_eq!(
        list_only.allows(Right::WriteBlobs),
        Some(Err(Lacks::Permission("w")))
    );
    assert_eq!(
        list_only.allows(Right::Snapshot),
        Some(Err(Lacks::Permission("cw")))
    );
    assert_eq!(
        list_only.allows(Right::SendMessages),
        Some(Err(Lacks::Service('q')))
    );
    // Create or write: either creates a container, or takes a snapshot.
    let create = grant("ss=bq&srt=co&sp=c&se=2030-01-01");
    assert_eq!(create.allows(Right::CreateContainers), Some(Ok(())));
    assert_eq!(create.allows(Right::CreateQueues), Some(Ok(())));
    assert_eq!(create.allows(Right::Snapshot), Some(Ok(())));
    assert_eq!(
        create.allows(Right::WriteBlobs),
        Some(Err(Lacks::Permission("w")))
    );
    let objects_only = grant("ss=b&srt=o&sp=racwdlt&se=2030-01-01");
    assert_eq!(
        objects_only.allows(Right::ListBlobs),
        Some(Err(Lacks::ResourceType('c')))
    );
    assert_eq!(
        objects_only.allows(Right::CreateContainers),
        Some(Err(Lacks::ResourceType('c')))
    );
    assert_eq!(objects_only.allows(Right::WriteTags), Some(Ok(())));
    let queues = grant("ss=q&srt=sco&sp=rau&se=2030-01-01");
    assert_eq!(queues.allows(Right::SendMessages), Some(Ok(())));
    assert_eq!(queues.allows(Right::UpdateMessages), Some(Ok(())));
    assert_eq!(
        queues.allows(Right::ReceiveMessages),
        Some(Err(Lacks::Permission("p")))
    );
    assert_eq!(
        queues.allows(Right::DeleteMessages),
        Some(Err(Lacks::Permission("p")))
    );
    // A token's right: no SAS is asked for it.
    assert_eq!(queues.allows(Right::DelegationKey), Some(Ok(())));
}

#[test]
fn a_service_sas_grants_within_its_resource_only() {
    let container = grant("sv=2022-11-02&sr=c&sp=rwl&se=2030-01-01T00:00Z");
    assert!(!container.is_account_sas());
    assert_eq!(container.allows(Right::ListBlobs), Some(Ok(())));
    assert_eq!(container.allows(Right::Snapshot), Some(Ok(())));
    assert_eq!(
        container.allows(Right::DeleteBlobs),
        Some(Err(Lacks::Permission("d")))
    );
    assert_eq!(
        container.allows(Right::CreateContainers),
        Some(Err(Lacks::AccountSasOnly))
    );
    assert_eq!(
        container.allows(Right::SendMessages),
        Some(Err(Lacks::Resource))
    );
    assert!(container.is_container_sas());
    // A SAS of one blob, snapshot, version or directory grants nothing lakebackup needs of a
    // container, whatever its permissions.
    for (sr, what) in [
        ("b", "one blob (sr=b)"),
        ("bs", "one snapshot of a blob (sr=bs)"),
        ("bv", "one version of a blob (sr=bv)"),
        ("d", "one directory (sr=d)"),
    ] {
        let narrow = grant(&format!("sr={sr}&sp=racwdlt&se=2030-01-01"));
        assert!(!narrow.is_container_sas());
        for right in [
            Right::ListBlobs,
            Right::ReadBlobs,
            Right::WriteBlobs,
            Right::Snapshot,
            Right::DeleteBlobs,
            Right::ReadTags,
            Right::WriteTags,
            Right::Lease,
        ] {
            assert_eq!(
                narrow.allows(right),
                Some(Err(Lacks::OneResource(what))),
                "sr={sr} {right:?}"
            );
        }
    }
    let lacks = Lacks::OneResource("one blob (sr=b)").to_string();
    assert!(lacks.contains("container SAS (sr=c)"), "{lacks}");
    let queue = grant("sp=ap&se=2030-01-01");
    assert_eq!(queue.allows(Right::ReceiveMessages), Some(Ok(())));
    assert_eq!(queue.allows(Right::ReadBlobs), Some(Err(Lacks::Resource)));
    // A stored access policy may hold the permissions: the SAS cannot tell.
    let policy = grant("sr=c&si=backup-writer");
    assert!(policy.stored_policy);
    assert_eq!(policy.allows(Right::WriteBlobs), None);
    assert_eq!(
        policy.validity(datetime!(2030-06-01 0:00 UTC)),
        Validity::Valid(None)
    );
}

#[test]
fn times_in_every_documented_form_and_the_sooner_expiry() {
    for (se, expected) in [
        ("2030-01-02", datetime!(2030-01-02 0:00 UTC)),
        ("2030-01-02T03:04Z", datetime!(2030-01-02 3:04 UTC)),
        (
            "2030-01-02T03%3A04%3A05Z",
            datetime!(2030-01-02 3:04:05 UTC),
        ),
        (
            "2030-01-02T03:04:05.1234567Z",
            datetime!(2030-01-02 3:04:05.1234567 UTC),
        ),
    ] {
        let sas = grant(&format!("ss=b&srt=s&sp=l&se={se}"));
        assert_eq!(sas.expiry, Some(expected), "{se}");
    }
    // A user delegation SAS lasts no longer than its key.
    let delegated =
        grant("sr=c&sp=r&se=2030-01-02T00:00:00Z&skoid=o&ske=2030-01-01T12:00:00Z&st=2029-12-31");
    assert_eq!(delegated.expiry, Some(datetime!(2030-01-01 12:00 UTC)));
    assert_eq!(
        delegated.validity(datetime!(2030-01-01 13:00 UTC)),
        Validity::Expired(datetime!(2030-01-01 12:00 UTC))
    );
    assert_eq!(
        delegated.validity(datetime!(2029-12-30 0:00 UTC)),
        Validity::NotYet(datetime!(2029-12-31 0:00 UTC))
    );
    assert_eq!(
        delegated.validity(datetime!(2030-01-01 0:00 UTC)),
        Validity::Valid(Some(datetime!(2030-01-01 12:00 UTC)))
    );
}

#[test]
fn what_is_no_sas_is_refused_without_echoing_it() {
    for (query, expected) in [
        ("ss=b&srt=sco&sp=rl&se=2030-01-01", "no signature"),
        ("ss=b&sp=rl&se=2030-01-01&sig=secretvalue", "ss and srt"),
        (
            "ss=b&srt=s&sp=rl&se=tomorrow&sig=secretvalue",
            "se is not a time",
        ),
        ("ss=b&srt=s&se=2030-01-01&sig=secretvalue", "no permission"),
        ("ss=b&srt=s&sp=l&sig=secretvalue", "no expiry"),
    ] {
        let error = SasGrant::parse(query).unwrap_err().to_string();
        assert!(error.contains(expected), "{query}: {error}");
        assert!(!error.contains("secretvalue"), "{error}");
    }
    let lacks = Lacks::Permission("cw").to_string();
    assert_eq!(lacks, "its SAS does not grant c (create) or w (write) (sp)");
}
