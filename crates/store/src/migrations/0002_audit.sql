-- The audit trail, second format. Each entry also names the acting session and user agent, a target ("user:5",
-- "policy", …) and the user it is about (`subject_id`: the user signing in, the user an administrator changed), and
-- its hash covers the organization. `hash_format` 1 marks entries written before this migration (their hash does
-- not cover the new columns); the verifier accepts them only before the first entry of format 2.
ALTER TABLE audit_log ADD COLUMN hash_format BIGINT NOT NULL DEFAULT 1;
ALTER TABLE audit_log ADD COLUMN session_id BIGINT;
ALTER TABLE audit_log ADD COLUMN user_agent {TEXT};
ALTER TABLE audit_log ADD COLUMN target {TEXT};
ALTER TABLE audit_log ADD COLUMN subject_id BIGINT;
CREATE INDEX audit_log_actor ON audit_log (org_id, actor_id, seq);
CREATE INDEX audit_log_record ON audit_log (org_id, module, record_id, seq);

-- Per-organization retention (days; NULL keeps the trail forever). Entries older than that are purged only after
-- an export archive is written.
ALTER TABLE organizations ADD COLUMN audit_retention_days BIGINT;

-- Signed checkpoints: an Ed25519 signature, by a key kept outside the database, over (organization, seq, time,
-- kind, head hash). `kind` is `periodic` or `purge` (the anchor a purge leaves: the trail after it starts at
-- seq + 1 with `head` as its previous hash).
CREATE TABLE audit_checkpoints (
    org_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    kind {TEXT} NOT NULL,
    at BIGINT NOT NULL,
    head {TEXT} NOT NULL,
    key_id {TEXT} NOT NULL,
    signature {TEXT} NOT NULL,
    PRIMARY KEY (org_id, seq, kind)
);

-- Public keys that signed checkpoints, registered by the server at start. A verifier that must not trust the
-- database passes the exported public key instead (`crm audit verify --public-key`).
CREATE TABLE audit_keys (
    key_id {TEXT} NOT NULL PRIMARY KEY,
    public_key {TEXT} NOT NULL,
    created_at BIGINT NOT NULL
);
