//! `fpctl`: operator commands. Reads the same configuration as the services (`FP__...`).

mod maintenance;
mod setup_database;
mod tenant;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use fp_broker::Broker;
use fp_delivery::{PinningResolver, ResolveRefused};
use fp_domain::address_policy::{AddressPolicy, TargetHost};
use fp_domain::api_key::IssuedKey;
use fp_settings::{ExposeSecret, Settings};
use fp_store::identity::{self, KeyOwner};
use ring::rand::{SecureRandom, SystemRandom};
use tracing::Instrument;
use uuid::Uuid;

#[derive(Parser)]
#[command(name = "fpctl", version, about = "FeedbackPulse Webhooks admin CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates the database and its roles if missing (needs a superuser connection).
    SetupDatabase {
        /// A superuser connection, e.g. postgres://postgres@127.0.0.1:5432/postgres
        #[arg(long, env = "FP_ADMIN_DATABASE_URL")]
        admin_url: String,
    },
    /// Applies database migrations and declares the broker topology. Idempotent.
    Migrate,
    /// Deletes this namespace's exchanges and queues, messages included (tests; retiring a deployment).
    DeleteTopology,
    /// Tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// API keys: several per tenant, revocable; superadmin keys for the admin routes.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Dashboard users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Runs the dispatcher's SSRF policy, DNS included: exit 0 `allowed`, exit 1 `blocked: <reason>`.
    CheckUrl { url: String },
    /// Data lifecycle work the services also do on a schedule.
    Maintenance {
        #[command(subcommand)]
        command: MaintenanceCommand,
    },
    /// Events other services published for tenants that do not exist, newest first (kept 30
    /// days): one JSON object a line.
    UndeliverableEvents {
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
}

#[derive(Subcommand)]
enum MaintenanceCommand {
    /// Runs every maintenance step once, each under the lock the services' loops take (a step a
    /// service is doing is skipped); prints a line per step, exits 1 when one failed.
    Run,
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Creates a tenant and its first API key; prints `{"tenant_id", "api_key"}`.
    Create { name: String },
    /// Removes a tenant and everything it owns (config, keys, users and their sessions,
    /// submissions, outbox rows, delivery logs); `--dry-run` only counts. Prints the rows per table.
    Delete(tenant::DeleteArgs),
}

/// Whose keys a key command acts on: one tenant's, or the platform's superadmin keys.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct KeyOwnerArgs {
    /// The tenant the key belongs to.
    #[arg(long)]
    tenant: Option<Uuid>,
    /// A platform key for the superadmin routes (`/api/v2/admin/...`).
    #[arg(long)]
    superadmin: bool,
}

impl KeyOwnerArgs {
    fn owner(&self) -> KeyOwner {
        match self.tenant {
            Some(tenant_id) => KeyOwner::Tenant(tenant_id),
            None => KeyOwner::Platform,
        }
    }
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Issues a key; prints `{"id", "api_key", ...}`. The key is shown only this once.
    Create {
        #[command(flatten)]
        owner: KeyOwnerArgs,
        /// A label to tell keys apart, e.g. "billing service".
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Lists keys (without the keys themselves), revoked ones included, one JSON object a line.
    List {
        #[command(flatten)]
        owner: KeyOwnerArgs,
    },
    /// Revokes a key: every api refuses it (401) once PostgreSQL's notification of the revocation
    /// reaches it, sent at commit.
    Revoke {
        #[command(flatten)]
        owner: KeyOwnerArgs,
        id: Uuid,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Creates a dashboard user; prints `{"user_id"}`.
    Create {
        #[arg(long)]
        email: String,
        /// The password (or set FP_USER_PASSWORD, which keeps it out of the shell history).
        #[arg(long, env = "FP_USER_PASSWORD", hide_env_values = true)]
        password: String,
        /// The tenant the user administers.
        #[arg(
            long,
            required_unless_present = "superadmin",
            conflicts_with = "superadmin"
        )]
        tenant: Option<Uuid>,
        /// A platform superadmin, who sees every tenant's deliveries.
        #[arg(long)]
        superadmin: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let tracing = fp_telemetry::init_traces_only("fpctl");
    // One span for the command: its name only, never an argument (passwords, URLs).
    let span = tracing::info_span!(
        target: fp_telemetry::OTEL_TARGET,
        "fpctl",
        "otel.name" = %format!("fpctl {}", cli.command.name()),
        "otel.status_code" = tracing::field::Empty,
    );
    fp_telemetry::propagation::set_parent(&span, fp_telemetry::propagation::from_environment());
    let code = match run(cli.command).instrument(span.clone()).await {
        Ok(code) => code,
        Err(error) => {
            span.record("otel.status_code", "ERROR");
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    };
    drop(span);
    tracing.shutdown();
    code
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::SetupDatabase { .. } => "setup-database",
            Command::Migrate => "migrate",
            Command::DeleteTopology => "delete-topology",
            Command::Tenant { .. } => "tenant",
            Command::Key { .. } => "key",
            Command::User { .. } => "user",
            Command::CheckUrl { .. } => "check-url",
            Command::Maintenance { .. } => "maintenance",
            Command::UndeliverableEvents { .. } => "undeliverable-events",
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let settings = Settings::load()?;
    match command {
        Command::SetupDatabase { admin_url } => {
            setup_database::run(&admin_url, &settings.database).await?;
        }
        Command::Migrate => migrate(&settings).await?,
        Command::DeleteTopology => {
            let broker = Broker::connect(
                settings.broker.url.expose_secret(),
                &settings.broker.namespace,
            )
            .await?;
            broker
                .delete_topology(&settings.dispatcher.delay_tiers())
                .await?;
            broker.close().await;
            println!("broker topology `{}.*` deleted", settings.broker.namespace);
        }
        Command::Tenant {
            command: TenantCommand::Create { name },
        } => create_tenant(&settings, &name).await?,
        Command::Tenant {
            command: TenantCommand::Delete(args),
        } => tenant::delete(&settings, args).await?,
        Command::Key { command } => manage_keys(&settings, command).await?,
        Command::User {
            command:
                UserCommand::Create {
                    email,
                    password,
                    tenant,
                    superadmin,
                },
        } => create_user(&settings, &email, &password, tenant, superadmin).await?,
        Command::CheckUrl { url } => return check_url(&settings, &url).await,
        Command::Maintenance {
            command: MaintenanceCommand::Run,
        } => return maintenance::run(&settings).await,
        Command::UndeliverableEvents { limit } => {
            list_undeliverable_events(&settings, limit).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let applied = fp_store::run_migrations(settings.database.url.expose_secret()).await?;
    for version in &applied {
        println!("applied migration {version}");
    }
    let mut conn = fp_store::connect(settings.database.url.expose_secret()).await?;
    let role = &settings.database.readonly_role;
    if fp_store::grant_read_access(&mut conn, role).await? {
        println!("granted read access to role {role}");
    } else {
        eprintln!(
            "warning: role {role} does not exist; the dashboard's read-only login will fail (run `fpctl setup-database`)"
        );
    }
    let queues = fp_broker::QueueOptions {
        quorum_initial_group_size: settings.broker.quorum_initial_group_size,
    };
    let broker = Broker::connect_with(
        settings.broker.url.expose_secret(),
        &settings.broker.namespace,
        queues,
    )
    .await?;
    broker.declare_topology().await?;
    broker.close().await;
    println!(
        "database migrated; broker topology `{}.*` declared",
        settings.broker.namespace
    );
    Ok(())
}

fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    Ok(bytes)
}

async fn list_undeliverable_events(settings: &Settings, limit: i64) -> anyhow::Result<()> {
    let mut conn = fp_store::connect(settings.database.url.expose_secret()).await?;
    for event in fp_store::inbound_events::undeliverable(&mut conn, limit).await? {
        println!(
            "{}",
            serde_json::json!({
                "event_id": event.event_id,
                "tenant_id": event.unknown_tenant_id,
                "event_type": event.event_type,
                "reason": event.reason,
                "occurred_at": event.occurred_at,
                "recorded_at": event.recorded_at,
            })
        );
    }
    Ok(())
}

async fn create_tenant(settings: &Settings, name: &str) -> anyhow::Result<()> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        bail!("the tenant name must be 1 to 200 characters");
    }
    let mut conn = fp_store::connect(settings.database.url.expose_secret()).await?;
    let tenant_id = Uuid::now_v7();
    let issued = IssuedKey::from_random(random_bytes()?);
    identity::create_tenant(&mut conn, tenant_id, name).await?;
    identity::create_api_key(
        &mut conn,
        KeyOwner::Tenant(tenant_id),
        "first key",
        &issued.hash,
        &issued.prefix,
    )
    .await?;
    println!(
        "{}",
        serde_json::json!({ "tenant_id": tenant_id, "api_key": issued.key })
    );
    Ok(())
}

async fn manage_keys(settings: &Settings, command: KeyCommand) -> anyhow::Result<()> {
    let mut conn = fp_store::connect(settings.database.url.expose_secret()).await?;
    match command {
        KeyCommand::Create { owner, name } => {
            let owner = owner.owner();
            let name = name.trim();
            if name.chars().count() > fp_domain::api_key::MAX_NAME_CHARS {
                bail!(
                    "the key name must be at most {} characters",
                    fp_domain::api_key::MAX_NAME_CHARS
                );
            }
            if let KeyOwner::Tenant(tenant_id) = owner
                && !identity::tenant_exists(&mut conn, tenant_id).await?
            {
                bail!("no tenant with id {tenant_id}");
            }
            let issued = IssuedKey::from_random(random_bytes()?);
            let row =
                identity::create_api_key(&mut conn, owner, name, &issued.hash, &issued.prefix)
                    .await?;
            println!(
                "{}",
                serde_json::json!({
                    "id": row.id,
                    "api_key": issued.key,
                    "tenant_id": row.tenant_id,
                    "role": row.role,
                    "name": row.name,
                })
            );
        }
        KeyCommand::List { owner } => {
            for key in identity::list_api_keys(&mut conn, owner.owner()).await? {
                println!("{}", key_json(&key));
            }
        }
        KeyCommand::Revoke { owner, id } => {
            let Some((key, _)) = identity::revoke_api_key(&mut conn, owner.owner(), id).await?
            else {
                bail!("no such key for this owner: {id}");
            };
            println!("{}", key_json(&key));
        }
    }
    Ok(())
}

fn key_json(key: &identity::ApiKeyRow) -> serde_json::Value {
    serde_json::json!({
        "id": key.id,
        "tenant_id": key.tenant_id,
        "role": key.role,
        "name": key.name,
        "prefix": key.key_prefix,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    })
}

async fn create_user(
    settings: &Settings,
    email: &str,
    password: &str,
    tenant: Option<Uuid>,
    superadmin: bool,
) -> anyhow::Result<()> {
    let email = email.trim().to_lowercase();
    if !email.contains('@') {
        bail!("`{email}` is not an email address");
    }
    fp_domain::password::check_new(password)?;
    let mut conn = fp_store::connect(settings.database.url.expose_secret()).await?;
    if let Some(tenant_id) = tenant
        && !identity::tenant_exists(&mut conn, tenant_id).await?
    {
        bail!("no tenant with id {tenant_id}");
    }
    let password_hash = fp_domain::password::hash(password, random_bytes::<16>()?)?;
    let role = if superadmin {
        identity::ROLE_SUPERADMIN
    } else {
        identity::ROLE_TENANT_ADMIN
    };
    let user_id = identity::create_user(&mut conn, tenant, &email, &password_hash, role)
        .await
        .with_context(|| format!("could not create user {email} (does it exist already?)"))?;
    println!(
        "{}",
        serde_json::json!({ "user_id": user_id, "email": email, "role": role })
    );
    Ok(())
}

async fn check_url(settings: &Settings, url: &str) -> anyhow::Result<ExitCode> {
    let policy = Arc::new(AddressPolicy::with_allow_list(
        settings.dispatcher.allow_private_cidrs.clone(),
    ));
    // An operator's tool: unlike the api, it names the refused address and its range.
    let verdict = match policy.check_url(url) {
        Err(blocked) => Err(blocked.operator_detail()),
        Ok(checked) => match checked.host {
            TargetHost::Ip(_) => Ok(()),
            TargetHost::Name(name) => {
                let lookup = fp_delivery::system_lookup(settings.dispatcher.hosts_file.as_deref())?;
                PinningResolver::new(lookup, policy)
                    .resolve_checked(&name)
                    .await
                    .map(|_| ())
                    .map_err(|refused| match refused {
                        ResolveRefused::Blocked(blocked) => blocked.operator_detail(),
                        lookup @ ResolveRefused::Lookup(_) => lookup.to_string(),
                    })
            }
        },
    };
    Ok(match verdict {
        Ok(()) => {
            println!("allowed");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            println!("blocked: {}", reason.trim_start_matches("blocked: "));
            ExitCode::from(1)
        }
    })
}
