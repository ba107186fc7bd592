//! Acks of deliveries handled concurrently, coalesced per channel.
//!
//! One ack per delivery costs a quorum queue about four times what one multiple-ack per 64
//! deliveries does (the bench's limits). But a multiple-ack settles every lower tag of its
//! channel, finished or not, so it may only cover tags that are all settled.
//!
//! Each consuming channel has a window: the tags it handed out, in order, and how each was settled
//! (acked or handed back), if it was. A writer task sends what is settled whenever it is free:
//! the settled run at the start of the window as one multiple-ack, and every other settled tag on
//! its own at once, never held back behind an unfinished one (a slow endpoint must not keep the
//! finished deliveries after it unacked, where they would fill the prefetch and come back after a
//! crash; holding them up to 20 ms made 3 times fewer frames but no gain beyond the bench's spread).
//! Nothing waits for company: a quiet consumer's ack leaves at once, a busy one's acks gather while
//! the previous frames are written.
//!
//! A window belongs to one channel. When its channel goes, the window closes (its consumer saw
//! it go, or the channel's connection ended): settling a delivery of the old channel does nothing,
//! and the broker hands that delivery out again by itself. A frame being written when the window
//! closes is not waited for any more: an ack handed to lapin as its connection failed never
//! resolved (why was not established), and the delivery it settled kept a dispatcher from
//! stopping on SIGTERM.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use lapin::Acker;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use lapin::types::DeliveryTag;
use tokio::sync::{Notify, oneshot};

use crate::amqp;

/// A delivery from a consumer whose acks are coalesced, with how to settle it.
pub struct Inbound {
    pub delivery: Delivery,
    pub settlement: Settlement,
}

/// Settles one delivery through its channel's window. Each settle returns once the frame that
/// settles it was written, or once its window is closed (its consumer was dropped or saw the
/// channel go, or the channel's connection ended): then its frame may or may not have gone out,
/// and if it did not, the broker hands the delivery out again.
///
/// Dropped unsettled (its handler panicked), it returns its delivery to the queue a second later
/// (`basic.reject`): left alone, the delivery would stay out, holding a prefetch slot, for as long
/// as its channel lives.
pub struct Settlement {
    window: Arc<Window<Acker>>,
    tag: DeliveryTag,
    /// Taken by the settle.
    acker: Option<Acker>,
}

impl Settlement {
    /// The delivery was handled: ack it.
    pub async fn ack(mut self) {
        self.settle(Verdict::Ack).await;
    }

    /// Returns the delivery to its queue (`basic.nack` with requeue).
    pub async fn requeue(mut self) {
        self.settle(Verdict::Requeue).await;
    }

    /// False once the delivery's channel is gone: settling it then does nothing.
    pub fn usable(&self) -> bool {
        self.acker.as_ref().is_some_and(Acker::usable) && !self.window.lock().closed
    }

    async fn settle(&mut self, verdict: Verdict) {
        let Some(acker) = self.acker.take() else {
            return;
        };
        if let Some(sent) = self.window.settle(self.tag, verdict, acker) {
            // An error: the window closed before its frame was known to be sent.
            let _ = sent.await;
        }
    }
}

/// How long a delivery dropped unsettled waits before it is requeued: one whose handler panics
/// every time comes back at most this often, until the queue's delivery limit dead-letters it.
const DROPPED_REQUEUE_DELAY: Duration = Duration::from_secs(1);

impl Drop for Settlement {
    fn drop(&mut self) {
        // Not on a channel already gone: the broker hands the delivery out again by itself.
        if !self.usable() {
            return;
        }
        let Some(acker) = self.acker.take() else {
            return;
        };
        tracing::warn!(
            tag = self.tag,
            "a delivery was dropped unsettled; returning it to its queue"
        );
        let (window, tag) = (self.window.clone(), self.tag);
        // On the window's runtime: the drop may come on a thread outside it.
        self.window.runtime.spawn(async move {
            tokio::time::sleep(DROPPED_REQUEUE_DELAY).await;
            window.settle(tag, Verdict::Reject, acker);
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ack,
    /// `basic.nack` with requeue.
    Requeue,
    /// `basic.reject` with requeue: a delivery dropped unsettled. It counts towards the queue's
    /// delivery limit on every RabbitMQ version (from 4.3 a nack no longer does), so one that
    /// fails its handler every time ends as a dead letter instead of looping.
    Reject,
}

struct Entry<H> {
    tag: DeliveryTag,
    /// `None` while it is being handled.
    settled: Option<Settled<H>>,
}

struct Settled<H> {
    verdict: Verdict,
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

/// Takes every settled entry out of the window and says how to send them: the settled run at the
/// start as one multiple-ack (with the requeued ones in it nacked first, so the ack skips them),
/// then every other settled entry alone. The `done` of every entry taken out goes to `done`.
fn plan<H>(
    handed_out: &mut VecDeque<Entry<H>>,
    done: &mut Vec<oneshot::Sender<()>>,
) -> Vec<Frame<H>> {
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
            verdict @ (Verdict::Requeue | Verdict::Reject) => frames.push(Frame {
                verdict,
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
    handed_out.retain_mut(|entry| {
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
    frames
}

/// Resolves once the connection of a window's channel is gone.
pub(crate) type ConnectionEnded = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Sends one frame: lapin's acker, or a stand-in in tests.
trait SettleHandle: Send + Sized + 'static {
    fn send(frame: Frame<Self>) -> impl Future<Output = ()> + Send;
}

impl SettleHandle for Acker {
    fn send(frame: Frame<Acker>) -> impl Future<Output = ()> + Send {
        send(frame)
    }
}

struct WindowState<H> {
    handed_out: VecDeque<Entry<H>>,
    closed: bool,
}

struct Window<H> {
    state: Mutex<WindowState<H>>,
    /// Wakes the idle writer: something was settled, or the window closed.
    work: Notify,
    /// Wakes the writer while it writes: the window closed. Apart from `work`, so that a settle
    /// does not wake a writer busy writing.
    closing: Notify,
    /// The runtime its writer runs on.
    runtime: tokio::runtime::Handle,
}

impl<H: SettleHandle> Window<H> {
    /// An open window with its writer started on the current runtime; it closes by itself once
    /// `connection_ended` resolves.
    fn open(connection_ended: ConnectionEnded) -> Arc<Self> {
        let window = Arc::new(Window {
            state: Mutex::new(WindowState {
                handed_out: VecDeque::new(),
                closed: false,
            }),
            work: Notify::new(),
            closing: Notify::new(),
            runtime: tokio::runtime::Handle::current(),
        });
        tokio::spawn(write(window.clone(), connection_ended));
        window
    }

    fn lock(&self) -> MutexGuard<'_, WindowState<H>> {
        // The state stays consistent under every panic point (none holds it half-changed).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn hand_out(&self, tag: DeliveryTag) {
        let mut state = self.lock();
        // A window whose connection ended may still be handed deliveries lapin had buffered;
        // they cannot be settled, and are not kept.
        if !state.closed {
            state.handed_out.push_back(Entry { tag, settled: None });
        }
    }

    /// Marks `tag` settled for the writer; what tells once its frame is sent, or `None` where
    /// there is nothing to send (the window closed, or the tag is not its own).
    fn settle(
        &self,
        tag: DeliveryTag,
        verdict: Verdict,
        handle: H,
    ) -> Option<oneshot::Receiver<()>> {
        let (done, sent) = oneshot::channel();
        {
            let mut state = self.lock();
            if state.closed {
                return None;
            }
            // Tags ascend in the window; one that is not there was never handed out by it.
            let index = state
                .handed_out
                .binary_search_by_key(&tag, |entry| entry.tag)
                .ok()?;
            state.handed_out[index].settled = Some(Settled {
                verdict,
                handle,
                done,
            });
        }
        self.work.notify_one();
        Some(sent)
    }

    fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        // Its channel is closing: the broker hands every unsettled delivery out again.
        state.handed_out.clear();
        drop(state);
        self.work.notify_one();
        self.closing.notify_one();
    }

    /// Resolves once the window is closed. Only the writer waits on this (`closing` wakes one
    /// waiter).
    async fn closed(&self) {
        loop {
            let notified = self.closing.notified();
            if self.lock().closed {
                return;
            }
            notified.await;
        }
    }
}

/// The window of one consuming channel, held by its consumer: dropping it closes the window.
pub(crate) struct ChannelWindow {
    window: Arc<Window<Acker>>,
}

impl ChannelWindow {
    /// Opens a window and starts its writer on the current runtime.
    pub(crate) fn open(connection_ended: ConnectionEnded) -> Self {
        ChannelWindow {
            window: Window::open(connection_ended),
        }
    }

    /// Records `delivery` as handed out; it must come from this window's channel, in order.
    pub(crate) fn hand_out(&self, delivery: Delivery) -> Inbound {
        let tag = delivery.delivery_tag;
        self.window.hand_out(tag);
        Inbound {
            settlement: Settlement {
                window: self.window.clone(),
                tag,
                acker: Some(delivery.acker.clone()),
            },
            delivery,
        }
    }
}

impl Drop for ChannelWindow {
    fn drop(&mut self) {
        self.window.close();
    }
}

/// Sends what is settled whenever there is something, until the window closes, or its
/// channel's connection ends (then it closes the window). Returning drops the `done` of the
/// frames not sent, which ends their settles' waits.
async fn write<H: SettleHandle>(window: Arc<Window<H>>, mut connection_ended: ConnectionEnded) {
    let mut done = Vec::new();
    loop {
        let frames = {
            let mut state = window.lock();
            if state.closed {
                return;
            }
            plan(&mut state.handed_out, &mut done)
        };
        if frames.is_empty() {
            // `notify_one` keeps a permit, so a settle since the plan wakes this at once.
            tokio::select! {
                () = window.work.notified() => continue,
                () = &mut connection_ended => break,
            }
        }
        let sending = async {
            for frame in frames {
                H::send(frame).await;
            }
        };
        tokio::select! {
            () = sending => {}
            () = window.closed() => return,
            () = &mut connection_ended => break,
        }
        for sent in done.drain(..) {
            let _ = sent.send(());
        }
    }
    // Nothing can be settled on a channel whose connection is gone: later settles return at
    // once, even while the consumer has not noticed (it is not polled during a drain).
    window.close();
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
        Verdict::Reject => frame
            .handle
            .reject(BasicRejectOptions { requeue: true })
            .await
            .map_err(amqp("basic.reject")),
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

    use Verdict::{Ack, Reject, Requeue};

    /// A window of `(tag, how it was settled)`, its handles the tags.
    fn window(entries: &[(DeliveryTag, Option<Verdict>)]) -> VecDeque<Entry<DeliveryTag>> {
        entries
            .iter()
            .map(|&(tag, settled)| Entry {
                tag,
                settled: settled.map(|verdict| Settled {
                    verdict,
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

    /// A frame that is never written, as an ack handed to lapin as its connection failed was
    /// not; `writing` is told once the writer has begun on it.
    struct NeverWritten {
        writing: Arc<Notify>,
    }

    impl SettleHandle for NeverWritten {
        fn send(frame: Frame<Self>) -> impl Future<Output = ()> + Send {
            frame.handle.writing.notify_one();
            std::future::pending()
        }
    }

    /// A window whose writer waits on a frame that is never written (tag 1), with a second
    /// settle behind it (tag 2).
    async fn window_stuck_on_a_frame(
        connection_ended: ConnectionEnded,
    ) -> (Arc<Window<NeverWritten>>, [oneshot::Receiver<()>; 2]) {
        let writing = Arc::new(Notify::new());
        let handle = || NeverWritten {
            writing: writing.clone(),
        };
        let window = Window::<NeverWritten>::open(connection_ended);
        window.hand_out(1);
        window.hand_out(2);
        let first = window
            .settle(1, Ack, handle())
            .expect("tag 1 was handed out by this window");
        writing.notified().await;
        let second = window
            .settle(2, Ack, handle())
            .expect("tag 2 was handed out by this window");
        (window, [first, second])
    }

    /// A connection that ends when the sender is dropped.
    fn connection_that_ends() -> (oneshot::Sender<()>, ConnectionEnded) {
        let (end, ended) = oneshot::channel::<()>();
        (
            end,
            Box::pin(async {
                let _ = ended.await;
            }),
        )
    }

    fn never_written() -> NeverWritten {
        NeverWritten {
            writing: Arc::new(Notify::new()),
        }
    }

    async fn assert_ended(settles: [oneshot::Receiver<()>; 2], after: &str) {
        for sent in settles {
            tokio::time::timeout(std::time::Duration::from_secs(5), sent)
                .await
                .unwrap_or_else(|_| panic!("a settle still waits after {after}"))
                .expect_err("its frame was never written");
        }
    }

    #[tokio::test]
    async fn a_settle_whose_frame_is_never_written_ends_when_its_window_closes() {
        let (window, settles) = window_stuck_on_a_frame(Box::pin(std::future::pending())).await;
        window.close();
        assert_ended(settles, "its window closed").await;
        assert!(
            window.settle(2, Ack, never_written()).is_none(),
            "a closed window takes no settle"
        );
    }

    #[tokio::test]
    async fn a_settle_whose_frame_is_never_written_ends_when_its_connection_does() {
        let (end, connection_ended) = connection_that_ends();
        let (window, settles) = window_stuck_on_a_frame(connection_ended).await;
        // The consumer has not noticed (a draining dispatcher does not poll it): only the
        // connection's end tells.
        drop(end);
        assert_ended(settles, "its connection ended").await;
        window.hand_out(3);
        assert!(
            window.settle(3, Ack, never_written()).is_none(),
            "a window whose connection ended takes no settle"
        );
    }

    #[tokio::test]
    async fn an_idle_window_closes_when_its_connection_ends() {
        let (end, connection_ended) = connection_that_ends();
        let window = Window::<NeverWritten>::open(connection_ended);
        window.hand_out(1);
        drop(end);
        tokio::time::timeout(std::time::Duration::from_secs(5), window.closed())
            .await
            .expect("an idle writer did not close its window when its connection ended");
        assert!(
            window.settle(1, Ack, never_written()).is_none(),
            "a window whose connection ended takes no settle"
        );
    }

    #[test]
    fn a_settled_run_at_the_start_is_one_multiple_ack() {
        let mut handed_out = window(&[(1, Some(Ack)), (2, Some(Ack)), (3, Some(Ack)), (4, None)]);
        let mut done = Vec::new();
        assert_eq!(plan(&mut handed_out, &mut done), vec![frame(Ack, true, 3)]);
        assert_eq!(done.len(), 3, "every acked entry is told");
        assert_eq!(tags(&handed_out), [4]);
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
        let mut done = Vec::new();
        assert_eq!(
            plan(&mut handed_out, &mut done),
            vec![
                frame(Ack, false, 1),
                frame(Ack, false, 3),
                frame(Requeue, false, 4),
                frame(Ack, false, 6),
            ]
        );
        assert_eq!(done.len(), 4);
        assert_eq!(tags(&handed_out), [2, 5]);
        // Nothing settled since: nothing to send.
        assert!(plan(&mut handed_out, &mut done).is_empty());
    }

    #[test]
    fn a_requeued_tag_in_the_run_is_nacked_before_the_ack_that_skips_it() {
        let mut handed_out = window(&[(7, Some(Ack)), (8, Some(Requeue)), (9, Some(Ack))]);
        assert_eq!(
            plan(&mut handed_out, &mut Vec::new()),
            vec![frame(Requeue, false, 8), frame(Ack, true, 9)]
        );
        assert!(handed_out.is_empty());
    }

    #[test]
    fn a_rejected_tag_goes_alone_and_ends_the_run_before_it() {
        let mut handed_out = window(&[(1, Some(Ack)), (2, Some(Ack)), (3, Some(Reject))]);
        assert_eq!(
            plan(&mut handed_out, &mut Vec::new()),
            vec![frame(Reject, false, 3), frame(Ack, true, 2)]
        );
    }

    #[test]
    fn a_run_of_requeues_sends_no_ack() {
        let mut handed_out = window(&[(1, Some(Requeue)), (2, Some(Requeue)), (3, None)]);
        assert_eq!(
            plan(&mut handed_out, &mut Vec::new()),
            vec![frame(Requeue, false, 1), frame(Requeue, false, 2)]
        );
    }
}
