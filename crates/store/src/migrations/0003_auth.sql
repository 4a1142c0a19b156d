-- Sign-in and account security: lockout and rate-limit counters that hold across processes and restarts, the
-- sign-in history, TOTP second factors and recovery codes, pending sign-in challenges, API tokens, and per-session
-- CSRF tokens and last-verification times.

-- Per-account soft lockout (see auth/throttle.rs for the state machine).
CREATE TABLE auth_lockouts (
    user_id BIGINT PRIMARY KEY REFERENCES users (id),
    org_id BIGINT NOT NULL,
    failures BIGINT NOT NULL,
    last_failure_at BIGINT NOT NULL,
    locked_until BIGINT NOT NULL
);

-- Fixed-window counters per client network (`a:ip:…` attempts per minute, `f:ip:…` failures per 15 minutes).
-- Not per organization: a sign-in is counted before its organization is known.
CREATE TABLE auth_throttle (
    bucket {TEXT} PRIMARY KEY,
    window_start BIGINT NOT NULL,
    hits BIGINT NOT NULL
);

-- Every sign-in attempt of a known account: what the user and their administrators see.
CREATE TABLE sign_in_history (
    id {ID},
    org_id BIGINT NOT NULL REFERENCES organizations (id),
    user_id BIGINT REFERENCES users (id),
    at BIGINT NOT NULL,
    ip {TEXT},
    user_agent {TEXT},
    result {TEXT} NOT NULL,
    mfa {TEXT},
    session_id BIGINT
);
CREATE INDEX sign_in_history_user ON sign_in_history (org_id, user_id, id);

-- TOTP: `secret` (base32) once confirmed, `pending_secret` during enrolment; `last_step` refuses replays.
CREATE TABLE mfa_totp (
    user_id BIGINT PRIMARY KEY REFERENCES users (id),
    org_id BIGINT NOT NULL,
    secret {TEXT},
    pending_secret {TEXT},
    last_step BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Single-use recovery codes, as salted SHA-256 hashes.
CREATE TABLE mfa_recovery_codes (
    id {ID},
    org_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id),
    salt {TEXT} NOT NULL,
    code_hash {TEXT} NOT NULL,
    used_at BIGINT
);
CREATE INDEX mfa_recovery_codes_user ON mfa_recovery_codes (user_id);

-- A password accepted, a second factor awaited: the `mfa_token` of POST /api/v1/session (hashed).
CREATE TABLE sign_in_challenges (
    id {ID},
    org_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id),
    token_hash {TEXT} NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    used_at BIGINT,
    ip {TEXT},
    user_agent {TEXT}
);
CREATE INDEX sign_in_challenges_user ON sign_in_challenges (user_id);

-- API tokens of integrations (hashed; `prefix` is the token's recognisable start).
CREATE TABLE api_tokens (
    id {ID},
    org_id BIGINT NOT NULL REFERENCES organizations (id),
    user_id BIGINT NOT NULL REFERENCES users (id),
    name {TEXT} NOT NULL,
    token_hash {TEXT} NOT NULL UNIQUE,
    prefix {TEXT} NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_tokens_user ON api_tokens (org_id, user_id);

ALTER TABLE sessions ADD COLUMN csrf_token {TEXT};
ALTER TABLE sessions ADD COLUMN verified_at BIGINT
