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
mod tests {
    use time::macros::datetime;

    use super::*;

    fn versions(times: &[OffsetDateTime]) -> Vec<VersionTime> {
        times
            .iter()
            .map(|&last_modified| VersionTime { last_modified })
            .collect()
    }

    const NOW: OffsetDateTime = datetime!(2026-11-27 12:00 UTC);

    #[test]
    fn no_policy_keeps_everything() {
        let policy = RetentionPolicy::default();
        assert!(!policy.prunes_backups() && !policy.prunes_snapshots());
        let v = versions(&[
            datetime!(2020-01-01 0:00 UTC),
            datetime!(2021-01-01 0:00 UTC),
        ]);
        assert_eq!(keep(&policy, &v, Fate::Present, NOW, &[]), [true, true]);
        // A deleted blob's versions too, when nothing says how long to keep them.
        let deleted = Fate::DeletedAt(datetime!(2022-01-01 0:00 UTC));
        assert_eq!(keep(&policy, &v, deleted, NOW, &[]), [true, true]);
    }

    #[test]
    fn the_window_keeps_every_version_alive_in_it_and_the_newest_always() {
        let policy = RetentionPolicy {
            keep_days: Some(7),
            ..Default::default()
        };
        let v = versions(&[
            datetime!(2026-11-01 0:00 UTC), // replaced 11-15: outside
            datetime!(2026-11-15 0:00 UTC), // replaced 11-22, the window starts 11-20: inside
            datetime!(2026-11-22 0:00 UTC),
            datetime!(2026-11-26 0:00 UTC),
        ]);
        assert_eq!(
            keep(&policy, &v, Fate::Present, NOW, &[]),
            [false, true, true, true]
        );
        // The newest version of a blob that exists is kept however old.
        let old = versions(&[
            datetime!(2020-01-01 0:00 UTC),
            datetime!(2019-01-01 0:00 UTC),
        ]);
        assert_eq!(keep(&policy, &old, Fate::Present, NOW, &[]), [true, false]);
    }

    #[test]
    fn deleted_blobs_keep_their_last_version_for_deleted_days() {
        let policy = RetentionPolicy {
            keep_days: Some(7),
            deleted_days: Some(30),
            ..Default::default()
        };
        let v = versions(&[datetime!(2026-01-01 0:00 UTC)]);
        let recent = Fate::DeletedAt(datetime!(2026-11-01 0:00 UTC));
        assert_eq!(keep(&policy, &v, recent, NOW, &[]), [true]);
        let long_ago = Fate::DeletedAt(datetime!(2026-10-01 0:00 UTC));
        assert_eq!(keep(&policy, &v, long_ago, NOW, &[]), [false]);
        // Deleted inside the window: its last version was alive in it.
        let in_window = Fate::DeletedAt(datetime!(2026-11-25 0:00 UTC));
        let policy = RetentionPolicy {
            deleted_days: Some(0),
            ..policy
        };
        assert_eq!(keep(&policy, &v, in_window, NOW, &[]), [true]);
    }

    #[test]
    fn grandfather_father_son_keeps_the_version_current_at_each_period_end() {
        let policy = RetentionPolicy {
            keep_daily: 2,
            keep_weekly: 1,
            keep_monthly: 2,
            keep_yearly: 1,
            ..Default::default()
        };
        // 2026-11-27 is a Friday.
        assert_eq!(
            policy.kept_instants(NOW),
            [
                datetime!(2026-11-27 0:00 UTC),
                datetime!(2026-11-26 0:00 UTC),
                datetime!(2026-11-23 0:00 UTC),
                datetime!(2026-11-01 0:00 UTC),
                datetime!(2026-10-01 0:00 UTC),
                datetime!(2026-01-01 0:00 UTC),
            ]
        );
        let instants = policy.kept_instants(NOW);
        let v = versions(&[
            datetime!(2025-12-31 23:00 UTC), // current at 2026-01-01
            datetime!(2026-03-01 0:00 UTC),  // current at no kept instant
            datetime!(2026-09-15 0:00 UTC),  // current at 10-01
            datetime!(2026-10-01 0:00 UTC),  // written at 00:00:00: counts as 00:00:00.999
            datetime!(2026-11-24 0:00 UTC),  // current at 11-26 and 11-27
            datetime!(2026-11-27 6:00 UTC),  // the newest
        ]);
        assert_eq!(
            keep(&policy, &v, Fate::Present, NOW, &instants),
            [true, false, true, true, true, true]
        );
    }

    #[test]
    fn a_version_written_on_the_stroke_of_an_instant_is_not_current_at_it() {
        let policy = RetentionPolicy {
            keep_daily: 1,
            ..Default::default()
        };
        let instants = policy.kept_instants(NOW);
        let v = versions(&[
            datetime!(2026-11-20 0:00 UTC),
            datetime!(2026-11-27 0:00 UTC),
            datetime!(2026-11-27 8:00 UTC),
        ]);
        // Restore as of 11-27 00:00 picks the 11-20 version (the next counts as 00:00:00.999).
        assert_eq!(
            keep(&policy, &v, Fate::Present, NOW, &instants),
            [true, false, true]
        );
    }

    #[test]
    fn a_policy_is_as_strict_as_a_bound_only_when_every_rule_keeps_as_much() {
        let bound = RetentionPolicy {
            keep_days: Some(30),
            keep_daily: 7,
            keep_monthly: 12,
            deleted_days: Some(90),
            snapshot_days: Some(7),
            ..Default::default()
        };
        assert!(bound.is_at_least_as_strict_as(&bound));
        let stricter = RetentionPolicy {
            keep_days: Some(31),
            keep_weekly: 4,
            deleted_days: None,
            snapshot_days: None,
            ..bound.clone()
        };
        assert!(stricter.is_at_least_as_strict_as(&bound));
        assert!(!bound.is_at_least_as_strict_as(&stricter));
        // Nothing pruned keeps everything: as strict as any bound.
        assert!(RetentionPolicy::default().is_at_least_as_strict_as(&bound));
        for (looser, rule) in [
            (
                RetentionPolicy {
                    keep_days: Some(29),
                    ..bound.clone()
                },
                "RETENTION_KEEP_DAYS",
            ),
            (
                RetentionPolicy {
                    keep_days: None,
                    ..bound.clone()
                },
                "RETENTION_KEEP_DAYS",
            ),
            (
                RetentionPolicy {
                    keep_daily: 6,
                    ..bound.clone()
                },
                "RETENTION_KEEP_DAILY",
            ),
            (
                RetentionPolicy {
                    keep_monthly: 0,
                    ..bound.clone()
                },
                "RETENTION_KEEP_MONTHLY",
            ),
            (
                RetentionPolicy {
                    deleted_days: Some(89),
                    ..bound.clone()
                },
                "RETENTION_DELETED_DAYS",
            ),
            (
                RetentionPolicy {
                    snapshot_days: Some(1),
                    ..bound.clone()
                },
                "RETENTION_SNAPSHOT_DAYS",
            ),
        ] {
            assert!(!looser.is_at_least_as_strict_as(&bound), "{looser:?}");
            assert_eq!(looser.looser_rules_than(&bound), [rule], "{looser:?}");
        }
        // Against a bound that prunes nothing (no RETENTION_* set), only a policy that prunes
        // nothing is as strict.
        let unset = RetentionPolicy::default();
        assert!(unset.is_at_least_as_strict_as(&unset));
        assert!(!bound.is_at_least_as_strict_as(&unset));
        let only_deleted = RetentionPolicy {
            deleted_days: Some(365),
            ..Default::default()
        };
        assert_eq!(
            only_deleted.looser_rules_than(&unset),
            ["RETENTION_DELETED_DAYS"]
        );
        let only_versions = RetentionPolicy {
            keep_yearly: 10,
            ..Default::default()
        };
        assert_eq!(only_versions.looser_rules_than(&unset).len(), 1);
        // A bound with version rules, a policy with none and no deletion grace: every version
        // of every blob kept, stricter.
        let keeps_versions = RetentionPolicy {
            keep_days: None,
            keep_daily: 0,
            keep_monthly: 0,
            deleted_days: None,
            ..bound.clone()
        };
        assert!(keeps_versions.is_at_least_as_strict_as(&bound));
        // With a grace, though, a deleted blob past it loses every version, even those alive
        // in the bound's window or current at its instants: looser.
        let no_rules_but_a_grace = RetentionPolicy {
            deleted_days: Some(90),
            ..keeps_versions.clone()
        };
        assert_eq!(
            no_rules_but_a_grace.looser_rules_than(&bound),
            [
                "RETENTION_KEEP_DAYS",
                "RETENTION_KEEP_DAILY",
                "RETENTION_KEEP_MONTHLY"
            ]
        );
        // Against a bound that only sets a window, an unset window is none.
        let window_only = RetentionPolicy {
            keep_days: Some(0),
            deleted_days: Some(1),
            ..Default::default()
        };
        let daily_only = RetentionPolicy {
            keep_daily: 30,
            deleted_days: Some(1),
            ..Default::default()
        };
        assert_eq!(
            daily_only.looser_rules_than(&window_only),
            ["RETENTION_KEEP_DAYS"]
        );
        assert_eq!(
            window_only.looser_rules_than(&daily_only),
            ["RETENTION_KEEP_DAILY"]
        );
    }

    /// The comparison is sound: over many policies, versions and deletions, whenever a policy
    /// is judged at least as strict as a bound, it keeps every version the bound keeps.
    #[test]
    fn a_policy_judged_as_strict_keeps_everything_the_bound_keeps() {
        let options = |seed: u64| -> RetentionPolicy {
            let pick = |shift: u32, choices: &[Option<u32>]| {
                choices[((seed >> shift) % choices.len() as u64) as usize]
            };
            let some = [None, Some(0), Some(3), Some(40)];
            let count = [Some(0), Some(1), Some(5)];
            RetentionPolicy {
                keep_days: pick(0, &some),
                keep_daily: pick(3, &count).unwrap_or(0),
                keep_weekly: pick(6, &count).unwrap_or(0),
                keep_monthly: pick(9, &count).unwrap_or(0),
                keep_yearly: pick(12, &count).unwrap_or(0),
                deleted_days: pick(15, &some),
                snapshot_days: None,
            }
        };
        let histories: Vec<Vec<VersionTime>> = vec![
            versions(&[datetime!(2026-11-26 0:00 UTC)]),
            versions(&[
                datetime!(2025-06-01 0:00 UTC),
                datetime!(2026-09-20 0:00 UTC),
                datetime!(2026-10-30 0:00 UTC),
                datetime!(2026-11-20 0:00 UTC),
                datetime!(2026-11-25 0:00 UTC),
            ]),
        ];
        let fates = [
            Fate::Present,
            Fate::DeletedAt(datetime!(2026-11-26 12:00 UTC)),
            Fate::DeletedAt(datetime!(2026-11-10 0:00 UTC)),
            Fate::DeletedAt(datetime!(2026-01-01 0:00 UTC)),
        ];
        let mut checked = 0;
        for a in (0..1u64 << 18).step_by(97) {
            for b in (0..1u64 << 18).step_by(89).take(40) {
                let (ours, bound) = (options(a), options(b.wrapping_mul(31) ^ a));
                if !ours.is_at_least_as_strict_as(&bound) {
                    continue;
                }
                checked += 1;
                for history in &histories {
                    for &fate in &fates {
                        let kept = keep(&ours, history, fate, NOW, &ours.kept_instants(NOW));
                        let promised = keep(&bound, history, fate, NOW, &bound.kept_instants(NOW));
                        for (k, p) in kept.iter().zip(&promised) {
                            assert!(
                                *k || !*p,
                                "{ours:?} vs {bound:?}, {fate:?}: {kept:?} {promised:?}"
                            );
                        }
                    }
                }
            }
        }
        assert!(checked > 100, "{checked}");
    }
}
