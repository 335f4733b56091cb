//! `HttpSnapshotIncBackupStorageReconciliation`: the timer → one reconciliation job per container
//! of `RECONCILE_CONTAINERS` (or every container), queued; it returns within seconds and the
//! shards do the work.

use tracing::warn;

use crate::{
    app::App,
    engine::reconcile::{self, ScheduledReconciliation},
};

pub const FUNCTION_NAME: &str = "HttpSnapshotIncBackupStorageReconciliation";

/// One timer tick; `past_due`: the host says the tick is late.
pub async fn handle(app: &App, past_due: bool) -> ScheduledReconciliation {
    if past_due {
        warn!("the reconciliation timer is past due");
    }
    reconcile::schedule(app, app.config.reconcile_containers.as_deref()).await
}
