//! Coalesced acks (`Broker::consume_settled`) on a real RabbitMQ: a multiple-ack settles every lower
//! tag of its channel, so it must never cover a delivery still being handled. After the consumer is
//! killed, exactly the deliveries that were not finished (and the one handed back) are in the queue
//! again; every acked one is gone.

use std::collections::BTreeSet;
use std::time::Duration;

use fp_broker::{Broker, Settlement};
use fp_testkit::environment::broker_url;
use fp_testkit::scratch_queue::ScratchQueue;
use futures_util::StreamExt;

const MESSAGES: usize = 16;
/// Never finished: in hand when the consumer is killed.
const UNFINISHED: [usize; 3] = [4, 8, 14];
/// Handed back to the queue (nack with requeue).
const REQUEUED: usize = 7;
const PATIENCE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coalesced_ack_never_settles_an_unfinished_delivery() -> anyhow::Result<()> {
    let queue = ScratchQueue::declare("acks", "settle-test").await?;
    let publisher = queue.admin.publisher();
    for index in 0..MESSAGES {
        queue.publish(&publisher, &index.to_string()).await?;
    }
    drop(publisher);

    let consumer = Broker::connect(&broker_url(), &queue.namespace).await?;
    let mut deliveries = consumer.consume_settled(&queue.name, "settle-test", 100);
    let mut in_hand: Vec<(usize, Settlement)> = Vec::new();
    for _ in 0..MESSAGES {
        let inbound = tokio::time::timeout(PATIENCE, deliveries.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the consumer ended"))?;
        let index: usize = std::str::from_utf8(&inbound.delivery.data)?.parse()?;
        in_hand.push((index, inbound.settlement));
    }

    // The first four finish together: a run at the start of the window, which one multiple-ack
    // may settle. The rest finish concurrently around the unfinished ones and the hand-back,
    // the later ones first.
    let (first_run, rest): (Vec<_>, Vec<_>) =
        in_hand.into_iter().partition(|(index, _)| *index < 4);
    futures_util::future::join_all(
        first_run
            .into_iter()
            .map(|(_, settlement)| settlement.ack()),
    )
    .await;
    let (unfinished, mut finishing): (Vec<_>, Vec<_>) = rest
        .into_iter()
        .partition(|(index, _)| UNFINISHED.contains(index));
    finishing.reverse();
    futures_util::future::join_all(finishing.into_iter().map(|(index, settlement)| async move {
        if index == REQUEUED {
            settlement.requeue().await;
        } else {
            settlement.ack().await;
        }
    }))
    .await;

    // Killed with deliveries in hand: the broker must give those back, and only those.
    consumer.close().await;
    // Settling a delivery of the closed channel does nothing, and returns.
    let mut unfinished = unfinished.into_iter();
    if let Some((_, settlement)) = unfinished.next() {
        // lapin marks the channel closed from its I/O thread, which may come just after `close`
        // returns.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while settlement.usable() {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "its channel is gone, but the delivery is still usable after {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::timeout(PATIENCE, settlement.ack()).await?;
    }
    drop(deliveries);

    let waiting = queue.ready().await?;
    let mut back = BTreeSet::new();
    let mut again = queue.admin.consume(&queue.name, "settle-test-check", 100);
    for _ in 0..waiting {
        let delivery = tokio::time::timeout(PATIENCE, again.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the check consumer ended"))?;
        back.insert(std::str::from_utf8(&delivery.data)?.parse::<usize>()?);
        fp_broker::ack(&delivery).await?;
    }
    drop(again);
    queue.delete().await?;

    let expected: BTreeSet<usize> = UNFINISHED.into_iter().chain([REQUEUED]).collect();
    assert_eq!(
        back, expected,
        "in the queue again: the unfinished deliveries and the requeued one, nothing acked"
    );
    Ok(())
}

/// A handler that panics drops its input's settlement unsettled. The delivery must come back
/// while its channel lives: left out, it would hold a prefetch slot, and wait, for as long as the
/// channel does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_dropped_unsettled_comes_back_while_its_channel_lives() -> anyhow::Result<()> {
    let queue = ScratchQueue::declare("acks", "drop-test").await?;
    let publisher = queue.admin.publisher();
    queue.publish(&publisher, "dropped").await?;
    drop(publisher);

    let consumer = Broker::connect(&broker_url(), &queue.namespace).await?;
    let mut deliveries = consumer.consume_settled(&queue.name, "drop-test", 10);
    let first = tokio::time::timeout(PATIENCE, deliveries.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the consumer ended"))?;
    anyhow::ensure!(
        !first.delivery.redelivered,
        "a fresh queue's first delivery"
    );
    let handler = tokio::spawn(async move {
        let _in_hand = first;
        panic!("the handler failed");
    });
    anyhow::ensure!(
        handler.await.is_err_and(|error| error.is_panic()),
        "the handler panicked"
    );

    let again = tokio::time::timeout(PATIENCE, deliveries.next())
        .await
        .map_err(|_| anyhow::anyhow!("the dropped delivery did not come back within {PATIENCE:?}"))?
        .ok_or_else(|| anyhow::anyhow!("the consumer ended"))?;
    assert_eq!(std::str::from_utf8(&again.delivery.data)?, "dropped");
    assert!(
        again.delivery.redelivered,
        "it came back as the same delivery, handed out again"
    );
    again.settlement.ack().await;
    drop(deliveries);
    consumer.close().await;
    let waiting = queue.ready().await?;
    queue.delete().await?;
    assert_eq!(waiting, 0, "acked the second time, it is gone");
    Ok(())
}
