//! What a shared access signature allows, read from its own fields, and the rights lakebackup
//! needs of an account ([`Right`]): for `lakebackup doctor`, which tells a SAS that lacks a right
//! before the first backup fails with 403. Pure: no request, no clock of its own.
//!
//! The rules follow Azure Storage's REST documentation, "Create an account SAS" (the tables of
//! Blob and Queue operations with the signed service, resource type and permission each needs)
//! and "Create a service SAS" (the permissions of a blob, container or queue SAS). Only the
//! permission letters, resource types, services and times are read: the signature is never
//! looked at, copied or shown.

use std::fmt;

use time::{format_description::well_known::Rfc3339, Date, OffsetDateTime, PrimitiveDateTime};

/// One thing lakebackup does with an account, as the service authorizes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Right {
    /// Create Container (`{c}bak`, the jobs' ledger): each process creates what it writes into.
    CreateContainers,
    /// List Blobs.
    ListBlobs,
    /// Get Blob, Get Blob Properties.
    ReadBlobs,
    /// Put Blob over an existing blob, Set Blob Metadata (stamps, the ledger).
    WriteBlobs,
    /// Snapshot Blob.
    Snapshot,
    /// Lease Blob (`BACKUP_USE_LEASE` with the ADF engine).
    Lease,
    /// Delete Blob (or one of its snapshots).
    DeleteBlobs,
    /// Get Blob Tags, and tags in a listing.
    ReadTags,
    /// Set Blob Tags, and `x-ms-tags` on a write.
    WriteTags,
    /// Create Queue: each process creates the queues it sends to.
    CreateQueues,
    /// Put Message.
    SendMessages,
    /// Get Messages.
    ReceiveMessages,
    /// Delete Message.
    DeleteMessages,
    /// Update Message (a message's visibility renewed while it is worked on).
    UpdateMessages,
    /// Get User Delegation Key: an identity signs the SAS a server-side copy reads through.
    DelegationKey,
}

/// Which service a right is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Blob,
    Queue,
}

impl Right {
    /// What the right lets lakebackup do, as a verb phrase ("take snapshots").
    pub fn describe(self) -> &'static str {
        match self {
            Right::CreateContainers => "create containers",
            Right::ListBlobs => "list blobs",
            Right::ReadBlobs => "read blobs",
            Right::WriteBlobs => "write blobs and their metadata",
            Right::Snapshot => "take snapshots",
            Right::Lease => "lease blobs",
            Right::DeleteBlobs => "delete blobs",
            Right::ReadTags => "read blob index tags",
            Right::WriteTags => "write blob index tags",
            Right::CreateQueues => "create queues",
            Right::SendMessages => "send messages",
            Right::ReceiveMessages => "receive messages",
            Right::DeleteMessages => "delete messages",
            Right::UpdateMessages => "update messages",
            Right::DelegationKey => "get a user delegation key",
        }
    }

    pub fn service(self) -> Service {
        match self {
            Right::CreateQueues
            | Right::SendMessages
            | Right::ReceiveMessages
            | Right::DeleteMessages
            | Right::UpdateMessages => Service::Queue,
            _ => Service::Blob,
        }
    }

    /// What an account SAS must sign for it: the resource type (`c` container, `o` object) and
    /// the permissions any one of which grants it ("Create an account SAS").
    fn account_sas_rule(self) -> Option<(char, &'static str)> {
        Some(match self {
            Right::CreateContainers | Right::CreateQueues => ('c', "cw"),
            Right::ListBlobs => ('c', "l"),
            Right::ReadBlobs => ('o', "r"),
            Right::WriteBlobs | Right::Lease => ('o', "w"),
            Right::Snapshot => ('o', "cw"),
            Right::DeleteBlobs => ('o', "d"),
            Right::ReadTags | Right::WriteTags => ('o', "t"),
            Right::SendMessages => ('o', "a"),
            Right::ReceiveMessages | Right::DeleteMessages => ('o', "p"),
            Right::UpdateMessages => ('o', "u"),
            // Asked for with a token, never with a SAS.
            Right::DelegationKey => return None,
        })
    }

    /// The permissions a service SAS (blob, container or queue) grants it with; `None` where
    /// only an account SAS can (creating a container or a queue).
    fn service_sas_permissions(self) -> Option<&'static str> {
        match self {
            Right::CreateContainers | Right::CreateQueues | Right::DelegationKey => None,
            _ => self.account_sas_rule().map(|(_, permissions)| permissions),
        }
    }
}

/// Whether a SAS is an account SAS or a service SAS (of a blob, container, directory or queue).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// `ss` and `srt`.
    Account {
        services: String,
        resource_types: String,
    },
    /// `sr` for a blob-service resource; none for a queue.
    Service { resource: Option<String> },
}

/// What a SAS grants: its kind, permissions and validity. Holds no signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SasGrant {
    kind: Kind,
    /// `sp`; empty with a stored access policy that holds them.
    permissions: String,
    /// `st`.
    pub start: Option<OffsetDateTime>,
    /// `se`, or a user delegation SAS's key expiry (`ske`) when that is sooner.
    pub expiry: Option<OffsetDateTime>,
    /// `si`: a stored access policy on the container or queue may hold the permissions and
    /// times, which the SAS does not show.
    pub stored_policy: bool,
}

/// Why a SAS does not grant a right. Its text names fields and letters, never a value of the SAS
/// other than those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lacks {
    /// An account SAS not signed for the service (`ss`).
    Service(char),
    /// An account SAS not signed for the resource type (`srt`).
    ResourceType(char),
    /// None of these permissions is in `sp`.
    Permission(&'static str),
    /// A service SAS is for one resource of one service: it cannot do this at all.
    AccountSasOnly,
    /// A service SAS of the other service (blob vs queue).
    Resource,
    /// A service SAS of one blob, snapshot, version or directory (`sr=b`, `bs`, `bv`, `d`),
    /// where lakebackup works on whole containers: what it is for, in words.
    OneResource(&'static str),
}

impl fmt::Display for Lacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lacks::Service(service) => write!(
                f,
                "its SAS is not signed for the {} service (ss lacks {service})",
                if *service == 'q' { "queue" } else { "blob" }
            ),
            Lacks::ResourceType(kind) => write!(
                f,
                "its SAS is not signed for {} (srt lacks {kind})",
                if *kind == 'c' {
                    "containers and queues"
                } else {
                    "objects (blobs, messages)"
                }
            ),
            Lacks::Permission(any) => {
                let names: Vec<String> = any
                    .chars()
                    .map(|p| format!("{p} ({})", permission_name(p)))
                    .collect();
                write!(f, "its SAS does not grant {} (sp)", names.join(" or "))
            }
            Lacks::AccountSasOnly => f.write_str(
                "it is a service SAS, which cannot do this: an account SAS (ss, srt) is needed",
            ),
            Lacks::Resource => f.write_str(
                "it is a service SAS for another kind of resource: an account SAS (ss, srt) is \
                 needed",
            ),
            Lacks::OneResource(what) => write!(
                f,
                "it is a SAS for {what}, which authorises nothing lakebackup does in a container: \
                 a container SAS (sr=c) or an account SAS (ss, srt) is needed"
            ),
        }
    }
}

/// What a blob-service SAS narrower than a container is for (`sr`), in words.
fn one_resource(signed_resource: &str) -> Option<&'static str> {
    Some(match signed_resource {
        "b" => "one blob (sr=b)",
        "bs" => "one snapshot of a blob (sr=bs)",
        "bv" => "one version of a blob (sr=bv)",
        "d" => "one directory (sr=d)",
        _ => return None,
    })
}

fn permission_name(permission: char) -> &'static str {
    match permission {
        'r' => "read",
        'a' => "add",
        'c' => "create",
        'w' => "write",
        'd' => "delete",
        'l' => "list",
        't' => "tags",
        'u' => "update",
        'p' => "process",
        _ => "?",
    }
}

/// A SAS whose fields cannot be read as a SAS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SasGrantError(String);

impl SasGrant {
    /// Reads the grant from a SAS query string (with or without `?`, as percent-encoded in a
    /// connection string).
    pub fn parse(query: &str) -> Result<SasGrant, SasGrantError> {
        let field = |name: &str| {
            url::form_urlencoded::parse(query.trim_start_matches('?').as_bytes())
                .find(|(n, _)| n == name)
                .map(|(_, value)| value.into_owned())
        };
        if field("sig").is_none() {
            return Err(SasGrantError("it has no signature (sig)".into()));
        }
        let kind = match (field("ss"), field("srt")) {
            (Some(services), Some(resource_types)) => Kind::Account {
                services,
                resource_types,
            },
            (None, None) => Kind::Service {
                resource: field("sr"),
            },
            _ => {
                return Err(SasGrantError(
                    "it has one of ss and srt without the other".into(),
                ))
            }
        };
        let time = |name: &str, value: Option<String>| {
            value
                .map(|v| {
                    sas_time(&v).ok_or_else(|| SasGrantError(format!("its {name} is not a time")))
                })
                .transpose()
        };
        let start = time("st", field("st"))?;
        let expiry = time("se", field("se"))?;
        let key_expiry = time("ske", field("ske"))?;
        let stored_policy = field("si").is_some();
        let permissions = field("sp").unwrap_or_default();
        if permissions.is_empty() && !stored_policy {
            return Err(SasGrantError("it grants no permission (sp)".into()));
        }
        if expiry.is_none() && !stored_policy {
            return Err(SasGrantError("it has no expiry (se)".into()));
        }
        let expiry = match (expiry, key_expiry) {
            (Some(se), Some(ske)) => Some(se.min(ske)),
            (se, ske) => se.or(ske),
        };
        Ok(SasGrant {
            kind,
            permissions,
            start,
            expiry,
            stored_policy,
        })
    }

    /// Whether it is an account SAS.
    pub fn is_account_sas(&self) -> bool {
        matches!(self.kind, Kind::Account { .. })
    }

    /// Whether the SAS grants `right`; `None` when its stored access policy may hold the
    /// permissions (the SAS alone cannot tell).
    pub fn allows(&self, right: Right) -> Option<Result<(), Lacks>> {
        let Some((resource_type, any)) = right.account_sas_rule() else {
            return Some(Ok(()));
        };
        let grants = |any: &str| any.chars().any(|p| self.permissions.contains(p));
        match &self.kind {
            Kind::Account {
                services,
                resource_types,
            } => {
                let service = match right.service() {
                    Service::Blob => 'b',
                    Service::Queue => 'q',
                };
                Some(if !services.contains(service) {
                    Err(Lacks::Service(service))
                } else if !resource_types.contains(resource_type) {
                    Err(Lacks::ResourceType(resource_type))
                } else if !grants(any) {
                    Err(Lacks::Permission(any))
                } else {
                    Ok(())
                })
            }
            Kind::Service { resource } => {
                let Some(any) = right.service_sas_permissions() else {
                    return Some(Err(Lacks::AccountSasOnly));
                };
                // A blob-service SAS names its resource (`sr`); a queue SAS does not. Only a
                // container SAS reaches what lakebackup works on, and only in its own container
                // (the SAS does not say which: the service refuses it in any other).
                match (right.service(), resource.as_deref()) {
                    (Service::Queue, None) | (Service::Blob, Some("c")) => {}
                    (Service::Blob, Some(narrow)) if one_resource(narrow).is_some() => {
                        return one_resource(narrow).map(|what| Err(Lacks::OneResource(what)));
                    }
                    _ => return Some(Err(Lacks::Resource)),
                }
                if self.permissions.is_empty() && self.stored_policy {
                    return None;
                }
                Some(if grants(any) {
                    Ok(())
                } else {
                    Err(Lacks::Permission(any))
                })
            }
        }
    }

    /// Whether it is a service SAS of one container (`sr=c`), valid in that container only.
    pub fn is_container_sas(&self) -> bool {
        matches!(&self.kind, Kind::Service { resource: Some(r) } if r == "c")
    }

    /// Whether the SAS is valid at `now`.
    pub fn validity(&self, now: OffsetDateTime) -> Validity {
        match (self.start, self.expiry) {
            (Some(start), _) if start > now => Validity::NotYet(start),
            (_, Some(expiry)) if expiry <= now => Validity::Expired(expiry),
            (_, expiry) => Validity::Valid(expiry),
        }
    }
}

/// A SAS's validity at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// Valid, until this expiry (`None`: a stored access policy's).
    Valid(Option<OffsetDateTime>),
    Expired(OffsetDateTime),
    /// Valid from this start only.
    NotYet(OffsetDateTime),
}

/// A SAS time: `YYYY-MM-DD`, `YYYY-MM-DDThh:mmZ` or `YYYY-MM-DDThh:mm:ss[.f]Z` (UTC; an offset
/// is read as given).
fn sas_time(text: &str) -> Option<OffsetDateTime> {
    if let Ok(instant) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(instant);
    }
    let date_only = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(date) = Date::parse(text, date_only) {
        return Some(date.midnight().assume_utc());
    }
    let minutes = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]Z");
    PrimitiveDateTime::parse(text, minutes)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

#[cfg(test)]
mod tests {
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
        let delegated = grant(
            "sr=c&sp=r&se=2030-01-02T00:00:00Z&skoid=o&ske=2030-01-01T12:00:00Z&st=2029-12-31",
        );
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
}
