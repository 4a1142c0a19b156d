-- Maintained record counts: how many records each organization holds in each record table, so that a count of
-- everything one may view (the administrator's `true`; customer service's `customer_type <> 'government'`, counted
-- as the total minus the excluded rows: `CountPlan::Complement` in records.rs) reads a few rows instead of every
-- index entry of the organization (at 1,000,000 customers an index-only scan of 35-78 ms on PostgreSQL, which has
-- no cheaper exact `COUNT(*)`; BENCHMARKS.md §2).
--
-- An organization's count of a table is the SUM of its rows' `n` over `slot`. It is kept exact by triggers on
-- every record table, not by application code, so every write path (API create and delete, CSV import, the bulk
-- load, raw SQL) keeps it right without remembering to. The one exception is deliberate and
-- self-healing: the bulk load into a fresh database sets the triggers aside with its indexes and, when it puts them
-- back (or the next start does, after a crash), recomputes the counts from the rows (bulk.rs). Per engine:
-- - PostgreSQL: statement-level AFTER INSERT / AFTER DELETE triggers with transition tables, so a bulk
--   `INSERT ... SELECT` of 50,000 rows is one grouped upsert, not 50,000. A statement adds to the slot
--   `pg_backend_pid() % 8` of its connection, so concurrent writers on different connections update different
--   rows instead of all waiting on one row's lock until they commit. (Today every change also appends to the
--   organization's audit chain in its transaction, which serialises on the organization row; the slots keep the
--   counts from becoming a second such point.) A transaction touches a single slot of a table per organization,
--   so two multi-row transactions (CSV imports) never wait on each other's slots in opposite orders (a slot per
--   record id would deadlock them). A slot's `n` may go below zero (a delete on another connection than the
--   insert); only the sum means anything.
-- - SQLite: row-level triggers (SQLite has no statement-level ones) on the one slot 0: there is one writer.
-- No statement of the store changes a record's `org_id` (updates set fields, owner and timestamps), but a record
-- moved between organizations by hand is counted too (the `_count_move` triggers, fired only when it changes), and
-- on PostgreSQL a TRUNCATE (which fires no delete trigger) empties the table's counts; SQLite has no TRUNCATE (its
-- DELETE without WHERE still fires the row triggers when a table has any).
-- The counts are filled from the existing rows after the triggers exist: on PostgreSQL creating a trigger locks
-- the table against writes until this migration commits, so no record is counted twice or missed.
CREATE TABLE record_counts (
    org_id BIGINT NOT NULL,
    table_name {TEXT} NOT NULL,
    slot BIGINT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (org_id, table_name, slot)
);
-- [postgres]
CREATE FUNCTION record_counts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO record_counts (org_id, table_name, slot, n)
    SELECT org_id, TG_TABLE_NAME::text, pg_backend_pid() % 8, COUNT(*) FROM inserted_rows
    GROUP BY org_id ORDER BY org_id
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = record_counts.n + EXCLUDED.n;
    RETURN NULL;
END
$$;
CREATE FUNCTION record_counts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO record_counts (org_id, table_name, slot, n)
    SELECT org_id, TG_TABLE_NAME::text, pg_backend_pid() % 8, -COUNT(*) FROM deleted_rows
    GROUP BY org_id ORDER BY org_id
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = record_counts.n + EXCLUDED.n;
    RETURN NULL;
END
$$;
CREATE FUNCTION record_counts_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO record_counts (org_id, table_name, slot, n)
    VALUES (OLD.org_id, TG_TABLE_NAME::text, pg_backend_pid() % 8, -1),
        (NEW.org_id, TG_TABLE_NAME::text, pg_backend_pid() % 8, 1)
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = record_counts.n + EXCLUDED.n;
    RETURN NULL;
END
$$;
CREATE FUNCTION record_counts_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM record_counts WHERE table_name = TG_TABLE_NAME::text;
    RETURN NULL;
END
$$;
CREATE TRIGGER customers_count_insert AFTER INSERT ON customers REFERENCING NEW TABLE AS inserted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION record_counts_inserted();
CREATE TRIGGER customers_count_delete AFTER DELETE ON customers REFERENCING OLD TABLE AS deleted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION record_counts_deleted();
CREATE TRIGGER customers_count_move AFTER UPDATE OF org_id ON customers
    FOR EACH ROW WHEN (OLD.org_id <> NEW.org_id) EXECUTE FUNCTION record_counts_moved();
CREATE TRIGGER customers_count_truncate AFTER TRUNCATE ON customers FOR EACH STATEMENT EXECUTE FUNCTION record_counts_truncated();
CREATE TRIGGER contacts_count_insert AFTER INSERT ON contacts REFERENCING NEW TABLE AS inserted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION record_counts_inserted();
CREATE TRIGGER contacts_count_delete AFTER DELETE ON contacts REFERENCING OLD TABLE AS deleted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION record_counts_deleted();
CREATE TRIGGER contacts_count_move AFTER UPDATE OF org_id ON contacts
    FOR EACH ROW WHEN (OLD.org_id <> NEW.org_id) EXECUTE FUNCTION record_counts_moved();
CREATE TRIGGER contacts_count_truncate AFTER TRUNCATE ON contacts FOR EACH STATEMENT EXECUTE FUNCTION record_counts_truncated();
CREATE TRIGGER leads_count_insert AFTER INSERT ON leads REFERENCING NEW TABLE AS inserted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION record_counts_inserted();
CREATE TRIGGER leads_count_delete AFTER DELETE ON leads REFERENCING OLD TABLE AS deleted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION record_counts_deleted();
CREATE TRIGGER leads_count_move AFTER UPDATE OF org_id ON leads
    FOR EACH ROW WHEN (OLD.org_id <> NEW.org_id) EXECUTE FUNCTION record_counts_moved();
CREATE TRIGGER leads_count_truncate AFTER TRUNCATE ON leads FOR EACH STATEMENT EXECUTE FUNCTION record_counts_truncated();
CREATE TRIGGER opportunities_count_insert AFTER INSERT ON opportunities REFERENCING NEW TABLE AS inserted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION record_counts_inserted();
CREATE TRIGGER opportunities_count_delete AFTER DELETE ON opportunities REFERENCING OLD TABLE AS deleted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION record_counts_deleted();
CREATE TRIGGER opportunities_count_move AFTER UPDATE OF org_id ON opportunities
    FOR EACH ROW WHEN (OLD.org_id <> NEW.org_id) EXECUTE FUNCTION record_counts_moved();
CREATE TRIGGER opportunities_count_truncate AFTER TRUNCATE ON opportunities FOR EACH STATEMENT EXECUTE FUNCTION record_counts_truncated();
CREATE TRIGGER tickets_count_insert AFTER INSERT ON tickets REFERENCING NEW TABLE AS inserted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION record_counts_inserted();
CREATE TRIGGER tickets_count_delete AFTER DELETE ON tickets REFERENCING OLD TABLE AS deleted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION record_counts_deleted();
CREATE TRIGGER tickets_count_move AFTER UPDATE OF org_id ON tickets
    FOR EACH ROW WHEN (OLD.org_id <> NEW.org_id) EXECUTE FUNCTION record_counts_moved();
CREATE TRIGGER tickets_count_truncate AFTER TRUNCATE ON tickets FOR EACH STATEMENT EXECUTE FUNCTION record_counts_truncated();
CREATE TRIGGER activities_count_insert AFTER INSERT ON activities REFERENCING NEW TABLE AS inserted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION record_counts_inserted();
CREATE TRIGGER activities_count_delete AFTER DELETE ON activities REFERENCING OLD TABLE AS deleted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION record_counts_deleted();
CREATE TRIGGER activities_count_move AFTER UPDATE OF org_id ON activities
    FOR EACH ROW WHEN (OLD.org_id <> NEW.org_id) EXECUTE FUNCTION record_counts_moved();
CREATE TRIGGER activities_count_truncate AFTER TRUNCATE ON activities FOR EACH STATEMENT EXECUTE FUNCTION record_counts_truncated();
-- [sqlite]
CREATE TRIGGER customers_count_insert AFTER INSERT ON customers BEGIN
    INSERT INTO record_counts (org_id, table_name, slot, n) VALUES (NEW.org_id, 'customers', 0, 1)
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER customers_count_delete AFTER DELETE ON customers BEGIN
    INSERT INTO record_counts (org_id, table_name, slot, n) VALUES (OLD.org_id, 'customers', 0, -1)
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER customers_count_move AFTER UPDATE OF org_id ON customers WHEN OLD.org_id <> NEW.org_id BEGIN
    INSERT INTO record_counts (org_id, table_name, slot, n) VALUES (OLD.org_id, 'customers', 0, -1)
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = n + excluded.n;
    INSERT INTO record_counts (org_id, table_name, slot, n) VALUES (NEW.org_id, 'customers', 0, 1)
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER contacts_count_insert AFTER INSERT ON contacts BEGIN
    INSERT INTO record_counts (org_id, table_name, slot, n) VALUES (NEW.org_id, 'contacts', 0, 1)
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER contacts_count_delete AFTER DELETE ON contacts BEGIN
    INSERT INTO record_counts (org_id, table_name, slot, n) VALUES (OLD.org_id, 'contacts', 0, -1)
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER contacts_count_move AFTER UPDATE OF org_id ON contacts WHEN OLD.org_id <> NEW.org_id BEGIN
    INSERT INTO record_counts (org_id, table_name, slot, n) VALUES (OLD.org_id, 'contacts', 0, -1)
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = n + excluded.n;
    INSERT INTO record_counts (org_id, table_name, slot, n) VALUES (NEW.org_id, 'contacts', 0, 1)
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER leads_count_insert AFTER INSERT ON leads BEGIN
    INSERT INTO record_counts (org_id, table_name, slot, n) VALUES (NEW.org_id, 'leads', 0, 1)
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER leads_count_delete AFTER DELETE ON leads BEGIN
    INSERT INTO record_counts (org_id, table_name, slot, n) VALUES (OLD.org_id, 'leads', 0, -1)
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER leads_count_move AFTER UPDATE OF org_id ON leads WHEN OLD.org_id <> NEW.org_id BEGIN
    INSERT INTO record_counts (org_id, table_name, slot, n) VALUES (OLD.org_id, 'leads', 0, -1)
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = n + excluded.n;
    INSERT INTO record_counts (org_id, table_name, slot, n) VALUES (NEW.org_id, 'leads', 0, 1)
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER opportunities_count_insert AFTER INSERT ON opportunities BEGIN
    INSERT INTO record_counts (org_id, table_name, slot, n) VALUES (NEW.org_id, 'opportunities', 0, 1)
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER opportunities_count_delete AFTER DELETE ON opportunities BEGIN
    INSERT INTO record_counts (org_id, table_name, slot, n) VALUES (OLD.org_id, 'opportunities', 0, -1)
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER opportunities_count_move AFTER UPDATE OF org_id ON opportunities WHEN OLD.org_id <> NEW.org_id BEGIN
    INSERT INTO record_counts (org_id, table_name, slot, n) VALUES (OLD.org_id, 'opportunities', 0, -1)
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = n + excluded.n;
    INSERT INTO record_counts (org_id, table_name, slot, n) VALUES (NEW.org_id, 'opportunities', 0, 1)
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER tickets_count_insert AFTER INSERT ON tickets BEGIN
    INSERT INTO record_counts (org_id, table_name, slot, n) VALUES (NEW.org_id, 'tickets', 0, 1)
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER tickets_count_delete AFTER DELETE ON tickets BEGIN
    INSERT INTO record_counts (org_id, table_name, slot, n) VALUES (OLD.org_id, 'tickets', 0, -1)
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER tickets_count_move AFTER UPDATE OF org_id ON tickets WHEN OLD.org_id <> NEW.org_id BEGIN
    INSERT INTO record_counts (org_id, table_name, slot, n) VALUES (OLD.org_id, 'tickets', 0, -1)
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = n + excluded.n;
    INSERT INTO record_counts (org_id, table_name, slot, n) VALUES (NEW.org_id, 'tickets', 0, 1)
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER activities_count_insert AFTER INSERT ON activities BEGIN
    INSERT INTO record_counts (org_id, table_name, slot, n) VALUES (NEW.org_id, 'activities', 0, 1)
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER activities_count_delete AFTER DELETE ON activities BEGIN
    INSERT INTO record_counts (org_id, table_name, slot, n) VALUES (OLD.org_id, 'activities', 0, -1)
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER activities_count_move AFTER UPDATE OF org_id ON activities WHEN OLD.org_id <> NEW.org_id BEGIN
    INSERT INTO record_counts (org_id, table_name, slot, n) VALUES (OLD.org_id, 'activities', 0, -1)
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = n + excluded.n;
    INSERT INTO record_counts (org_id, table_name, slot, n) VALUES (NEW.org_id, 'activities', 0, 1)
    ON CONFLICT (org_id, table_name, slot) DO UPDATE SET n = n + excluded.n;
END;
-- [both]
INSERT INTO record_counts (org_id, table_name, slot, n) SELECT org_id, 'customers', 0, COUNT(*) FROM customers GROUP BY org_id;
INSERT INTO record_counts (org_id, table_name, slot, n) SELECT org_id, 'contacts', 0, COUNT(*) FROM contacts GROUP BY org_id;
INSERT INTO record_counts (org_id, table_name, slot, n) SELECT org_id, 'leads', 0, COUNT(*) FROM leads GROUP BY org_id;
INSERT INTO record_counts (org_id, table_name, slot, n) SELECT org_id, 'opportunities', 0, COUNT(*) FROM opportunities GROUP BY org_id;
INSERT INTO record_counts (org_id, table_name, slot, n) SELECT org_id, 'tickets', 0, COUNT(*) FROM tickets GROUP BY org_id;
INSERT INTO record_counts (org_id, table_name, slot, n) SELECT org_id, 'activities', 0, COUNT(*) FROM activities GROUP BY org_id;
