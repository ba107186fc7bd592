//! The performance harness of `make bench` (issue #6).
//!
//! - `fp-bench-receiver`: a fast HTTPS endpoint in its own process that records each arrival and
//!   answers over a plain-HTTP control port ([`arrivals`] is the record format both sides share).
//! - `fp-bench`: the driver. It starts the real services against a fresh database and broker
//!   namespace ([`deployment`]), drives load through them ([`load`]), measures each phase
//!   ([`phase`]; CPU and memory from `/proc`, [`proc_stats`]) and the machine's own limits
//!   ([`limits`]), seeds a month of attempts and times the maintenance beside a load
//!   ([`lifecycle`]), and writes the figures ([`report`]).

pub mod arrivals;
pub mod deployment;
pub mod driver;
pub mod lifecycle;
pub mod limits;
pub mod load;
pub mod phase;
pub mod proc_stats;
pub mod report;

/// reqwest and rustls are built without a default crypto provider; the harness names ring once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Labels of the processes measured besides the services (whose labels are `<binary>#<n>`).
pub const LOAD: &str = "fp-bench (load)";
pub const RECEIVER: &str = "fp-bench-receiver";
pub const RABBITMQ: &str = "rabbitmq (server)";
/// The three nodes of the cluster phase together (containers of the local RabbitMQ image).
pub const RABBITMQ_CLUSTER: &str = "rabbitmq (3-node cluster)";
pub const POSTGRESQL: &str = "postgresql (server)";
