//! `fpctl setup-database`: the database and roles the configured URLs name, created if missing.
//!
//! The names come from `database.url` (application role and database) and `database.readonly_url`
//! (the dashboard's read-only role), so the config stays the one place they are written.

use anyhow::Context;
use diesel::QueryableByName;
use diesel::sql_types::{Bool, Text};
use diesel_async::RunQueryDsl;
use fp_settings::{DatabaseSettings, ExposeSecret};
use url::Url;

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = Bool)]
    exists: bool,
}

struct Login {
    user: String,
    password: Option<String>,
}

fn login_of(url: &str, key: &str) -> anyhow::Result<(Login, String)> {
    let parsed = Url::parse(url).with_context(|| format!("`{key}` is not a URL"))?;
    let user = parsed.username().to_owned();
    anyhow::ensure!(!user.is_empty(), "`{key}` names no user");
    let database = parsed.path().trim_start_matches('/').to_owned();
    anyhow::ensure!(!database.is_empty(), "`{key}` names no database");
    Ok((
        Login {
            user,
            password: parsed.password().map(str::to_owned),
        },
        database,
    ))
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

async fn exists(
    conn: &mut fp_store::PgConnection,
    query: &str,
    name: &str,
) -> anyhow::Result<bool> {
    Ok(diesel::sql_query(query)
        .bind::<Text, _>(name)
        .get_result::<Exists>(conn)
        .await?
        .exists)
}

async fn ensure_role(conn: &mut fp_store::PgConnection, login: &Login) -> anyhow::Result<()> {
    let role = quote_ident(&login.user);
    // Parallel set-ups (tests) race to create the same role; losing that race is fine.
    diesel::sql_query(format!(
        "DO $$ BEGIN CREATE ROLE {role} LOGIN; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
    ))
    .execute(conn)
    .await?;
    if let Some(password) = &login.password {
        diesel::sql_query(format!(
            "ALTER ROLE {role} LOGIN PASSWORD {}",
            quote_literal(password)
        ))
        .execute(conn)
        .await?;
    }
    println!("role {} ready", login.user);
    Ok(())
}

pub async fn run(admin_url: &str, settings: &DatabaseSettings) -> anyhow::Result<()> {
    let (app, database) = login_of(settings.url.expose_secret(), "database.url")?;
    let (reader, _) = login_of(
        settings.readonly_url.expose_secret(),
        "database.readonly_url",
    )?;
    let mut conn = fp_store::connect(admin_url).await?;
    ensure_role(&mut conn, &app).await?;
    if reader.user != app.user {
        ensure_role(&mut conn, &reader).await?;
    }
    if !exists(
        &mut conn,
        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists",
        &database,
    )
    .await?
    {
        diesel::sql_query(format!(
            "CREATE DATABASE {} OWNER {}",
            quote_ident(&database),
            quote_ident(&app.user)
        ))
        .execute(&mut conn)
        .await?;
    }
    println!("database {database} ready (owner {})", app.user);
    Ok(())
}
