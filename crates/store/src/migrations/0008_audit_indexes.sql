-- Audit append throughput (issue #5): every secondary index of `audit_log` is written by every append, and the
-- trail is the busiest table. Migrations 2 and 4 gave it six full indexes; this keeps each query over the trail
-- indexed with three full ones and small partial ones (a row outside a partial index's WHERE costs its insert only
-- the evaluation of that condition). Which query each index serves:
--
-- * audit view, newest first (`audit_query.rs`): no filter, `from`/`to`, `outcome`: the primary key (org_id, seq);
--   `actor`: audit_log_actor; `module` + `record`: audit_log_record (only entries about one record have a
--   record id, so lists, queries and sign-ins stay out of it); `action`: audit_log_action; a viewer limited to some
--   users (`actor_id IN … OR subject_id IN …`): audit_log_actor and audit_log_subject (only entries about a user
--   have a subject).
-- * monitoring's windowed counts (`monitor_detect.rs`, `monitor.rs`), whose SQL names the action as a literal so
--   that both engines can prove the partial index's condition: failed sign-ins per account and per address,
--   known networks: audit_log_sign_in_subject, audit_log_sign_in_ip; exports, deletes (also the blocking count of
--   `DeleteLimit`), transfers and reveals per user: audit_log_actor_watched.
-- * verification, the detector's cursor and purges read by (org_id, seq): the primary key.
DROP INDEX audit_log_action_at;
DROP INDEX audit_log_actor_action_at;
DROP INDEX audit_log_subject_action_at;
DROP INDEX audit_log_ip_action_at;
DROP INDEX audit_log_record;
CREATE INDEX audit_log_record ON audit_log (org_id, module, record_id, seq) WHERE record_id IS NOT NULL;
CREATE INDEX audit_log_action ON audit_log (org_id, action, seq);
CREATE INDEX audit_log_subject ON audit_log (org_id, subject_id, seq) WHERE subject_id IS NOT NULL;
CREATE INDEX audit_log_sign_in_subject ON audit_log (org_id, subject_id, outcome, at) WHERE action = 'session.sign_in';
CREATE INDEX audit_log_sign_in_ip ON audit_log (org_id, ip, outcome, at) WHERE action = 'session.sign_in';
CREATE INDEX audit_log_actor_watched ON audit_log (org_id, actor_id, action, at)
    WHERE action = 'record.export' OR action = 'record.delete' OR action = 'record.transfer' OR action = 'record.reveal';
