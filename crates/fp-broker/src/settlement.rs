//! Acks of deliveries handled concurrently, coalesced per channel.
//!
//! One ack per delivery is the broker's largest avoidable cost on a busy consumer: a quorum queue
//! settles a multiple-ack of many deliveries at the price of one. But a multiple-ack settles every
//! lower tag of its channel, finished or not, so it may only cover tags that are all settled.
//!
//! Each consuming channel has a window: the tags it handed out, in order, and how each was settled
//! (acked or handed back), if it was. A writer task sends what is settled whenever it is free:
//! the settled run at the start of the window as one multiple-ack, and every other settled tag on
//! its own at once, never held back behind an unfinished one (a slow endpoint must not keep the
//! finished deliveries after it unacked, where they would fill the prefetch and come back after a
//! crash). Nothing waits for company: a quiet consumer's ack leaves at once, a busy one's acks
//! gather while the previous frames are written.
//!
//! A window belongs to one channel. When its channel goes, the window closes: settling a delivery
//! of the old channel does nothing, and the broker hands that delivery out again by itself.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use lapin::Acker;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::DeliveryTag;
use tokio::sync::Notify;

use crate::amqp;

/// A delivery from a consumer whose acks are coalesced, with how to settle it.
pub struct Inbound {
    pub delivery: Delivery,
    pub settlement: Settlement,
}

/// Settles one delivery through its channel's window. Each settle returns once the frame that
/// settles it was written, or at once if its channel is gone (the broker then hands the delivery
/// out again).
pub struct Settlement {
    window: Arc<Window>,
    tag: DeliveryTag,
    acker: Acker,
}

impl Settlement {
    /// The delivery was handled: ack it.
    pub async fn ack(self) {
        self.settle(Verdict::Ack).await;
    }

    /// Returns the delivery to its queue (`basic.nack` with requeue).
    pub async fn requeue(self) {
        self.settle(Verdict::Requeue).await;
    }

    /// False once the delivery's channel is gone: settling it then does nothing.
    pub fn usable(&self) -> bool {
        self.acker.usable() && !self.window.lock().closed
    }

    async fn settle(self, verdict: Verdict) {
        let settled = {
            let mut state = self.window.lock();
            if state.closed {
                return;
            }
            // Tags ascend in the window; one that is not there was never handed out by it.
            let Ok(index) = state
                .handed_out
                .binary_search_by_key(&self.tag, |entry| entry.tag)
            else {
                return;
            };
            state.handed_out[index].verdict = Some((verdict, self.acker));
            state.settled += 1;
            state.settled
        };
        self.window.work.notify_one();
        loop {
            let flushed = self.window.flushed.notified();
            tokio::pin!(flushed);
            // Registered before the check, so a flush between the check and the wait is not missed.
            flushed.as_mut().enable();
            {
                let state = self.window.lock();
                if state.flushed >= settled || state.closed {
                    return;
                }
            }
            flushed.await;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ack,
    Requeue,
}

struct Entry<H> {
    tag: DeliveryTag,
    /// How it was settled, with the handle that sends it; `None` while it is being handled.
    verdict: Option<(Verdict, H)>,
}

/// One frame the writer sends.
#[derive(Debug, PartialEq, Eq)]
struct Frame<H> {
    verdict: Verdict,
    /// Also settles every lower tag of the channel.
    multiple: bool,
    tag: DeliveryTag,
    handle: H,
}

/// Takes every settled entry out of the window and says how to send them: the settled run at the
/// start as one multiple-ack (with the requeued ones in it nacked first, so the ack skips them),
/// then every other settled entry alone.
fn plan<H>(handed_out: &mut VecDeque<Entry<H>>) -> Vec<Frame<H>> {
    let mut frames = Vec::new();
    let mut run_end: Option<(DeliveryTag, H)> = None;
    let mut run_acks = 0_usize;
    while handed_out
        .front()
        .is_some_and(|entry| entry.verdict.is_some())
    {
        let Some(Entry {
            tag,
            verdict: Some((verdict, handle)),
        }) = handed_out.pop_front()
        else {
            break;
        };
        match verdict {
            Verdict::Ack => {
                run_end = Some((tag, handle));
                run_acks += 1;
            }
            Verdict::Requeue => frames.push(Frame {
                verdict,
                multiple: false,
                tag,
                handle,
            }),
        }
    }
    if let Some((tag, handle)) = run_end {
        frames.push(Frame {
            verdict: Verdict::Ack,
            multiple: run_acks > 1,
            tag,
            handle,
        });
    }
    handed_out.retain_mut(|entry| match entry.verdict.take() {
        Some((verdict, handle)) => {
            frames.push(Frame {
                verdict,
                multiple: false,
                tag: entry.tag,
                handle,
            });
            false
        }
        None => true,
    });
    frames
}

struct WindowState {
    handed_out: VecDeque<Entry<Acker>>,
    /// Settles so far, and how many of them the writer has sent.
    settled: u64,
    flushed: u64,
    closed: bool,
}

struct Window {
    state: Mutex<WindowState>,
    /// Wakes the writer: something was settled, or the window closed.
    work: Notify,
    /// Wakes the settlers waiting for their frame.
    flushed: Notify,
}

impl Window {
    fn lock(&self) -> MutexGuard<'_, WindowState> {
        // The state stays consistent under every panic point (none holds it half-changed).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The window of one consuming channel, held by its consumer: dropping it closes the window.
pub(crate) struct ChannelWindow {
    window: Arc<Window>,
}

impl ChannelWindow {
    /// Opens a window and starts its writer on the current runtime.
    pub(crate) fn open() -> Self {
        let window = Arc::new(Window {
            state: Mutex::new(WindowState {
                handed_out: VecDeque::new(),
                settled: 0,
                flushed: 0,
                closed: false,
            }),
            work: Notify::new(),
            flushed: Notify::new(),
        });
        tokio::spawn(write(window.clone()));
        ChannelWindow { window }
    }

    /// Records `delivery` as handed out; it must come from this window's channel, in order.
    pub(crate) fn hand_out(&self, delivery: Delivery) -> Inbound {
        let tag = delivery.delivery_tag;
        self.window
            .lock()
            .handed_out
            .push_back(Entry { tag, verdict: None });
        Inbound {
            settlement: Settlement {
                window: self.window.clone(),
                tag,
                acker: delivery.acker.clone(),
            },
            delivery,
        }
    }
}

impl Drop for ChannelWindow {
    fn drop(&mut self) {
        self.window.lock().closed = true;
        self.window.work.notify_one();
        self.window.flushed.notify_waiters();
    }
}

/// Sends what is settled whenever there is something, until the window closes.
async fn write(window: Arc<Window>) {
    loop {
        let (frames, settled, closed) = {
            let mut state = window.lock();
            let frames = plan(&mut state.handed_out);
            (frames, state.settled, state.closed)
        };
        if frames.is_empty() {
            if closed {
                return;
            }
            // `notify_one` keeps a permit, so a settle since the plan wakes this at once.
            window.work.notified().await;
            continue;
        }
        for frame in frames {
            send(frame).await;
        }
        window.lock().flushed = settled;
        window.flushed.notify_waiters();
    }
}

async fn send(frame: Frame<Acker>) {
    let sent = match frame.verdict {
        Verdict::Ack => frame
            .handle
            .ack(BasicAckOptions {
                multiple: frame.multiple,
            })
            .await
            .map_err(amqp("basic.ack")),
        Verdict::Requeue => frame
            .handle
            .nack(BasicNackOptions {
                multiple: false,
                requeue: true,
            })
            .await
            .map_err(amqp("basic.nack")),
    };
    match sent {
        Ok(true) => {
            let multiple = if frame.multiple { "true" } else { "false" };
            metrics::counter!("fp_broker_settle_frames_total", "multiple" => multiple).increment(1);
        }
        // The channel is gone: the broker hands its deliveries out again.
        Ok(false) => tracing::debug!(tag = frame.tag, "channel gone; not settled"),
        Err(error) => {
            tracing::warn!(%error, tag = frame.tag, "could not settle; the broker will hand it out again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(entries: &[(DeliveryTag, Option<Verdict>)]) -> VecDeque<Entry<DeliveryTag>> {
        entries
            .iter()
            .map(|&(tag, verdict)| Entry {
                tag,
                verdict: verdict.map(|verdict| (verdict, tag)),
            })
            .collect()
    }

    fn frame(verdict: Verdict, multiple: bool, tag: DeliveryTag) -> Frame<DeliveryTag> {
        Frame {
            verdict,
            multiple,
            tag,
            handle: tag,
        }
    }

    use Verdict::{Ack, Requeue};

    #[test]
    fn a_settled_run_at_the_start_is_one_multiple_ack() {
        let mut handed_out = window(&[(1, Some(Ack)), (2, Some(Ack)), (3, Some(Ack)), (4, None)]);
        assert_eq!(plan(&mut handed_out), vec![frame(Ack, true, 3)]);
        assert_eq!(handed_out.len(), 1);
        assert_eq!(handed_out[0].tag, 4);
    }

    #[test]
    fn settled_tags_behind_an_unfinished_one_go_alone_and_at_once() {
        let mut handed_out = window(&[
            (1, Some(Ack)),
            (2, None),
            (3, Some(Ack)),
            (4, Some(Requeue)),
            (5, None),
            (6, Some(Ack)),
        ]);
        assert_eq!(
            plan(&mut handed_out),
            vec![
                frame(Ack, false, 1),
                frame(Ack, false, 3),
                frame(Requeue, false, 4),
                frame(Ack, false, 6),
            ]
        );
        let left: Vec<_> = handed_out.iter().map(|entry| entry.tag).collect();
        assert_eq!(left, [2, 5]);
        // Nothing settled since: nothing to send.
        assert!(plan(&mut handed_out).is_empty());
    }

    #[test]
    fn a_requeued_tag_in_the_run_is_nacked_before_the_ack_that_skips_it() {
        let mut handed_out = window(&[(7, Some(Ack)), (8, Some(Requeue)), (9, Some(Ack))]);
        assert_eq!(
            plan(&mut handed_out),
            vec![frame(Requeue, false, 8), frame(Ack, true, 9)]
        );
        assert!(handed_out.is_empty());
    }

    #[test]
    fn a_run_of_requeues_sends_no_ack() {
        let mut handed_out = window(&[(1, Some(Requeue)), (2, Some(Requeue)), (3, None)]);
        assert_eq!(
            plan(&mut handed_out),
            vec![frame(Requeue, false, 1), frame(Requeue, false, 2)]
        );
    }
}
