-- The organization's policy document moves out of its row into a table of its own. The row is read by every
-- request (its policy version and settings, with the session) and written by every audit batch (its chain head);
-- at scale L the document is about 90 KB, and SQLite stores a row's columns in order, so every one of those reads
-- and writes walked (and each write copied) the document's overflow pages to reach the small columns after it.
CREATE TABLE org_policy_documents (
    org_id BIGINT PRIMARY KEY REFERENCES organizations (id),
    policy {TEXT} NOT NULL
);
INSERT INTO org_policy_documents (org_id, policy) SELECT id, policy FROM organizations;
ALTER TABLE organizations DROP COLUMN policy
