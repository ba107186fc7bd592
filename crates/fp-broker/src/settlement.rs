//! Acks of deliveries handled concurrently, coalesced per channel.
//!
//! One ack per delivery is the broker's largest avoidable cost on a busy consumer: a quorum queue
//! settles a multiple-ack of many deliveries at the price of one. But a multiple-ack settles every
//! lower tag of its channel, finished or not, so it may only cover tags that are all settled.
//!
//! Each consuming channel has a window: the tags it handed out, in order, and how each was settled
//! (acked or handed back), if it was. A writer task sends what is settled whenever it is free:
//! the settled run at the start of the window as one multiple-ack. A settled tag behind an
//! unfinished one waits for that one to finish, so it can join the run, but at most `hold`; then
//! it goes alone (a slow endpoint must not keep the finished deliveries after it unacked for long,
//! where they fill the prefetch and come back after a crash). Nothing waits for company: a quiet
//! consumer's ack leaves at once, a busy one's acks gather while the previous frames are written.
//!
//! A window belongs to one channel. When its channel goes, the window closes: settling a delivery
//! of the old channel does nothing, and the broker hands that delivery out again by itself.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use lapin::Acker;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::DeliveryTag;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

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
        let (done, sent) = oneshot::channel();
        {
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
            state.handed_out[index].settled = Some(Settled {
                verdict,
                at: Instant::now(),
                handle: self.acker,
                done,
            });
        }
        self.window.work.notify_one();
        // An error: the window closed before its frame was sent.
        let _ = sent.await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ack,
    Requeue,
}

struct Entry<H> {
    tag: DeliveryTag,
    /// `None` while it is being handled.
    settled: Option<Settled<H>>,
}

struct Settled<H> {
    verdict: Verdict,
    at: Instant,
    /// What sends its frame.
    handle: H,
    /// Told once its frame is sent.
    done: oneshot::Sender<()>,
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

/// Takes out of the window what is to be sent now and says how: the settled run at the start as
/// one multiple-ack (with the requeued ones in it nacked first, so the ack skips them), then every
/// settled entry behind an unfinished one that has waited `hold`, alone. The `done` of every entry
/// taken out goes to `done`. Returns when the next held entry's wait ends, if one is held.
fn plan<H>(
    handed_out: &mut VecDeque<Entry<H>>,
    now: Instant,
    hold: Duration,
    done: &mut Vec<oneshot::Sender<()>>,
) -> (Vec<Frame<H>>, Option<Instant>) {
    let mut frames = Vec::new();
    let mut run_end: Option<(DeliveryTag, H)> = None;
    let mut run_acks = 0_usize;
    while let Some(Entry {
        tag,
        settled: Some(_),
    }) = handed_out.front()
    {
        let tag = *tag;
        let Some(Entry {
            settled: Some(settled),
            ..
        }) = handed_out.pop_front()
        else {
            break;
        };
        done.push(settled.done);
        match settled.verdict {
            Verdict::Ack => {
                run_end = Some((tag, settled.handle));
                run_acks += 1;
            }
            Verdict::Requeue => frames.push(Frame {
                verdict: Verdict::Requeue,
                multiple: false,
                tag,
                handle: settled.handle,
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
    let mut next_due: Option<Instant> = None;
    handed_out.retain_mut(|entry| {
        let Some(due) = entry.settled.as_ref().map(|settled| settled.at + hold) else {
            return true;
        };
        if due > now {
            next_due = Some(next_due.map_or(due, |next| next.min(due)));
            return true;
        }
        let Some(settled) = entry.settled.take() else {
            return true;
        };
        done.push(settled.done);
        frames.push(Frame {
            verdict: settled.verdict,
            multiple: false,
            tag: entry.tag,
            handle: settled.handle,
        });
        false
    });
    (frames, next_due)
}

struct WindowState {
    handed_out: VecDeque<Entry<Acker>>,
    closed: bool,
}

struct Window {
    state: Mutex<WindowState>,
    /// Wakes the writer: something was settled, or the window closed.
    work: Notify,
    /// How long a settled tag behind an unfinished one may wait to join a multiple-ack.
    hold: Duration,
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
    pub(crate) fn open(hold: Duration) -> Self {
        let window = Arc::new(Window {
            state: Mutex::new(WindowState {
                handed_out: VecDeque::new(),
                closed: false,
            }),
            work: Notify::new(),
            hold,
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
            .push_back(Entry { tag, settled: None });
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
        let mut state = self.window.lock();
        state.closed = true;
        // Its channel is closing: the broker hands every unsettled delivery out again.
        state.handed_out.clear();
        drop(state);
        self.window.work.notify_one();
    }
}

/// Sends what is due whenever there is something, until the window closes.
async fn write(window: Arc<Window>) {
    let mut done = Vec::new();
    loop {
        let (frames, next_due) = {
            let mut state = window.lock();
            if state.closed {
                return;
            }
            plan(
                &mut state.handed_out,
                Instant::now(),
                window.hold,
                &mut done,
            )
        };
        if frames.is_empty() {
            // `notify_one` keeps a permit, so a settle since the plan wakes this at once.
            match next_due {
                Some(due) => {
                    tokio::select! {
                        () = window.work.notified() => {}
                        () = tokio::time::sleep_until(due) => {}
                    }
                }
                None => window.work.notified().await,
            }
            continue;
        }
        for frame in frames {
            send(frame).await;
        }
        for sent in done.drain(..) {
            let _ = sent.send(());
        }
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

    use Verdict::{Ack, Requeue};

    const HOLD: Duration = Duration::from_millis(20);

    /// A window of `(tag, settled: (verdict, how long ago))`, its handles the tags.
    fn window(
        now: Instant,
        entries: &[(DeliveryTag, Option<(Verdict, u64)>)],
    ) -> VecDeque<Entry<DeliveryTag>> {
        entries
            .iter()
            .map(|&(tag, settled)| Entry {
                tag,
                settled: settled.map(|(verdict, ago_ms)| Settled {
                    verdict,
                    at: now - Duration::from_millis(ago_ms),
                    handle: tag,
                    done: oneshot::channel().0,
                }),
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

    fn tags(handed_out: &VecDeque<Entry<DeliveryTag>>) -> Vec<DeliveryTag> {
        handed_out.iter().map(|entry| entry.tag).collect()
    }

    #[test]
    fn a_settled_run_at_the_start_is_one_multiple_ack() {
        let now = Instant::now();
        let mut handed_out = window(
            now,
            &[
                (1, Some((Ack, 0))),
                (2, Some((Ack, 0))),
                (3, Some((Ack, 0))),
                (4, None),
            ],
        );
        let mut done = Vec::new();
        let (frames, next_due) = plan(&mut handed_out, now, HOLD, &mut done);
        assert_eq!(frames, vec![frame(Ack, true, 3)]);
        assert_eq!(next_due, None);
        assert_eq!(done.len(), 3, "every acked entry is told");
        assert_eq!(tags(&handed_out), [4]);
    }

    #[test]
    fn a_settled_tag_behind_an_unfinished_one_waits_at_most_the_hold_then_goes_alone() {
        let now = Instant::now();
        let mut handed_out = window(
            now,
            &[
                (1, Some((Ack, 0))),
                (2, None),
                (3, Some((Ack, 25))),
                (4, Some((Requeue, 30))),
                (5, None),
                (6, Some((Ack, 5))),
            ],
        );
        let mut done = Vec::new();
        let (frames, next_due) = plan(&mut handed_out, now, HOLD, &mut done);
        assert_eq!(
            frames,
            vec![
                frame(Ack, false, 1),
                frame(Ack, false, 3),
                frame(Requeue, false, 4)
            ]
        );
        assert_eq!(done.len(), 3);
        // 6 waits for 5 (and 2) until 15 ms from now.
        assert_eq!(tags(&handed_out), [2, 5, 6]);
        assert_eq!(next_due, Some(now + Duration::from_millis(15)));

        // 2 and 5 finish in time: 6 joins the run.
        for entry in handed_out.iter_mut().filter(|entry| entry.tag != 6) {
            entry.settled = Some(Settled {
                verdict: Ack,
                at: now,
                handle: entry.tag,
                done: oneshot::channel().0,
            });
        }
        let (frames, next_due) = plan(&mut handed_out, now, HOLD, &mut done);
        assert_eq!(frames, vec![frame(Ack, true, 6)]);
        assert_eq!((next_due, handed_out.len(), done.len()), (None, 0, 6));
    }

    #[test]
    fn with_no_hold_a_settled_tag_behind_an_unfinished_one_goes_at_once() {
        let now = Instant::now();
        let mut handed_out = window(now, &[(1, None), (2, Some((Ack, 0)))]);
        let (frames, next_due) = plan(&mut handed_out, now, Duration::ZERO, &mut Vec::new());
        assert_eq!(frames, vec![frame(Ack, false, 2)]);
        assert_eq!((next_due, tags(&handed_out)), (None, vec![1]));
    }

    #[test]
    fn a_requeued_tag_in_the_run_is_nacked_before_the_ack_that_skips_it() {
        let now = Instant::now();
        let mut handed_out = window(
            now,
            &[
                (7, Some((Ack, 0))),
                (8, Some((Requeue, 0))),
                (9, Some((Ack, 0))),
            ],
        );
        let (frames, _) = plan(&mut handed_out, now, HOLD, &mut Vec::new());
        assert_eq!(frames, vec![frame(Requeue, false, 8), frame(Ack, true, 9)]);
        assert!(handed_out.is_empty());
    }

    #[test]
    fn a_run_of_requeues_sends_no_ack() {
        let now = Instant::now();
        let mut handed_out = window(
            now,
            &[(1, Some((Requeue, 0))), (2, Some((Requeue, 0))), (3, None)],
        );
        let (frames, _) = plan(&mut handed_out, now, HOLD, &mut Vec::new());
        assert_eq!(
            frames,
            vec![frame(Requeue, false, 1), frame(Requeue, false, 2)]
        );
    }
}
