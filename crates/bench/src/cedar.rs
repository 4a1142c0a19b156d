//! The same access policy for one module's `view` action, written as Cedar policies over Cedar entities, so
//! cedar-policy can decide the very requests `Access::decide` decides. The translation covers what the generated
//! organization uses: administrators' view-all, the five role scopes, organization defaults, partition grants,
//! owner- and criteria-based sharing rules, manual shares, record teams, restriction rules (as `forbid … unless`)
//! and the module permission (as a `forbid … unless principal in <a role that grants it>`). Precomputed entity
//! attributes stand in for what Cedar's hierarchy cannot say directly: a user's direct departments (`depts`), the
//! transitive managers above them (`managers`) and the keys a manual share may name (`keys`).

use crm_domain::{Action, Module, Value};
use crm_policy::{
    CmpOp, Criterion, Directory, Grantee, OrgDefault, PolicyConfig, RecordFacts, RuleSource, Scope, ShareKey,
};
use serde_json::{Value as J, json};
use std::collections::BTreeSet;
use std::fmt::Write;

fn principal_constraint(g: &Grantee) -> (String, Option<String>) {
    match *g {
        Grantee::User { id } => (format!("principal == User::\"{id}\""), None),
        Grantee::Department { id, include_sub: true } => (format!("principal in Department::\"{id}\""), None),
        Grantee::Department { id, include_sub: false } => {
            ("principal".into(), Some(format!("principal.depts.contains(Department::\"{id}\")")))
        }
        Grantee::Role { id } => (format!("principal in Role::\"{id}\""), None),
        Grantee::Group { id } => (format!("principal in Group::\"{id}\""), None),
    }
}

fn literal(v: &Value) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::Text(t) => J::String(t.clone()).to_string(),
        Value::Null => "\"\"".into(),
    }
}

fn criterion(module: Module, c: &Criterion) -> String {
    let Ok(values) = c.typed(module) else { return "false".into() };
    let f = &c.field;
    let attr = format!("resource.{f}");
    let set = || format!("[{}]", values.iter().map(literal).collect::<Vec<_>>().join(", "));
    let first = values.first().map(literal).unwrap_or_default();
    let cond = match c.op {
        CmpOp::Eq => format!("{attr} == {first}"),
        CmpOp::Ne => format!("{attr} != {first}"),
        CmpOp::In => format!("{}.contains({attr})", set()),
        CmpOp::NotIn => format!("!({}.contains({attr}))", set()),
        CmpOp::Gt => format!("{attr} > {first}"),
        CmpOp::Gte => format!("{attr} >= {first}"),
        CmpOp::Lt => format!("{attr} < {first}"),
        CmpOp::Lte => format!("{attr} <= {first}"),
    };
    // A missing value (NULL) never matches, as in SQL and in `Access::decide`.
    format!("(resource has {f} && {cond})")
}

fn owners(g: &Grantee) -> String {
    match *g {
        Grantee::User { id } => format!("resource.owner == User::\"{id}\""),
        Grantee::Department { id, include_sub: true } => format!("resource.owner in Department::\"{id}\""),
        Grantee::Department { id, include_sub: false } => {
            format!("resource.owner.depts.contains(Department::\"{id}\")")
        }
        Grantee::Role { id } => format!("resource.owner in Role::\"{id}\""),
        Grantee::Group { id } => format!("resource.owner in Group::\"{id}\""),
    }
}

/// Cedar policy text for `view` on `module` (entity type `Record`).
pub fn policies(config: &PolicyConfig, module: Module) -> String {
    let mut out = String::new();
    let head = |p: &str| format!("permit({p}, action == Action::\"view\", resource is Record)");
    // Module permission: without it nothing grants (administrators' view-all includes it).
    let holders: Vec<String> = config
        .roles
        .iter()
        .filter(|r| {
            r.view_all || r.modify_all || r.permissions.get(&module).is_some_and(|a| a.contains_key(&Action::View))
        })
        .map(|r| format!("principal in Role::\"{}\"", r.id))
        .collect();
    let holders = if holders.is_empty() { "false".to_string() } else { holders.join(" || ") };
    let _ = writeln!(out, "forbid(principal, action, resource) unless {{ principal.active && ({holders}) }};");
    for r in &config.roles {
        if r.view_all || r.modify_all {
            let _ = writeln!(out, "{};", head(&format!("principal in Role::\"{}\"", r.id)));
            continue;
        }
        let Some(scope) = r.permissions.get(&module).and_then(|a| a.get(&Action::View)) else { continue };
        let p = format!("principal in Role::\"{}\"", r.id);
        let cond = match scope {
            Scope::Own => "resource.owner == principal".to_string(),
            Scope::Subordinates => "resource.owner == principal || resource.owner.managers.contains(principal)".into(),
            Scope::Department => {
                "resource.owner == principal || principal.depts.containsAny(resource.owner.depts)".into()
            }
            Scope::DepartmentTree => "resource.owner == principal || resource.owner in principal.depts".into(),
            Scope::All => "true".into(),
        };
        let _ = writeln!(out, "{} when {{ {cond} }};", head(&p));
    }
    if matches!(config.default_for(module), OrgDefault::PublicRead | OrgDefault::PublicReadWrite) {
        let _ = writeln!(out, "{};", head("principal"));
    }
    for g in &config.partition_grants {
        if !g.modules.is_empty() && !g.modules.contains(&module) {
            continue;
        }
        let (p, extra) = principal_constraint(&g.grantee);
        let mut conds: Vec<String> = extra.into_iter().collect();
        for (key, values) in &g.partitions {
            let Some(d) = config.dimension(key) else { continue };
            let set = values.iter().map(|v| J::String(v.clone()).to_string()).collect::<Vec<_>>().join(", ");
            conds.push(format!("(resource has {f} && [{set}].contains(resource.{f}))", f = d.field));
        }
        let _ = writeln!(out, "{} when {{ {} }};", head(&p), conds.join(" && "));
    }
    for r in config.sharing_rules.iter().filter(|r| r.module == module) {
        let (p, extra) = principal_constraint(&r.share_with);
        let mut conds: Vec<String> = extra.into_iter().collect();
        match &r.source {
            RuleSource::OwnedBy { owners: o } => conds.push(owners(o)),
            RuleSource::Criteria { criteria } => conds.extend(criteria.iter().map(|c| criterion(module, c))),
        }
        let _ = writeln!(out, "{} when {{ {} }};", head(&p), conds.join(" && "));
    }
    let _ = writeln!(out, "{} when {{ resource.shares.containsAny(principal.keys) }};", head("principal"));
    let _ = writeln!(out, "{} when {{ resource.team.contains(principal) }};", head("principal"));
    for r in config.restriction_rules.iter().filter(|r| r.module == module) {
        let (p, extra) = principal_constraint(&r.applies_to);
        let mut when: Vec<String> = extra.into_iter().collect();
        if r.exempt_administrators {
            when.push("!principal.is_admin".into());
        }
        let crit = r.criteria.iter().map(|c| criterion(module, c)).collect::<Vec<_>>().join(" && ");
        let when = if when.is_empty() { String::new() } else { format!(" when {{ {} }}", when.join(" && ")) };
        let _ = writeln!(out, "forbid({p}, action, resource){when} unless {{ {crit} }};");
    }
    out
}

fn uid(ty: &str, id: i64) -> J {
    json!({"type": ty, "id": id.to_string()})
}

/// Cedar entities: departments, roles, groups, users, and the given records.
pub fn entities(config: &PolicyConfig, dir: &Directory, records: &[RecordFacts]) -> J {
    let mut out = Vec::new();
    let mut depts = BTreeSet::new();
    for u in dir.users() {
        depts.extend(u.departments.iter().copied());
    }
    // Every department with its parent chain (the directory knows parents of all departments).
    let mut all_depts: BTreeSet<i64> = BTreeSet::new();
    for d in depts {
        let mut cur = Some(d);
        while let Some(x) = cur {
            if !all_depts.insert(x) {
                break;
            }
            cur = dir.department_parent(x);
        }
    }
    for d in &all_depts {
        let parents: Vec<J> = dir.department_parent(*d).map(|p| uid("Department", p)).into_iter().collect();
        out.push(json!({"uid": uid("Department", *d), "attrs": {}, "parents": parents}));
    }
    for r in &config.roles {
        out.push(json!({"uid": uid("Role", r.id), "attrs": {}, "parents": []}));
    }
    for g in &config.groups {
        out.push(json!({"uid": uid("Group", g.id), "attrs": {}, "parents": []}));
    }
    for u in dir.users() {
        let groups: Vec<i64> = config
            .groups
            .iter()
            .filter(|g| {
                g.users.contains(&u.id)
                    || g.departments
                        .iter()
                        .any(|(gd, sub)| u.departments.iter().any(|d| d == gd || (*sub && dir.is_within(*d, *gd))))
            })
            .map(|g| g.id)
            .collect();
        let mut parents: Vec<J> = u.departments.iter().map(|d| uid("Department", *d)).collect();
        parents.extend(u.roles.iter().map(|r| uid("Role", *r)));
        parents.extend(groups.iter().map(|g| uid("Group", *g)));
        let mut managers = Vec::new();
        let mut cur = u.manager;
        while let Some(m) = cur {
            if managers.len() > 64 || m == u.id {
                break;
            }
            managers.push(uid("User", m));
            cur = dir.user(m).and_then(|x| x.manager);
        }
        let mut keys = vec![ShareKey::User(u.id).encode()];
        keys.extend(groups.iter().map(|g| ShareKey::Group(*g).encode()));
        keys.extend(u.departments.iter().map(|d| ShareKey::Department(*d).encode()));
        keys.extend(u.roles.iter().map(|r| ShareKey::Role(*r).encode()));
        let is_admin = u.roles.iter().any(|r| config.role(*r).is_some_and(|r| r.view_all || r.modify_all));
        out.push(json!({
            "uid": uid("User", u.id),
            "attrs": {
                "depts": u.departments.iter().map(|d| json!({"__entity": uid("Department", *d)})).collect::<Vec<_>>(),
                "managers": managers.into_iter().map(|m| json!({"__entity": m})).collect::<Vec<_>>(),
                "keys": keys,
                "is_admin": is_admin,
                "active": u.status == crm_policy::UserStatus::Active,
            },
            "parents": parents,
        }));
    }
    for f in records {
        let r = &f.record;
        let mut attrs = serde_json::Map::new();
        attrs.insert("owner".into(), json!({"__entity": uid("User", r.owner_id)}));
        for (k, v) in &r.fields {
            match v {
                Value::Int(i) => {
                    attrs.insert((*k).into(), json!(i));
                }
                Value::Text(t) => {
                    attrs.insert((*k).into(), json!(t));
                }
                Value::Null => {}
            }
        }
        attrs.insert("shares".into(), json!(f.shares.iter().map(|s| s.key.encode()).collect::<Vec<_>>()));
        attrs.insert(
            "team".into(),
            json!(f.team.iter().map(|t| json!({"__entity": uid("User", t.user)})).collect::<Vec<_>>()),
        );
        out.push(json!({"uid": uid("Record", r.id), "attrs": attrs, "parents": []}));
    }
    J::Array(out)
}
