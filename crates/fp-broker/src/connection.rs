//! The one connection supervisor every service uses. It keeps a process connected to RabbitMQ:
//! on a lost connection it reconnects with jittered backoff, to any of the configured nodes,
//! declares again what the service owns, and lets publishers and consumers (`publisher`,
//! `consumer`) re-attach to the new connection. While it is down, publishes are refused at once
//! with [`BrokerError::Unavailable`] instead of failing one by one on a dead channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties, Event};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::consumer::{
    Consumers, Deliveries, Plain, SettledDeliveries, StoppedConsumers, Windowed,
};
use crate::owned_channel::OwnedChannel;
use crate::publisher::Publisher;
use crate::topology::QueueOptions;
use crate::{BrokerError, Names, amqp, topology};

/// Longest pause between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// First pause after a failed attempt; doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// One node that does not answer within this is skipped for the next.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the broker to confirm a close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a connection's state is looked at, besides lapin's error events.
const LIVENESS_POLL: Duration = Duration::from_millis(250);
/// The AMQP heartbeat asked for when a node's URL names none (`?heartbeat=N` wins). A node that
/// vanishes without closing its sockets (cut off by the network, its host gone) is given up after
/// two silent heartbeat intervals: 20 s instead of the two minutes of RabbitMQ's default 60 s,
/// during which a publish would wait for its confirm and a consumer for messages.
const DEFAULT_HEARTBEAT_SECS: u16 = 10;

/// What a service declares on every (re)connect, so a broker that lost its definitions, or another
/// node of a cluster, has them before anything is published or consumed.
#[derive(Debug, Clone, Default)]
pub struct Declarations {
    /// Every exchange, queue and binding of the namespace (`topology::declare_topology`).
    pub topology: bool,
    /// The delay queues of these retry tiers.
    pub delay_tiers: Vec<Duration>,
    /// The x-arguments of every queue declared (`broker.quorum_initial_group_size`).
    pub queues: QueueOptions,
}

impl Declarations {
    /// The namespace's topology and nothing else: what every service but the dispatcher owns.
    pub fn topology(queues: QueueOptions) -> Self {
        Declarations {
            topology: true,
            delay_tiers: Vec::new(),
            queues,
        }
    }
}

/// One live connection; a reconnect makes a new one with the next generation number.
pub(crate) struct Session {
    pub(crate) generation: u64,
    pub(crate) connection: Connection,
}

impl Session {
    async fn shut_down(&self) {
        // Closing a connection that already failed can only fail too: nothing to report.
        self.connection
            .close(200, "shutting down".into())
            .await
            .ok();
    }
}

#[derive(Clone)]
enum Link {
    Down { since: Instant, error: Arc<str> },
    Up(Arc<Session>),
    Closed,
}

struct Shared {
    endpoints: Vec<String>,
    names: Names,
    declarations: Declarations,
    link: watch::Sender<Link>,
    generations: AtomicU64,
    /// The node to try first: after a loss, the one after the node that was lost.
    next_endpoint: AtomicUsize,
    /// Closes of channels their owners dropped (`OwnedChannel`); `close` waits for them.
    channel_closes: TaskTracker,
    consumers: Consumers,
}

/// A supervised connection to RabbitMQ and the names of one namespace. Cheap to clone; every clone
/// shares the connection.
#[derive(Clone)]
pub struct Broker {
    shared: Arc<Shared>,
    pub names: Names,
}

/// The nodes of `broker.url`: one AMQP URL, or several separated by commas (the nodes of a cluster).
pub fn endpoints(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Broker {
    /// Starts supervising at once and returns without waiting: the service can serve (and say it is
    /// not ready) while the broker is away. `urls` is `broker.url`.
    pub fn supervise(urls: &str, namespace: &str, declarations: Declarations) -> Broker {
        let (link, _) = watch::channel(Link::Down {
            since: Instant::now(),
            error: "not connected yet".into(),
        });
        let names = Names::new(namespace);
        let shared = Arc::new(Shared {
            endpoints: endpoints(urls),
            names: names.clone(),
            declarations,
            link,
            generations: AtomicU64::new(0),
            next_endpoint: AtomicUsize::new(0),
            channel_closes: TaskTracker::new(),
            consumers: Consumers::default(),
        });
        tokio::spawn(supervise(shared.clone()));
        Broker { shared, names }
    }

    /// Connects once and fails if no node answers (for tools and tests, which should say so at
    /// once); once connected, the connection is supervised like any other.
    pub async fn connect(urls: &str, namespace: &str) -> Result<Broker, BrokerError> {
        Self::connect_with(urls, namespace, QueueOptions::default()).await
    }

    /// As [`Broker::connect`], declaring queues (`declare_topology`) with `queues` (what
    /// `fpctl migrate` does with the `broker.*` settings).
    pub async fn connect_with(
        urls: &str,
        namespace: &str,
        queues: QueueOptions,
    ) -> Result<Broker, BrokerError> {
        let names = Names::new(namespace);
        let shared = Arc::new(Shared {
            endpoints: endpoints(urls),
            names: names.clone(),
            declarations: Declarations {
                topology: false,
                delay_tiers: Vec::new(),
                queues,
            },
            link: watch::channel(Link::Closed).0,
            generations: AtomicU64::new(0),
            next_endpoint: AtomicUsize::new(0),
            channel_closes: TaskTracker::new(),
            consumers: Consumers::default(),
        });
        let session = open_session(&shared).await?;
        shared.link.send_replace(Link::Up(Arc::new(session)));
        tokio::spawn(supervise(shared.clone()));
        Ok(Broker { shared, names })
    }

    /// Whether a connection is up now (readiness).
    pub fn is_connected(&self) -> bool {
        matches!(*self.shared.link.borrow(), Link::Up(_))
    }

    /// `Ok` while connected; otherwise since when and why not (readiness).
    pub fn status(&self) -> Result<(), String> {
        self.session()
            .map(|_| ())
            .map_err(|error| error.to_string())
    }

    /// [`Broker::status`] as a readiness check a health registry can own.
    pub fn readiness_check(&self) -> impl Fn() -> Result<(), String> + Send + Sync + 'static {
        let broker = self.clone();
        move || broker.status()
    }

    /// Waits up to `patience` for a connection.
    pub async fn wait_connected(&self, patience: Duration) -> Result<(), BrokerError> {
        tokio::time::timeout(patience, self.session_when_up())
            .await
            .ok()
            .flatten()
            .map(|_| ())
            .ok_or_else(|| self.unavailable())
    }

    /// The current connection, or `Unavailable` saying since when and why there is none.
    pub(crate) fn session(&self) -> Result<Arc<Session>, BrokerError> {
        match &*self.shared.link.borrow() {
            Link::Up(session) => Ok(session.clone()),
            _ => Err(self.unavailable()),
        }
    }

    /// The next connection that is up; `None` once the broker is closed.
    pub(crate) async fn session_when_up(&self) -> Option<Arc<Session>> {
        let mut link = self.shared.link.subscribe();
        let state = link
            .wait_for(|link| !matches!(link, Link::Down { .. }))
            .await
            .ok()?;
        match &*state {
            Link::Up(session) => Some(session.clone()),
            _ => None,
        }
    }

    /// Resolves once connection `generation` is no longer the live one (lost, replaced or
    /// closed): what was sent on its channels and not yet answered never will be.
    pub(crate) fn connection_ended(
        &self,
        generation: u64,
    ) -> impl Future<Output = ()> + Send + 'static {
        let mut link = self.shared.link.subscribe();
        async move {
            let _ = link
                .wait_for(
                    |link| !matches!(link, Link::Up(session) if session.generation == generation),
                )
                .await;
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        matches!(*self.shared.link.borrow(), Link::Closed)
    }

    /// Resolves when `close` is called.
    pub(crate) async fn closed(&self) {
        let mut link = self.shared.link.subscribe();
        let _ = link.wait_for(|link| matches!(link, Link::Closed)).await;
    }

    fn unavailable(&self) -> BrokerError {
        match &*self.shared.link.borrow() {
            Link::Down { since, error } => BrokerError::Unavailable {
                reason: format!(
                    "not connected to RabbitMQ for {} s, reconnecting (last error: {error})",
                    since.elapsed().as_secs()
                ),
            },
            Link::Closed => BrokerError::Unavailable {
                reason: "the RabbitMQ connection was closed (shutting down)".to_owned(),
            },
            Link::Up(_) => BrokerError::Unavailable {
                reason: "the RabbitMQ connection was replaced; try again".to_owned(),
            },
        }
    }

    /// A channel on the current connection that is closed, in order, when dropped.
    pub(crate) async fn owned_channel(&self) -> Result<(u64, OwnedChannel), BrokerError> {
        let session = self.session()?;
        let channel = session
            .connection
            .create_channel()
            .await
            .map_err(amqp("channel.open"))?;
        Ok((
            session.generation,
            OwnedChannel::new(channel, self.shared.channel_closes.clone()),
        ))
    }

    /// A channel on the current connection.
    pub async fn channel(&self) -> Result<Channel, BrokerError> {
        self.session()?
            .connection
            .create_channel()
            .await
            .map_err(amqp("channel.open"))
    }

    /// Declares every exchange, queue and binding of the namespace. Idempotent.
    pub async fn declare_topology(&self) -> Result<(), BrokerError> {
        let channel = self.channel().await?;
        topology::declare_topology(&channel, &self.names, self.shared.declarations.queues).await?;
        channel.close(200, "topology declared".into()).await.ok();
        Ok(())
    }

    /// How many messages are ready in `queue` now (a passive declare: nothing is created), e.g.
    /// the dead-letter queue's, for a gauge.
    pub async fn queue_depth(&self, queue: &str) -> Result<u32, BrokerError> {
        let (_, owned) = self.owned_channel().await?;
        let declared = owned
            .channel
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..lapin::options::QueueDeclareOptions::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .map_err(amqp("queue.declare passive"))?;
        Ok(declared.message_count())
    }

    /// Removes the namespace's exchanges and queues (tests, retiring a namespace).
    pub async fn delete_topology(&self, delay_tiers: &[Duration]) -> Result<(), BrokerError> {
        let channel = self.channel().await?;
        topology::delete_topology(&channel, &self.names, delay_tiers).await?;
        channel.close(200, "topology deleted".into()).await.ok();
        Ok(())
    }

    /// A publisher with confirms, re-attached to every new connection. Keep one per process (or a
    /// few, for independent flows) and share it.
    pub fn publisher(&self) -> Publisher {
        Publisher::new(self.clone())
    }

    /// The deliveries of `queue` with at most `prefetch` unacknowledged, consumed again on every
    /// new connection. Ends only when the broker is closed.
    pub fn consume(&self, queue: &str, consumer_tag: &str, prefetch: u16) -> Deliveries {
        crate::consumer::consume(self.clone(), queue, consumer_tag, prefetch, Plain)
    }

    /// Like [`Broker::consume`], for deliveries handled concurrently: each comes with its
    /// [`Settlement`](crate::Settlement), and the acks of one channel are coalesced into
    /// multiple-acks wherever that settles nothing unfinished.
    pub fn consume_settled(
        &self,
        queue: &str,
        consumer_tag: &str,
        prefetch: u16,
    ) -> SettledDeliveries {
        crate::consumer::consume(self.clone(), queue, consumer_tag, prefetch, Windowed)
    }

    /// Cancels every consumer of this broker (`basic.cancel`), and starts none from now on: the
    /// broker sends them nothing more, while their channels stay open to settle what they handed
    /// out. Their streams yield nothing more (at most the one delivery a poll already waited
    /// for) and end when the broker closes; what lapin had buffered returns to the queues when
    /// the channels close. For a service that stops: what it drains is not refilled behind it.
    pub async fn stop_consuming(&self) -> StoppedConsumers {
        self.shared.consumers.stop().await
    }

    pub(crate) fn consumers(&self) -> &Consumers {
        &self.shared.consumers
    }

    /// Stops supervising and closes the connection; consumers end, publishes are refused. Channels
    /// already given up are closed first, while the connection can still carry their close.
    pub async fn close(&self) {
        let previous = self.shared.link.send_replace(Link::Closed);
        let channel_closes = &self.shared.channel_closes;
        channel_closes.close();
        // A broker that does not answer the close must not hold up a process that stops.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, channel_closes.wait()).await;
        if let Link::Up(session) = previous {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.shut_down()).await;
        }
    }
}

impl Shared {
    /// Moves the link to `next`, unless `close` came first (then it stays closed): `false`.
    fn replace_unless_closed(&self, next: Link) -> bool {
        self.link.send_if_modified(|link| {
            if matches!(link, Link::Closed) {
                return false;
            }
            *link = next;
            true
        })
    }
}

/// Keeps the connection up until the broker is closed.
async fn supervise(shared: Arc<Shared>) {
    let mut failures: u32 = 0;
    let mut ever_connected = false;
    metrics::gauge!("fp_broker_connected").set(0.0);
    loop {
        let current = shared.link.borrow().clone();
        match current {
            Link::Closed => return,
            Link::Up(session) => {
                // `None`: `close` was called, and closes this session itself.
                let Some(reason) = wait_lost(&session.connection, &shared).await else {
                    return;
                };
                tracing::warn!(reason = %reason, "lost the RabbitMQ connection; reconnecting");
                metrics::gauge!("fp_broker_connected").set(0.0);
                shared.next_endpoint.fetch_add(1, Ordering::Relaxed);
                let down = Link::Down {
                    since: Instant::now(),
                    error: reason.as_str().into(),
                };
                if !shared.replace_unless_closed(down) {
                    return;
                }
            }
            Link::Down { since, .. } => match open_session(&shared).await {
                Ok(session) => {
                    failures = 0;
                    let session = Arc::new(session);
                    if !shared.replace_unless_closed(Link::Up(session.clone())) {
                        session.shut_down().await;
                        return;
                    }
                    metrics::gauge!("fp_broker_connected").set(1.0);
                    if ever_connected {
                        metrics::counter!("fp_broker_reconnects_total").increment(1);
                    }
                    ever_connected = true;
                    tracing::info!(
                        generation = session.generation,
                        down_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
                        "connected to RabbitMQ"
                    );
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let delay = backoff(failures);
                    tracing::warn!(
                        %error,
                        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "cannot reach RabbitMQ; retrying"
                    );
                    let recorded = shared.link.send_if_modified(|link| {
                        if let Link::Down { error: last, .. } = link {
                            *last = error.to_string().into();
                            return true;
                        }
                        false
                    });
                    if !recorded {
                        return;
                    }
                    let mut link = shared.link.subscribe();
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = link.wait_for(|link| matches!(link, Link::Closed)) => return,
                    }
                }
            },
        }
    }
}

/// Tries every node once, starting with `next_endpoint`, and declares what the service owns on
/// the first that answers.
async fn open_session(shared: &Shared) -> Result<Session, BrokerError> {
    let count = shared.endpoints.len();
    if count == 0 {
        return Err(BrokerError::Connect {
            url: String::new(),
            reason: "broker.url names no node".to_owned(),
        });
    }
    let first = shared.next_endpoint.load(Ordering::Relaxed);
    let mut last_error = None;
    for offset in 0..count {
        let index = (first + offset) % count;
        let url = &shared.endpoints[index];
        let uri = match with_default_heartbeat(url) {
            Ok(uri) => uri,
            Err(reason) => {
                last_error = Some(BrokerError::Connect {
                    url: crate::redact(url),
                    reason,
                });
                continue;
            }
        };
        let connected = tokio::time::timeout(
            CONNECT_TIMEOUT,
            Connection::connect_uri(uri, ConnectionProperties::default()),
        )
        .await;
        let connection = match connected {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => {
                last_error = Some(BrokerError::Connect {
                    url: crate::redact(url),
                    reason: error.to_string(),
                });
                continue;
            }
            Err(_) => {
                last_error = Some(BrokerError::Connect {
                    url: crate::redact(url),
                    reason: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                });
                continue;
            }
        };
        if let Err(error) = declare(&connection, shared).await {
            connection
                .close(200, "declarations failed".into())
                .await
                .ok();
            return Err(error);
        }
        shared.next_endpoint.store(index, Ordering::Relaxed);
        let generation = shared.generations.fetch_add(1, Ordering::Relaxed) + 1;
        return Ok(Session {
            generation,
            connection,
        });
    }
    Err(last_error.unwrap_or(BrokerError::Connect {
        url: String::new(),
        reason: "no node tried".to_owned(),
    }))
}

/// A node's URL parsed, with [`DEFAULT_HEARTBEAT_SECS`] unless it asks for a heartbeat itself.
fn with_default_heartbeat(url: &str) -> Result<AMQPUri, String> {
    let mut uri: AMQPUri = url
        .parse()
        .map_err(|error| format!("not an AMQP URL: {error}"))?;
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(DEFAULT_HEARTBEAT_SECS);
    }
    Ok(uri)
}

async fn declare(connection: &Connection, shared: &Shared) -> Result<(), BrokerError> {
    let declarations = &shared.declarations;
    if !declarations.topology && declarations.delay_tiers.is_empty() {
        return Ok(());
    }
    let names = &shared.names;
    let channel = connection
        .create_channel()
        .await
        .map_err(amqp("channel.open"))?;
    if declarations.topology {
        topology::declare_topology(&channel, names, declarations.queues).await?;
    }
    if !declarations.delay_tiers.is_empty() {
        topology::declare_delay_tiers(
            &channel,
            names,
            &declarations.delay_tiers,
            declarations.queues,
        )
        .await?;
    }
    channel.close(200, "declared".into()).await.ok();
    Ok(())
}

/// Waits until `connection` fails; `None` when the broker is closed first.
async fn wait_lost(connection: &Connection, shared: &Shared) -> Option<String> {
    let mut events = connection.events_listener();
    let mut link = shared.link.subscribe();
    let mut poll = tokio::time::interval(LIVENESS_POLL);
    loop {
        tokio::select! {
            event = events.next() => match event {
                // A channel's error (a queue that is gone, say) is reported here too, on a
                // connection that is still up: only a connection that is down is lost.
                Some(Event::Error(error)) if !connection.status().connected() => {
                    return Some(error.to_string());
                }
                Some(_) => {}
                None => return Some("the connection's event stream ended".to_owned()),
            },
            _ = poll.tick() => {
                if !connection.status().connected() {
                    return Some("the connection is no longer open".to_owned());
                }
            }
            _ = link.wait_for(|link| matches!(link, Link::Closed)) => return None,
        }
    }
}

/// Exponential backoff with full jitter within its upper half, so many processes that lost the
/// same broker do not come back in step.
pub(crate) fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let ceiling = FIRST_BACKOFF
        .saturating_mul(1u32 << exponent)
        .min(MAX_BACKOFF);
    ceiling.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_url_names_one_node_or_a_cluster() {
        assert_eq!(
            endpoints("amqp://a:5672/%2f"),
            vec!["amqp://a:5672/%2f".to_owned()]
        );
        assert_eq!(
            endpoints(" amqp://a:5672/%2f, amqp://b:5672/%2f ,,amqp://c:5672/%2f"),
            vec![
                "amqp://a:5672/%2f".to_owned(),
                "amqp://b:5672/%2f".to_owned(),
                "amqp://c:5672/%2f".to_owned()
            ]
        );
        assert!(endpoints(" , ").is_empty());
    }

    #[test]
    fn a_node_without_a_heartbeat_of_its_own_gets_the_default() {
        let uri = with_default_heartbeat("amqp://u:p@10.0.0.1:5672/%2f").expect("valid");
        assert_eq!(uri.query.heartbeat, Some(DEFAULT_HEARTBEAT_SECS));
        assert_eq!(uri.authority.host, "10.0.0.1");
        let uri = with_default_heartbeat("amqp://10.0.0.1:5672/%2f?heartbeat=30").expect("valid");
        assert_eq!(uri.query.heartbeat, Some(30));
        let error = with_default_heartbeat("http://10.0.0.1").expect_err("not AMQP");
        assert!(error.contains("not an AMQP URL"), "{error}");
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap() {
        for failures in 1u32..40 {
            let ceiling = FIRST_BACKOFF
                .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
                .min(MAX_BACKOFF);
            let delay = backoff(failures);
            assert!(delay <= ceiling, "{failures}: {delay:?} > {ceiling:?}");
            assert!(
                delay >= ceiling / 2,
                "{failures}: {delay:?} < half of {ceiling:?}"
            );
        }
        assert!(backoff(100) <= MAX_BACKOFF);
    }

    #[tokio::test]
    async fn with_no_node_it_refuses_at_once_and_says_why() {
        let broker = Broker::supervise("", "t", Declarations::default());
        let publisher = broker.publisher();
        let refused = publisher.publish(&crate::OutgoingMessage {
            exchange: "t.events",
            routing_key: "x",
            message_id: "1",
            parent: None,
            payload: b"",
            headers: &[],
            expiration: None,
        });
        let error = refused.await.expect_err("no connection");
        assert!(matches!(error, BrokerError::Unavailable { .. }), "{error}");
        assert!(broker.status().is_err());
        broker.close().await;
        let closed = broker.status().expect_err("closed");
        assert!(closed.contains("closed"), "{closed}");
    }
}
