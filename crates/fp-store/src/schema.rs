//! Diesel table definitions; must match `migrations/`.

diesel::table! {
    tenants (id) {
        id -> Uuid,
        name -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Uuid,
        tenant_id -> Nullable<Uuid>,
        key_hash -> Bytea,
        key_prefix -> Text,
        created_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
        role -> Text,
        name -> Text,
    }
}

diesel::table! {
    users (id) {
        id -> Uuid,
        tenant_id -> Nullable<Uuid>,
        email -> Text,
        password_hash -> Text,
        role -> Text,
        created_at -> Timestamptz,
        time_zone -> Nullable<Text>,
    }
}

diesel::table! {
    webhook_configs (tenant_id) {
        tenant_id -> Uuid,
        url -> Text,
        events -> Array<Text>,
        enabled -> Bool,
        updated_at -> Timestamptz,
        last_success_at -> Nullable<Timestamptz>,
        failing_since -> Nullable<Timestamptz>,
        disabled_at -> Nullable<Timestamptz>,
        disabled_reason -> Nullable<Text>,
        secret_sealed -> Nullable<Bytea>,
        previous_secret_sealed -> Nullable<Bytea>,
        previous_secret_expires_at -> Nullable<Timestamptz>,
        failing_notified_at -> Nullable<Timestamptz>,
        disabled_notified_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    submissions (id) {
        id -> Int8,
        tenant_id -> Uuid,
        campaign_id -> Int8,
        star_rating -> Int4,
        text_feedback -> Text,
        customer_name -> Nullable<Text>,
        status -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    outbox (id) {
        id -> Int8,
        event_id -> Uuid,
        tenant_id -> Uuid,
        event_type -> Text,
        payload -> Bytea,
        traceparent -> Text,
        tracestate -> Text,
        created_at -> Timestamptz,
        published_at -> Nullable<Timestamptz>,
        submission_id -> Nullable<Int8>,
    }
}

diesel::table! {
    delivery_attempts (id, attempted_at) {
        id -> Uuid,
        delivery_id -> Uuid,
        event_id -> Uuid,
        tenant_id -> Uuid,
        event_type -> Text,
        url -> Text,
        attempt_number -> Int4,
        attempted_at -> Timestamptz,
        duration_ms -> Int8,
        request_headers -> Jsonb,
        request_body -> Bytea,
        response_status -> Nullable<Int4>,
        response_headers -> Jsonb,
        response_body -> Bytea,
        response_truncated -> Bool,
        error_kind -> Nullable<Text>,
        error_message -> Nullable<Text>,
        #[sql_name = "final"]
        is_final -> Bool,
        next_retry_at -> Nullable<Timestamptz>,
        ingested_at -> Timestamptz,
        manual -> Bool,
        traceparent -> Text,
        tracestate -> Text,
        payload_cleared_at -> Nullable<Timestamptz>,
        payload_retention_days -> Nullable<Int4>,
    }
}

diesel::table! {
    payload_retention_settings (tenant_id) {
        tenant_id -> Uuid,
        days -> Int4,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    payload_clearing_progress (tenant_id) {
        tenant_id -> Uuid,
        cleared_before -> Timestamptz,
    }
}

diesel::table! {
    user_sessions (id) {
        id -> Uuid,
        user_id -> Uuid,
        token_hash -> Bytea,
        created_at -> Timestamptz,
        last_used_at -> Timestamptz,
        client_address -> Text,
        user_agent -> Text,
    }
}

diesel::table! {
    login_failures (key) {
        key -> Text,
        count -> Int4,
        window_started_at -> Timestamptz,
        last_failure_at -> Timestamptz,
    }
}

diesel::table! {
    rate_limit_buckets (tenant_id, action) {
        tenant_id -> Uuid,
        action -> Text,
        full_at -> Timestamptz,
    }
}

diesel::table! {
    recoveries (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        range_from -> Timestamptz,
        range_to -> Timestamptz,
        requested_at -> Timestamptz,
        delivery_ids -> Array<Uuid>,
        skipped_format_changed -> Int8,
        more -> Bool,
    }
}

diesel::table! {
    submission_events (event_id) {
        event_id -> Uuid,
        tenant_id -> Uuid,
        submission_id -> Int8,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    erasures (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        submission_id -> Int8,
        requested_by_api_key -> Nullable<Uuid>,
        requested_by_user -> Nullable<Uuid>,
        erased_at -> Timestamptz,
        erased_fields -> Array<Text>,
        submission_rows -> Int4,
        outbox_rows -> Int4,
        delivery_attempts -> Int4,
        erased_events -> Int4,
        cancelled_deliveries -> Int4,
    }
}

diesel::table! {
    erased_events (event_id) {
        event_id -> Uuid,
        tenant_id -> Uuid,
        erasure_id -> Uuid,
        erased_at -> Timestamptz,
    }
}

diesel::table! {
    undeliverable_events (event_id) {
        event_id -> Uuid,
        unknown_tenant_id -> Uuid,
        event_type -> Text,
        reason -> Text,
        occurred_at -> Timestamptz,
        recorded_at -> Timestamptz,
    }
}

diesel::table! {
    delivery_claims (delivery_id) {
        delivery_id -> Uuid,
        claimed_at -> Timestamptz,
        sent_attempt -> Int4,
    }
}

diesel::joinable!(user_sessions -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(tenants, api_keys, users, user_sessions);
