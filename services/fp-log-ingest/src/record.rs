//! Attempt records from the wire to table rows.

use fp_contracts::v1;
use fp_contracts::{DecodeError, ProtoMessage};
use fp_store::attempts::AttemptRow;

/// One decoded record: its row, and whether it is the pending record of an attempt being sent.
pub struct AttemptRecord {
    pub row: AttemptRow,
    pub outcome_pending: bool,
}

/// Decodes and validates the records of one message: a batch (AMQP `type`
/// [`fp_contracts::ATTEMPT_BATCH_TYPE`]) or, without a type, one record. A record's own trace
/// context, when it has one, goes into its row.
pub fn attempt_records(
    message_type: Option<&str>,
    bytes: &[u8],
) -> Result<Vec<AttemptRecord>, DecodeError> {
    match message_type {
        None => Ok(vec![attempt_row(v1::DeliveryAttempt::decode(bytes)?)?]),
        Some(fp_contracts::ATTEMPT_BATCH_TYPE) => v1::DeliveryAttemptBatch::decode(bytes)?
            .attempts
            .into_iter()
            .map(attempt_row)
            .collect(),
        Some(other) => Err(DecodeError::Field {
            field: "type",
            reason: format!("`{other}` is not an attempt record"),
        }),
    }
}

/// Validates one record.
fn attempt_row(record: v1::DeliveryAttempt) -> Result<AttemptRecord, DecodeError> {
    let outcome_pending = record.outcome_pending;
    Ok(AttemptRecord {
        row: AttemptRow::from_owned_record(record)?,
        outcome_pending,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_becomes_a_row_and_garbage_is_refused() {
        let record = v1::DeliveryAttempt {
            attempt_id: "0190f0f0-0000-7000-8000-000000000001".into(),
            delivery_id: "0190f0f0-0000-7000-8000-000000000002".into(),
            event_id: "0190f0f0-0000-7000-8000-000000000003".into(),
            tenant_id: "0190f0f0-0000-7000-8000-000000000004".into(),
            event_type: "submission.created".into(),
            url: "https://example.com/hook".into(),
            attempt_number: 1,
            attempted_at: Some(fp_contracts::timestamp_from(chrono::Utc::now())),
            response_status: Some(200),
            request_headers: vec![v1::Header {
                name: "Content-Type".into(),
                value: "application/json".into(),
            }],
            request_body: b"{}".to_vec(),
            r#final: true,
            ..v1::DeliveryAttempt::default()
        };
        let single = |record: &v1::DeliveryAttempt| {
            let mut records = attempt_records(None, &record.encode_to_vec()).expect("valid record");
            assert_eq!(records.len(), 1);
            records.remove(0)
        };
        let decoded = single(&record);
        assert!(!decoded.outcome_pending);
        let row = decoded.row;
        assert_eq!(row.response_status, Some(200));
        assert_eq!(
            row.request_headers.pairs(),
            [("Content-Type".to_owned(), "application/json".to_owned())]
        );
        assert_eq!(row.error_kind, None);
        assert!(!row.manual);
        assert_eq!(row.request_body, b"{}");
        // The dispatcher builds its rows from records it keeps: the same row.
        assert_eq!(AttemptRow::from_record(&record).ok(), Some(row));
        let pending = v1::DeliveryAttempt {
            outcome_pending: true,
            ..record.clone()
        };
        assert!(single(&pending).outcome_pending);
        let manual = v1::DeliveryAttempt {
            manual: true,
            ..record
        };
        assert!(single(&manual).row.manual);
        assert!(attempt_records(None, b"\x0a\x03abc").is_err());

        // A batch holds records of several traces, each keeping its own.
        let traced = v1::DeliveryAttempt {
            attempt_id: "0190f0f0-0000-7000-8000-000000000009".into(),
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            tracestate: "vendor=1".into(),
            ..manual.clone()
        };
        let batch = v1::DeliveryAttemptBatch {
            attempts: vec![manual.clone(), traced.clone()],
        }
        .encode_to_vec();
        let records =
            attempt_records(Some(fp_contracts::ATTEMPT_BATCH_TYPE), &batch).expect("valid batch");
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].row.traceparent, "");
        assert_eq!(records[1].row.traceparent, traced.traceparent);
        assert_eq!(records[1].row.tracestate, "vendor=1");
        // One invalid record refuses the whole message; an unknown type is refused as such.
        let broken = v1::DeliveryAttemptBatch {
            attempts: vec![traced.clone(), v1::DeliveryAttempt::default()],
        }
        .encode_to_vec();
        assert!(attempt_records(Some(fp_contracts::ATTEMPT_BATCH_TYPE), &broken).is_err());
        let error = attempt_records(Some("feedbackpulse.v1.EventEnvelope"), &batch)
            .err()
            .expect("not a record");
        assert!(error.to_string().contains("type"), "{error}");
    }
}
