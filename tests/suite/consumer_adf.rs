//! The consumer with the ADF engine: the real worker calls local stand-ins of the managed-identity
//! token endpoint and the two Data Factory REST calls (which copy on Azurite as ADF would).

use crate::support;

use std::time::Duration;

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use lakebackup::{
    core::naming,
    storage::{testing::LeaseState, Container},
};
use serde_json::Value;
use support::{
    adf::{AdfStandIn, RunEnd},
    worker::Worker,
    Lake,
};

struct Setup {
    lake: Lake,
    standin: AdfStandIn,
}

impl Setup {
    async fn new(polls_before_done: usize, end: RunEnd) -> Setup {
        let lake = Lake::start(&["lake"]).await;
        let standin = AdfStandIn::on(&lake, polls_before_done, end).await;
        Setup { lake, standin }
    }

    /// The lake's container the tests write to.
    fn lake(&self) -> Container {
        self.lake.lake("lake")
    }

    fn worker(&self, extra: &[(&str, &str)]) -> Worker {
        let mut settings = self.lake.settings();
        settings.extend(self.standin.settings());
        Worker::serve(&support::with(settings, extra))
    }

    async fn lease_state(&self, name: &str) -> Option<LeaseState> {
        self.lake().blob(name).lease_state().await.unwrap()
    }

    /// No one holds a lease of `name`: ours was released.
    async fn assert_released(&self, name: &str) {
        assert_eq!(
            self.lease_state(name).await,
            Some(LeaseState::Available),
            "{name}"
        );
    }

    /// Writes `name` into the lake: the backup request for the version written.
    async fn write(&self, name: &str, bytes: &[u8]) -> String {
        let lake = self.lake();
        support::upload(&lake, name, bytes).await;
        support::request_for(&lake, name).await
    }

    async fn backup_names(&self) -> Vec<String> {
        let container = self.lake.vault("lake");
        if !container.exists().await.unwrap() {
            return Vec::new();
        }
        support::list_all(&container)
            .await
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    fn assert_no_violations(&self) {
        let violations = self.standin.record(|r| r.violations.clone());
        assert!(
            violations.is_empty(),
            "the stand-in was called wrongly: {violations:?}"
        );
    }
}

fn outcome(reply: &Value) -> &str {
    reply["ReturnValue"]["outcome"].as_str().unwrap_or("none")
}

#[tokio::test]
async fn pipeline_copies_the_version_while_the_lease_is_held_throughout() {
    let setup = Setup::new(3, RunEnd::Succeeded).await;
    let lake = setup.lake();
    let name = "raw/2026/sales \"q4\".v2.csv";
    let bytes: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    support::upload(&lake, name, &bytes).await;
    let (etag, last_modified, _) = support::properties(&lake, name).await;
    let expected_backup = naming::backup_blob_name(name, last_modified, &etag).unwrap();
    let worker = setup.worker(&[]);

    let request = support::request_for(&lake, name).await;
    let (status, reply) = support::deliver(&worker, &request, "adf-1", 1).await;
    assert_eq!((status, outcome(&reply)), (200, "backed_up"), "{reply}");
    setup.assert_no_violations();

    let runs = setup.standin.record(|r| r.runs.clone());
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].container, "lake");
    assert_eq!(runs[0].container_backup, "lakebak");
    assert_eq!(runs[0].blob_name, name);
    assert_eq!(runs[0].blob_name_backup, expected_backup);
    assert!(setup.standin.record(|r| r.token_requests) >= 1);

    // Leased at every poll of the run, including the last one (the seed released at once).
    let polls = setup.standin.record(|r| r.polls.clone());
    assert_eq!(polls.len(), 3, "{polls:?}");
    assert!(polls.iter().all(|p| p.source_leased), "{polls:?}");
    setup.assert_released(name).await;

    let backup = setup.lake.vault("lake");
    assert!(support::download(&backup, &expected_backup).await == bytes);
    let (_, _, metadata) = support::properties(&backup, &expected_backup).await;
    assert_eq!(metadata["lakebackup_etag"], etag);
    assert_eq!(metadata["lakebackup_container"], "lake");

    let (status, reply) = support::deliver(&worker, &request, "adf-2", 1).await;
    assert_eq!(
        (status, outcome(&reply)),
        (200, "already_backed_up"),
        "{reply}"
    );
    assert_eq!(setup.standin.record(|r| r.runs.len()), 1, "no second run");
}

#[tokio::test]
async fn failed_run_fails_the_invocation_and_releases_the_lease() {
    let setup = Setup::new(2, RunEnd::Failed).await;
    let request = setup.write("a.csv", b"abc").await;
    let worker = setup.worker(&[]);
    let (status, reply) = support::deliver(&worker, &request, "adf-fail", 1).await;
    assert_eq!(status, 500, "{reply}");
    let log = reply["Logs"][0].as_str().unwrap();
    assert!(
        log.contains("ended Failed") && log.contains("stand-in failure"),
        "{log}"
    );
    setup.assert_no_violations();
    assert!(setup
        .standin
        .record(|r| r.polls.iter().all(|p| p.source_leased)));
    setup.assert_released("a.csv").await;
    assert!(setup.backup_names().await.is_empty());
}

#[tokio::test]
async fn unreachable_factory_fails_the_invocation_and_releases_the_lease() {
    let setup = Setup::new(1, RunEnd::Succeeded).await;
    let request = setup.write("a.csv", b"abc").await;
    let endpoint = format!("http://127.0.0.1:{}", support::closed_port());
    let worker = setup.worker(&[("ADF_MANAGEMENT_ENDPOINT", &endpoint)]);
    let (status, reply) = support::deliver(&worker, &request, "adf-down", 1).await;
    assert_eq!(status, 500, "{reply}");
    let log = reply["Logs"][0].as_str().unwrap();
    assert!(log.contains("unreachable"), "{log}");
    assert!(!log.contains(support::adf::ACCESS_TOKEN));
    setup.assert_released("a.csv").await;
}

#[tokio::test]
async fn a_blob_leased_by_someone_else_is_deferred_not_failed_toward_poison() {
    let setup = Setup::new(1, RunEnd::Succeeded).await;
    let lake = setup.lake();
    let request = setup.write("busy.csv", b"abc").await;
    let (etag, _, _) = support::properties(&lake, "busy.csv").await;
    let blob = lake.blob("busy.csv");
    let other = lakebackup::storage::lease::HeldLease::acquire(&blob, &etag)
        .await
        .unwrap();
    // Waits 2 s for the lease (30 by default), then 2 s back on the queue.
    let worker = setup.worker(&[("BACKUP_LEASE_WAIT_SECONDS", "2")]);
    let (status, reply) = support::deliver(&worker, &request, "adf-busy", 5).await;
    assert_eq!((status, outcome(&reply)), (200, "deferred"), "{reply}");
    assert_eq!(reply["ReturnValue"]["deferrals"], 1);
    assert_eq!(setup.standin.record(|r| r.runs.len()), 0);
    // Put back as a new message (its dequeue count starts again), still the same version.
    let queue = setup.lake.queue("backup-requests");
    let requeued = support::drain_queue_after(&queue, 15).await;
    assert_eq!(requeued.len(), 1, "{requeued:?}");
    let requeued: Value = serde_json::from_slice(&BASE64.decode(&requeued[0]).unwrap()).unwrap();
    let original: Value = serde_json::from_str(&request).unwrap();
    assert_eq!(requeued["etag"], original["etag"]);
    assert_eq!(requeued["blob_name"], "busy.csv");
    assert_eq!(requeued["deferrals"], 1);
    other.release().await.unwrap();
    let (status, reply) = support::deliver(
        &worker,
        &serde_json::to_string(&requeued).unwrap(),
        "adf-busy-2",
        1,
    )
    .await;
    assert_eq!((status, outcome(&reply)), (200, "backed_up"), "{reply}");
}

#[tokio::test]
async fn duplicate_requests_in_lease_mode_wait_for_each_other_and_copy_once() {
    let setup = Setup::new(30, RunEnd::Succeeded).await;
    let request = setup
        .write("twice.csv", b"requested by producer and reconciler")
        .await;
    let worker = setup.worker(&[]);
    let (first, second) = tokio::join!(
        support::deliver(&worker, &request, "from-producer", 1),
        async {
            // The second arrives while the first's run is under way.
            support::eventually(Duration::from_secs(30), "the first run", || async {
                setup.standin.record(|r| !r.runs.is_empty())
            })
            .await;
            support::deliver(&worker, &request, "from-reconciler", 1).await
        }
    );
    assert_eq!(
        (first.0, outcome(&first.1)),
        (200, "backed_up"),
        "{}",
        first.1
    );
    assert_eq!(
        (second.0, outcome(&second.1)),
        (200, "already_backed_up"),
        "{}",
        second.1
    );
    assert_eq!(
        setup.standin.record(|r| r.runs.len()),
        1,
        "one pipeline run"
    );
    assert_eq!(setup.backup_names().await.len(), 1);
    setup.assert_released("twice.csv").await;
}

#[tokio::test]
async fn throttled_and_failing_polls_are_retried_until_the_run_ends() {
    let setup = Setup::new(3, RunEnd::Succeeded).await;
    let request = setup.write("a.csv", b"abc").await;
    setup.standin.fail_next_polls(&[429, 500, 503]);
    let worker = setup.worker(&[]);
    let (status, reply) = support::deliver(&worker, &request, "adf-flaky", 1).await;
    assert_eq!((status, outcome(&reply)), (200, "backed_up"), "{reply}");
    setup.assert_no_violations();
    assert!(setup.standin.record(|r| r.cancels.is_empty()));
    assert!(setup
        .standin
        .record(|r| r.polls.iter().all(|p| p.source_leased)));
    setup.assert_released("a.csv").await;
}

#[tokio::test]
async fn a_run_that_outlives_the_wait_is_cancelled_and_the_lease_released() {
    let setup = Setup::new(usize::MAX, RunEnd::Succeeded).await;
    let request = setup.write("slow.csv", b"abc").await;
    let worker = setup.worker(&[("ADF_RUN_TIMEOUT_SECONDS", "2")]);
    let (status, reply) = support::deliver(&worker, &request, "adf-slow", 1).await;
    assert_eq!(status, 500, "{reply}");
    assert!(
        reply["Logs"][0].as_str().unwrap().contains("cancelled"),
        "{reply}"
    );
    assert_eq!(
        setup.standin.record(|r| r.cancels.clone()),
        vec!["run-1".to_owned()]
    );
    setup.assert_released("slow.csv").await;
    assert!(setup.backup_names().await.is_empty());
}

#[tokio::test]
async fn a_lost_lease_abandons_and_cancels_the_run() {
    let setup = Setup::new(usize::MAX, RunEnd::Succeeded).await;
    let request = setup.write("hot.csv", b"v1").await;
    let worker = setup.worker(&[("ADF_RUN_TIMEOUT_SECONDS", "60")]);
    let breaker = async {
        // Once the run is being polled, someone breaks the lease (as an operator would).
        support::eventually(Duration::from_secs(30), "the run polled", || async {
            !setup.standin.record(|r| r.polls.is_empty())
        })
        .await;
        setup.lake().blob("hot.csv").break_lease().await.unwrap();
    };
    let ((status, reply), ()) =
        tokio::join!(support::deliver(&worker, &request, "adf-lost", 1), breaker);
    assert_eq!(status, 500, "{reply}");
    assert!(
        reply["Logs"][0].as_str().unwrap().contains("lease"),
        "{reply}"
    );
    assert_eq!(
        setup.standin.record(|r| r.cancels.clone()),
        vec!["run-1".to_owned()]
    );
    assert!(setup.backup_names().await.is_empty());
}

#[tokio::test]
async fn without_lease_mode_the_copy_runs_unlocked() {
    let setup = Setup::new(2, RunEnd::Succeeded).await;
    let request = setup.write("free.csv", b"free").await;
    let worker = setup.worker(&[("BACKUP_USE_LEASE", "false")]);
    let (status, reply) = support::deliver(&worker, &request, "adf-free", 1).await;
    assert_eq!((status, outcome(&reply)), (200, "backed_up"), "{reply}");
    assert!(setup
        .standin
        .record(|r| r.polls.iter().all(|p| !p.source_leased)));
    assert_eq!(setup.backup_names().await.len(), 1);
}

/// A holder that panics still releases its lease (Drop releases from a task).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_lease_holder_still_releases_the_lease() {
    let setup = Setup::new(1, RunEnd::Succeeded).await;
    let lake = setup.lake();
    support::upload(&lake, "p.csv", b"p").await;
    let (etag, _, _) = support::properties(&lake, "p.csv").await;
    let blob = lake.blob("p.csv");
    let task = tokio::spawn(async move {
        let _lease = lakebackup::storage::lease::HeldLease::acquire(&blob, &etag)
            .await
            .unwrap();
        panic!("the work under the lease panicked");
    });
    assert!(task.await.unwrap_err().is_panic());
    // Released by the guard's drop, in a task of its own: soon, however loaded the machine. The
    // lease (60 s) would read `expired`, not `available`, had it only lapsed.
    support::eventually(Duration::from_secs(30), "the lease released", || async {
        setup.lease_state("p.csv").await == Some(LeaseState::Available)
    })
    .await;
}
