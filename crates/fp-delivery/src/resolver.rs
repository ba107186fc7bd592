//! Name resolution that only ever yields addresses the policy allows.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use fp_domain::address_policy::{AddressPolicy, Blocked};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::LookupIpStrategy;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// A name lookup failed (no such name, no answer, resolver unreachable).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{name}: {reason}")]
pub struct LookupFailed {
    pub name: String,
    pub reason: String,
}

/// Carries the policy's verdict through reqwest's error chain.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BlockedByPolicy(pub(crate) Blocked);

pub type LookupFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<IpAddr>, LookupFailed>> + Send + 'a>>;

/// Where names get their addresses: the system resolver in production, fixed answers in tests.
pub trait HostLookup: Send + Sync {
    fn lookup<'a>(&'a self, name: &'a str) -> LookupFuture<'a>;
}

/// hickory with the system's `/etc/resolv.conf` and hosts file, asking for A and AAAA together.
pub struct HickoryLookup {
    resolver: TokioResolver,
}

impl HickoryLookup {
    pub fn from_system_config() -> Result<Self, hickory_resolver::net::NetError> {
        let mut builder = TokioResolver::builder_tokio()?;
        builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        Ok(HickoryLookup {
            resolver: builder.build()?,
        })
    }
}

impl HostLookup for HickoryLookup {
    fn lookup<'a>(&'a self, name: &'a str) -> LookupFuture<'a> {
        Box::pin(async move {
            let answers = self
                .resolver
                .lookup_ip(name)
                .await
                .map_err(|err| LookupFailed {
                    name: name.to_owned(),
                    reason: err.to_string(),
                })?;
            Ok(answers.iter().collect())
        })
    }
}

/// reqwest's resolver: looks a name up once, refuses it if any answer is blocked, and returns the
/// answers that passed so hyper connects to exactly those.
pub struct PinningResolver {
    lookup: Arc<dyn HostLookup>,
    policy: Arc<AddressPolicy>,
}

impl PinningResolver {
    pub fn new(lookup: Arc<dyn HostLookup>, policy: Arc<AddressPolicy>) -> Self {
        PinningResolver { lookup, policy }
    }

    /// The checked addresses of `name`, or why there are none.
    pub async fn resolve_checked(&self, name: &str) -> Result<Vec<IpAddr>, ResolveRefused> {
        let addresses = self
            .lookup
            .lookup(name)
            .await
            .map_err(ResolveRefused::Lookup)?;
        self.policy
            .check_resolved(name, &addresses)
            .map_err(ResolveRefused::Blocked)?;
        Ok(addresses)
    }
}

/// Why a name yields no address to connect to.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveRefused {
    #[error("DNS lookup failed: {0}")]
    Lookup(LookupFailed),
    #[error("blocked: {0}")]
    Blocked(Blocked),
}

impl Resolve for PinningResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let lookup = self.lookup.clone();
        let policy = self.policy.clone();
        Box::pin(async move {
            let resolver = PinningResolver { lookup, policy };
            match resolver.resolve_checked(name.as_str()).await {
                Ok(addresses) => {
                    let addrs: Addrs =
                        Box::new(addresses.into_iter().map(|ip| SocketAddr::new(ip, 0)));
                    Ok(addrs)
                }
                Err(ResolveRefused::Lookup(failed)) => Err(failed.into()),
                Err(ResolveRefused::Blocked(blocked)) => Err(BlockedByPolicy(blocked).into()),
            }
        })
    }
}
