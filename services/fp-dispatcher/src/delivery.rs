//! Handling one event: decide, deliver, record, ack.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use fp_broker::{Delivery, Names, OutgoingMessage, Publisher};
use fp_contracts::v1;
use fp_contracts::{ProtoMessage, timestamp_from};
use fp_delivery::{AttemptOutcome, DeliveryClient};
use fp_domain::request::{WebhookRequest, build_request};
use fp_domain::{DeliveryId, Event};
use fp_telemetry::TraceContext;
use tracing::Instrument;
use uuid::Uuid;

use crate::config_cache::{ConfigCache, Endpoint};

pub struct Dispatcher {
    pub configs: ConfigCache,
    pub client: DeliveryClient,
    pub publisher: Publisher,
    pub names: Names,
    pub delivered: Arc<AtomicU64>,
    pub attempts: Arc<AtomicU64>,
}

impl Dispatcher {
    /// Handles one message from the event queue. Never panics and never drops a message: it is
    /// acked (handled), dead-lettered (unreadable) or returned to the queue (a dependency failed).
    pub async fn handle(&self, delivery: Delivery) {
        let trace = TraceContext::from_header_or_new(
            fp_broker::header_text(&delivery, fp_broker::TRACEPARENT_HEADER).as_deref(),
        );
        let event = match fp_contracts::decode_event(&delivery.data) {
            Ok(event) => event,
            Err(error) => {
                tracing::error!(trace_id = %trace.trace_id(), %error, "unreadable event: dead-lettering");
                let reason = error.to_string();
                if let Err(error) = self
                    .publisher
                    .dead_letter(
                        &self.names,
                        &self.names.dispatcher_queue,
                        &delivery,
                        &reason,
                    )
                    .await
                {
                    tracing::error!(%error, "could not dead-letter; the broker will redeliver");
                }
                return;
            }
        };
        let span = tracing::info_span!(
            "event",
            trace_id = %trace.trace_id(),
            event_id = %event.id,
            tenant_id = %event.tenant_id,
            event_type = %event.event_type(),
        );
        let handled = self
            .deliver_and_record(&event, trace)
            .instrument(span.clone())
            .await;
        let _entered = span.enter();
        match handled {
            Ok(()) => {
                if let Err(error) = fp_broker::ack(&delivery).await {
                    tracing::warn!(%error, "ack failed; the event will be delivered again");
                }
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "event not handled; returning it to the queue"
                );
                if let Err(error) = fp_broker::requeue(&delivery).await {
                    tracing::warn!(%error, "requeue failed; the broker will redeliver on reconnect");
                }
            }
        }
    }

    async fn deliver_and_record(&self, event: &Event, trace: TraceContext) -> anyhow::Result<()> {
        let Some(endpoint) = self.configs.endpoint(event.tenant_id).await? else {
            tracing::debug!("tenant has no webhook config; nothing to deliver");
            return Ok(());
        };
        if !endpoint.wants(event.event_type()) {
            tracing::debug!("tenant is not subscribed to this event (or disabled)");
            return Ok(());
        }
        let delivery_id = DeliveryId::for_event_and_endpoint(event.id, &endpoint.url);
        let attempted_at = Utc::now();
        let request = build_request(
            event,
            delivery_id,
            endpoint.secret.as_ref(),
            attempted_at.timestamp(),
        );
        let outcome = self
            .client
            .post(
                &endpoint.url,
                &request.headers,
                Bytes::from(request.body.clone()),
            )
            .await;
        match &outcome.result {
            Ok(response) => {
                tracing::info!(status = response.status, duration_ms = outcome.duration.as_millis() as u64, %delivery_id, "delivered")
            }
            Err(error) => tracing::warn!(%error, %delivery_id, "delivery failed"),
        }
        let record = attempt_record(
            event,
            &endpoint,
            delivery_id,
            attempted_at,
            request,
            outcome,
        );
        self.attempts.fetch_add(1, Ordering::Relaxed);
        // The event is acked only after this confirm: a crash before it redelivers the event.
        self.publisher
            .publish(&OutgoingMessage {
                exchange: &self.names.attempts_exchange,
                routing_key: event.event_type().as_str(),
                message_id: &record.attempt_id,
                traceparent: &trace.child().to_traceparent(),
                payload: &record.encode_to_vec(),
                headers: &[],
            })
            .await?;
        Ok(())
    }
}

fn headers_to_proto(headers: Vec<(String, String)>) -> Vec<v1::Header> {
    headers
        .into_iter()
        .map(|(name, value)| v1::Header { name, value })
        .collect()
}

/// The record of one attempt. Until retries exist, every attempt is final.
fn attempt_record(
    event: &Event,
    endpoint: &Endpoint,
    delivery_id: DeliveryId,
    attempted_at: DateTime<Utc>,
    request: WebhookRequest,
    outcome: AttemptOutcome,
) -> v1::DeliveryAttempt {
    let mut record = v1::DeliveryAttempt {
        attempt_id: Uuid::now_v7().to_string(),
        delivery_id: delivery_id.to_string(),
        event_id: event.id.to_string(),
        tenant_id: event.tenant_id.to_string(),
        event_type: event.event_type().as_str().to_owned(),
        url: endpoint.url.clone(),
        attempt_number: 1,
        attempted_at: Some(timestamp_from(attempted_at)),
        duration_ms: u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX),
        request_headers: headers_to_proto(request.headers),
        request_body: request.body,
        r#final: true,
        ..v1::DeliveryAttempt::default()
    };
    match outcome.result {
        Ok(response) => {
            record.response_status = Some(u32::from(response.status));
            record.response_headers = headers_to_proto(response.headers);
            record.response_body = response.body;
            record.response_truncated = response.body_truncated;
            if !(200..300).contains(&response.status) {
                record.error_kind = "http_status".to_owned();
                record.error_message = format!("the endpoint answered HTTP {}", response.status);
            }
        }
        Err(error) => {
            record.error_kind = error.kind().to_owned();
            record.error_message = error.to_string();
        }
    }
    record
}
