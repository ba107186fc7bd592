//! Tenants whose delivery config changed: the channel triggers notify (migration
//! `2026-12-06-000002_config_change_notify`) when anything the dispatcher's config cache holds
//! changes: the webhook config's delivery fields, the tenant's existence, its erasures. Every
//! dispatcher drops that tenant's entry ([`crate::notifications::follow`] listens), so a saved
//! config is used from the next delivery on.

use uuid::Uuid;

use crate::notifications::Channel;

pub const CHANNEL: Channel = Channel {
    name: "fp_tenant_config_changed",
    application_name: "fp-dispatcher config changes",
    heard: "config changes",
    while_deaf: "a cached config is used for dispatcher.config_cache_ttl_ms at most until they are heard again, then every one is loaded anew",
};

/// What a notification says.
#[derive(Debug, PartialEq, Eq)]
pub enum Changed {
    Tenant(Uuid),
    /// A payload that names no tenant (a `TRUNCATE`, or someone else's `NOTIFY` on the channel): any
    /// may have changed.
    Unknown,
}

/// Reads a notification's payload: the tenant's id.
pub fn parse_payload(payload: &str) -> Changed {
    payload.parse().map_or(Changed::Unknown, Changed::Tenant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_is_a_tenant_id_or_names_none() {
        let tenant = Uuid::from_u128(7);
        assert_eq!(parse_payload(&tenant.to_string()), Changed::Tenant(tenant));
        assert_eq!(parse_payload(""), Changed::Unknown);
        assert_eq!(parse_payload("everyone"), Changed::Unknown);
    }
}
