//! The check of each SAS connection by the SAS's own validity window: expired, not yet valid,
//! or expiring soon.

use time::{format_description::well_known::Rfc3339, Duration, OffsetDateTime};

use crate::{
    app::App,
    doctor::{check, reach::connections, Check, Status},
    storage::sas_grant::Validity,
};

/// A SAS that expires sooner than this is a warning: renew it before every request fails.
const SAS_RENEWAL_WARNING: Duration = Duration::days(14);

/// A check per SAS connection: can be read, and is valid now (expired or not yet valid: fail;
/// expiring within two weeks: warn). Made whether or not the account answered.
pub(in crate::doctor) fn sas_validity(app: &App) -> Vec<Check> {
    let now = OffsetDateTime::now_utc();
    connections(app)
        .into_iter()
        .filter_map(|(setting, account)| {
            let grant = account.sas_grant()?;
            let title = format!("{setting}: its SAS");
            let when = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
            Some(match grant.map(|g| g.validity(now)) {
                Err(e) => check(
                    title,
                    Status::Warn,
                    format!("could not be read as a SAS ({e}): its rights are tried instead"),
                ),
                Ok(Validity::Expired(at)) => check(
                    title,
                    Status::Fail,
                    format!(
                        "expired at {}: the service refuses every request made with it; give \
                         {setting} a new SAS",
                        when(at)
                    ),
                ),
                Ok(Validity::NotYet(from)) => check(
                    title,
                    Status::Fail,
                    format!(
                        "valid only from {} (st): the service refuses every request made with it \
                         until then",
                        when(from)
                    ),
                ),
                Ok(Validity::Valid(Some(until))) if until - now < SAS_RENEWAL_WARNING => check(
                    title,
                    Status::Warn,
                    format!(
                        "expires at {}: every request made with it fails from then; give \
                         {setting} a new SAS before",
                        when(until)
                    ),
                ),
                Ok(Validity::Valid(Some(until))) => {
                    check(title, Status::Ok, format!("valid until {}", when(until)))
                }
                Ok(Validity::Valid(None)) => check(
                    title,
                    Status::Ok,
                    "valid (its stored access policy sets its expiry)",
                ),
            })
        })
        .collect()
}
