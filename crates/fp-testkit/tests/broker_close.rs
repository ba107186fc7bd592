//! A service that stops drops its consumers and publishers and then closes its broker connection,
//! often in the same instant. That must be a clean stop: no ERROR in the log (lapin reports a
//! channel whose close loses the race with the connection's as a failed connection), the message in
//! hand returned to its queue, nothing else touched.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fp_broker::Broker;
use fp_testkit::environment::broker_url;
use fp_testkit::scratch_queue::ScratchQueue;
use futures_util::StreamExt;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

const ROUNDS: usize = 20;
const PATIENCE: Duration = Duration::from_secs(10);

/// Every ERROR event of any crate, as `target: fields`.
#[derive(Clone, Default)]
struct ErrorEvents(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
}

impl<S: Subscriber> Layer<S> for ErrorEvents {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if *event.metadata().level() == Level::ERROR {
            let mut fields = Fields(event.metadata().target().to_owned());
            event.record(&mut fields);
            if let Ok(mut events) = self.0.lock() {
                events.push(fields.0);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_right_after_dropping_consumers_and_publishers_is_clean() -> anyhow::Result<()> {
    let errors = ErrorEvents::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(errors.clone()))?;

    // No delivery limit, so a message can come back every round.
    let queue = ScratchQueue::declare("close", "close-test").await?;
    for round in 0..ROUNDS {
        let broker = Broker::connect(&broker_url(), &queue.namespace).await?;
        let publisher = broker.publisher();
        queue.publish(&publisher, &round.to_string()).await?;
        let mut deliveries = broker.consume(&queue.name, &format!("close-test-{round}"), 10);
        let in_hand = tokio::time::timeout(PATIENCE, deliveries.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("round {round}: the consumer ended"))?;
        // Neither acked nor rejected: the channel's close must give it back to the queue.
        drop(in_hand);
        drop(deliveries);
        drop(publisher);
        broker.close().await;
    }

    // Every message was handed back unacknowledged, so all are in the queue again.
    let waiting = queue.ready().await?;
    queue.delete().await?;

    let errors = errors
        .0
        .lock()
        .map(|events| events.clone())
        .unwrap_or_default();
    assert!(errors.is_empty(), "closing logged errors: {errors:#?}");
    assert_eq!(
        waiting, ROUNDS,
        "messages in hand at the close went back to the queue"
    );
    Ok(())
}
