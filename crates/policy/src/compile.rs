//! Compiles the configuration for one user into an [`Access`]: one predicate per (module, action).

use crate::config::{Grantee, OrgDefault, PolicyConfig, RuleSource, Scope};
use crate::directory::{Directory, UserStatus};
use crate::eval::{self, Explanation, RecordFacts};
use crate::pred::{CmpOp, Pred, Reason, ShareKey, labelled_true};
use crm_domain::{Action, DeptId, GroupId, Level, Module, OrgId, RoleId, UserId, Value, schema};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// Field permission (字段权限). Ordered from least to most permissive; several roles take the most permissive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldAccess {
    /// Absent from every output, and refused as a filter or sort key exactly like an unknown field.
    Hidden,
    /// Shown masked (`138****5678`); the clear value needs the `reveal` right, and each reveal is audited.
    Masked,
    ReadOnly,
    Editable,
}

/// One user's compiled permissions, valid for one policy version of their organization.
#[derive(Debug, Clone)]
pub struct Access {
    pub org: OrgId,
    pub user: UserId,
    pub active: bool,
    pub roles: Vec<RoleId>,
    pub departments: Vec<DeptId>,
    pub groups: Vec<GroupId>,
    /// Holds a role with view-all or modify-all.
    pub administrator: bool,
    labelled: HashMap<(Module, Action), Pred>,
    plain: HashMap<(Module, Action), Pred>,
    scopes: BTreeMap<(Module, Action), BTreeSet<Scope>>,
    fields: HashMap<Module, HashMap<String, FieldAccess>>,
    reveal: BTreeSet<Module>,
    modify_all: bool,
    directory: Arc<Directory>,
}

struct Me<'a> {
    id: UserId,
    roles: Vec<RoleId>,
    departments: Vec<DeptId>,
    groups: Vec<GroupId>,
    dir: &'a Directory,
}

impl Me<'_> {
    fn matches(&self, g: &Grantee) -> bool {
        match *g {
            Grantee::User { id } => id == self.id,
            Grantee::Department { id, include_sub } => {
                self.departments.iter().any(|d| *d == id || (include_sub && self.dir.is_within(*d, id)))
            }
            Grantee::Role { id } => self.roles.contains(&id),
            Grantee::Group { id } => self.groups.contains(&id),
        }
    }
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v.dedup();
    v
}

impl Access {
    /// The same access for reading only: every right but `View` is dropped (create, edit, delete, export, import,
    /// transfer, share, and revealing masked fields), so a store call that changes anything is refused exactly as
    /// for a user who lacks the right. What can be viewed, and how each field shows (hidden, masked, clear), is
    /// unchanged. Used when an administrator views the application as another user.
    pub fn read_only(&self) -> Access {
        let view = |(_, a): &(Module, Action)| *a == Action::View;
        Access {
            labelled: self.labelled.iter().filter(|(k, _)| view(k)).map(|(k, p)| (*k, p.clone())).collect(),
            plain: self.plain.iter().filter(|(k, _)| view(k)).map(|(k, p)| (*k, p.clone())).collect(),
            scopes: self.scopes.iter().filter(|(k, _)| view(k)).map(|(k, s)| (*k, s.clone())).collect(),
            reveal: BTreeSet::new(),
            modify_all: false,
            ..self.clone()
        }
    }

    /// What this user may view, limited to what `viewer` may view on their own (record by record and field by
    /// field), and nothing else: the access an administrator gets when viewing the application as this user. Viewing
    /// as someone never shows the viewer a record, a module or a clear field value they could not see themselves
    /// (no escalation through "view as"); for a view-all administrator with clear fields it is exactly the user's view.
    pub fn read_only_within(&self, viewer: &Access) -> Access {
        let mut out = self.read_only();
        let both = |mine: &HashMap<(Module, Action), Pred>, theirs: &HashMap<(Module, Action), Pred>| {
            mine.iter()
                .filter(|(k, _)| k.0.is_record_module())
                .filter_map(|(k, p)| Some((*k, Pred::all(vec![p.clone(), theirs.get(k)?.clone()]))))
                .collect::<HashMap<_, _>>()
        };
        out.labelled = both(&out.labelled, &viewer.labelled);
        out.plain = both(&out.plain, &viewer.plain);
        out.scopes.retain(|(module, action), _| module.is_record_module() && viewer.can(*module, *action));
        for (module, fields) in out.fields.iter_mut() {
            for (name, access) in fields.iter_mut() {
                *access = (*access).min(viewer.field_access(*module, name)).min(FieldAccess::ReadOnly);
            }
        }
        out.active = self.active && viewer.active;
        out
    }

    /// Compiles `user`'s access. A user missing from the directory, or not active, gets an `Access` that allows
    /// nothing.
    pub fn compile(config: &PolicyConfig, dir: Arc<Directory>, user: UserId) -> Access {
        let entry = dir.user(user).cloned();
        let active = entry.as_ref().is_some_and(|u| u.status == UserStatus::Active);
        let (roles, departments) = entry.map(|u| (sorted(u.roles), u.departments)).unwrap_or_default();
        let roles: Vec<RoleId> = roles.into_iter().filter(|r| config.role(*r).is_some()).collect();
        let groups: Vec<GroupId> = config
            .groups
            .iter()
            .filter(|g| {
                g.users.contains(&user)
                    || g.departments
                        .iter()
                        .any(|(gd, sub)| departments.iter().any(|d| d == gd || (*sub && dir.is_within(*d, *gd))))
            })
            .map(|g| g.id)
            .collect();
        let me =
            Me { id: user, roles: roles.clone(), departments: departments.clone(), groups: groups.clone(), dir: &dir };
        let my_roles: Vec<_> = if active { roles.iter().filter_map(|r| config.role(*r)).collect() } else { Vec::new() };
        let administrator = my_roles.iter().any(|r| r.view_all || r.modify_all);
        let modify_all = my_roles.iter().any(|r| r.modify_all);

        let mut scopes: BTreeMap<(Module, Action), BTreeSet<Scope>> = BTreeMap::new();
        for role in &my_roles {
            for (module, actions) in &role.permissions {
                for (action, scope) in actions {
                    scopes.entry((*module, *action)).or_default().insert(*scope);
                }
            }
        }

        let mut fields: HashMap<Module, HashMap<String, FieldAccess>> = HashMap::new();
        for module in Module::RECORDS {
            let Some(s) = schema(module) else { continue };
            let viewers: Vec<_> = my_roles
                .iter()
                .filter(|r| {
                    r.view_all
                        || r.modify_all
                        || r.permissions.get(&module).is_some_and(|a| a.contains_key(&Action::View))
                })
                .collect();
            let per_field = s
                .fields
                .iter()
                .map(|d| {
                    let best = viewers
                        .iter()
                        .map(|r| {
                            r.fields.get(&module).and_then(|f| f.get(d.name)).copied().unwrap_or(FieldAccess::Editable)
                        })
                        .max()
                        .unwrap_or(FieldAccess::Hidden);
                    (d.name.to_string(), best)
                })
                .collect();
            fields.insert(module, per_field);
        }
        let reveal = my_roles.iter().flat_map(|r| r.reveal.iter().copied()).collect();

        let mut access = Access {
            org: dir.org,
            user,
            active,
            roles,
            departments,
            groups,
            administrator,
            labelled: HashMap::new(),
            plain: HashMap::new(),
            scopes,
            fields,
            reveal,
            modify_all,
            directory: Arc::clone(&dir),
        };
        let compiler = Compiler { config, me: &me, my_roles: &my_roles, access: &access };
        let mut labelled = HashMap::new();
        for module in Module::RECORDS {
            for action in Action::ALL {
                labelled.insert((module, action), compiler.record_pred(module, action));
            }
        }
        access.plain = labelled.iter().map(|(k, p)| (*k, p.without_reasons())).collect();
        access.labelled = labelled;
        access
    }

    /// The roles grant `action` on `module` at all (功能权限): the module exists for the user.
    pub fn can(&self, module: Module, action: Action) -> bool {
        if !self.active {
            return false;
        }
        if module.is_record_module() {
            return self.plain.get(&(module, action)).is_some_and(|p| !p.is_never())
                || self.scopes.contains_key(&(module, action));
        }
        self.scopes.contains_key(&(module, action))
    }

    /// The data scopes the roles grant for an action (used for administration modules, where the scope bounds the
    /// users a delegated administrator manages).
    pub fn scopes(&self, module: Module, action: Action) -> BTreeSet<Scope> {
        if !self.active {
            return BTreeSet::new();
        }
        self.scopes.get(&(module, action)).cloned().unwrap_or_default()
    }

    /// The predicate records must meet for `action`, without labels: what the store renders as SQL.
    pub fn pred(&self, module: Module, action: Action) -> &Pred {
        self.plain.get(&(module, action)).unwrap_or(&Pred::FALSE)
    }

    /// The same predicate with its explanation labels.
    pub fn labelled_pred(&self, module: Module, action: Action) -> &Pred {
        self.labelled.get(&(module, action)).unwrap_or(&Pred::FALSE)
    }

    /// May the user do `action` on this record?
    pub fn decide(&self, module: Module, action: Action, facts: &RecordFacts) -> bool {
        facts.record.org_id == self.org
            && facts.record.module == module
            && eval::eval(self.pred(module, action), facts, &self.directory)
    }

    /// Evaluates any predicate (labelled or not) for one record against this user's directory, without the
    /// organization check of [`Access::decide`]. Labels are transparent.
    pub fn eval_pred(&self, pred: &Pred, facts: &RecordFacts) -> bool {
        eval::eval(pred, facts, &self.directory)
    }

    /// The decision and every rule that grants or narrows it.
    pub fn explain(&self, module: Module, action: Action, facts: &RecordFacts) -> Explanation {
        let same_org = facts.record.org_id == self.org && facts.record.module == module;
        let pred = self.labelled_pred(module, action);
        let mut out = Explanation {
            allowed: same_org && eval::eval(pred, facts, &self.directory),
            module_permission: self.can(module, action),
            granted_by: Vec::new(),
            denied_by: Vec::new(),
        };
        if same_org {
            let mut parent_denied = Vec::new();
            eval::explain(pred, facts, &self.directory, &mut out, &mut parent_denied);
            if !out.allowed {
                for r in parent_denied {
                    if !out.denied_by.contains(&r) {
                        out.denied_by.push(r);
                    }
                }
            }
        }
        out
    }

    pub fn field_access(&self, module: Module, field: &str) -> FieldAccess {
        if !self.active {
            return FieldAccess::Hidden;
        }
        match field {
            "id" | "owner_id" | "created_at" | "updated_at" if self.can(module, Action::View) => FieldAccess::ReadOnly,
            _ => self.fields.get(&module).and_then(|f| f.get(field)).copied().unwrap_or(FieldAccess::Hidden),
        }
    }

    pub fn may_reveal(&self, module: Module) -> bool {
        self.active && self.reveal.contains(&module)
    }

    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// May the user make `owner` the owner of a record of `module` (on create, import or transfer)? Themselves
    /// always (with the module permission); anyone else only within their `transfer` scope, and only active
    /// users of the organization.
    pub fn may_assign_owner(&self, module: Module, owner: UserId) -> bool {
        if !self.active {
            return false;
        }
        let Some(target) = self.directory.user(owner) else { return false };
        if target.status != UserStatus::Active {
            return false;
        }
        if owner == self.user {
            return [Action::Create, Action::Import, Action::Transfer].into_iter().any(|a| self.can(module, a));
        }
        if self.modify_all {
            return true;
        }
        self.scopes(module, Action::Transfer).into_iter().any(|scope| match scope {
            Scope::Own => false,
            Scope::Subordinates => self.directory.subordinates(self.user).contains(&owner),
            Scope::Department => target.departments.iter().any(|d| self.departments.contains(d)),
            Scope::DepartmentTree => target
                .departments
                .iter()
                .any(|d| self.departments.iter().any(|mine| self.directory.is_within(*d, *mine))),
            Scope::All => true,
        })
    }

    /// Does this user hold everything `role` grants (so handing it out escalates nobody)? `Err` names the first
    /// grant the user lacks.
    pub fn covers_role(&self, role: &crate::config::Role) -> Result<(), String> {
        if role.modify_all && !self.modify_all {
            return Err(format!("role {}: modify-all data is beyond your own rights", role.name));
        }
        if role.view_all && !self.administrator {
            return Err(format!("role {}: view-all data is beyond your own rights", role.name));
        }
        for (module, actions) in &role.permissions {
            for (action, scope) in actions {
                let held = self.scopes(*module, *action);
                let covered = self.modify_all && module.is_record_module() || held.iter().any(|h| h.covers(*scope));
                if !covered {
                    return Err(format!(
                        "role {}: {module} {action} with scope {scope:?} is beyond your own rights",
                        role.name
                    ));
                }
            }
        }
        if let Some(m) = role.reveal.iter().find(|m| !self.may_reveal(**m)) {
            return Err(format!("role {}: revealing masked {m} fields is beyond your own rights", role.name));
        }
        Ok(())
    }

    /// True for holders of "modify all data".
    pub fn modifies_all(&self) -> bool {
        self.active && self.modify_all
    }

    /// Keys under which a manual share reaches this user.
    pub fn share_keys(&self) -> Vec<ShareKey> {
        let mut keys = vec![ShareKey::User(self.user)];
        keys.extend(self.groups.iter().map(|g| ShareKey::Group(*g)));
        keys.extend(self.departments.iter().map(|d| ShareKey::Department(*d)));
        keys.extend(self.roles.iter().map(|r| ShareKey::Role(*r)));
        sorted(keys)
    }
}

struct Compiler<'a> {
    config: &'a PolicyConfig,
    me: &'a Me<'a>,
    my_roles: &'a [&'a crate::config::Role],
    access: &'a Access,
}

impl Compiler<'_> {
    fn record_pred(&self, module: Module, action: Action) -> Pred {
        if !self.access.active {
            return Pred::FALSE;
        }
        let level = action.required_level();
        let mut grants = Vec::new();
        let reads = matches!(action, Action::View | Action::Export);
        for role in self.my_roles {
            if role.modify_all || (role.view_all && reads) {
                grants.push(labelled_true(Reason::Administrator { role: role.id, modify_all: role.modify_all }));
            }
        }
        let admin_covers = !grants.is_empty();
        let module_permission = !grants.is_empty() || self.access.scopes.contains_key(&(module, action));
        if !module_permission {
            return Pred::FALSE;
        }
        let default = self.config.default_for(module);
        if let (OrgDefault::ControlledByParent, Some((field, parent))) =
            (default, schema(module).and_then(|s| s.parent))
        {
            // Exactly when the parent is accessible: an administrator's view-all / modify-all reaches the record
            // through its parent too (it grants the parent action), so a restriction rule that hides an account
            // hides its contacts from administrators as well, instead of leaking them through the child module.
            grants.clear();
            let parent_action = if level == Level::Read { Action::View } else { Action::Edit };
            let parent_pred = self.record_pred(parent, parent_action);
            let p = if parent_pred.is_never() {
                Pred::FALSE
            } else {
                Pred::Parent { field, module: parent, pred: Box::new(parent_pred) }
            };
            grants.push(p.because(Reason::Parent { module: parent }));
        } else {
            self.own_grants(module, action, level, default, &mut grants);
        }
        let grant = Pred::any(grants);
        let mut parts = vec![grant];
        for rule in &self.config.restriction_rules {
            if rule.module != module || !self.me.matches(&rule.applies_to) {
                continue;
            }
            // The exemption lifts the rule off the administrator's view-all / modify-all only: where that right
            // does not cover the action (a view-all administrator editing), the rule narrows like for anyone.
            if rule.exempt_administrators && admin_covers {
                continue;
            }
            let criteria = rule.criteria.iter().map(|c| criterion_pred(module, c)).collect();
            let reason = Reason::Restriction { rule: rule.id };
            parts.push(match Pred::all(criteria) {
                // Keep the label so an explanation names the rule that denies; evaluation and SQL still fold it.
                Pred::Const(false) => Pred::Because(reason, Box::new(Pred::FALSE)),
                p => p.because(reason),
            });
        }
        Pred::all(parts)
    }

    fn own_grants(&self, module: Module, action: Action, level: Level, default: OrgDefault, grants: &mut Vec<Pred>) {
        let me = self.me;
        if let Some(scopes) = self.access.scopes.get(&(module, action)) {
            for role in self.my_roles {
                let Some(scope) = role.permissions.get(&module).and_then(|a| a.get(&action)) else { continue };
                debug_assert!(scopes.contains(scope));
                grants.push(grant_because(self.scope_pred(*scope), Reason::RoleScope { role: role.id, scope: *scope }));
            }
        }
        let public = match default {
            OrgDefault::PublicRead => level == Level::Read,
            OrgDefault::PublicReadWrite => level <= Level::Edit,
            _ => false,
        };
        if public {
            grants.push(labelled_true(Reason::OrgDefault { default }));
        }
        for g in &self.config.partition_grants {
            if g.level < level || !me.matches(&g.grantee) {
                continue;
            }
            if let Some(fields) = self.config.partition_fields(module, g) {
                let conds = fields
                    .into_iter()
                    .map(|(field, values)| Pred::Field {
                        field,
                        op: CmpOp::In,
                        values: sorted(values.into_iter().map(Value::Text).collect()),
                    })
                    .collect();
                grants.push(grant_because(Pred::all(conds), Reason::PartitionGrant { grant: g.id }));
            }
        }
        for r in &self.config.sharing_rules {
            if r.module != module || r.level < level || !me.matches(&r.share_with) {
                continue;
            }
            let p = match &r.source {
                RuleSource::OwnedBy { owners } => self.owners_pred(owners),
                RuleSource::Criteria { criteria } => {
                    Pred::all(criteria.iter().map(|c| criterion_pred(module, c)).collect())
                }
            };
            grants.push(grant_because(p, Reason::SharingRule { rule: r.id }));
        }
        grants.push(Pred::SharedWith { keys: self.access.share_keys(), min_level: level }.because(Reason::ManualShare));
        grants.push(Pred::OnTeam { user: me.id, min_level: level }.because(Reason::RecordTeam));
    }

    fn scope_pred(&self, scope: Scope) -> Pred {
        let me = self.me;
        let own = Pred::OwnerIn(vec![me.id]);
        match scope {
            Scope::Own => own,
            Scope::Subordinates => {
                let mut users = me.dir.subordinates(me.id);
                users.push(me.id);
                Pred::OwnerIn(sorted(users))
            }
            Scope::Department => Pred::any(vec![own, Pred::OwnerInDepartments(sorted(me.departments.clone()))]),
            Scope::DepartmentTree => {
                let tree = me.departments.iter().flat_map(|d| me.dir.subtree(*d)).collect();
                Pred::any(vec![own, Pred::OwnerInDepartments(sorted(tree))])
            }
            Scope::All => Pred::TRUE,
        }
    }

    fn owners_pred(&self, owners: &Grantee) -> Pred {
        let dir = self.me.dir;
        match *owners {
            Grantee::User { id } => Pred::OwnerIn(vec![id]),
            Grantee::Department { id, include_sub } => {
                Pred::OwnerInDepartments(if include_sub { dir.subtree(id) } else { vec![id] })
            }
            Grantee::Role { id } => Pred::OwnerHasRole(vec![id]),
            Grantee::Group { id } => match self.config.group(id) {
                Some(g) => {
                    let depts = g
                        .departments
                        .iter()
                        .flat_map(|(d, sub)| if *sub { dir.subtree(*d) } else { vec![*d] })
                        .collect::<Vec<_>>();
                    let mut parts = Vec::new();
                    if !g.users.is_empty() {
                        parts.push(Pred::OwnerIn(sorted(g.users.clone())));
                    }
                    if !depts.is_empty() {
                        parts.push(Pred::OwnerInDepartments(sorted(depts)));
                    }
                    Pred::any(parts)
                }
                None => Pred::FALSE,
            },
        }
    }
}

/// Labels a grant. Unlike [`Pred::because`], a grant of every record (scope `all`, a rule without conditions) keeps
/// its label, so an explanation still names it; `false` stays bare so the branch folds away.
fn grant_because(p: Pred, reason: Reason) -> Pred {
    match p {
        Pred::Const(true) => labelled_true(reason),
        p => p.because(reason),
    }
}

/// A criterion as a predicate. Criteria are type-checked when the configuration is saved; one that no longer
/// type-checks matches nothing (fail closed for grants, and for restrictions it hides the records).
fn criterion_pred(module: Module, c: &crate::config::Criterion) -> Pred {
    match c.typed(module) {
        Ok(values) => Pred::Field { field: c.field.clone(), op: c.op, values },
        Err(_) => Pred::FALSE,
    }
}
