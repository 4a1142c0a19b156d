-- Real-time monitoring (issue #6): the audit trail is the input and the shared counter. Windowed counts are
-- queries over `audit_log` (these indexes make them cheap), so every server process on one database sees the same
-- counts; alerts carry a unique incident key so an incident raises one alert however many processes notice it.
CREATE INDEX audit_log_action_at ON audit_log (org_id, action, at);
CREATE INDEX audit_log_actor_action_at ON audit_log (org_id, actor_id, action, at);
CREATE INDEX audit_log_subject_action_at ON audit_log (org_id, subject_id, action, at);
CREATE INDEX audit_log_ip_action_at ON audit_log (org_id, ip, action, at);

-- Per-organization rule configuration (a validated JSON document). Saving it bumps `organizations.policy_version`,
-- so every process's cached copy (keyed by that version) is replaced at its next request.
CREATE TABLE monitor_rules (
    org_id BIGINT PRIMARY KEY REFERENCES organizations (id),
    config {TEXT} NOT NULL,
    version BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by BIGINT
);

-- How far the detectors have read each organization's trail (`last_seq`) and refused requests (`last_denial`).
-- Advanced with compare-and-set, so of several processes one takes each step; duplicates are harmless anyway
-- (incident keys).
CREATE TABLE monitor_cursor (
    org_id BIGINT PRIMARY KEY REFERENCES organizations (id),
    last_seq BIGINT NOT NULL,
    last_denial BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Refused requests (403/404 to a signed-in user). Not in the audit chain: a refused request writes nothing there (the
-- trail records what happened, not what was tried). Shared by every process; the detector reads it for the probing
-- rule.
CREATE TABLE access_denials (
    id {ID},
    org_id BIGINT NOT NULL REFERENCES organizations (id),
    user_id BIGINT NOT NULL,
    at BIGINT NOT NULL,
    status BIGINT NOT NULL,
    method {TEXT} NOT NULL,
    path {TEXT} NOT NULL,
    ip {TEXT}
);
CREATE INDEX access_denials_user ON access_denials (org_id, user_id, at);
CREATE INDEX access_denials_org ON access_denials (org_id, id);

-- Alerts. `incident_key` (rule, subject, window bucket) is unique per organization: an incident noticed twice (two
-- processes, a retried pass) is inserted once. `subject_key` is the user id or the client address the rule watched.
-- `detail` holds counts, thresholds, compared values and addresses, never record field values.
CREATE TABLE alerts (
    id {ID},
    org_id BIGINT NOT NULL REFERENCES organizations (id),
    rule {TEXT} NOT NULL,
    severity {TEXT} NOT NULL,
    subject_id BIGINT,
    subject_key {TEXT} NOT NULL,
    incident_key {TEXT} NOT NULL,
    status {TEXT} NOT NULL,
    assignee_id BIGINT,
    resolution_note {TEXT},
    trigger_seq BIGINT,
    trigger_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    detail {TEXT} NOT NULL,
    UNIQUE (org_id, incident_key)
);
CREATE INDEX alerts_recent ON alerts (org_id, rule, subject_key, trigger_at);
CREATE INDEX alerts_created ON alerts (created_at);

-- Signed webhook deliveries of alerts, with their attempts.
CREATE TABLE alert_deliveries (
    id {ID},
    org_id BIGINT NOT NULL,
    alert_id BIGINT NOT NULL,
    url {TEXT} NOT NULL,
    attempts BIGINT NOT NULL,
    status {TEXT} NOT NULL,
    last_error {TEXT},
    updated_at BIGINT NOT NULL
);

-- Records read per user and minute, maintained by the detector that owns the cursor step (in the same
-- transaction as the step): the input of the bulk-read window and of behaviour baselines.
CREATE TABLE activity_rollup (
    org_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    minute BIGINT NOT NULL,
    reads BIGINT NOT NULL,
    PRIMARY KEY (org_id, user_id, minute)
)
