-- Secondary indexes (and PostgreSQL foreign keys) a bulk load into a fresh database set aside to load faster
-- (`SystemAccess::bulk_load`). The drop and this row commit together; the load's end recreates them and deletes
-- the rows in one transaction, and every start recreates what is still listed here (a load that crashed), so
-- after any start the schema is whole again.
CREATE TABLE bulk_load_deferred (
    name {TEXT} PRIMARY KEY,
    kind {TEXT} NOT NULL,
    table_name {TEXT} NOT NULL,
    ddl {TEXT} NOT NULL
);

-- Counting through the grant branches (`Scoped::count`) answers each branch from an index; criteria sharing rules
-- select customers by industry (and revenue), which had none.
CREATE INDEX customers_industry ON customers (org_id, industry, annual_revenue);
