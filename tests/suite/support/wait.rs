//! Waiting, never for a fixed time: for a condition, with a deadline ([`wait_for`],
//! [`eventually`], [`wait_for_blocking`]), or for the clock to pass a second boundary
//! ([`next_second`]: Azure keeps Last-Modified to the second).

use std::{future::Future, time::Duration};

/// Waits until `condition` gives a value and returns it, trying again every 50 ms; panics
/// naming `what` when it has given none within `within`. The one way a test waits for
/// something to happen: never a fixed sleep.
pub async fn wait_for<T, F, Fut>(within: Duration, what: &str, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// As [`wait_for`], for a caller that is not async (a child process starting or stopping).
pub fn wait_for_blocking<T>(
    within: Duration,
    what: &str,
    mut condition: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `condition` holds (see [`wait_for`]).
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(within, what, || {
        let holds = condition();
        async move { holds.await.then_some(()) }
    })
    .await
}

/// Waits until the wall clock has passed into the next whole second. Azure reports
/// Last-Modified to the second, so two writes (or a write and an instant) are told apart only
/// across a second boundary: this waits for exactly that, never a fixed time.
pub async fn next_second() {
    let now = time::OffsetDateTime::now_utc();
    let into_second = std::time::Duration::from_nanos(u64::from(now.nanosecond()));
    // A few milliseconds past the boundary: the emulator's clock is this machine's.
    let left =
        std::time::Duration::from_secs(1) - into_second + std::time::Duration::from_millis(5);
    tokio::time::sleep(left).await;
}

/// An instant after every write so far, as RFC 3339: once the clock has passed into the next
/// second (restore reads a version's whole-second time as the end of its second).
pub async fn instant_after_writes() -> String {
    next_second().await;
    now_rfc3339()
}

/// Now, as RFC 3339.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}
