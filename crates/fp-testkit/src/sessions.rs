//! Dashboard users and their sessions at the api: users made with `fpctl user create`, log-ins as
//! the dashboard makes them (`POST /api/v2/sessions` with the browser's address in
//! `X-Forwarded-For`, which the api believes from loopback, its default trusted proxy), and calls
//! with `Authorization: Session <token>`.

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use serde_json::{Value, json};

use crate::environment::TestEnvironment;

/// Creates a user with `fpctl user create`: a tenant's admin, or a superadmin without a tenant.
/// Returns the user's id.
pub async fn create_user(
    env: &TestEnvironment,
    email: &str,
    password: &str,
    tenant_id: Option<&str>,
) -> anyhow::Result<String> {
    let mut args = vec!["user", "create", "--email", email, "--password", password];
    match tenant_id {
        Some(tenant_id) => args.extend(["--tenant", tenant_id]),
        None => args.push("--superadmin"),
    }
    let created: Value = serde_json::from_str(&env.fpctl(&args).await?)?;
    Ok(created["user_id"].as_str().context("user_id")?.to_owned())
}

/// An answer of the api: status, JSON body (`Null` when empty) and `Retry-After`.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<u64>,
}

/// The api as the dashboard speaks to it for its users.
pub struct UserApi {
    pub base: String,
    http: reqwest::Client,
}

impl UserApi {
    pub fn new(api: SocketAddr) -> anyhow::Result<Self> {
        crate::install_crypto_provider();
        Ok(UserApi {
            base: format!("http://{api}"),
            http: reqwest::Client::builder().no_proxy().build()?,
        })
    }

    /// `POST /api/v2/sessions` for a browser at `client`, whatever the answer.
    pub async fn log_in(
        &self,
        email: &str,
        password: &str,
        client: IpAddr,
    ) -> anyhow::Result<Answer> {
        let request = self
            .http
            .post(format!("{}/api/v2/sessions", self.base))
            .header("x-forwarded-for", client.to_string())
            .header("user-agent", format!("fp-testkit at {client}"))
            .header("content-type", "application/json")
            .body(json!({ "email": email, "password": password }).to_string());
        answer(request).await
    }

    /// A new session's token; fails unless the log-in succeeds.
    pub async fn session(
        &self,
        email: &str,
        password: &str,
        client: IpAddr,
    ) -> anyhow::Result<String> {
        let answer = self.log_in(email, password, client).await?;
        anyhow::ensure!(answer.status == 201, "log-in as {email}: {answer:?}");
        Ok(answer.body["token"].as_str().context("token")?.to_owned())
    }

    /// Calls `path` with `Authorization: Session <token>`.
    pub async fn send(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", format!("Session {token}"));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        answer(request).await
    }

    /// The status of `GET path` with the session `token`.
    pub async fn status(&self, token: &str, path: &str) -> anyhow::Result<u16> {
        Ok(self
            .send(token, reqwest::Method::GET, path, None)
            .await?
            .status)
    }
}

async fn answer(request: reqwest::RequestBuilder) -> anyhow::Result<Answer> {
    let response = request.send().await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok());
    let text = response.text().await?;
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).with_context(|| format!("not JSON ({status}): {text}"))?
    };
    Ok(Answer {
        status,
        body,
        retry_after,
    })
}
