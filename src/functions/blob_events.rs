//! `QueueBlobEvents`: one Event Grid (or CloudEvents 1.0) blob event from `EVENTS_QUEUE_NAME` →
//! the events engine. A malformed event, or one the engine finds unusable (another account's, an
//! invalid name), is poisoned unchanged; a failure fails the invocation, for a retry.

use tracing::Instrument;

use super::{Delivery, Handled};
use crate::{
    app::App,
    core::event::parse_event,
    engine::events::{self, EventError, EventOutcome},
};

pub const FUNCTION_NAME: &str = "QueueBlobEvents";

/// Handles one delivery.
pub async fn handle(app: &App, delivery: &Delivery) -> Result<Handled<EventOutcome>, EventError> {
    let event = match parse_event(&delivery.text) {
        Ok(event) => event,
        Err(reason) => return Ok(Handled::Unusable(reason)),
    };
    let span = tracing::info_span!(
        "blob",
        container = %event.container,
        blob = %event.path,
        event_id = %event.id,
    );
    match events::handle(app, &event).instrument(span).await {
        Ok(outcome) => Ok(Handled::Done(outcome)),
        Err(EventError::Unusable(reason)) => Ok(Handled::Unusable(reason)),
        Err(error) => Err(error),
    }
}
