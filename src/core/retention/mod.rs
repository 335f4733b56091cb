//! Retention: which versions of one blob a policy keeps, so that every instant it promises can
//! still be restored, and never the last good copy. Pure.
//!
//! A version's life runs from when it was written (as restore reads it: a whole-second time
//! stands for the end of its second) until the next version was written, or until its blob was
//! seen deleted, or on while it is current. The policy keeps:
//! - every version whose life overlaps the last `keep_days` days (any instant in the window
//!   restores);
//! - the version current at the end of each of the last N days, weeks (ISO, ending Sunday
//!   24:00 UTC), months and years (grandfather-father-son);
//! - the newest version of a blob that still exists (or whose fate is unknown), always;
//! - the last version of a deleted blob for `deleted_days` after its deletion was seen
//!   (forever when unset).
//!
//! With no rule for versions set, every version of a blob that exists is kept.

use serde::{Deserialize, Serialize};
use time::{Date, Duration, Month, OffsetDateTime, Time};

use super::restore_plan::written_by;

/// `RETENTION_*` settings. All unset: nothing is ever pruned. A prune job carries the policy
/// it was started with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    pub keep_days: Option<u32>,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub keep_yearly: u32,
    pub deleted_days: Option<u32>,
    pub snapshot_days: Option<u32>,
}

impl RetentionPolicy {
    /// Whether backups may be pruned at all.
    pub fn prunes_backups(&self) -> bool {
        self.limits_versions() || self.deleted_days.is_some()
    }

    /// Whether snapshots in the lake may be pruned.
    pub fn prunes_snapshots(&self) -> bool {
        self.snapshot_days.is_some()
    }

    fn limits_versions(&self) -> bool {
        self.keep_days.is_some()
            || self.keep_daily + self.keep_weekly + self.keep_monthly + self.keep_yearly > 0
    }

    /// The instants whose current versions the grandfather-father-son rules keep.
    pub fn kept_instants(&self, now: OffsetDateTime) -> Vec<OffsetDateTime> {
        let today = now.date();
        let midnight = |date: Date| date.with_time(Time::MIDNIGHT).assume_utc();
        let mut instants = Vec::new();
        for k in 0..self.keep_daily {
            instants.push(midnight(today) - Duration::days(i64::from(k)));
        }
        let monday = today - Duration::days(i64::from(today.weekday().number_days_from_monday()));
        for k in 0..self.keep_weekly {
            instants.push(midnight(monday) - Duration::weeks(i64::from(k)));
        }
        let (mut year, mut month) = (today.year(), today.month());
        for _ in 0..self.keep_monthly {
            if let Ok(first) = Date::from_calendar_date(year, month, 1) {
                instants.push(midnight(first));
            }
            if month == Month::January {
                year -= 1;
            }
            month = month.previous();
        }
        for k in 0..self.keep_yearly {
            if let Ok(first) = Date::from_calendar_date(today.year() - k as i32, Month::January, 1)
            {
                instants.push(midnight(first));
            }
        }
        instants
    }
}

impl RetentionPolicy {
    /// Whether this policy keeps at least every version `bound` keeps: each of its rules equal
    /// to `bound`'s or keeping more. A prune shard from the queue must be, against the worker's
    /// own `RETENTION_*`, so that whoever can write the queue cannot ask for more deletions than
    /// the admin configured.
    pub fn is_at_least_as_strict_as(&self, bound: &RetentionPolicy) -> bool {
        self.looser_rules_than(bound).is_empty()
    }

    /// The settings whose rule in this policy may keep less than in `bound` (empty: none
    /// does). Sound rule by rule, as [`keep`] reads a policy:
    /// - a policy that sets no rule for versions and no `deleted_days` keeps every backup
    ///   version of every blob: it keeps at least what any bound keeps;
    /// - otherwise, against a bound with no rule for versions (every version of a blob not
    ///   expired kept), it may set none either; against a bound with rules, each rule the bound
    ///   sets must be set here at least as large (a window unset here is no window, and a
    ///   policy without rules keeps nothing of an expired deleted blob, however recently it was
    ///   alive);
    /// - `deleted_days` and `snapshot_days` unset (for ever) or at least the bound's.
    ///
    /// Then each version the bound keeps is kept: the newest (its grace is as long or longer),
    /// every version alive in its window (the window is as long or longer), and every version
    /// current at one of its instants (the instants here are a superset: the same series, as
    /// many or more). A snapshot the bound keeps only because the bound drops that version's
    /// backup may go here when the backup stays: the version stays recoverable either way.
    pub fn looser_rules_than(&self, bound: &RetentionPolicy) -> Vec<&'static str> {
        let mut looser = Vec::new();
        let keeps_every_version = !self.limits_versions() && self.deleted_days.is_none();
        if !keeps_every_version {
            if !bound.limits_versions() {
                if self.limits_versions() {
                    looser.push("RETENTION_KEEP_* (none is set here: every version is kept)");
                }
            } else {
                let window_shorter = match (self.keep_days, bound.keep_days) {
                    (_, None) => false,
                    (None, Some(_)) => true,
                    (Some(ours), Some(theirs)) => ours < theirs,
                };
                if window_shorter {
                    looser.push("RETENTION_KEEP_DAYS");
                }
                let periods = [
                    ("RETENTION_KEEP_DAILY", self.keep_daily, bound.keep_daily),
                    ("RETENTION_KEEP_WEEKLY", self.keep_weekly, bound.keep_weekly),
                    (
                        "RETENTION_KEEP_MONTHLY",
                        self.keep_monthly,
                        bound.keep_monthly,
                    ),
                    ("RETENTION_KEEP_YEARLY", self.keep_yearly, bound.keep_yearly),
                ];
                looser.extend(
                    periods
                        .iter()
                        .filter(|(_, ours, theirs)| ours < theirs)
                        .map(|r| r.0),
                );
            }
        }
        // Unset: kept for ever.
        let shorter = |ours: Option<u32>, theirs: Option<u32>| match (ours, theirs) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(ours), Some(theirs)) => ours < theirs,
        };
        if shorter(self.deleted_days, bound.deleted_days) {
            looser.push("RETENTION_DELETED_DAYS");
        }
        if shorter(self.snapshot_days, bound.snapshot_days) {
            looser.push("RETENTION_SNAPSHOT_DAYS");
        }
        looser
    }
}

/// One complete version of a blob: when it was written, per its stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionTime {
    pub last_modified: OffsetDateTime,
}

/// What became of the blob in the lake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It exists (whatever its version), or nothing says otherwise.
    Present,
    /// Its newest version was seen deleted at this instant.
    DeletedAt(OffsetDateTime),
}

/// Which of `versions` (in any order) the policy keeps, in the same order. `instants` are the
/// policy's [`RetentionPolicy::kept_instants`] for `now`.
pub fn keep(
    policy: &RetentionPolicy,
    versions: &[VersionTime],
    fate: Fate,
    now: OffsetDateTime,
    instants: &[OffsetDateTime],
) -> Vec<bool> {
    let mut order: Vec<usize> = (0..versions.len()).collect();
    order.sort_by_key(|&i| versions[i].last_modified);
    let mut kept = vec![false; versions.len()];
    let Some(&newest) = order.last() else {
        return kept;
    };
    let deleted_at = match fate {
        Fate::Present => None,
        Fate::DeletedAt(seen) => Some(seen),
    };
    // The newest version: kept while its blob exists, or for `deleted_days` after its deletion.
    kept[newest] = match (deleted_at, policy.deleted_days) {
        (None, _) | (Some(_), None) => true,
        (Some(seen), Some(days)) => now < seen + Duration::days(i64::from(days)),
    };
    let expired = deleted_at.is_some() && !kept[newest];
    if !policy.limits_versions() && !expired {
        return vec![true; versions.len()];
    }
    let window_start = policy
        .keep_days
        .map(|days| now - Duration::days(i64::from(days)));
    for (position, &i) in order.iter().enumerate() {
        let start = written_by(versions[i].last_modified);
        let end = match order.get(position + 1) {
            Some(&next) => Some(written_by(versions[next].last_modified)),
            None => deleted_at,
        };
        let alive_at = |t: OffsetDateTime| start <= t && end.is_none_or(|end| t < end);
        let in_window = window_start.is_some_and(|from| end.is_none_or(|end| end > from));
        if in_window || instants.iter().any(|&t| alive_at(t)) {
            kept[i] = true;
        }
    }
    kept
}

#[cfg(test)]
mod tests;
