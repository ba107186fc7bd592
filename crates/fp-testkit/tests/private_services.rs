//! The private PostgreSQL cluster and RabbitMQ node of `fp_testkit::private_services`, really
//! stopped and started: what a stopped server refuses, what a restarted one kept, and a deployment
//! (`TestEnvironment::new_on`) set up and torn down on them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, ensure};
use diesel::QueryableByName;
use diesel::sql_types::Integer;
use diesel_async::RunQueryDsl;
use fp_testkit::environment::{ServiceEndpoints, TestEnvironment, binaries_dir};
use fp_testkit::private_services::{PrivatePostgres, PrivateRabbit};
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

/// A connection attempt to a server that is down must fail, not hang: this bounds it.
const CONNECT_LIMIT: Duration = Duration::from_secs(20);

/// Scratch directory of one test; the private servers remove their own directories inside it.
fn scratch_dir(test: &str) -> anyhow::Result<PathBuf> {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    Ok(binaries_dir()?
        .join("test-runs")
        .join(format!("private_{test}_{}", &suffix[..10])))
}

#[derive(QueryableByName)]
struct One {
    #[diesel(sql_type = Integer)]
    one: i32,
}

async fn select_one(url: &str) -> anyhow::Result<i32> {
    let mut conn = tokio::time::timeout(CONNECT_LIMIT, fp_store::connect(url))
        .await
        .context("connecting timed out")??;
    let row: One = diesel::sql_query("SELECT 1 AS one")
        .get_result(&mut conn)
        .await?;
    Ok(row.one)
}

async fn amqp_connect(url: &str) -> anyhow::Result<Connection> {
    Ok(tokio::time::timeout(
        CONNECT_LIMIT,
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    .context("connecting timed out")??)
}

async fn declare_durable_quorum_queue(channel: &Channel, queue: &str) -> anyhow::Result<()> {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await?;
    Ok(())
}

/// Takes (and acks) the next message of `queue`; `None` if it is empty.
async fn take_message(url: &str, queue: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let connection = amqp_connect(url).await?;
    let channel = connection.create_channel().await?;
    let message = channel
        .basic_get(queue.into(), BasicGetOptions::default())
        .await?;
    let body = match message {
        Some(message) => {
            message.delivery.ack(BasicAckOptions::default()).await?;
            Some(message.delivery.data.clone())
        }
        None => None,
    };
    connection.close(200, "done".into()).await?;
    Ok(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_postgres_refuses_connections_when_stopped_and_serves_again_after_start()
-> anyhow::Result<()> {
    let dir = scratch_dir("postgres")?;
    let postgres = PrivatePostgres::start(&dir).await?;
    ensure!(
        postgres.port() != 5432,
        "the private cluster took the shared port"
    );
    assert_eq!(select_one(&postgres.admin_url()).await?, 1);

    postgres.stop().await?;
    let refused = select_one(&postgres.admin_url()).await;
    ensure!(
        refused.is_err(),
        "a stopped cluster still answered: {refused:?}"
    );

    postgres.start_again().await?;
    assert_eq!(select_one(&postgres.admin_url()).await?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_rabbit_keeps_persistent_messages_across_a_node_restart() -> anyhow::Result<()> {
    let dir = scratch_dir("rabbit")?;
    let mut rabbit = PrivateRabbit::start(&dir).await?;
    ensure!(
        rabbit.amqp_port() != 5672,
        "the private node took the shared port"
    );
    ensure!(rabbit.node_name().starts_with("fp-test-"));
    let url = rabbit.amqp_url();
    let queue = "private-services-durable";
    let body = b"kept across a restart".to_vec();

    let connection = amqp_connect(&url).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    declare_durable_quorum_queue(&channel, queue).await?;
    let confirmation = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await?
        .await?;
    ensure!(
        matches!(confirmation, lapin::Confirmation::Ack(None)),
        "the publish was not confirmed: {confirmation:?}"
    );
    connection.close(200, "published".into()).await?;

    rabbit.stop().await?;
    let refused = amqp_connect(&url).await;
    ensure!(
        refused.is_err(),
        "a stopped node still accepted an AMQP connection"
    );

    rabbit.start_again().await?;
    let kept = take_message(&url, queue).await?;
    assert_eq!(
        kept.as_deref(),
        Some(body.as_slice()),
        "the persistent message did not survive the restart"
    );

    // The application alone: the Erlang node stays up, AMQP goes and comes back.
    rabbit.stop_app().await?;
    let refused = amqp_connect(&url).await;
    ensure!(
        refused.is_err(),
        "the node still accepted AMQP after stop_app"
    );
    rabbit.start_app().await?;
    assert_eq!(
        take_message(&url, queue).await?,
        None,
        "the queue should be back, and empty"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_environment_is_set_up_and_torn_down_on_private_services() -> anyhow::Result<()> {
    let dir = scratch_dir("environment")?;
    let postgres = PrivatePostgres::start(&dir).await?;
    let rabbit = PrivateRabbit::start(&dir).await?;
    let endpoints = ServiceEndpoints::private(&postgres, &rabbit);

    let env = TestEnvironment::new_on("private", &endpoints).await?;
    ensure!(
        env.database_url
            .starts_with(&format!("postgres://fp_app@127.0.0.1:{}/", postgres.port())),
        "the deployment's database is not on the private cluster: {}",
        env.database_url
    );
    // Migrated: the application role reaches its database on the private cluster.
    assert_eq!(select_one(&env.database_url).await?, 1);
    // The topology is on the private node: the dispatcher queue exists there.
    let connection = amqp_connect(&rabbit.amqp_url()).await?;
    let channel = connection.create_channel().await?;
    let dispatcher_queue = fp_broker::Names::new(&env.namespace).dispatcher_queue;
    channel
        .queue_declare(
            dispatcher_queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .context("the migrated topology is missing on the private node")?;
    connection.close(200, "checked".into()).await?;

    let database_url = env.database_url.clone();
    env.finish().await?;
    let dropped = select_one(&database_url).await;
    ensure!(
        dropped.is_err(),
        "the deployment's database is still there after finish()"
    );
    Ok(())
}
