//! What a shared access signature allows, read from its own fields, and the rights lakebackup
//! needs of an account ([`Right`]): for `lakebackup doctor`, which tells a SAS that lacks a right
//! before the first backup fails with 403. Pure: no request, no clock of its own.
//!
//! The rules follow Azure Storage's REST documentation, "Create an account SAS" (the tables of
//! Blob and Queue operations with the signed service, resource type and permission each needs)
//! and "Create a service SAS" (the permissions of a blob, container or queue SAS). Only the
//! permission letters, resource types, services and times are read: the signature is never
//! looked at, copied or shown.

mod right;

use std::fmt;

use time::{format_description::well_known::Rfc3339, Date, OffsetDateTime, PrimitiveDateTime};

pub use right::{Right, Service};

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
mod tests;
