//! The event catalogue (`GET /api/v2/event-types`) against what is really delivered, test events of
//! a chosen type, and the api's answers to unknown query parameters and an empty URL, on the real
//! parts: api, broker, dispatcher, log-ingest and an HTTPS receiver.

use std::time::Duration;

use anyhow::Context;
use fp_domain::EventType;
use fp_testkit::environment::TestEnvironment;
use fp_testkit::pipeline::{Pipeline, TenantApi};
use fp_testkit::receiver::{TlsReceiver, always_ok};
use reqwest::Method;
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(30);

async fn send_test(tenant: &TenantApi, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
    let body = body.map(|body| body.to_string());
    tenant
        .send(Method::POST, "/api/v2/webhooks/test", body.as_deref())
        .await
}

/// The catalogue's entry of `event_type`.
fn catalogue_entry<'a>(catalogue: &'a Value, event_type: &str) -> anyhow::Result<&'a Value> {
    catalogue["data"]
        .as_array()
        .context("data is a list")?
        .iter()
        .find(|entry| entry["event_type"] == event_type)
        .with_context(|| format!("{event_type} is not in the catalogue: {catalogue}"))
}

fn validator(schema: &Value) -> anyhow::Result<jsonschema::Validator> {
    jsonschema::validator_for(schema).map_err(|error| anyhow::anyhow!("{error}: {schema}"))
}

/// Every way `body` breaks `schema`, empty when it validates.
fn violations(validator: &jsonschema::Validator, body: &Value) -> Vec<String> {
    validator
        .iter_errors(body)
        .map(|error| format!("{} at {}", error, error.instance_path))
        .collect()
}

fn assert_invalid_field(status: u16, error: &Value, field: &str, says: &[&str]) {
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["code"], "invalid_field", "{error}");
    assert_eq!(error["error"]["field"], field, "{error}");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    for words in says {
        assert!(message.contains(words), "{words:?} missing in {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalogue_describes_what_each_test_event_delivers() -> anyhow::Result<()> {
    let receiver = TlsReceiver::start("127.0.0.1:0".parse()?, always_ok()).await?;
    let mut env = TestEnvironment::new("eventtypes").await?;
    env.trust_receiver(&receiver)?;
    let pipeline = Pipeline::start(&mut env, 1).await?;
    let tenant = pipeline.tenant(&env, "Acme").await?;

    // Every type, each example valid against its own schema and no other type's.
    let (status, catalogue) = tenant
        .send(Method::GET, "/api/v2/event-types", None)
        .await?;
    assert_eq!(status, 200, "{catalogue}");
    assert_eq!(
        catalogue["data"].as_array().map(Vec::len),
        Some(EventType::ALL.len()),
        "{catalogue}"
    );
    for event_type in EventType::ALL {
        let entry = catalogue_entry(&catalogue, event_type.as_str())?;
        assert_eq!(
            entry["subscribable"],
            event_type != EventType::WebhookTest,
            "{entry}"
        );
        assert!(entry["description"].as_str().is_some(), "{entry}");
        let validator = validator(&entry["schema"])?;
        assert_eq!(
            violations(&validator, &entry["example"]),
            Vec::<String>::new()
        );
        assert_eq!(entry["example"]["event"], event_type.as_str());
        for other in EventType::ALL
            .into_iter()
            .filter(|other| *other != event_type)
        {
            let other_example = &catalogue_entry(&catalogue, other.as_str())?["example"];
            assert!(
                !validator.is_valid(other_example),
                "the {other} example passes the {event_type} schema"
            );
        }
    }

    // Unknown types are refused, and the refusal lists every known one.
    let url = receiver.url("/hooks/catalogue");
    tenant
        .configure_events(&url, &["submission.created"], None)
        .await?;
    let (status, error) =
        send_test(&tenant, Some(json!({"event_type": "submission.deleted"}))).await?;
    assert_invalid_field(
        status,
        &error,
        "event_type",
        &[
            "submission.created",
            "submission.status_changed",
            "webhook.test",
        ],
    );
    // A submission type goes only to an endpoint that subscribes to it.
    let (status, error) = send_test(
        &tenant,
        Some(json!({"event_type": "submission.status_changed"})),
    )
    .await?;
    assert_invalid_field(
        status,
        &error,
        "event_type",
        &["does not subscribe to submission.status_changed"],
    );
    assert_eq!(receiver.requests().len(), 0, "nothing was sent");

    // A test event of each type is delivered as that type, and its body passes the catalogue's
    // schema; without a type it is a webhook.test, as before.
    tenant.configure(&url, None).await?;
    let mut expected = Vec::new();
    for (body, event_type) in [
        (None, EventType::WebhookTest),
        (Some(Value::Null), EventType::WebhookTest),
        (Some(json!({})), EventType::WebhookTest),
        (Some(json!({"event_type": null})), EventType::WebhookTest),
    ]
    .into_iter()
    .chain(
        EventType::ALL
            .map(|event_type| (Some(json!({"event_type": event_type.as_str()})), event_type)),
    ) {
        let (status, sent) = send_test(&tenant, body.clone()).await?;
        assert_eq!(status, 202, "{body:?}: {sent}");
        let delivery_id = sent["delivery_id"].as_str().context("delivery_id")?;
        expected.push((delivery_id.to_owned(), event_type));
    }
    let requests = receiver.wait_for(expected.len(), PATIENCE).await?;
    for (delivery_id, event_type) in &expected {
        let request = requests
            .iter()
            .find(|request| {
                request.header("x-feedbackpulse-delivery") == Some(delivery_id.as_str())
            })
            .with_context(|| format!("the {event_type} test event {delivery_id} arrived"))?;
        assert_eq!(
            request.header("x-feedbackpulse-event"),
            Some(event_type.as_str())
        );
        let body: Value = serde_json::from_slice(&request.body)?;
        assert_eq!(body["event"], event_type.as_str(), "{body}");
        let entry = catalogue_entry(&catalogue, event_type.as_str())?;
        assert_eq!(
            violations(&validator(&entry["schema"])?, &body),
            Vec::<String>::new(),
            "{body}"
        );
        // The example's data; only the time is the delivery's own.
        assert_eq!(body["data"], entry["example"]["data"], "{body}");
    }
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_query_parameters_and_an_empty_url_are_named() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("apiquery").await?;
    let api = fp_testkit::pipeline::start_api(&mut env).await?;
    let tenant = TenantApi::create(&env, api, "Acme").await?;

    for (path, unknown) in [
        (
            "/api/v2/webhooks/logs?limit=5&evnt_type=webhook.test",
            "evnt_type",
        ),
        ("/api/v2/webhooks/logs?tenant_id=x", "tenant_id"),
        ("/api/v2/submissions?cursr=5", "cursr"),
    ] {
        let (status, error) = tenant.send(Method::GET, path, None).await?;
        assert_invalid_field(
            status,
            &error,
            unknown,
            &[&format!("unknown query parameter `{unknown}`")],
        );
    }
    // Several: each is named, the field is the first.
    let (status, error) = tenant
        .send(
            Method::GET,
            "/api/v2/submissions?zeta=1&alpha=2&limit=3",
            None,
        )
        .await?;
    assert_invalid_field(status, &error, "alpha", &["`alpha`, `zeta`", "`limit`"]);
    // Known ones still work.
    let (status, page) = tenant
        .send(
            Method::GET,
            "/api/v2/webhooks/logs?limit=5&event_type=webhook.test&status=5xx",
            None,
        )
        .await?;
    assert_eq!(status, 200, "{page}");

    let admin = tenant.superadmin(&env).await?;
    let (status, error) = admin
        .send(Method::GET, "/api/v2/admin/webhooks/logs?tenant=x", None)
        .await?;
    assert_invalid_field(
        status,
        &error,
        "tenant",
        &["unknown query parameter `tenant`"],
    );
    let (status, page) = admin
        .send(
            Method::GET,
            &format!("/api/v2/admin/webhooks/logs?tenant_id={}", tenant.tenant_id),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{page}");

    // The logs filter lists every type it takes, webhook.test included.
    let (status, error) = tenant
        .send(Method::GET, "/api/v2/webhooks/logs?event_type=bogus", None)
        .await?;
    assert_invalid_field(status, &error, "event_type", &["webhook.test"]);

    // The document describes the catalogue and the test event's optional type.
    let (status, document) = tenant
        .send(Method::GET, "/api/v2/openapi.json", None)
        .await?;
    assert_eq!(status, 200, "{document}");
    let paths = &document["paths"];
    assert!(
        paths["/api/v2/event-types"]["get"]["responses"]["200"].is_object(),
        "{paths}"
    );
    let test_body = &paths["/api/v2/webhooks/test"]["post"]["requestBody"];
    assert_ne!(test_body["required"], true, "{test_body}");
    // The body, or null: `{"oneOf": [{"$ref": ...}, {"type": "null"}]}`.
    let request_schema = test_body["content"]["application/json"]["schema"]["oneOf"]
        .as_array()
        .and_then(|choices| choices.iter().find_map(|choice| choice["$ref"].as_str()))
        .and_then(|reference| reference.strip_prefix("#/components/schemas/"))
        .map(|name| &document["components"]["schemas"][name])
        .with_context(|| format!("the test event's body schema: {test_body}"))?;
    let names = &request_schema["properties"]["event_type"]["enum"];
    for event_type in EventType::ALL {
        assert!(
            names
                .as_array()
                .is_some_and(|names| names.contains(&json!(event_type.as_str()))),
            "{event_type} in {request_schema}"
        );
    }

    for url in ["", "   "] {
        let (status, error) = tenant
            .send(
                Method::PUT,
                "/api/v2/webhooks/config",
                Some(&json!({"url": url, "events": ["submission.created"]}).to_string()),
            )
            .await?;
        assert_invalid_field(status, &error, "url", &[]);
        assert_eq!(error["error"]["message"], "URL is required", "{error}");
    }
    env.finish().await
}
