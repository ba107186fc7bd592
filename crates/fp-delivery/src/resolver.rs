//! Name resolution that only ever yields addresses the policy allows.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
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

/// Names from an operator's hosts file first, then another lookup. The file is read on every lookup,
/// so edits apply at once; its answers are judged by the policy like any DNS answer.
pub struct HostsFileLookup {
    path: PathBuf,
    fallback: Arc<dyn HostLookup>,
}

impl HostsFileLookup {
    pub fn new(path: PathBuf, fallback: Arc<dyn HostLookup>) -> Self {
        HostsFileLookup { path, fallback }
    }
}

/// Addresses of `name` in hosts-file text (`address name [name ...]`, `#` comments).
fn hosts_entries(text: &str, name: &str) -> Vec<IpAddr> {
    let wanted = name.trim_end_matches('.');
    text.lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address: IpAddr = fields.next()?.parse().ok()?;
            fields
                .any(|alias| alias.trim_end_matches('.').eq_ignore_ascii_case(wanted))
                .then_some(address)
        })
        .collect()
}

impl HostLookup for HostsFileLookup {
    fn lookup<'a>(&'a self, name: &'a str) -> LookupFuture<'a> {
        Box::pin(async move {
            let text = tokio::fs::read_to_string(&self.path)
                .await
                .map_err(|err| LookupFailed {
                    name: name.to_owned(),
                    reason: format!("cannot read hosts file {}: {err}", self.path.display()),
                })?;
            let addresses = hosts_entries(&text, name);
            if addresses.is_empty() {
                self.fallback.lookup(name).await
            } else {
                Ok(addresses)
            }
        })
    }
}

/// The lookup every component uses: the system resolver, behind the operator's hosts file if set,
/// so `fpctl check-url`, the api's save-time check and the dispatcher answer alike.
pub fn system_lookup(
    hosts_file: Option<&std::path::Path>,
) -> Result<Arc<dyn HostLookup>, LookupFailed> {
    let system: Arc<dyn HostLookup> = Arc::new(HickoryLookup::from_system_config().map_err(
        |err| LookupFailed {
            name: String::new(),
            reason: format!("cannot read the system resolver configuration: {err}"),
        },
    )?);
    Ok(match hosts_file {
        Some(path) => Arc::new(HostsFileLookup::new(path.to_path_buf(), system)),
        None => system,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_entries_match_names_case_insensitively() {
        let text = "# comment\n127.0.0.1 localhost\n10.0.0.7 Hooks.Example.Test other # trailing\n::1 hooks.example.test\nnot-an-ip hooks.example.test\n";
        let found = hosts_entries(text, "hooks.example.test.");
        assert_eq!(
            found,
            vec![
                "10.0.0.7".parse::<IpAddr>().expect("ip"),
                "::1".parse().expect("ip")
            ]
        );
        assert!(hosts_entries(text, "example.test").is_empty());
    }
}
