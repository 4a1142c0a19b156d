-- Organizations (tenants). `policy` is the access configuration document (JSON); `policy_version` is bumped in
-- the same transaction as every change to it or to the directory (users, departments, roles, groups), which is how
-- every server process sees a permission change at its next request.
CREATE TABLE organizations (
    id {ID},
    slug {TEXT} NOT NULL UNIQUE,
    name {TEXT} NOT NULL,
    policy {TEXT} NOT NULL,
    policy_version BIGINT NOT NULL,
    settings {TEXT} NOT NULL,
    audit_seq BIGINT NOT NULL,
    audit_head {TEXT} NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE departments (
    id {ID},
    org_id BIGINT NOT NULL REFERENCES organizations (id),
    parent_id BIGINT REFERENCES departments (id),
    name {TEXT} NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX departments_org ON departments (org_id, parent_id);

CREATE TABLE users (
    id {ID},
    org_id BIGINT NOT NULL REFERENCES organizations (id),
    username {TEXT} NOT NULL,
    display_name {TEXT} NOT NULL,
    email {TEXT},
    password_hash {TEXT} NOT NULL,
    status {TEXT} NOT NULL,
    manager_id BIGINT REFERENCES users (id),
    must_change_password BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (org_id, username)
);
CREATE INDEX users_manager ON users (org_id, manager_id);

CREATE TABLE user_departments (
    org_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id),
    department_id BIGINT NOT NULL REFERENCES departments (id),
    is_primary BIGINT NOT NULL,
    PRIMARY KEY (user_id, department_id)
);
CREATE INDEX user_departments_dept ON user_departments (org_id, department_id, user_id);

CREATE TABLE user_roles (
    org_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id),
    role_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, role_id)
);
CREATE INDEX user_roles_role ON user_roles (org_id, role_id, user_id);

CREATE TABLE sessions (
    id {ID},
    org_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id),
    token_hash {TEXT} NOT NULL UNIQUE,
    kind {TEXT} NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT,
    ip {TEXT},
    user_agent {TEXT}
);
CREATE INDEX sessions_user ON sessions (org_id, user_id);

CREATE TABLE customers (
    id {ID},
    org_id BIGINT NOT NULL REFERENCES organizations (id),
    owner_id BIGINT NOT NULL REFERENCES users (id),
{RECORD_COLUMNS:customers}    created_by BIGINT NOT NULL,
    updated_by BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX customers_updated ON customers (org_id, updated_at, id);
CREATE INDEX customers_owner ON customers (org_id, owner_id, updated_at);
CREATE INDEX customers_region ON customers (org_id, region, updated_at);
CREATE INDEX customers_type ON customers (org_id, customer_type, updated_at);
CREATE INDEX customers_name ON customers (org_id, name);

CREATE TABLE contacts (
    id {ID},
    org_id BIGINT NOT NULL REFERENCES organizations (id),
    owner_id BIGINT NOT NULL REFERENCES users (id),
{RECORD_COLUMNS:contacts}    created_by BIGINT NOT NULL,
    updated_by BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX contacts_updated ON contacts (org_id, updated_at, id);
CREATE INDEX contacts_owner ON contacts (org_id, owner_id, updated_at);
CREATE INDEX contacts_account ON contacts (org_id, account_id, updated_at);

CREATE TABLE leads (
    id {ID},
    org_id BIGINT NOT NULL REFERENCES organizations (id),
    owner_id BIGINT NOT NULL REFERENCES users (id),
{RECORD_COLUMNS:leads}    created_by BIGINT NOT NULL,
    updated_by BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX leads_updated ON leads (org_id, updated_at, id);
CREATE INDEX leads_owner ON leads (org_id, owner_id, updated_at);

CREATE TABLE opportunities (
    id {ID},
    org_id BIGINT NOT NULL REFERENCES organizations (id),
    owner_id BIGINT NOT NULL REFERENCES users (id),
{RECORD_COLUMNS:opportunities}    created_by BIGINT NOT NULL,
    updated_by BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX opportunities_updated ON opportunities (org_id, updated_at, id);
CREATE INDEX opportunities_owner ON opportunities (org_id, owner_id, updated_at);
CREATE INDEX opportunities_account ON opportunities (org_id, account_id, updated_at);

CREATE TABLE tickets (
    id {ID},
    org_id BIGINT NOT NULL REFERENCES organizations (id),
    owner_id BIGINT NOT NULL REFERENCES users (id),
{RECORD_COLUMNS:tickets}    created_by BIGINT NOT NULL,
    updated_by BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX tickets_updated ON tickets (org_id, updated_at, id);
CREATE INDEX tickets_owner ON tickets (org_id, owner_id, updated_at);
CREATE INDEX tickets_account ON tickets (org_id, account_id, updated_at);

CREATE TABLE activities (
    id {ID},
    org_id BIGINT NOT NULL REFERENCES organizations (id),
    owner_id BIGINT NOT NULL REFERENCES users (id),
{RECORD_COLUMNS:activities}    created_by BIGINT NOT NULL,
    updated_by BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX activities_updated ON activities (org_id, updated_at, id);
CREATE INDEX activities_owner ON activities (org_id, owner_id, updated_at);
CREATE INDEX activities_account ON activities (org_id, account_id, updated_at);

-- Record teams (相关团队) and manual shares (手动共享), for every record module. `share_key` is `u:ID`, `g:ID`,
-- `d:ID` or `r:ID`; `level` is 1 read, 2 edit, 3 full.
CREATE TABLE record_team (
    org_id BIGINT NOT NULL,
    module {TEXT} NOT NULL,
    record_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id),
    level BIGINT NOT NULL,
    PRIMARY KEY (module, record_id, user_id)
);
CREATE INDEX record_team_user ON record_team (org_id, module, user_id, record_id);

CREATE TABLE record_shares (
    org_id BIGINT NOT NULL,
    module {TEXT} NOT NULL,
    record_id BIGINT NOT NULL,
    share_key {TEXT} NOT NULL,
    level BIGINT NOT NULL,
    created_by BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (module, record_id, share_key)
);
CREATE INDEX record_shares_key ON record_shares (org_id, module, share_key, record_id);

-- The audit trail: one gap-free sequence per organization, each entry hashing the previous one.
CREATE TABLE audit_log (
    org_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    actor_id BIGINT,
    action {TEXT} NOT NULL,
    module {TEXT},
    record_id BIGINT,
    outcome {TEXT} NOT NULL,
    detail {TEXT} NOT NULL,
    request_id {TEXT},
    ip {TEXT},
    prev_hash {TEXT} NOT NULL,
    hash {TEXT} NOT NULL,
    PRIMARY KEY (org_id, seq)
);
