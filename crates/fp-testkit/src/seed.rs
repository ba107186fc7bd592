//! Attempt rows written straight to the database, for tests of what reads them (log pages, plans,
//! the dashboard) that need many rows or exact times without running deliveries.

use chrono::{DateTime, Utc};
use fp_store::attempts::AttemptRow;
use uuid::Uuid;

/// A final, successful first attempt of a new delivery of `submission.created`; tests change the
/// fields they care about with struct update syntax.
pub fn attempt_row(tenant_id: Uuid, attempted_at: DateTime<Utc>) -> AttemptRow {
    AttemptRow {
        id: Uuid::now_v7(),
        delivery_id: Uuid::now_v7(),
        event_id: Uuid::now_v7(),
        tenant_id,
        event_type: "submission.created".to_owned(),
        url: "https://example.com/hook".to_owned(),
        attempt_number: 1,
        attempted_at,
        duration_ms: 12,
        request_headers: serde_json::json!([]),
        request_body: b"{}".to_vec(),
        response_status: Some(200),
        response_headers: serde_json::json!([]),
        response_body: Vec::new(),
        response_truncated: false,
        error_kind: None,
        error_message: None,
        is_final: true,
        next_retry_at: None,
        manual: false,
        traceparent: String::new(),
        tracestate: String::new(),
    }
}
