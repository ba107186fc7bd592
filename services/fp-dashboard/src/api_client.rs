//! The dashboard's writes (config, test event, redelivery, sessions, passwords) go through the
//! api, which owns those tables; each call carries the signed-in user's own session, so the api
//! applies that user's role and tenant (`Authorization: Session <token>`). Log-ins go there too:
//! the api checks the password, throttles, and hands out the session.

use std::net::IpAddr;

use std::time::Duration;
use tracing::Instrument;

use reqwest::Method;
use serde_json::Value;

/// The api answers in milliseconds; a stuck one must not hold a page for long.
const API_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ApiClientError {
    #[error("could not build the api client: {0}")]
    Build(reqwest::Error),
    #[error("the api at {url} did not answer: {error}")]
    Unreachable { url: String, error: reqwest::Error },
    #[error("the api answered {status} with a body that is not JSON: {error}")]
    NotJson {
        status: u16,
        error: serde_json::Error,
    },
}

/// An answer of the api: its status and JSON body (`Null` for an empty one, such as a 204).
#[derive(Debug)]
pub struct ApiAnswer {
    pub status: u16,
    pub body: Value,
    /// Seconds to wait, with a 429 or 503.
    pub retry_after: Option<String>,
}

impl ApiAnswer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The api's error message and the field it names, for showing next to the form field.
    pub fn error(&self) -> (Option<&str>, Option<&str>) {
        let error = &self.body["error"];
        (error["message"].as_str(), error["field"].as_str())
    }
}

/// The browser a log-in comes from: its address (the dashboard's peer) and user agent.
pub struct Browser<'a> {
    pub address: Option<IpAddr>,
    pub user_agent: &'a str,
}

pub struct ApiClient {
    base: String,
    http: reqwest::Client,
}

impl ApiClient {
    pub fn new(base: &str) -> Result<Self, ApiClientError> {
        // reqwest is built without a default TLS provider (the workspace picks ring once).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(API_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(ApiClientError::Build)?;
        Ok(ApiClient {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// Calls `path` (e.g. `/api/v2/webhooks/config`) as the user whose session this is.
    pub async fn call(
        &self,
        session: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<ApiAnswer, ApiClientError> {
        let authorization = format!("Session {session}");
        self.send(method, path, body, &[("authorization", authorization)])
            .await
    }

    /// `POST /api/v2/sessions` for a browser: the api throttles by the browser's address, which
    /// it believes from the dashboard (a trusted proxy there), and lists the session with it.
    pub async fn log_in(
        &self,
        email: &str,
        password: &str,
        browser: &Browser<'_>,
    ) -> Result<ApiAnswer, ApiClientError> {
        let body = serde_json::json!({ "email": email, "password": password });
        let mut headers = vec![("user-agent", browser.user_agent.to_owned())];
        if let Some(address) = browser.address {
            headers.push(("x-forwarded-for", address.to_string()));
        }
        self.send(Method::POST, "/api/v2/sessions", Some(&body), &headers)
            .await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&'static str, String)],
    ) -> Result<ApiAnswer, ApiClientError> {
        let url = format!("{}{path}", self.base);
        // A client span per api call (method and server only: never the path, never the
        // session), whose context the api continues.
        let server = reqwest::Url::parse(&url).ok();
        let span = tracing::info_span!(
            target: fp_telemetry::OTEL_TARGET,
            "http.client",
            "otel.name" = %method,
            "otel.kind" = "client",
            "otel.status_code" = tracing::field::Empty,
            "http.request.method" = %method,
            "server.address" = server.as_ref().and_then(|url| url.host_str()).unwrap_or_default(),
            "server.port" = server.as_ref().and_then(reqwest::Url::port_or_known_default).unwrap_or_default(),
            "http.response.status_code" = tracing::field::Empty,
            "error.type" = tracing::field::Empty,
        );
        let mut trace_headers = std::collections::HashMap::new();
        fp_telemetry::propagation::inject(&span, &mut trace_headers);
        let mut request = self.http.request(method, &url);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        for (name, value) in trace_headers {
            request = request.header(name, value);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .instrument(span.clone())
            .await
            .map_err(|error| {
                span.record("error.type", "unreachable");
                span.record("otel.status_code", "ERROR");
                ApiClientError::Unreachable {
                    url: url.clone(),
                    error,
                }
            })?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        span.record("http.response.status_code", status);
        if status >= 500 {
            span.record("error.type", status.to_string());
            span.record("otel.status_code", "ERROR");
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|error| ApiClientError::Unreachable { url, error })?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|error| ApiClientError::NotJson { status, error })?
        };
        Ok(ApiAnswer {
            status,
            body,
            retry_after,
        })
    }
}
