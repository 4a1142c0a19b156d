//! Loads an organization's policy document and directory as one consistent snapshot.

use crate::db::Db;
use crate::{OrgPolicy, StoreError};
use crm_domain::OrgId;
use crm_policy::{DirUser, Directory, PolicyConfig, UserStatus};
use sqlx::Row;
use std::collections::HashMap;
use std::sync::Arc;

pub(crate) async fn load(db: &Db, org: OrgId) -> Result<OrgPolicy, StoreError> {
    // Read everything in one transaction: SQLite gives a snapshot; on PostgreSQL the version is re-read at the end
    // and the load retried if a change landed in between.
    for _ in 0..5 {
        let mut tx = db.pool.begin().await?;
        let mut q = db.sql();
        q.push(
            "SELECT d.policy, o.policy_version FROM organizations o JOIN org_policy_documents d ON d.org_id = o.id ",
        );
        q.push("WHERE o.id = ").bind(org);
        let row = q.fetch_optional(&mut *tx).await?.ok_or(StoreError::NotFound)?;
        let doc: String = row.try_get("policy")?;
        let version: i64 = row.try_get("policy_version")?;
        let config: PolicyConfig =
            serde_json::from_str(&doc).map_err(|e| StoreError::Config(format!("organization {org} policy: {e}")))?;

        let mut q = db.sql();
        q.push("SELECT id, parent_id FROM departments WHERE org_id = ").bind(org);
        let depts = q
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<i64, _>("id")?, r.try_get::<Option<i64>, _>("parent_id")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;

        let mut q = db.sql();
        q.push("SELECT id, manager_id, status FROM users WHERE org_id = ").bind(org);
        let mut users: HashMap<i64, DirUser> = HashMap::new();
        for r in q.fetch_all(&mut *tx).await? {
            let id: i64 = r.try_get("id")?;
            let status: String = r.try_get("status")?;
            users.insert(
                id,
                DirUser {
                    id,
                    manager: r.try_get("manager_id")?,
                    departments: Vec::new(),
                    roles: Vec::new(),
                    status: UserStatus::parse(&status).unwrap_or(UserStatus::Deactivated),
                },
            );
        }
        let mut q = db.sql();
        q.push("SELECT user_id, department_id FROM user_departments WHERE org_id = ")
            .bind(org)
            .push(" ORDER BY user_id, is_primary DESC, department_id");
        for r in q.fetch_all(&mut *tx).await? {
            if let Some(u) = users.get_mut(&r.try_get::<i64, _>("user_id")?) {
                u.departments.push(r.try_get("department_id")?);
            }
        }
        let mut q = db.sql();
        q.push("SELECT user_id, role_id FROM user_roles WHERE org_id = ").bind(org);
        for r in q.fetch_all(&mut *tx).await? {
            if let Some(u) = users.get_mut(&r.try_get::<i64, _>("user_id")?) {
                u.roles.push(r.try_get("role_id")?);
            }
        }
        let mut q = db.sql();
        q.push("SELECT policy_version FROM organizations WHERE id = ").bind(org);
        let again: i64 = q.fetch_one(&mut *tx).await?.try_get("policy_version")?;
        tx.commit().await?;
        if again == version {
            let directory = Directory::new(org, users.into_values().collect(), depts);
            return Ok(OrgPolicy { version, config: Arc::new(config), directory: Arc::new(directory) });
        }
    }
    Err(StoreError::Conflict("the organization's policy kept changing while loading it".into()))
}
