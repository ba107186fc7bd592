-- Owned by fp-api. Server-side dashboard sessions: the browser holds a random token, the row holds
-- only its SHA-256, so a database read does not hand out live sessions. A session ends when its row
-- is deleted (log-out, password change, an admin) or by the api's idle and absolute timeouts.
-- The dashboard's read-only role is granted nothing here.
CREATE TABLE user_sessions (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    last_used_at timestamptz NOT NULL,
    -- Where the log-in came from, for the user's list of sessions.
    client_address text NOT NULL,
    user_agent text NOT NULL
);
CREATE INDEX user_sessions_user ON user_sessions (user_id, created_at);

-- Owned by fp-api. Failed log-ins per throttling key (`email-from-client:<address> <email>`,
-- `client:<address>`) in the key's current window; see fp_domain::login_throttle.
CREATE TABLE login_failures (
    key text PRIMARY KEY,
    count integer NOT NULL,
    window_started_at timestamptz NOT NULL,
    last_failure_at timestamptz NOT NULL
);
CREATE INDEX login_failures_age ON login_failures (window_started_at);
