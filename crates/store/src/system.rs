//! The audited system path: everything that must run without a signed-in user's scope (sign-in, seeding, the
//! directory and policy administration behind permission-checked API handlers). Nothing here returns customer
//! records to a caller; record data leaves the store only through [`crate::Scoped`].

use crate::audit::{self, AuditEntry};
use crate::{Principal, Store, StoreError, now_ms};
use crm_domain::{DeptId, Module, OrgId, RoleId, UserId, Value};
use crm_policy::{PolicyConfig, UserStatus};
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::collections::BTreeMap;

// Sessions, their lifetimes and the sign-in flow live in `crate::auth`.

pub struct SystemAccess<'s> {
    pub(crate) store: &'s Store,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    pub password: String,
    pub manager: Option<UserId>,
    /// Primary department first.
    pub departments: Vec<DeptId>,
    pub roles: Vec<RoleId>,
    pub must_change_password: bool,
}

#[derive(Debug, Clone)]
pub struct SignIn {
    /// The bearer token, shown once; only its hash is stored.
    pub token: String,
    pub org: OrgId,
    pub user: UserId,
    pub must_change_password: bool,
    pub expires_at: i64,
}

pub(crate) fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn hash_password(password: &str) -> Result<String, StoreError> {
    crate::auth::password::hash_blocking(password)
}

impl<'s> SystemAccess<'s> {
    pub(crate) fn new(store: &'s Store) -> Self {
        SystemAccess { store }
    }

    pub(crate) fn db(&self) -> &crate::db::Db {
        &self.store.db
    }

    pub async fn organization_count(&self) -> Result<i64, StoreError> {
        let mut q = self.db().sql();
        q.push("SELECT COUNT(*) AS n FROM organizations");
        Ok(q.fetch_one(&self.db().pool).await?.try_get("n")?)
    }

    pub async fn organization_by_slug(&self, slug: &str) -> Result<Option<OrgId>, StoreError> {
        let mut q = self.db().sql();
        q.push("SELECT id FROM organizations WHERE slug = ").bind(slug);
        Ok(q.fetch_optional(&self.db().pool).await?.map(|r| r.try_get("id")).transpose()?)
    }

    pub async fn create_organization(
        &self,
        slug: &str,
        name: &str,
        config: &PolicyConfig,
    ) -> Result<OrgId, StoreError> {
        config.validate().map_err(|e| StoreError::Config(e.to_string()))?;
        let doc = serde_json::to_string(config).map_err(|e| StoreError::Config(e.to_string()))?;
        let mut tx = self.db().begin_write().await?;
        let mut q = self.db().sql();
        q.push("INSERT INTO organizations (slug, name, policy_version, settings, audit_seq, audit_head, created_at) VALUES (")
            .bind(slug)
            .push(", ")
            .bind(name)
            .push(", 1, '{}', 0, '', ")
            .bind(now_ms())
            .push(") RETURNING id");
        let org: i64 = q.fetch_one(&mut *tx).await?.try_get("id")?;
        let mut q = self.db().sql();
        q.push("INSERT INTO org_policy_documents (org_id, policy) VALUES (").bind(org).push(", ").bind(doc).push(")");
        q.execute(&mut *tx).await?;
        audit::append(
            &mut tx,
            self.db().engine,
            &AuditEntry::new(org, None, "organization.create").detail(serde_json::json!({"slug": slug})),
        )
        .await?;
        tx.commit().await?;
        Ok(org)
    }

    /// The tail every directory change shares: bump the policy version (so every process recompiles at its next
    /// request), append the audit entry, commit, all in the change's transaction.
    async fn finish_directory_change(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Any>,
        org: OrgId,
        entry: AuditEntry,
    ) -> Result<(), StoreError> {
        self.bump(&mut tx, org).await?;
        audit::append(&mut tx, self.db().engine, &entry).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn bump(&self, conn: &mut sqlx::AnyConnection, org: OrgId) -> Result<(), StoreError> {
        let mut q = self.db().sql();
        q.push("UPDATE organizations SET policy_version = policy_version + 1 WHERE id = ").bind(org);
        q.execute(&mut *conn).await?;
        Ok(())
    }

    pub async fn create_department(
        &self,
        org: OrgId,
        parent: Option<DeptId>,
        name: &str,
    ) -> Result<DeptId, StoreError> {
        let mut tx = self.db().begin_write().await?;
        if let Some(p) = parent {
            let mut q = self.db().sql();
            q.push("SELECT id FROM departments WHERE org_id = ").bind(org).push(" AND id = ").bind(p);
            q.fetch_optional(&mut *tx).await?.ok_or_else(|| StoreError::invalid("parent_id", "no such department"))?;
        }
        let mut q = self.db().sql();
        q.push("INSERT INTO departments (org_id, parent_id, name, created_at) VALUES (")
            .bind(org)
            .push(", ")
            .bind(parent)
            .push(", ")
            .bind(name)
            .push(", ")
            .bind(now_ms())
            .push(") RETURNING id");
        let id: i64 = q.fetch_one(&mut *tx).await?.try_get("id")?;
        self.finish_directory_change(
            tx,
            org,
            AuditEntry::new(org, None, "department.create")
                .target(format!("department:{id}"))
                .detail(serde_json::json!({"id": id, "parent_id": parent, "name": name})),
        )
        .await?;
        Ok(id)
    }

    /// Creates a user; the password is hashed with argon2id off the async runtime.
    pub async fn create_user(&self, org: OrgId, u: NewUser) -> Result<UserId, StoreError> {
        let password = u.password.clone();
        let hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| StoreError::Config(e.to_string()))??;
        let mut tx = self.db().begin_write().await?;
        let now = now_ms();
        let mut q = self.db().sql();
        q.push("INSERT INTO users (org_id, username, display_name, email, password_hash, status, manager_id, must_change_password, created_at, updated_at) VALUES (")
            .bind(org)
            .push(", ")
            .bind(u.username.as_str())
            .push(", ")
            .bind(u.display_name.as_str())
            .push(", ")
            .bind(u.email.clone())
            .push(", ")
            .bind(hash)
            .push(", 'active', ")
            .bind(u.manager)
            .push(", ")
            .bind(i64::from(u.must_change_password))
            .push(", ")
            .bind(now)
            .push(", ")
            .bind(now)
            .push(") RETURNING id");
        let id: i64 = q
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| match e {
                StoreError::Db(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                    StoreError::Conflict(format!("username {} is taken", u.username))
                }
                e => e,
            })?
            .try_get("id")?;
        for (i, d) in u.departments.iter().enumerate() {
            let mut q = self.db().sql();
            q.push("INSERT INTO user_departments (org_id, user_id, department_id, is_primary) VALUES (")
                .bind(org)
                .push(", ")
                .bind(id)
                .push(", ")
                .bind(*d)
                .push(", ")
                .bind(i64::from(i == 0))
                .push(")");
            q.execute(&mut *tx).await?;
        }
        for r in &u.roles {
            let mut q = self.db().sql();
            q.push("INSERT INTO user_roles (org_id, user_id, role_id) VALUES (")
                .bind(org)
                .push(", ")
                .bind(id)
                .push(", ")
                .bind(*r)
                .push(")");
            q.execute(&mut *tx).await?;
        }
        self.finish_directory_change(tx, org, AuditEntry::new(org, None, "user.create").subject(id).target(format!("user:{id}")).detail(serde_json::json!({
                "id": id, "username": u.username, "departments": u.departments, "roles": u.roles, "manager_id": u.manager
            }))).await?;
        Ok(id)
    }

    /// Replaces a user's departments (primary first). Holds at the next request: the policy version is bumped.
    pub async fn set_user_departments(
        &self,
        org: OrgId,
        actor: Option<UserId>,
        user: UserId,
        departments: &[DeptId],
    ) -> Result<(), StoreError> {
        let mut tx = self.db().begin_write().await?;
        self.require_user(&mut tx, org, user).await?;
        let mut q = self.db().sql();
        q.push("DELETE FROM user_departments WHERE org_id = ").bind(org).push(" AND user_id = ").bind(user);
        q.execute(&mut *tx).await?;
        for (i, d) in departments.iter().enumerate() {
            let mut q = self.db().sql();
            q.push("INSERT INTO user_departments (org_id, user_id, department_id, is_primary) SELECT org_id, ")
                .bind(user)
                .push(", id, ")
                .bind(i64::from(i == 0))
                .push(" FROM departments WHERE org_id = ")
                .bind(org)
                .push(" AND id = ")
                .bind(*d);
            if q.execute(&mut *tx).await? == 0 {
                return Err(StoreError::invalid("departments", format!("no such department {d}")));
            }
        }
        self.finish_directory_change(
            tx,
            org,
            AuditEntry::new(org, actor, "user.departments")
                .subject(user)
                .target(format!("user:{user}"))
                .detail(serde_json::json!({"user": user, "departments": departments})),
        )
        .await?;
        Ok(())
    }

    /// Replaces a user's roles.
    pub async fn set_user_roles(
        &self,
        org: OrgId,
        actor: Option<UserId>,
        user: UserId,
        roles: &[RoleId],
    ) -> Result<(), StoreError> {
        let mut tx = self.db().begin_write().await?;
        self.require_user(&mut tx, org, user).await?;
        // A role taken away ends the user's sessions at once (they sign in again under the reduced rights).
        let mut q = self.db().sql();
        q.push("SELECT role_id FROM user_roles WHERE org_id = ").bind(org).push(" AND user_id = ").bind(user);
        let before: Vec<i64> =
            q.fetch_all(&mut *tx).await?.iter().map(|r| r.try_get("role_id")).collect::<Result<_, _>>()?;
        if before.iter().any(|r| !roles.contains(r)) {
            crate::auth::sessions::revoke_user_sessions(&mut tx, self.db().engine, org, user, None, now_ms()).await?;
        }
        let mut q = self.db().sql();
        q.push("DELETE FROM user_roles WHERE org_id = ").bind(org).push(" AND user_id = ").bind(user);
        q.execute(&mut *tx).await?;
        for r in roles {
            let mut q = self.db().sql();
            q.push("INSERT INTO user_roles (org_id, user_id, role_id) VALUES (")
                .bind(org)
                .push(", ")
                .bind(user)
                .push(", ")
                .bind(*r)
                .push(")");
            q.execute(&mut *tx).await?;
        }
        self.finish_directory_change(
            tx,
            org,
            AuditEntry::new(org, actor, "user.roles")
                .subject(user)
                .target(format!("user:{user}"))
                .detail(serde_json::json!({"user": user, "roles": roles})),
        )
        .await?;
        Ok(())
    }

    /// Sets a user's manager; a cycle in the reporting line is refused.
    pub async fn set_manager(
        &self,
        org: OrgId,
        actor: Option<UserId>,
        user: UserId,
        manager: Option<UserId>,
    ) -> Result<(), StoreError> {
        if let Some(m) = manager {
            let policy = self.store.current_org_policy(org).await?;
            if policy.directory.user(m).is_none() {
                return Err(StoreError::invalid("manager_id", "no such user"));
            }
            if policy.directory.manager_cycle(user, m) {
                return Err(StoreError::invalid("manager_id", "would create a cycle in the reporting line"));
            }
        }
        let mut tx = self.db().begin_write().await?;
        self.require_user(&mut tx, org, user).await?;
        let mut q = self.db().sql();
        q.push("UPDATE users SET manager_id = ")
            .bind(manager)
            .push(" WHERE org_id = ")
            .bind(org)
            .push(" AND id = ")
            .bind(user);
        q.execute(&mut *tx).await?;
        self.finish_directory_change(
            tx,
            org,
            AuditEntry::new(org, actor, "user.manager")
                .subject(user)
                .target(format!("user:{user}"))
                .detail(serde_json::json!({"user": user, "manager": manager})),
        )
        .await?;
        Ok(())
    }

    /// Activates, locks or deactivates a user. Locking and deactivation end the user's sessions at once.
    pub async fn set_user_status(
        &self,
        org: OrgId,
        actor: Option<UserId>,
        user: UserId,
        status: UserStatus,
    ) -> Result<(), StoreError> {
        let mut tx = self.db().begin_write().await?;
        self.require_user(&mut tx, org, user).await?;
        let now = now_ms();
        let mut q = self.db().sql();
        q.push("UPDATE users SET status = ").bind(status.as_str()).push(", updated_at = ").bind(now);
        q.push(" WHERE org_id = ").bind(org).push(" AND id = ").bind(user);
        q.execute(&mut *tx).await?;
        if status != UserStatus::Active {
            crate::auth::sessions::revoke_user_sessions(&mut tx, self.db().engine, org, user, None, now).await?;
            // A deactivated user's API tokens die with the deactivation (a lock only suspends them).
            if status == UserStatus::Deactivated {
                crate::auth::tokens::revoke_all(&mut tx, self.db().engine, org, user, now).await?;
            }
        }
        self.finish_directory_change(
            tx,
            org,
            AuditEntry::new(org, actor, "user.status")
                .subject(user)
                .target(format!("user:{user}"))
                .detail(serde_json::json!({"user": user, "status": status})),
        )
        .await?;
        Ok(())
    }

    /// Moves a department under another; a cycle is refused.
    pub async fn move_department(
        &self,
        org: OrgId,
        actor: Option<UserId>,
        dept: DeptId,
        parent: Option<DeptId>,
    ) -> Result<(), StoreError> {
        let policy = self.store.current_org_policy(org).await?;
        if !policy.directory.has_department(dept) {
            return Err(StoreError::NotFound);
        }
        if let Some(p) = parent {
            if !policy.directory.has_department(p) {
                return Err(StoreError::invalid("parent_id", "no such department"));
            }
            if policy.directory.department_cycle(dept, p) {
                return Err(StoreError::invalid("parent_id", "would create a cycle in the department tree"));
            }
        }
        let mut tx = self.db().begin_write().await?;
        let mut q = self.db().sql();
        q.push("UPDATE departments SET parent_id = ")
            .bind(parent)
            .push(" WHERE org_id = ")
            .bind(org)
            .push(" AND id = ")
            .bind(dept);
        q.execute(&mut *tx).await?;
        self.finish_directory_change(
            tx,
            org,
            AuditEntry::new(org, actor, "department.move")
                .target(format!("department:{dept}"))
                .detail(serde_json::json!({"id": dept, "parent_id": parent})),
        )
        .await?;
        Ok(())
    }

    async fn require_user(&self, conn: &mut sqlx::AnyConnection, org: OrgId, user: UserId) -> Result<(), StoreError> {
        let mut q = self.db().sql();
        q.push("SELECT id FROM users WHERE org_id = ").bind(org).push(" AND id = ").bind(user);
        q.fetch_optional(&mut *conn).await?.map(|_| ()).ok_or(StoreError::NotFound)
    }

    /// The organization's access configuration and its version.
    pub async fn policy(&self, org: OrgId) -> Result<(PolicyConfig, i64), StoreError> {
        let p = self.store.current_org_policy(org).await?;
        Ok(((*p.config).clone(), p.version))
    }

    /// Replaces the access configuration after validating it; audited with the document before and after.
    pub async fn set_policy(
        &self,
        org: OrgId,
        actor: Option<UserId>,
        config: &PolicyConfig,
    ) -> Result<i64, StoreError> {
        config.validate().map_err(|e| StoreError::BadQuery(e.to_string()))?;
        let doc = serde_json::to_string(config).map_err(|e| StoreError::Config(e.to_string()))?;
        let mut tx = self.db().begin_write().await?;
        let mut old = self.db().sql();
        old.push("SELECT policy FROM org_policy_documents WHERE org_id = ").bind(org);
        let old: Option<String> = old.fetch_optional(&mut *tx).await?.map(|r| r.try_get("policy")).transpose()?;
        let changes = crate::audit_query::policy_changes(old.as_deref().unwrap_or("{}"), config);
        let mut q = self.db().sql();
        q.push("UPDATE organizations SET policy_version = policy_version + 1 WHERE id = ").bind(org);
        q.push(" RETURNING policy_version");
        let version: i64 = q.fetch_optional(&mut *tx).await?.ok_or(StoreError::NotFound)?.try_get("policy_version")?;
        let mut q = self.db().sql();
        q.push("UPDATE org_policy_documents SET policy = ").bind(doc).push(" WHERE org_id = ").bind(org);
        q.execute(&mut *tx).await?;
        audit::append(
            &mut tx,
            self.db().engine,
            &AuditEntry::new(org, actor, "policy.update")
                .target("policy")
                .detail(serde_json::json!({"version": version, "changes": changes})),
        )
        .await?;
        tx.commit().await?;
        Ok(version)
    }

    /// Signs in with a password alone (tools, tests, and clients without a second factor). Every failure is the
    /// same `Forbidden`, after the same work; an account that needs a second factor fails here too: use
    /// [`SystemAccess::sign_in_with`] (in `auth::signin`), which this wraps.
    pub async fn sign_in(
        &self,
        organization: Option<&str>,
        username: &str,
        password: &str,
        ip: Option<String>,
        user_agent: Option<String>,
    ) -> Result<SignIn, StoreError> {
        use crate::auth::{ClientInfo, SignInFailure, SignInOutcome, SignInRequest};
        let client = ClientInfo { ip: ip.and_then(|s| s.parse().ok()), user_agent };
        let req = SignInRequest { organization, username, password, ..SignInRequest::default() };
        match self.sign_in_with(&req, &client).await {
            Ok(SignInOutcome::Signed(s)) => Ok(SignIn {
                token: s.token,
                org: s.org,
                user: s.user,
                must_change_password: s.must_change_password,
                expires_at: s.expires_at,
            }),
            Ok(SignInOutcome::MfaRequired { .. }) => Err(StoreError::Forbidden("a second factor is required".into())),
            Err(SignInFailure::Store(e)) => Err(e),
            Err(_) => Err(StoreError::Forbidden("invalid username or password".into())),
        }
    }

    /// Resolves a bearer token (session or API token) to its principal, or `None` when the token is unknown,
    /// revoked, expired or idle, its user is no longer active, or the organization's network or time policy
    /// refuses a caller of unknown address. Request handlers use [`SystemAccess::authenticate_from`] (in
    /// `auth::account`) with the client's address.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>, StoreError> {
        match self.authenticate_from(token, &crate::auth::ClientInfo::default()).await? {
            crate::auth::AuthOutcome::Valid(a) => Ok(Some(a.principal)),
            _ => Ok(None),
        }
    }

    /// System-path helper for tools and tests: the principal of `user` at the organization's current policy
    /// version, without a session (`session_id` 0) and without a password check. Request handlers never use it:
    /// they resolve a bearer token with [`SystemAccess::authenticate`]. A user that is not active gets a principal
    /// whose access allows nothing; a user of another organization is `NotFound`.
    pub async fn principal_for(&self, org: OrgId, user: UserId) -> Result<Principal, StoreError> {
        let mut q = self.db().sql();
        q.push("SELECT o.policy_version FROM organizations o JOIN users u ON u.org_id = o.id WHERE o.id = ")
            .bind(org)
            .push(" AND u.id = ")
            .bind(user);
        let row = q.fetch_optional(&self.db().pool).await?.ok_or(StoreError::NotFound)?;
        let version: i64 = row.try_get("policy_version")?;
        let access = self.store.access_at(org, user, version).await?;
        Ok(Principal { org, user, session_id: 0, access, policy_version: version })
    }

    /// Ends the principal's session (recorded through the account-security event writer).
    pub async fn sign_out(&self, principal: &Principal) -> Result<(), StoreError> {
        crate::auth::account::end_session_of(self, principal, &crate::auth::ClientInfo::default()).await
    }

    /// Bulk insert for the demo seed and data generator: one transaction, one audit entry for the batch.
    pub async fn seed_records(
        &self,
        org: OrgId,
        module: Module,
        rows: &[(UserId, BTreeMap<&'static str, Value>)],
    ) -> Result<Vec<i64>, StoreError> {
        let schema = crm_domain::schema(module).ok_or(StoreError::NotFound)?;
        let mut tx = self.db().begin_write().await?;
        let mut ids = Vec::with_capacity(rows.len());
        let now = now_ms();
        for (i, (owner, fields)) in rows.iter().enumerate() {
            let mut q = self.db().sql();
            q.push("INSERT INTO ")
                .push(schema.table)
                .push(" (org_id, owner_id, created_by, updated_by, created_at, updated_at");
            for f in schema.fields {
                q.push(", ").push(f.name);
            }
            q.push(") VALUES (").bind(org).push(", ").bind(*owner).push(", ").bind(*owner).push(", ").bind(*owner);
            // Distinct, increasing timestamps keep "last updated" order stable in the demo.
            q.push(", ").bind(now - (rows.len() - i) as i64).push(", ").bind(now - (rows.len() - i) as i64);
            for f in schema.fields {
                q.push(", ").bind(crate::records::arg_for(f, fields.get(f.name).unwrap_or(&Value::Null)));
            }
            q.push(") RETURNING id");
            ids.push(q.fetch_one(&mut *tx).await?.try_get::<i64, _>("id")?);
        }
        audit::append(
            &mut tx,
            self.db().engine,
            &AuditEntry::new(org, None, "record.seed")
                .detail(serde_json::json!({"module": module, "count": rows.len()})),
        )
        .await?;
        tx.commit().await?;
        Ok(ids)
    }

    /// Checks the organization's audit chain; `Some((seq, problem))` names the first bad entry.
    pub async fn verify_audit(&self, org: OrgId) -> Result<Option<(i64, String)>, StoreError> {
        let mut conn = self.db().pool.acquire().await?;
        audit::verify(&mut conn, self.db().engine, org).await
    }

    /// Usernames and ids of an organization's users.
    pub async fn user_ids(&self, org: OrgId) -> Result<Vec<(String, UserId)>, StoreError> {
        let mut q = self.db().sql();
        q.push("SELECT username, id FROM users WHERE org_id = ").bind(org).push(" ORDER BY id");
        q.fetch_all(&self.db().pool).await?.iter().map(|r| Ok((r.try_get("username")?, r.try_get("id")?))).collect()
    }

    /// All organization ids (for CLI tools).
    pub async fn organizations(&self) -> Result<Vec<(OrgId, String)>, StoreError> {
        let mut q = self.db().sql();
        q.push("SELECT id, slug FROM organizations ORDER BY id");
        q.fetch_all(&self.db().pool).await?.iter().map(|r| Ok((r.try_get("id")?, r.try_get("slug")?))).collect()
    }
}
