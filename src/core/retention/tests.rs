//! The retention rules and the strictness bound, judged over made-up histories.

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

/// A worker's `RETENTION_*`: a window, daily and monthly versions, a grace for deleted blobs,
/// snapshots for a week.
fn a_bound() -> RetentionPolicy {
    RetentionPolicy {
        keep_days: Some(30),
        keep_daily: 7,
        keep_monthly: 12,
        deleted_days: Some(90),
        snapshot_days: Some(7),
        ..Default::default()
    }
}

#[test]
fn a_policy_is_as_strict_as_a_bound_only_when_every_rule_keeps_as_much() {
    let bound = a_bound();
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
}

#[test]
fn no_rules_keep_everything_unless_a_grace_ends_deleted_blobs() {
    let bound = a_bound();
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
