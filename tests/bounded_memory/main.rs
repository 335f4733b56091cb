//! Memory does not grow with the blob (issue 29, defect 3): `verify --deep`, `restore
//! --verify-content` and a copy through the worker read a blob in bounded chunks, so a blob
//! many times larger than a chunk is hashed, compared and copied holding a few chunks at most.
//!
//! Its own test binary: it counts the heap this process allocates (a counting global allocator)
//! and so must not share the process with other tests. The count is of bytes allocated, not of
//! time or RSS, so it does not depend on the machine's speed; the bound (half the blob's size)
//! sits far from both what a whole-blob read needs (the blob itself, at least) and what a
//! chunked one does (a few chunks of 4 MiB). The RSS figure belongs to the benchmark
//! (`scripts/bench.sh verify-deep`).

#[path = "../suite/support/mod.rs"]
mod support;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering},
};

use lakebackup::{
    core::restore_plan::RestoreFrom,
    engine::{
        restore::{restore, RestoreRequest},
        verify::{verify, VerifyRequest},
    },
};
use support::{azurite::SOURCE_KEY, Azurite, Lake};

/// Counts the bytes live on the heap, and the most there were since the last [`reset_peak`].
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = System.alloc(layout);
        if !pointer.is_null() {
            grew(layout.size());
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let pointer = System.alloc_zeroed(layout);
        if !pointer.is_null() {
            grew(layout.size());
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        System.dealloc(pointer, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = System.realloc(pointer, layout, new_size);
        if !moved.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        moved
    }
}

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Starts a measurement: the peak is counted from what is live now.
fn reset_peak() -> usize {
    let live = LIVE.load(Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    live
}

/// The most the heap grew above `baseline` since [`reset_peak`].
fn growth(baseline: usize) -> usize {
    PEAK.load(Ordering::Relaxed).saturating_sub(baseline)
}

const MIB: usize = 1 << 20;
/// Sixteen chunks.
const BLOB: usize = 64 * MIB;
/// What a chunked read may grow the heap by, with room to spare: half the blob. A comparison
/// holds two reads of two chunks each (16 MiB); a whole-blob read holds the blob (64 MiB) at
/// least.
const BOUND: usize = BLOB / 2;

#[tokio::test]
async fn hashing_comparing_and_copying_a_large_blob_hold_a_few_chunks() {
    let azurite = Azurite::start();
    // The lake by SAS: its backups are copied through the worker.
    let expiry = time::OffsetDateTime::now_utc() + time::Duration::hours(2);
    let sas = support::sas_connection(&azurite, "source", SOURCE_KEY, "bq", "rwdlacupt", expiry);
    let fixture = Lake::on(azurite, &["lake"], &[("SOURCE_STORAGE", &sas)]).await;
    let (app, lake) = (&fixture.app, fixture.lake("lake"));
    {
        // No stored MD5 (a block list's): a deep check must read the lake's bytes too.
        let bytes: Vec<u8> = (0..BLOB).map(|i| (i % 251) as u8).collect();
        support::put_block_list(&lake, "big.bin", &bytes, None).await;
    }

    let baseline = reset_peak();
    let pass = support::produce(app, "lake").await;
    let copied = growth(baseline);
    assert!(pass.succeeded(), "{:?} {:?}", pass.totals, pass.notes);

    let baseline = reset_peak();
    let request = VerifyRequest {
        container: "lake".into(),
        prefix: None,
        deep: true,
    };
    let summary = verify(app, &request, &|_| {}).await;
    let verified = growth(baseline);
    assert!(summary.succeeded(), "{summary:?}");
    assert_eq!(summary.checked, 1, "{summary:?}");

    // The same bytes in another container, without an MD5 either side: a restore there with
    // --verify-content must read both to find them equal.
    let restore_into_copy = |verify_content| RestoreRequest {
        verify_content,
        ..support::restore_request("lake", RestoreFrom::Backup, Some("copy"), None)
    };
    let first = restore(app, &restore_into_copy(false), &mut |_| {}).await;
    assert!(first.succeeded() && first.restored == 1, "{first:?}");
    let baseline = reset_peak();
    let compared = restore(app, &restore_into_copy(true), &mut |_| {}).await;
    let compared_growth = growth(baseline);
    assert_eq!(
        (compared.unchanged, compared.restored, compared.errors),
        (1, 0, 0),
        "{compared:?}"
    );

    for (what, grown) in [
        ("the backup copied through the worker", copied),
        ("verify --deep", verified),
        ("restore --verify-content", compared_growth),
    ] {
        assert!(
            grown < BOUND,
            "{what} grew the heap by {} MiB for a blob of {} MiB (bound {} MiB)",
            grown / MIB,
            BLOB / MIB,
            BOUND / MIB
        );
    }
}
