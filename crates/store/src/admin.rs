//! The administration API's store side: the access configuration, users and departments, and explanations of
//! other users' access. Every method checks the caller's rights on the administration modules (`users`, `roles`,
//! `sharing`), keeps delegated administrators inside their scope, and refuses escalation: nobody hands out a role
//! or rule beyond what they hold.

use crate::records::Scoped;
use crate::render::render;
use crate::{StoreError, system::NewUser};
use crm_domain::{Action, DeptId, Module, RecordId, RoleId, UserId, schema};
use crm_policy::{Access, Explanation, FieldAccess, PolicyConfig, Scope, UserStatus};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, Serialize)]
pub struct UserSummary {
    pub id: UserId,
    pub username: String,
    pub display_name: String,
    pub status: String,
    pub manager_id: Option<UserId>,
    pub departments: Vec<DeptId>,
    pub roles: Vec<RoleId>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DepartmentSummary {
    pub id: DeptId,
    pub parent_id: Option<DeptId>,
    pub name: String,
}

/// Changes to a user; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub departments: Option<Vec<DeptId>>,
    pub roles: Option<Vec<RoleId>>,
    /// `null` clears the manager.
    #[serde(default, with = "double_option")]
    pub manager_id: Option<Option<UserId>>,
    pub status: Option<UserStatus>,
}

mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

/// One user's access changing under a pending configuration.
#[derive(Debug, Clone, Serialize)]
pub struct AccessChange {
    pub user_id: UserId,
    pub username: String,
    pub module: Module,
    /// Records of the module the user can view now and would view after the change.
    pub visible_before: i64,
    pub visible_after: i64,
    /// Actions gained and lost on the module.
    pub actions_gained: Vec<Action>,
    pub actions_lost: Vec<Action>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyChange {
    pub applied: bool,
    /// The version after applying (or the current one for a dry run).
    pub version: i64,
    pub changes: Vec<AccessChange>,
}

/// A user's effective permissions on one module.
#[derive(Debug, Clone, Serialize)]
pub struct ModulePermissions {
    pub actions: BTreeMap<Action, Vec<Scope>>,
    pub fields: BTreeMap<String, FieldAccess>,
    pub reveal: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct WhoCanSee {
    pub user_id: UserId,
    pub username: String,
    pub explanation: Explanation,
}

impl Scoped<'_> {
    /// Administration modules: no `view` → 404 (the area does not exist for the caller); `view` without the
    /// action → 403.
    pub(crate) fn require_admin(&self, module: Module, action: Action) -> Result<(), StoreError> {
        if !self.access().can(module, Action::View) {
            return Err(StoreError::NotFound);
        }
        if !self.access().can(module, action) {
            return Err(StoreError::Forbidden(format!("you may not {action} {module}")));
        }
        Ok(())
    }

    /// Is `user` within the caller's scope for an action on the users module (delegated administration)?
    pub(crate) fn user_in_scope(&self, user: UserId, action: Action) -> bool {
        let a = self.access();
        let dir = a.directory();
        let Some(target) = dir.user(user) else { return false };
        a.scopes(Module::Users, action).into_iter().any(|s| match s {
            Scope::All => true,
            Scope::Own => user == a.user,
            Scope::Subordinates => user == a.user || dir.subordinates(a.user).contains(&user),
            Scope::Department => target.departments.iter().any(|d| a.departments.contains(d)),
            Scope::DepartmentTree => {
                target.departments.iter().any(|d| a.departments.iter().any(|mine| dir.is_within(*d, *mine)))
            }
        })
    }

    fn department_in_scope(&self, dept: DeptId, action: Action) -> bool {
        let a = self.access();
        let dir = a.directory();
        a.scopes(Module::Users, action).into_iter().any(|s| match s {
            Scope::All => dir.has_department(dept),
            Scope::DepartmentTree => a.departments.iter().any(|mine| dir.is_within(dept, *mine)),
            Scope::Department => a.departments.contains(&dept),
            _ => false,
        })
    }

    pub(crate) async fn config(&self) -> Result<Arc<PolicyConfig>, StoreError> {
        Ok(Arc::clone(&self.store.org_policy(self.principal.org, self.principal.policy_version).await?.config))
    }

    fn check_roles(&self, config: &PolicyConfig, roles: &[RoleId]) -> Result<(), StoreError> {
        for r in roles {
            let role = config.role(*r).ok_or_else(|| StoreError::invalid("roles", format!("no such role {r}")))?;
            self.access().covers_role(role).map_err(StoreError::Forbidden)?;
        }
        Ok(())
    }

    /// The organization's access configuration and its version.
    pub async fn admin_policy(&self) -> Result<(PolicyConfig, i64), StoreError> {
        if !self.access().can(Module::Roles, Action::View) && !self.access().can(Module::Sharing, Action::View) {
            return Err(StoreError::NotFound);
        }
        let (config, version) = self.store.unscoped_system_access().policy(self.principal.org).await?;
        self.record_access(self.audit_entry("admin.policy.read").detail(serde_json::json!({"version": version})))
            .await?;
        Ok((config, version))
    }

    /// Replaces the access configuration (or, with `dry_run`, only reports who would gain and lose access).
    /// Changing roles needs `roles: edit` and may not create a role beyond the caller's own rights; changing
    /// anything else (defaults, partitions, sharing and restriction rules, groups) needs `sharing: edit` and
    /// "modify all data".
    pub async fn admin_set_policy(&self, new: &PolicyConfig, dry_run: bool) -> Result<PolicyChange, StoreError> {
        self.require_admin(Module::Roles, Action::Edit)?;
        new.validate().map_err(|e| StoreError::BadQuery(e.to_string()))?;
        let (old, version) = self.store.unscoped_system_access().policy(self.principal.org).await?;
        for role in &new.roles {
            if old.role(role.id) != Some(role) {
                self.access().covers_role(role).map_err(StoreError::Forbidden)?;
            }
        }
        let rest_changed = old.defaults != new.defaults
            || old.dimensions != new.dimensions
            || old.partition_grants != new.partition_grants
            || old.sharing_rules != new.sharing_rules
            || old.restriction_rules != new.restriction_rules
            || old.groups != new.groups;
        if rest_changed {
            self.require_admin(Module::Sharing, Action::Edit)?;
            if !self.access().modifies_all() {
                return Err(StoreError::Forbidden(
                    "only administrators with modify-all data change defaults, partitions, sharing and restriction rules".into(),
                ));
            }
        }
        let changes = self.preview(&old, new).await?;
        if dry_run {
            return Ok(PolicyChange { applied: false, version, changes });
        }
        let version =
            self.store.unscoped_system_access().set_policy(self.principal.org, Some(self.principal.user), new).await?;
        Ok(PolicyChange { applied: true, version, changes })
    }

    /// Who gains and who loses access under `new`: per active user and record module, the visible-record count
    /// before and after and the actions gained and lost.
    async fn preview(&self, old: &PolicyConfig, new: &PolicyConfig) -> Result<Vec<AccessChange>, StoreError> {
        let policy = self.store.org_policy(self.principal.org, self.principal.policy_version).await?;
        let names: BTreeMap<UserId, String> = self
            .store
            .unscoped_system_access()
            .user_ids(self.principal.org)
            .await?
            .into_iter()
            .map(|(n, i)| (i, n))
            .collect();
        let mut out = Vec::new();
        let mut users: Vec<_> =
            policy.directory.users().filter(|u| u.status == UserStatus::Active).map(|u| u.id).collect();
        users.sort();
        for user in users {
            let before = Access::compile(old, Arc::clone(&policy.directory), user);
            let after = Access::compile(new, Arc::clone(&policy.directory), user);
            for module in Module::RECORDS {
                let gained: Vec<Action> =
                    Action::ALL.into_iter().filter(|a| !before.can(module, *a) && after.can(module, *a)).collect();
                let lost: Vec<Action> =
                    Action::ALL.into_iter().filter(|a| before.can(module, *a) && !after.can(module, *a)).collect();
                let same_pred = before.pred(module, Action::View) == after.pred(module, Action::View);
                if same_pred && gained.is_empty() && lost.is_empty() {
                    continue;
                }
                let (b, a) = if same_pred {
                    let n = self.count_under(&before, module).await?;
                    (n, n)
                } else {
                    (self.count_under(&before, module).await?, self.count_under(&after, module).await?)
                };
                if b != a || !gained.is_empty() || !lost.is_empty() {
                    out.push(AccessChange {
                        user_id: user,
                        username: names.get(&user).cloned().unwrap_or_default(),
                        module,
                        visible_before: b,
                        visible_after: a,
                        actions_gained: gained,
                        actions_lost: lost,
                    });
                }
            }
        }
        Ok(out)
    }

    async fn count_under(&self, access: &Access, module: Module) -> Result<i64, StoreError> {
        let Some(s) = schema(module) else { return Ok(0) };
        let pred = access.pred(module, Action::View);
        if pred.is_never() {
            return Ok(0);
        }
        let mut sql = self.db().sql();
        sql.push("SELECT COUNT(*) AS n FROM ")
            .push(s.table)
            .push(" r WHERE r.org_id = ")
            .bind(self.principal.org)
            .push(" AND ");
        render(&mut sql, pred, module, "r", self.principal.org, 1);
        Ok(sql.fetch_one(&self.db().pool).await?.try_get("n")?)
    }

    /// Users within the caller's scope.
    pub async fn admin_users(&self) -> Result<Vec<UserSummary>, StoreError> {
        self.require_admin(Module::Users, Action::View)?;
        let mut q = self.db().sql();
        q.push("SELECT id, username, display_name, status, manager_id FROM users WHERE org_id = ")
            .bind(self.principal.org)
            .push(" ORDER BY id");
        let dir = self.access().directory();
        let mut out = Vec::new();
        for r in q.fetch_all(&self.db().pool).await? {
            let id: i64 = r.try_get("id")?;
            if !self.user_in_scope(id, Action::View) {
                continue;
            }
            let (departments, roles) =
                dir.user(id).map(|u| (u.departments.clone(), u.roles.clone())).unwrap_or_default();
            out.push(UserSummary {
                id,
                username: r.try_get("username")?,
                display_name: r.try_get("display_name")?,
                status: r.try_get("status")?,
                manager_id: r.try_get("manager_id")?,
                departments,
                roles,
            });
        }
        let ids: Vec<UserId> = out.iter().map(|u| u.id).collect();
        self.record_access(self.audit_entry("admin.users.read").detail(serde_json::json!({"users": ids}))).await?;
        Ok(out)
    }

    /// Creates a user in departments within the caller's scope, with roles the caller covers.
    pub async fn admin_create_user(&self, user: NewUser) -> Result<UserId, StoreError> {
        self.require_admin(Module::Users, Action::Create)?;
        if user.departments.is_empty() {
            return Err(StoreError::invalid("departments", "at least one department is required"));
        }
        if let Some(d) = user.departments.iter().find(|d| !self.department_in_scope(**d, Action::Create)) {
            return Err(StoreError::invalid("departments", format!("department {d} is outside your scope")));
        }
        let config = self.config().await?;
        self.check_roles(&config, &user.roles)?;
        if let Some(m) = user.manager
            && self.access().directory().user(m).is_none()
        {
            return Err(StoreError::invalid("manager_id", "no such user"));
        }
        if user.username.trim().is_empty() || user.username.len() > 64 || user.username.chars().any(char::is_whitespace)
        {
            return Err(StoreError::invalid("username", "1 to 64 characters without spaces"));
        }
        let security = self.store.unscoped_system_access().org_security(self.principal.org).await?;
        crate::auth::check_policy(&security.password, &user.username, &user.password)?;
        self.store.unscoped_system_access().create_user(self.principal.org, user).await
    }

    /// Changes a user's departments, roles, manager or status. Each change holds at the user's next request.
    pub async fn admin_update_user(&self, user: UserId, patch: &UserPatch) -> Result<(), StoreError> {
        self.require_admin(Module::Users, Action::Edit)?;
        if !self.user_in_scope(user, Action::View) {
            return Err(StoreError::NotFound);
        }
        if !self.user_in_scope(user, Action::Edit) {
            return Err(StoreError::Forbidden("this user is outside your scope".into()));
        }
        let sys = self.store.unscoped_system_access();
        let (org, me) = (self.principal.org, Some(self.principal.user));
        if let Some(depts) = &patch.departments {
            if let Some(d) = depts.iter().find(|d| !self.department_in_scope(**d, Action::Edit)) {
                return Err(StoreError::invalid("departments", format!("department {d} is outside your scope")));
            }
            if depts.is_empty() {
                return Err(StoreError::invalid("departments", "at least one department is required"));
            }
        }
        if let Some(roles) = &patch.roles {
            let config = self.config().await?;
            self.check_roles(&config, roles)?;
            // Removing a role the caller could not grant is escalation in reverse (locking out a peer admin).
            let current = self.access().directory().user(user).map(|u| u.roles.clone()).unwrap_or_default();
            for r in current.iter().filter(|r| !roles.contains(r)) {
                if let Some(role) = config.role(*r) {
                    self.access().covers_role(role).map_err(StoreError::Forbidden)?;
                }
            }
        }
        if patch.status.is_some() && user == self.principal.user {
            return Err(StoreError::invalid("status", "you cannot change your own status"));
        }
        if let Some(depts) = &patch.departments {
            sys.set_user_departments(org, me, user, depts).await?;
        }
        if let Some(roles) = &patch.roles {
            sys.set_user_roles(org, me, user, roles).await?;
        }
        if let Some(manager) = patch.manager_id {
            sys.set_manager(org, me, user, manager).await?;
        }
        if let Some(status) = patch.status {
            sys.set_user_status(org, me, user, status).await?;
        }
        Ok(())
    }

    /// The department tree (the whole tree: names are not secret within the organization).
    pub async fn admin_departments(&self) -> Result<Vec<DepartmentSummary>, StoreError> {
        self.require_admin(Module::Users, Action::View)?;
        let mut q = self.db().sql();
        q.push("SELECT id, parent_id, name FROM departments WHERE org_id = ")
            .bind(self.principal.org)
            .push(" ORDER BY id");
        let departments = q
            .fetch_all(&self.db().pool)
            .await?
            .iter()
            .map(|r| {
                Ok(DepartmentSummary {
                    id: r.try_get("id")?,
                    parent_id: r.try_get("parent_id")?,
                    name: r.try_get("name")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.record_access(
            self.audit_entry("admin.departments.read").detail(serde_json::json!({"count": departments.len()})),
        )
        .await?;
        Ok(departments)
    }

    pub async fn admin_create_department(&self, parent: DeptId, name: &str) -> Result<DeptId, StoreError> {
        self.require_admin(Module::Users, Action::Create)?;
        if name.trim().is_empty() || name.chars().count() > 100 {
            return Err(StoreError::invalid("name", "1 to 100 characters"));
        }
        if !self.department_in_scope(parent, Action::Create) {
            return Err(StoreError::invalid("parent_id", "no such department in your scope"));
        }
        self.store.unscoped_system_access().create_department(self.principal.org, Some(parent), name.trim()).await
    }

    /// Moves a department (and its subtree) under another; cycles are refused.
    pub async fn admin_move_department(&self, dept: DeptId, parent: DeptId) -> Result<(), StoreError> {
        self.require_admin(Module::Users, Action::Edit)?;
        if !self.department_in_scope(dept, Action::Edit) || !self.department_in_scope(parent, Action::Edit) {
            return Err(StoreError::NotFound);
        }
        self.store
            .unscoped_system_access()
            .move_department(self.principal.org, Some(self.principal.user), dept, Some(parent))
            .await
    }

    /// Another user's compiled access, for explanations (needs `roles: view` or `sharing: view`, and the user in
    /// the caller's scope).
    async fn access_of(&self, user: UserId) -> Result<Arc<Access>, StoreError> {
        if !self.access().can(Module::Roles, Action::View) && !self.access().can(Module::Sharing, Action::View) {
            return Err(StoreError::NotFound);
        }
        if self.access().directory().user(user).is_none() {
            return Err(StoreError::NotFound);
        }
        if !self.user_in_scope(user, Action::View) && !self.access().administrator {
            return Err(StoreError::NotFound);
        }
        self.store.access_at(self.principal.org, user, self.principal.policy_version).await
    }

    /// May `user` do `action` on a record, and why? The record must be one the caller may view.
    pub async fn explain_for(
        &self,
        user: UserId,
        module: Module,
        action: Action,
        id: RecordId,
    ) -> Result<Explanation, StoreError> {
        let other = self.access_of(user).await?;
        let mut conn = self.db().pool.acquire().await?;
        let facts = crate::records::load_facts(&mut conn, self.db().engine, self.principal.org, module, id)
            .await?
            .ok_or(StoreError::NotFound)?;
        if !self.access().decide(module, Action::View, &facts) {
            return Err(StoreError::NotFound);
        }
        let explanation = other.explain(module, action, &facts);
        let e = self
            .audit_entry("admin.explain")
            .record(module, id)
            .subject(user)
            .detail(serde_json::json!({"action": action, "allowed": explanation.allowed}));
        self.record_access(e).await?;
        Ok(explanation)
    }

    /// Every user who can view a record, and why (the caller must be able to view it too).
    pub async fn who_can_see(&self, module: Module, id: RecordId) -> Result<Vec<WhoCanSee>, StoreError> {
        if !self.access().can(Module::Roles, Action::View) && !self.access().can(Module::Sharing, Action::View) {
            return Err(StoreError::NotFound);
        }
        let mut conn = self.db().pool.acquire().await?;
        let facts = crate::records::load_facts(&mut conn, self.db().engine, self.principal.org, module, id)
            .await?
            .ok_or(StoreError::NotFound)?;
        drop(conn);
        if !self.access().decide(module, Action::View, &facts) {
            return Err(StoreError::NotFound);
        }
        let names = self.store.unscoped_system_access().user_ids(self.principal.org).await?;
        let mut out = Vec::new();
        for (username, user) in names {
            if !self.user_in_scope(user, Action::View) && !self.access().administrator {
                continue;
            }
            let access = self.store.access_at(self.principal.org, user, self.principal.policy_version).await?;
            let explanation = access.explain(module, Action::View, &facts);
            if explanation.allowed {
                out.push(WhoCanSee { user_id: user, username, explanation });
            }
        }
        let users: Vec<UserId> = out.iter().map(|w| w.user_id).collect();
        let e = self.audit_entry("admin.who_can_see").record(module, id).detail(serde_json::json!({"users": users}));
        self.record_access(e).await?;
        Ok(out)
    }

    /// A user's effective permissions per record module: actions with their scopes, field access, reveal.
    pub async fn effective_permissions(&self, user: UserId) -> Result<BTreeMap<Module, ModulePermissions>, StoreError> {
        let a = self.access_of(user).await?;
        let mut out = BTreeMap::new();
        for module in Module::ALL {
            let actions: BTreeMap<Action, Vec<Scope>> = Action::ALL
                .into_iter()
                .filter(|x| a.can(module, *x))
                .map(|x| (x, a.scopes(module, x).into_iter().collect()))
                .collect();
            if actions.is_empty() {
                continue;
            }
            let fields = schema(module)
                .map(|s| s.fields.iter().map(|f| (f.name.to_string(), a.field_access(module, f.name))).collect())
                .unwrap_or_default();
            out.insert(module, ModulePermissions { actions, fields, reveal: a.may_reveal(module) });
        }
        self.record_access(self.audit_entry("admin.permissions.read").subject(user)).await?;
        Ok(out)
    }
}

impl<'s> Scoped<'s> {
    /// A read-only handle on the store as `user` sees it, for an administrator's "view as user": the user's own
    /// compiled access with every right but viewing removed ([`Access::read_only`]), so lists, counts and record
    /// pages answer exactly what the user would see (never the administrator's wider set) and every write, export
    /// or reveal is refused. Every read through the handle is audited with the administrator as the actor and the
    /// viewed user as the subject; opening the view is audited as `admin.view_as`.
    ///
    /// Needs `users: view` with `user` within the caller's user scope (delegated administration), and `user`
    /// active; otherwise `NotFound`, as if the user did not exist.
    pub async fn view_as(&self, user: UserId) -> Result<Scoped<'s>, StoreError> {
        let a = self.access();
        let active = a.directory().user(user).is_some_and(|u| u.status == UserStatus::Active);
        if !a.can(Module::Users, Action::View) || !active || !self.user_in_scope(user, Action::View) {
            return Err(StoreError::NotFound);
        }
        let access = self.store.access_at(self.principal.org, user, self.principal.policy_version).await?;
        let principal = crate::Principal {
            org: self.principal.org,
            user,
            session_id: self.principal.session_id,
            access: Arc::new(access.read_only_within(self.access())),
            policy_version: self.principal.policy_version,
        };
        let scoped =
            Scoped { store: self.store, principal, viewed_by: Some((self.principal.user, self.principal.session_id)) };
        scoped.record_access(scoped.audit_entry("admin.view_as")).await?;
        Ok(scoped)
    }
}
