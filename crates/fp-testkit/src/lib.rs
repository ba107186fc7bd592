//! Test harness shared by the end-to-end tests, `make run` and `make bench`.
//!
//! - [`receiver::TlsReceiver`]: a real HTTPS endpoint with a certificate from its own private CA,
//!   which the dispatcher trusts through `FP__DISPATCHER__EXTRA_ROOT_CERTS` and reaches through the
//!   loopback allow-list, as a tenant's endpoint would be reached.
//! - [`environment::TestEnvironment`]: a fresh database and broker namespace per test, and the real
//!   service binaries started as separate processes against them.
//! - [`browser::Browser`]: a headless Chromium driven over WebDriver (Debian's chromium and
//!   chromedriver), and [`dashboard::DashboardFixture`]: the dashboard on the real pipeline with
//!   users who can log in, for the browser tests.
//! - [`private_services`]: a PostgreSQL cluster and a RabbitMQ node of a test's own, for tests that
//!   stop and start them; [`environment::TestEnvironment::new_on`] runs a deployment on them.
//! - [`rabbitmq_cluster::RabbitCluster`]: a three-node RabbitMQ cluster in containers, whose nodes
//!   a test stops, starts, cuts off the network and heals.
//! - [`scratch_queue::ScratchQueue`]: a classic queue of a test's own, for the broker adapter's
//!   consumer tests.
//! - [`journal::examine`]: the fault tests' verdict, what the endpoint saw against the log.
//! - [`sessions`]: dashboard users and their sessions at the api.
//! - [`mail_sink::MailSink`]: a local SMTP server that keeps the emails it is sent (notifications).
//! - [`doc_includes`]: guides whose code blocks are the tested files they name.

pub mod browser;
pub mod certificates;
pub mod dashboard;
pub mod doc_includes;
pub mod environment;
pub mod journal;
pub mod mail_sink;
pub mod mock_services;
pub mod otlp;
pub mod pipeline;
pub mod private_services;
pub mod rabbitmq_cluster;
pub mod receiver;
pub mod scratch_queue;
pub mod seed;
pub mod sessions;

/// A mutex's guard, also after a panic elsewhere poisoned it: a test's journal stays readable.
pub fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Up to five items of a list, for a failure message.
pub fn examples<T: std::fmt::Debug>(items: &[T]) -> String {
    format!("{:?}", &items[..items.len().min(5)])
}

/// reqwest and rustls are built without a default crypto provider; tests name ring once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
