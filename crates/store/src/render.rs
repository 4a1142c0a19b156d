//! Renders a policy [`Pred`] as a SQL condition. The single-record decision evaluates the same tree in memory
//! (`crm_policy::Access::decide`); the differential tests prove the two agree on both engines.

use crate::db::Sql;
use crm_domain::{Module, OrgId, Value, schema};
use crm_policy::{CmpOp, Pred};

/// Appends the condition for `pred` over the row aliased `alias` of `module`'s table.
pub(crate) fn render(sql: &mut Sql, pred: &Pred, module: Module, alias: &str, org: OrgId, depth: usize) {
    match pred {
        Pred::Const(true) => {
            sql.push("1=1");
        }
        Pred::Const(false) => {
            sql.push("1=0");
        }
        Pred::And(items) | Pred::Or(items) => {
            let joiner = if matches!(pred, Pred::And(_)) { " AND " } else { " OR " };
            sql.push("(");
            for (i, p) in items.iter().enumerate() {
                if i > 0 {
                    sql.push(joiner);
                }
                render(sql, p, module, alias, org, depth);
            }
            sql.push(")");
        }
        Pred::Because(_, p) => render(sql, p, module, alias, org, depth),
        Pred::OwnerIn(users) => {
            sql.push(alias).push(".owner_id");
            in_list(sql, users.iter().copied());
        }
        Pred::OwnerInDepartments(depts) => {
            let ud = format!("ud{depth}");
            sql.push(alias)
                .push(&format!(".owner_id IN (SELECT {ud}.user_id FROM user_departments {ud} WHERE {ud}.org_id = "));
            sql.bind(org).push(&format!(" AND {ud}.department_id"));
            in_list(sql, depts.iter().copied());
            sql.push(")");
        }
        Pred::OwnerHasRole(roles) => {
            let ur = format!("ur{depth}");
            sql.push(alias)
                .push(&format!(".owner_id IN (SELECT {ur}.user_id FROM user_roles {ur} WHERE {ur}.org_id = "));
            sql.bind(org).push(&format!(" AND {ur}.role_id"));
            in_list(sql, roles.iter().copied());
            sql.push(")");
        }
        // Team and share grants are rendered as uncorrelated `id IN (SELECT record_id …)` rather than a correlated
        // EXISTS: the same set, but the engine evaluates the subquery once (SQLite can then answer an OR of owner,
        // share and team grants from their indexes instead of probing two tables for every row it scans).
        Pred::OnTeam { user, min_level } => {
            let t = format!("rt{depth}");
            sql.push(&format!("{alias}.id IN (SELECT {t}.record_id FROM record_team {t} WHERE {t}.org_id = "));
            sql.bind(org).push(&format!(" AND {t}.module = ")).bind(module.as_str());
            sql.push(&format!(" AND {t}.user_id = ")).bind(*user);
            sql.push(&format!(" AND {t}.level >= ")).bind(min_level.as_i64()).push(")");
        }
        Pred::SharedWith { keys, min_level } => {
            let s = format!("rs{depth}");
            sql.push(&format!("{alias}.id IN (SELECT {s}.record_id FROM record_shares {s} WHERE {s}.org_id = "));
            sql.bind(org).push(&format!(" AND {s}.module = ")).bind(module.as_str());
            sql.push(&format!(" AND {s}.share_key"));
            in_list(sql, keys.iter().map(|k| k.encode()));
            sql.push(&format!(" AND {s}.level >= ")).bind(min_level.as_i64()).push(")");
        }
        Pred::Field { field, op, values } => render_field(sql, module, alias, field, *op, values),
        Pred::Parent { field, module: parent, pred } => {
            let (Some(child), Some(parent_schema)) = (schema(module), schema(*parent)) else {
                sql.push("1=0");
                return;
            };
            let Some(def) = child.field(field) else {
                sql.push("1=0");
                return;
            };
            let p = format!("p{depth}");
            sql.push(&format!(
                "{alias}.{} IN (SELECT {p}.id FROM {} {p} WHERE {p}.org_id = ",
                def.name, parent_schema.table
            ));
            sql.bind(org).push(" AND ");
            render(sql, pred, *parent, &p, org, depth + 1);
            sql.push(")");
        }
    }
}

fn in_list<A: Into<crate::db::Arg>>(sql: &mut Sql, items: impl ExactSizeIterator<Item = A>) {
    if items.len() == 0 {
        // `x IN ()` is not valid SQL; an empty set matches nothing.
        sql.push(" IS NULL AND 1=0");
        return;
    }
    sql.push(" IN ");
    sql.bind_list(items);
}

/// The column for a criterion's field: only names from the static schema reach the SQL text.
pub(crate) fn column(module: Module, field: &str) -> Option<&'static str> {
    match field {
        "id" => Some("id"),
        "owner_id" => Some("owner_id"),
        "created_at" => Some("created_at"),
        "updated_at" => Some("updated_at"),
        _ => schema(module)?.field(field).map(|d| d.name),
    }
}

fn render_field(sql: &mut Sql, module: Module, alias: &str, field: &str, op: CmpOp, values: &[Value]) {
    let Some(col) = column(module, field) else {
        sql.push("1=0");
        return;
    };
    let arg = |v: &Value| -> crate::db::Arg {
        match v {
            Value::Int(i) => (*i).into(),
            Value::Text(t) => t.clone().into(),
            Value::Null => crate::db::Arg::Text(None),
        }
    };
    let Some(first) = values.first() else {
        sql.push("1=0");
        return;
    };
    sql.push(alias).push(".").push(col);
    match op {
        CmpOp::In | CmpOp::NotIn => {
            sql.push(if op == CmpOp::In { " IN " } else { " NOT IN " });
            sql.bind_list(values.iter().map(arg));
        }
        _ => {
            let sym = match op {
                CmpOp::Eq => " = ",
                CmpOp::Ne => " <> ",
                CmpOp::Gt => " > ",
                CmpOp::Gte => " >= ",
                CmpOp::Lt => " < ",
                _ => " <= ",
            };
            sql.push(sym).bind(arg(first));
        }
    }
}
