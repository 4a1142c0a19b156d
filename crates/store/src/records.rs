//! [`Scoped`]: the only way to read or write customer records. Every statement it runs is bound to the
//! principal's organization and carries the policy predicate for the action; single-record decisions evaluate the
//! same predicate in memory over the record's facts.

use crate::audit;
use crate::db::{Arg, Columns, Sql};
use crate::render::{column, render};
use crate::{Principal, Store, StoreError, now_ms};
use crm_domain::{
    Action, FieldDef, FieldKind, Level, Module, ModuleSchema, Record, RecordId, UserId, Value, ValueError, schema,
};
use crm_policy::{
    Access, CmpOp, Criterion, Explanation, FieldAccess, Pred, RecordFacts, ShareEntry, ShareKey, TeamEntry,
};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};
use std::collections::BTreeMap;

/// A record as the caller may see it: hidden fields absent, masked fields masked.
pub type RecordOut = serde_json::Map<String, serde_json::Value>;

/// Rows the first attempt of a list page looks at (see `list_for`).
const PROBE_ROWS: i64 = 4096;
/// The most grant branches the branch plan queries one by one (see `list_for`); more fall back to one query.
const MAX_BRANCHES: usize = 32;

/// How a list page is computed. Every plan answers the same page (the differential tests walk them all); they differ
/// only in what the database reads.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListPlan {
    /// The probe over the next [`PROBE_ROWS`] rows in order; if that does not fill the page, the branch plan when
    /// the predicate has grant branches, else one query.
    Auto,
    /// One query over the whole table.
    Single,
    /// The probe over the next `n` rows in order, then one query.
    Probe(i64),
    /// One bounded query per grant branch, merged (one query when the predicate has no branches).
    Branches,
}

/// How a count is computed. Every plan gives the same number (the differential tests check them all); they differ
/// only in what the database reads.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountPlan {
    /// For a view-all predicate with or without exclusions (and no filter or search): the complement. Otherwise the
    /// disjoint branch sum when every grant branch is answered from an index; else one query.
    Auto,
    /// One `COUNT(*)` over the whole predicate.
    Single,
    /// The sum over the grant branches made disjoint (one query when the predicate has no branches).
    Disjoint,
    /// For a predicate that admits every record but those some field conditions exclude (view-all, with or without
    /// restriction rules) and a query without filters or search: the organization's records, read from the counts
    /// the database maintains (`record_counts`, migration 0011), minus the excluded ones; one query when the plan
    /// does not apply.
    Complement,
}

/// The conditions a predicate excludes records by, when it admits every record of the organization but those:
/// `Some(vec![])` for `true`, `Some([(column, values), …])` for a conjunction of `field <> v` / `field NOT IN (…)`
/// over non-null values (a NULL value would make the condition never true, which no complement of `IN` expresses).
fn exclusions(module: Module, pred: &Pred) -> Option<Vec<(&'static str, &Pred, &[Value])>> {
    match pred {
        Pred::Const(true) => Some(Vec::new()),
        Pred::Because(_, inner) => exclusions(module, inner),
        Pred::And(items) => {
            let mut out = Vec::new();
            for item in items {
                out.extend(exclusions(module, item)?);
            }
            Some(out)
        }
        Pred::Field { field, op: CmpOp::Ne | CmpOp::NotIn, values }
            if !values.is_empty() && values.iter().all(|v| !matches!(v, Value::Null)) =>
        {
            Some(vec![(column(module, field)?, pred, values.as_slice())])
        }
        _ => None,
    }
}

/// Columns indexed for counting (migration 0006) besides [`INDEXED_COLUMNS`]: the criteria sharing rules' fields.
const COUNT_INDEXED_COLUMNS: &[(Module, &str)] = &[(Module::Customers, "industry")];

/// [`indexed_branch`] for counts, which may also start from the columns of [`COUNT_INDEXED_COLUMNS`].
fn count_indexed(module: Module, p: &Pred) -> bool {
    match p {
        Pred::Because(_, inner) => count_indexed(module, inner),
        Pred::Field { field, op: CmpOp::Eq | CmpOp::In, .. }
            if COUNT_INDEXED_COLUMNS.iter().any(|(m, f)| *m == module && f == field) =>
        {
            true
        }
        Pred::And(items) => items.iter().any(|i| count_indexed(module, i)),
        Pred::Or(items) => items.iter().all(|i| count_indexed(module, i)),
        other => indexed_branch(module, other),
    }
}

/// Whether the database finds a branch's rows from an index (owner, share, team, parent reference, an indexed
/// partition column) rather than by walking the table in sort order.
fn indexed_branch(module: Module, p: &Pred) -> bool {
    match p {
        Pred::Because(_, inner) => indexed_branch(module, inner),
        Pred::OwnerIn(_)
        | Pred::OwnerInDepartments(_)
        | Pred::OwnerHasRole(_)
        | Pred::OnTeam { .. }
        | Pred::SharedWith { .. }
        | Pred::Parent { .. } => true,
        Pred::Field { field, op: CmpOp::Eq | CmpOp::In, .. } => {
            INDEXED_COLUMNS.iter().any(|(m, f)| *m == module && f == field)
        }
        Pred::And(items) => items.iter().any(|i| indexed_branch(module, i)),
        Pred::Or(items) => items.iter().all(|i| indexed_branch(module, i)),
        _ => false,
    }
}

/// Whether a condition reads only the record's own columns (no owner directory, shares, team or parent).
fn columns_only(p: &Pred) -> bool {
    match p {
        Pred::Const(_) | Pred::Field { .. } => true,
        Pred::Because(_, inner) => columns_only(inner),
        Pred::And(items) | Pred::Or(items) => items.iter().all(columns_only),
        _ => false,
    }
}

/// Columns with an `(org_id, column, updated_at)` index (migration 0001), besides `owner_id`.
const INDEXED_COLUMNS: &[(Module, &str)] = &[
    (Module::Customers, "region"),
    (Module::Customers, "customer_type"),
    (Module::Contacts, "account_id"),
    (Module::Opportunities, "account_id"),
    (Module::Tickets, "account_id"),
    (Module::Activities, "account_id"),
];

/// Largest owner list a department or role condition is spelled out as (see `owners_spelled_out`).
const MAX_SPELLED_OWNERS: usize = 2000;

/// The branch with department and role conditions on the owner spelled out as the owners they name, from the
/// directory the access was compiled with (the same version as the tables: every membership change bumps it).
/// PostgreSQL answers `owner_id IN (…)` from the owner index; for `owner_id IN (SELECT … user_departments …)` under
/// `ORDER BY … LIMIT` it probes the membership table once per row it walks.
fn owners_spelled_out(p: &Pred, dir: &crm_policy::Directory) -> Pred {
    let owners = |keep: &dyn Fn(&crm_policy::DirUser) -> bool| -> Option<Pred> {
        let mut ids: Vec<crm_domain::UserId> = dir.users().filter(|u| keep(u)).map(|u| u.id).collect();
        if ids.len() > MAX_SPELLED_OWNERS {
            return None;
        }
        ids.sort_unstable();
        Some(Pred::OwnerIn(ids))
    };
    match p {
        Pred::Because(reason, inner) => Pred::Because(reason.clone(), Box::new(owners_spelled_out(inner, dir))),
        Pred::And(items) => Pred::And(items.iter().map(|i| owners_spelled_out(i, dir)).collect()),
        Pred::Or(items) => Pred::Or(items.iter().map(|i| owners_spelled_out(i, dir)).collect()),
        Pred::OwnerInDepartments(depts) => {
            owners(&|u| u.departments.iter().any(|d| depts.binary_search(d).is_ok())).unwrap_or_else(|| p.clone())
        }
        Pred::OwnerHasRole(roles) => {
            owners(&|u| u.roles.iter().any(|r| roles.binary_search(r).is_ok())).unwrap_or_else(|| p.clone())
        }
        other => other.clone(),
    }
}

/// Splits a predicate into grant branches and what every branch must also meet: `Or(b…) AND rest…` (the largest
/// disjunction of a conjunction, or a disjunction alone). `None` when there is nothing to split.
fn grant_branches(pred: &Pred) -> Option<(Vec<&Pred>, Vec<&Pred>)> {
    fn strip(p: &Pred) -> &Pred {
        match p {
            Pred::Because(_, inner) => strip(inner),
            p => p,
        }
    }
    let branches_of = |p: &Pred| match strip(p) {
        Pred::Or(items) if items.len() >= 2 => Some(items.len()),
        _ => None,
    };
    match strip(pred) {
        Pred::Or(items) if items.len() >= 2 => Some((items.iter().collect(), Vec::new())),
        Pred::And(items) => {
            let (at, _) =
                items.iter().enumerate().filter_map(|(i, p)| branches_of(p).map(|n| (i, n))).max_by_key(|(_, n)| *n)?;
            let Pred::Or(branches) = strip(&items[at]) else { return None };
            let rest = items.iter().enumerate().filter(|(i, _)| *i != at).map(|(_, p)| p).collect();
            Some((branches.iter().collect(), rest))
        }
        _ => None,
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FieldFilter {
    pub field: String,
    pub op: CmpOp,
    pub value: serde_json::Value,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    pub filters: Vec<FieldFilter>,
    /// Case-insensitive text search over the module's searchable fields the caller may read.
    pub q: Option<String>,
    /// Sort field (default `updated_at`).
    pub sort: Option<String>,
    /// Ascending instead of the default descending order.
    #[serde(default)]
    pub asc: bool,
    /// Opaque cursor from the previous page's `next_cursor`.
    pub after: Option<String>,
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<u32>,
}

/// A record's manual shares and team, as its sharers see them.
#[derive(Debug, Clone, Serialize)]
pub struct Sharing {
    pub shares: Vec<crm_policy::ShareEntry>,
    pub team: Vec<crm_policy::TeamEntry>,
}

/// One picker suggestion: a record the caller may view, by id and label.
#[derive(Debug, Clone, Serialize)]
pub struct LookupItem {
    pub id: i64,
    pub label: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Page {
    pub items: Vec<RecordOut>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

pub struct Scoped<'s> {
    pub(crate) store: &'s Store,
    pub(crate) principal: Principal,
    /// Set when an administrator views the application as `principal`'s user ([`Scoped::view_as`]): the
    /// administrator's user and session, who are the actor of every audit entry (the viewed user its subject).
    pub(crate) viewed_by: Option<(UserId, i64)>,
}

pub(crate) fn arg_for(def: &FieldDef, v: &Value) -> Arg {
    match (def.kind.is_integer(), v) {
        (_, Value::Int(i)) => Arg::Int(Some(*i)),
        (_, Value::Text(t)) => Arg::Text(Some(t.clone())),
        (true, Value::Null) => Arg::Int(None),
        (false, Value::Null) => Arg::Text(None),
    }
}

pub(crate) fn select_columns(sql: &mut Sql, s: &ModuleSchema, alias: &str) {
    sql.push(&format!("{alias}.id, {alias}.org_id, {alias}.owner_id, {alias}.created_at, {alias}.updated_at"));
    for f in s.fields {
        sql.push(&format!(", {alias}.{}", f.name));
    }
}

pub(crate) fn decode(s: &ModuleSchema, row: &impl Columns) -> Result<Record, StoreError> {
    let mut fields = BTreeMap::new();
    for f in s.fields {
        let v = if f.kind.is_integer() { row.int(f.name)?.map(Value::Int) } else { row.text(f.name)?.map(Value::Text) };
        fields.insert(f.name, v.unwrap_or(Value::Null));
    }
    Ok(Record {
        module: s.module,
        id: row.req_int("id")?,
        org_id: row.req_int("org_id")?,
        owner_id: row.req_int("owner_id")?,
        created_at: row.req_int("created_at")?,
        updated_at: row.req_int("updated_at")?,
        fields,
    })
}

/// `13812345678` → `138****5678`; `zhang@example.com` → `z***@example.com`.
pub fn mask(kind: FieldKind, v: &str) -> String {
    match kind {
        FieldKind::Email => match v.split_once('@') {
            Some((local, domain)) => format!("{}***@{domain}", local.chars().next().unwrap_or('*')),
            None => "***".into(),
        },
        _ => {
            let chars: Vec<char> = v.chars().collect();
            if chars.len() <= 7 {
                return "****".into();
            }
            let head: String = chars[..3].iter().collect();
            let tail: String = chars[chars.len() - 4..].iter().collect();
            format!("{head}****{tail}")
        }
    }
}

fn schema_of(module: Module) -> Result<&'static ModuleSchema, StoreError> {
    schema(module).ok_or(StoreError::NotFound)
}

fn encode_cursor(v: &Value, id: i64) -> String {
    hex::encode(serde_json::json!([v.to_json(), id]).to_string())
}

fn decode_cursor(s: &str, integer: bool) -> Result<(Value, i64), StoreError> {
    let bad = || StoreError::BadQuery("invalid cursor".into());
    let bytes = hex::decode(s).map_err(|_| bad())?;
    let (v, id): (serde_json::Value, i64) = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let v = match (integer, v) {
        (true, serde_json::Value::Number(n)) => Value::Int(n.as_i64().ok_or_else(bad)?),
        (false, serde_json::Value::String(t)) => Value::Text(t),
        _ => return Err(bad()),
    };
    Ok((v, id))
}

impl<'s> Scoped<'s> {
    pub(crate) fn new(store: &'s Store, principal: Principal) -> Self {
        Scoped { store, principal, viewed_by: None }
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub fn access(&self) -> &Access {
        &self.principal.access
    }

    pub(crate) fn db(&self) -> &crate::db::Db {
        &self.store.db
    }

    /// A module the user cannot view does not exist for them (404); one they view but may not act on is 403.
    pub(crate) fn require_module(&self, module: Module, action: Action) -> Result<&'static ModuleSchema, StoreError> {
        let s = schema_of(module)?;
        // Visible modules exist; so does one the user may act on without viewing (e.g. import-only).
        let exists = self.access().can(module, Action::View) || self.access().can(module, action);
        if !exists {
            return Err(StoreError::NotFound);
        }
        if !self.access().can(module, action) {
            return Err(StoreError::Forbidden(format!("you may not {action} {module}")));
        }
        Ok(s)
    }

    /// The field's definition if the caller may read it; hidden and unknown fields answer alike.
    pub(crate) fn readable_field(
        &self,
        module: Module,
        s: &ModuleSchema,
        name: &str,
    ) -> Result<Option<&'static FieldDef>, StoreError> {
        let unknown = || StoreError::BadQuery(format!("unknown field {name}"));
        if ModuleSchema::is_system_column(name) {
            return Ok(None);
        }
        let def = s.field(name).ok_or_else(unknown)?;
        match self.access().field_access(module, name) {
            FieldAccess::Hidden => Err(unknown()),
            FieldAccess::Masked => {
                Err(StoreError::BadQuery(format!("field {name} is masked and cannot be filtered or sorted")))
            }
            _ => Ok(Some(def)),
        }
    }

    /// Shapes a record for output under the caller's field permissions.
    fn present(&self, r: &Record) -> RecordOut {
        let mut out = RecordOut::new();
        out.insert("id".into(), r.id.into());
        out.insert("owner_id".into(), r.owner_id.into());
        out.insert("created_at".into(), r.created_at.into());
        out.insert("updated_at".into(), r.updated_at.into());
        let Some(s) = schema(r.module) else { return out };
        for f in s.fields {
            let v = r.fields.get(f.name).unwrap_or(&Value::Null);
            match self.access().field_access(r.module, f.name) {
                FieldAccess::Hidden => {}
                FieldAccess::Masked => {
                    let shown = match v {
                        Value::Text(t) => serde_json::Value::from(mask(f.kind, t)),
                        other => other.to_json(),
                    };
                    out.insert(f.name.into(), shown);
                }
                _ => {
                    out.insert(f.name.into(), v.to_json());
                }
            }
        }
        out
    }

    /// WHERE clause shared by list, count and export: organization, policy predicate, filters, search.
    pub(crate) fn where_clause(
        &self,
        sql: &mut Sql,
        module: Module,
        action: Action,
        q: &ListQuery,
    ) -> Result<(), StoreError> {
        self.where_clause_for(sql, module, self.access().pred(module, action), q)
    }

    /// [`Scoped::where_clause`] with a given predicate (the caller's, or one grant branch of it and the rest).
    fn where_clause_for(&self, sql: &mut Sql, module: Module, pred: &Pred, q: &ListQuery) -> Result<(), StoreError> {
        let s = schema_of(module)?;
        sql.push(" WHERE r.org_id = ").bind(self.principal.org).push(" AND ");
        render(sql, pred, module, "r", self.principal.org, 1);
        for f in &q.filters {
            let def = self.readable_field(module, s, &f.field)?;
            if def.is_none() && f.field != "owner_id" {
                return Err(StoreError::BadQuery(format!("field {} cannot be filtered", f.field)));
            }
            let crit = Criterion { field: f.field.clone(), op: f.op, value: f.value.clone() };
            let values = crit.typed(module).map_err(StoreError::BadQuery)?;
            sql.push(" AND ");
            render(sql, &Pred::Field { field: f.field.clone(), op: f.op, values }, module, "r", self.principal.org, 1);
        }
        if let Some(text) = q.q.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            if text.chars().count() > 100 {
                return Err(StoreError::BadQuery("search text is longer than 100 characters".into()));
            }
            let pattern = format!(
                "%{}%",
                text.to_ascii_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
            );
            let fields: Vec<&FieldDef> = s
                .fields
                .iter()
                .filter(|f| f.searchable && self.access().field_access(module, f.name) >= FieldAccess::ReadOnly)
                .collect();
            if fields.is_empty() {
                sql.push(" AND 1=0");
            } else {
                sql.push(" AND (");
                for (i, f) in fields.iter().enumerate() {
                    if i > 0 {
                        sql.push(" OR ");
                    }
                    sql.push(&format!("LOWER(r.{}) LIKE ", f.name)).bind(pattern.clone()).push(" ESCAPE '\\'");
                }
                sql.push(")");
            }
        }
        Ok(())
    }

    /// One page of the records the caller may view, in keyset order.
    pub async fn list(&self, module: Module, q: &ListQuery) -> Result<Page, StoreError> {
        let page = self.list_for(module, Action::View, q).await?;
        // One durable audit entry per read, before the caller answers.
        self.record_access(
            self.audit_entry("record.list").module(module).detail(crate::audit_query::page_detail(q, &page)),
        )
        .await?;
        Ok(page)
    }

    /// One page of the records the caller may do `action` on (view, export), presented under their field
    /// permissions.
    pub(crate) async fn list_for(&self, module: Module, action: Action, q: &ListQuery) -> Result<Page, StoreError> {
        self.list_planned(module, action, q, ListPlan::Auto).await
    }

    /// A page of the records the caller may view, computed with one plan (for tests and tools comparing plans; not
    /// audited).
    #[doc(hidden)]
    pub async fn list_with_plan(&self, module: Module, q: &ListQuery, plan: ListPlan) -> Result<Page, StoreError> {
        self.list_planned(module, Action::View, q, plan).await
    }

    async fn list_planned(
        &self,
        module: Module,
        action: Action,
        q: &ListQuery,
        plan: ListPlan,
    ) -> Result<Page, StoreError> {
        let s = self.require_module(module, action)?;
        let limit = q.limit.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(StoreError::BadQuery("limit must be between 1 and 200".into()));
        }
        let sort = q.sort.as_deref().unwrap_or("updated_at");
        let def = self.readable_field(module, s, sort)?;
        let sort_col = column(module, sort).ok_or_else(|| StoreError::BadQuery(format!("unknown field {sort}")))?;
        let integer = def.is_none_or(|d| d.kind.is_integer());
        let sort_expr = |a: &str| match def {
            Some(d) if !d.required => {
                let sentinel = if integer { "-9223372036854775807" } else { "''" };
                format!("COALESCE({a}.{sort_col}, {sentinel})")
            }
            _ => format!("{a}.{sort_col}"),
        };
        let cursor = q.after.as_deref().map(|c| decode_cursor(c, integer)).transpose()?;
        let (cmp, dir) = if q.asc { (">", "ASC") } else { ("<", "DESC") };
        let keyset = |sql: &mut Sql, a: &str| {
            if let Some((v, id)) = &cursor {
                let arg = match v {
                    Value::Int(i) => Arg::Int(Some(*i)),
                    Value::Text(t) => Arg::Text(Some(t.clone())),
                    Value::Null => Arg::Text(None),
                };
                let e = sort_expr(a);
                sql.push(&format!(" AND ({e} {cmp} ")).bind(arg.clone());
                sql.push(&format!(" OR ({e} = ")).bind(arg).push(&format!(" AND {a}.id {cmp} ")).bind(*id).push("))");
            }
        };
        // `probe`: the same query over only the next PROBE_ROWS rows in sort order. When those already hold a full
        // page, it is the page (the rows are a prefix of the order); it spares a user who sees much of the table
        // the plan built for one who sees little (gathering every visible row through the owner, share and team
        // indexes, then sorting), and vice versa.
        let pred = self.access().pred(module, action);
        let order = |sql: &mut Sql, a: &str| {
            let e = sort_expr(a);
            sql.push(&format!(" ORDER BY {e} {dir}, {a}.id {dir} LIMIT ")).bind(i64::from(limit) + 1);
        };
        let build = |probe: Option<i64>| -> Result<Sql, StoreError> {
            let mut sql = self.db().sql();
            sql.push("SELECT ");
            select_columns(&mut sql, s, "r");
            sql.push(" FROM ");
            if let Some(rows) = probe {
                sql.push("(SELECT * FROM ").push(s.table).push(" w WHERE w.org_id = ").bind(self.principal.org);
                keyset(&mut sql, "w");
                let e = sort_expr("w");
                sql.push(&format!(" ORDER BY {e} {dir}, w.id {dir} LIMIT ")).bind(rows).push(") r");
            } else {
                sql.push(s.table).push(" r");
            }
            self.where_clause_for(&mut sql, module, pred, q)?;
            keyset(&mut sql, "r");
            order(&mut sql, "r");
            Ok(sql)
        };
        // The branch plan: the page's rows are among the first `limit + 1` rows of some grant branch (each branch
        // with the restrictions, filters, search and cursor applied is a subset of the visible rows, so a row of the
        // page has at most `limit` rows before it in its branch). Each branch is a small query the database
        // answers from its own index (owner, shares, team, a partition column), instead of one OR over all of them
        // that PostgreSQL turns into a scan and SQLite into gathering and sorting every visible row.
        let build_branches = || -> Result<Option<Sql>, StoreError> {
            let Some((branches, rest)) = grant_branches(pred) else { return Ok(None) };
            if branches.len() > MAX_BRANCHES {
                return Ok(None);
            }
            let postgres = self.db().engine == crate::db::Engine::Postgres;
            let mut sql = self.db().sql();
            sql.push("SELECT ");
            select_columns(&mut sql, s, "r");
            sql.push(" FROM ").push(s.table).push(" r WHERE r.org_id = ").bind(self.principal.org);
            sql.push(" AND r.id IN (");
            for (i, branch) in branches.iter().enumerate() {
                if i > 0 {
                    sql.push(" UNION ALL ");
                }
                sql.push(&format!("SELECT b{i}.id FROM (SELECT r.id FROM ")).push(s.table).push(" r");
                let branch =
                    if postgres { owners_spelled_out(branch, self.access().directory()) } else { (*branch).clone() };
                let mut all = vec![branch];
                all.extend(rest.iter().map(|p| (*p).clone()));
                self.where_clause_for(&mut sql, module, &Pred::And(all), q)?;
                keyset(&mut sql, "r");
                order(&mut sql, "r");
                sql.push(&format!(") b{i}"));
            }
            sql.push(")");
            order(&mut sql, "r");
            Ok(Some(sql))
        };
        // Built (and so validated) before the shortcut below: a bad query is refused the same way for everyone.
        let single = build(None)?;
        if pred.is_never() {
            return Ok(Page { items: Vec::new(), next_cursor: None });
        }
        // The automatic choice, from measurements at 1,000,000 customers (BENCHMARKS.md §2). SQLite: the probe keeps
        // users who see much on the index-order walk; when it comes back short, the branch plan. PostgreSQL plans
        // the one query well except when a user sees very little (it walks the table in order), and reading the
        // probe's rows costs it more than it saves: the branch plan when every branch has an index, else one query.
        let sqlite = self.db().engine == crate::db::Engine::Sqlite;
        let indexed = || grant_branches(pred).is_some_and(|(b, _)| b.iter().all(|p| indexed_branch(module, p)));
        let probe_rows = match plan {
            ListPlan::Auto if sqlite && *pred != Pred::TRUE => Some(PROBE_ROWS),
            ListPlan::Probe(n) => Some(n),
            _ => None,
        };
        let mut rows = Vec::new();
        if let Some(n) = probe_rows {
            rows = self.db().read_all(&build(Some(n))?).await?;
        }
        if rows.len() <= limit as usize {
            let branches = match plan {
                ListPlan::Auto if *pred != Pred::TRUE && (sqlite || indexed()) => build_branches()?,
                ListPlan::Branches => build_branches()?,
                _ => None,
            };
            rows = self.db().read_all(branches.as_ref().unwrap_or(&single)).await?;
        }
        let mut records = rows.iter().map(|r| decode(s, r)).collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if records.len() > limit as usize {
            records.truncate(limit as usize);
            records.last().map(|r| {
                let v = r.value(sort_col).into_owned();
                let v = match v {
                    Value::Null if integer => Value::Int(-9223372036854775807),
                    Value::Null => Value::Text(String::new()),
                    v => v,
                };
                encode_cursor(&v, r.id)
            })
        } else {
            None
        };
        Ok(Page { items: records.iter().map(|r| self.present(r)).collect(), next_cursor })
    }

    /// How many records the caller may view match the query (filters and search; no paging).
    pub async fn count(&self, module: Module, q: &ListQuery) -> Result<i64, StoreError> {
        let n = self.count_planned(module, q, CountPlan::Auto).await?;
        self.record_access(
            self.audit_entry("record.count").module(module).detail(serde_json::json!({"query": q, "count": n})),
        )
        .await?;
        Ok(n)
    }

    /// [`Scoped::count`] computed with one plan (for tests and tools comparing plans; not audited).
    #[doc(hidden)]
    pub async fn count_with_plan(&self, module: Module, q: &ListQuery, plan: CountPlan) -> Result<i64, StoreError> {
        self.count_planned(module, q, plan).await
    }

    async fn count_planned(&self, module: Module, q: &ListQuery, plan: CountPlan) -> Result<i64, StoreError> {
        match self.count_sql(module, q, plan)? {
            Some(sql) => Ok(sql.fetch_one(&self.db().pool).await?.try_get("n")?),
            None => Ok(0),
        }
    }

    /// The statement a count plan runs, as text with its bound values (for tools that explain plans; not audited).
    /// `None` when the caller may see no record at all.
    #[doc(hidden)]
    pub fn count_statement(
        &self,
        module: Module,
        q: &ListQuery,
        plan: CountPlan,
    ) -> Result<Option<String>, StoreError> {
        Ok(self.count_sql(module, q, plan)?.map(|sql| format!("{sql:?}")))
    }

    /// The statement of a count plan; `None` when the predicate admits no record.
    fn count_sql(&self, module: Module, q: &ListQuery, plan: CountPlan) -> Result<Option<Sql>, StoreError> {
        let s = self.require_module(module, Action::View)?;
        let pred = self.access().pred(module, Action::View);
        // Built (and so validated) first: a bad query is refused the same way whatever the plan.
        let mut single = self.db().sql();
        single.push("SELECT COUNT(*) AS n FROM ").push(s.table).push(" r");
        self.where_clause_for(&mut single, module, pred, q)?;
        if pred.is_never() {
            return Ok(None);
        }
        let disjoint = match plan {
            CountPlan::Single => None,
            CountPlan::Disjoint => self.count_disjoint(module, pred, q)?,
            CountPlan::Complement => self.count_complement(module, pred, q)?,
            // Both engines visit every index entry they count (SQLite ≈ 0.1 µs each, PostgreSQL more): a view-all
            // count reads the organization's maintained total and subtracts the excluded records instead of
            // counting the admitted ones (at 1,000,000 customers: a few rows and the government range, against
            // 800,000 entries).
            CountPlan::Auto if exclusions(module, pred).is_some() => self.count_complement(module, pred, q)?,
            // Measured at 1,000,000 customers (BENCHMARKS.md §2): on PostgreSQL the disjoint sum turns the one
            // query's scan of the organization's rows into index reads. On SQLite, since the sum starts with the
            // column-only branches (counted from an index alone), it is as fast as or faster than the one query's
            // MULTI-INDEX OR for every persona (the director: 36–48 ms against 132–201 ms).
            CountPlan::Auto => {
                let indexed = grant_branches(pred).is_some_and(|(b, _)| b.iter().all(|p| count_indexed(module, p)));
                if indexed { self.count_disjoint(module, pred, q)? } else { None }
            }
        };
        Ok(Some(disjoint.unwrap_or(single)))
    }

    /// The count as the organization's records minus those an exclusion rules out (see [`CountPlan::Complement`]):
    /// for `c₁ AND … AND cₙ`, excluded are the rows where some cₖ is not true, the disjoint union over k of the rows
    /// where `column IN (values)` or `column IS NULL` (cₖ false or unknown) and c₁ … cₖ₋₁ hold. The organization's
    /// records are the sum of its maintained counts (`record_counts`, migration 0011: a few rows, kept by triggers in
    /// the writes' own transactions, so the one statement's snapshot sees the count and the rows agree); each
    /// excluded part reads one index range. `None` when the predicate is not of that form or the query filters or
    /// searches.
    fn count_complement(&self, module: Module, pred: &Pred, q: &ListQuery) -> Result<Option<Sql>, StoreError> {
        let Some(excluded) = exclusions(module, pred) else { return Ok(None) };
        if !q.filters.is_empty() || q.q.as_deref().is_some_and(|t| !t.trim().is_empty()) {
            return Ok(None);
        }
        let s = schema_of(module)?;
        let org = self.principal.org;
        let mut sql = self.db().sql();
        // SUM is NUMERIC on PostgreSQL, which the driver does not decode: the total is cast back.
        sql.push("SELECT (SELECT COALESCE(CAST(SUM(c.n) AS BIGINT), 0) FROM record_counts c WHERE c.org_id = ")
            .bind(org)
            .push(" AND c.table_name = ")
            .bind(s.table)
            .push(")");
        for (k, (col, _, values)) in excluded.iter().enumerate() {
            for null in [false, true] {
                sql.push(" - (SELECT COUNT(*) FROM ").push(s.table).push(" r WHERE r.org_id = ").bind(org);
                sql.push(" AND r.").push(col);
                if null {
                    sql.push(" IS NULL");
                } else {
                    sql.push(" IN ");
                    sql.bind_list(values.iter().map(|v| match v {
                        Value::Int(i) => Arg::from(*i),
                        Value::Text(t) => Arg::from(t.clone()),
                        Value::Null => Arg::Text(None),
                    }));
                }
                for (_, earlier, _) in &excluded[..k] {
                    sql.push(" AND ");
                    render(&mut sql, earlier, module, "r", org, 1);
                }
                sql.push(")");
            }
        }
        sql.push(" AS n");
        Ok(Some(sql))
    }

    /// The count as a sum over the grant branches made disjoint: for `(b₁ OR … OR bₙ) AND rest`, the sum over k of
    /// the rows meeting `bₖ AND rest` and none of `b₁ … bₖ₋₁` (`(bⱼ) IS NOT TRUE`, so a condition that is NULL on a
    /// row counts as not met, as in the list's WHERE). The parts partition the visible rows, so the sum is exact
    /// (a plain sum of the branches' counts would count a record granted twice twice). Each part is answered from
    /// its branch's index (owner, shares, team, an indexed column) and tests the earlier branches only on those
    /// rows, instead of testing every row of the table. `None` when the predicate has no branches.
    fn count_disjoint(&self, module: Module, pred: &Pred, q: &ListQuery) -> Result<Option<Sql>, StoreError> {
        let Some((branches, rest)) = grant_branches(pred) else { return Ok(None) };
        if branches.len() > MAX_BRANCHES {
            return Ok(None);
        }
        let s = schema_of(module)?;
        let postgres = self.db().engine == crate::db::Engine::Postgres;
        // PostgreSQL reads `owner_id IN (…)` from the owner index; a membership subquery it would test per row.
        let mut branches: Vec<Pred> = branches
            .iter()
            .map(|b| if postgres { owners_spelled_out(b, self.access().directory()) } else { (*b).clone() })
            .collect();
        // Branches over the row's own columns first (partition grants, criteria rules: an index range, often large):
        // the first part tests no earlier branch, so it is counted from the index alone, and the later parts (owner,
        // shares, team: usually few rows) test the column conditions on the rows they read anyway.
        branches.sort_by_key(|b| !columns_only(b));
        let mut sql = self.db().sql();
        sql.push("SELECT ");
        for (k, branch) in branches.iter().enumerate() {
            if k > 0 {
                sql.push(" + ");
            }
            sql.push("(SELECT COUNT(*) FROM ").push(s.table).push(" r");
            let mut all = vec![branch.clone()];
            all.extend(rest.iter().map(|p| (*p).clone()));
            self.where_clause_for(&mut sql, module, &Pred::And(all), q)?;
            for earlier in &branches[..k] {
                sql.push(" AND (");
                render(&mut sql, earlier, module, "r", self.principal.org, 1);
                sql.push(") IS NOT TRUE");
            }
            sql.push(")");
        }
        sql.push(" AS n");
        Ok(Some(sql))
    }

    /// The ids of every record the caller may do `action` on (for tests and tools that compare evaluators).
    pub async fn visible_ids(&self, module: Module, action: Action) -> Result<Vec<RecordId>, StoreError> {
        let s = schema_of(module)?;
        let mut sql = self.db().sql();
        sql.push("SELECT r.id FROM ").push(s.table).push(" r WHERE r.org_id = ").bind(self.principal.org).push(" AND ");
        render(&mut sql, self.access().pred(module, action), module, "r", self.principal.org, 1);
        sql.push(" ORDER BY r.id");
        sql.fetch_all(&self.db().pool).await?.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// The in-memory decision for every record of the module (system read of facts; for differential tests).
    pub async fn decide_each(&self, module: Module, action: Action) -> Result<Vec<(RecordId, bool)>, StoreError> {
        let s = schema_of(module)?;
        let mut sql = self.db().sql();
        sql.push("SELECT r.id FROM ")
            .push(s.table)
            .push(" r WHERE r.org_id = ")
            .bind(self.principal.org)
            .push(" ORDER BY r.id");
        let ids: Vec<i64> =
            sql.fetch_all(&self.db().pool).await?.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>()?;
        let mut conn = self.db().pool.acquire().await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let facts = load_facts(&mut conn, self.db().engine, self.principal.org, module, id)
                .await?
                .ok_or(StoreError::NotFound)?;
            out.push((id, self.access().decide(module, action, &facts)));
        }
        Ok(out)
    }

    /// One record, if the caller may view it; otherwise `NotFound`, exactly as for a record that does not exist.
    pub async fn get(&self, module: Module, id: RecordId) -> Result<RecordOut, StoreError> {
        self.require_module(module, Action::View)?;
        let facts = self.facts(module, id).await?;
        if !self.access().decide(module, Action::View, &facts) {
            return Err(StoreError::NotFound);
        }
        let mut out = self.present(&facts.record);
        let allowed: serde_json::Map<String, serde_json::Value> =
            [Action::Edit, Action::Delete, Action::Transfer, Action::Share]
                .into_iter()
                .map(|a| (a.as_str().to_string(), self.access().decide(module, a, &facts).into()))
                .collect();
        out.insert("_allowed".into(), allowed.into());
        self.record_access(self.audit_entry("record.view").record(module, id)).await?;
        Ok(out)
    }

    /// Why the caller may (or may not) do `action` on a record they can view.
    pub async fn explain_own(&self, module: Module, action: Action, id: RecordId) -> Result<Explanation, StoreError> {
        self.require_module(module, Action::View)?;
        let facts = self.facts(module, id).await?;
        if !self.access().decide(module, Action::View, &facts) {
            return Err(StoreError::NotFound);
        }
        let explanation = self.access().explain(module, action, &facts);
        self.record_access(
            self.audit_entry("record.explain").record(module, id).detail(serde_json::json!({"action": action})),
        )
        .await?;
        Ok(explanation)
    }

    /// The clear value of a masked field, for callers with the `reveal` right; audited.
    pub async fn reveal(&self, module: Module, id: RecordId, field: &str) -> Result<serde_json::Value, StoreError> {
        self.require_module(module, Action::View)?;
        let facts = self.facts(module, id).await?;
        if !self.access().decide(module, Action::View, &facts) {
            return Err(StoreError::NotFound);
        }
        let s = schema_of(module)?;
        let def = s.field(field).filter(|_| self.access().field_access(module, field) != FieldAccess::Hidden);
        let def = def.ok_or_else(|| StoreError::BadQuery(format!("unknown field {field}")))?;
        if self.access().field_access(module, field) == FieldAccess::Masked && !self.access().may_reveal(module) {
            return Err(StoreError::Forbidden(format!("you may not reveal {module}.{field}")));
        }
        let mut tx = self.db().begin_write().await?;
        let e = self.audit_entry("record.reveal").record(module, id).detail(serde_json::json!({"field": def.name}));
        audit::append(&mut tx, self.db().engine, &e).await?;
        tx.commit().await?;
        Ok(facts.record.fields.get(def.name).unwrap_or(&Value::Null).to_json())
    }

    async fn facts(&self, module: Module, id: RecordId) -> Result<RecordFacts, StoreError> {
        read_facts(self.db(), self.principal.org, module, id).await?.ok_or(StoreError::NotFound)
    }

    /// Parses a create or update body under the caller's field permissions. Unknown and hidden fields are refused
    /// alike; read-only ones by name.
    fn parse_input(
        &self,
        module: Module,
        s: &ModuleSchema,
        input: &serde_json::Map<String, serde_json::Value>,
        creating: bool,
    ) -> Result<(BTreeMap<&'static str, Value>, Option<UserId>), StoreError> {
        let mut errors = Vec::new();
        let mut values = BTreeMap::new();
        let mut owner = None;
        for (key, raw) in input {
            if key == "owner_id" {
                match raw.as_i64() {
                    Some(o) => owner = Some(o),
                    None => errors.push(ValueError::new("owner_id", "must be a user id")),
                }
                continue;
            }
            let Some(def) = s.field(key) else {
                errors.push(ValueError::new(key.as_str(), "unknown field"));
                continue;
            };
            match self.access().field_access(module, key) {
                FieldAccess::Hidden => errors.push(ValueError::new(key.as_str(), "unknown field")),
                FieldAccess::Editable => match s.validate(def, raw) {
                    Ok(v) => {
                        values.insert(def.name, v);
                    }
                    Err(e) => errors.push(e),
                },
                _ => errors.push(ValueError::new(key.as_str(), "is read-only for you")),
            }
        }
        if creating {
            for def in s.fields.iter().filter(|d| d.required && !values.contains_key(d.name)) {
                if !errors.iter().any(|e| e.field == def.name) {
                    errors.push(ValueError::new(def.name, "is required"));
                }
            }
        }
        if errors.is_empty() { Ok((values, owner)) } else { Err(StoreError::Invalid(errors)) }
    }

    /// Reference fields must name records the caller may view; others answer like missing ones.
    async fn check_references(
        &self,
        conn: &mut AnyConnection,
        s: &ModuleSchema,
        values: &BTreeMap<&'static str, Value>,
    ) -> Result<(), StoreError> {
        let mut errors = Vec::new();
        for def in s.fields {
            let (FieldKind::Ref(target), Some(Value::Int(id))) = (def.kind, values.get(def.name)) else { continue };
            let visible = match load_facts(conn, self.db().engine, self.principal.org, target, *id).await? {
                Some(f) => self.access().decide(target, Action::View, &f),
                None => false,
            };
            if !visible {
                errors.push(ValueError::new(def.name, format!("no such {target} record")));
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(StoreError::Invalid(errors)) }
    }

    /// Parses a new record's input under the caller's field permissions and settles its owner (default: the
    /// caller; anyone else must be assignable by them). Shared by create and import.
    pub(crate) fn prepare_new(
        &self,
        module: Module,
        s: &ModuleSchema,
        input: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(BTreeMap<&'static str, Value>, UserId), StoreError> {
        let (values, owner) = self.parse_input(module, s, input, true)?;
        let owner = owner.unwrap_or(self.principal.user);
        if !self.access().may_assign_owner(module, owner) {
            return Err(StoreError::invalid("owner_id", "you may not assign records to this user"));
        }
        Ok((values, owner))
    }

    /// Inserts one record prepared by [`Scoped::prepare_new`] inside the caller's write transaction: checks its
    /// references, inserts it, and refuses a record of the caller's own that would fall outside their `action`
    /// access (the caller's transaction then rolls back on drop). Writes no audit entry: create and import each
    /// write their own. Shared by create and import.
    pub(crate) async fn insert_record(
        &self,
        conn: &mut AnyConnection,
        module: Module,
        s: &ModuleSchema,
        action: Action,
        values: &BTreeMap<&'static str, Value>,
        owner: UserId,
    ) -> Result<RecordFacts, StoreError> {
        self.check_references(&mut *conn, s, values).await?;
        let now = now_ms();
        let me = self.principal.user;
        let mut sql = self.db().sql();
        sql.push("INSERT INTO ")
            .push(s.table)
            .push(" (org_id, owner_id, created_by, updated_by, created_at, updated_at");
        for f in s.fields {
            sql.push(", ").push(f.name);
        }
        sql.push(") VALUES (").bind(self.principal.org).push(", ").bind(owner).push(", ").bind(me).push(", ").bind(me);
        sql.push(", ").bind(now).push(", ").bind(now);
        for f in s.fields {
            sql.push(", ").bind(arg_for(f, values.get(f.name).unwrap_or(&Value::Null)));
        }
        sql.push(") RETURNING id");
        let id: i64 = sql.fetch_one(&mut *conn).await?.try_get("id")?;
        let facts =
            load_facts(conn, self.db().engine, self.principal.org, module, id).await?.ok_or(StoreError::NotFound)?;
        if owner == me && !self.access().decide(module, action, &facts) {
            // Nobody creates a record outside their own access (restriction rules included).
            return Err(StoreError::Forbidden("the record would fall outside your access".into()));
        }
        Ok(facts)
    }

    pub async fn create(
        &self,
        module: Module,
        input: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<RecordOut, StoreError> {
        let s = self.require_module(module, Action::Create)?;
        let (values, owner) = self.prepare_new(module, s, input)?;
        let mut tx = self.db().begin_write().await?;
        // Any error below rolls the transaction back on drop.
        let facts = self.insert_record(&mut tx, module, s, Action::Create, &values, owner).await?;
        let e = self
            .audit_entry("record.create")
            .record(module, facts.record.id)
            .detail(serde_json::json!({"after": crate::audit_query::values(&facts.record)}));
        audit::append(&mut tx, self.db().engine, &e).await?;
        tx.commit().await?;
        Ok(self.present(&facts.record))
    }

    pub async fn update(
        &self,
        module: Module,
        id: RecordId,
        patch: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<RecordOut, StoreError> {
        let s = self.require_module(module, Action::Edit)?;
        let (values, owner) = self.parse_input(module, s, patch, false)?;
        let mut tx = self.db().begin_write().await?;
        let before = self
            .facts_to_act_on(&mut tx, module, id, Action::Edit, || format!("you may not edit this {module} record"))
            .await?;
        let transfer = owner.filter(|o| *o != before.record.owner_id);
        if let Some(o) = transfer {
            if !self.access().decide(module, Action::Transfer, &before) {
                return Err(StoreError::Forbidden(format!("you may not transfer this {module} record")));
            }
            if !self.access().may_assign_owner(module, o) {
                return Err(StoreError::invalid("owner_id", "you may not assign records to this user"));
            }
        }
        self.check_references(&mut tx, s, &values).await?;
        let now = now_ms();
        let mut sql = self.db().sql();
        sql.push("UPDATE ")
            .push(s.table)
            .push(" SET updated_at = ")
            .bind(now)
            .push(", updated_by = ")
            .bind(self.principal.user);
        if let Some(o) = transfer {
            sql.push(", owner_id = ").bind(o);
        }
        for (name, v) in &values {
            let def = s.field(name).ok_or(StoreError::NotFound)?;
            sql.push(", ").push(def.name).push(" = ").bind(arg_for(def, v));
        }
        sql.push(" WHERE org_id = ").bind(self.principal.org).push(" AND id = ").bind(id);
        sql.execute(&mut *tx).await?;
        let after =
            load_facts(&mut tx, self.db().engine, self.principal.org, module, id).await?.ok_or(StoreError::NotFound)?;
        if transfer.is_none() && !self.access().decide(module, Action::Edit, &after) {
            return Err(StoreError::Forbidden("the change would move the record outside your access".into()));
        }
        let changed: Vec<&str> =
            values.keys().copied().filter(|k| before.record.fields.get(k) != after.record.fields.get(k)).collect();
        let pick = |r: &Record| -> serde_json::Value {
            // Clear values: the audit view applies each viewer's field permissions.
            let full = crate::audit_query::values(r);
            let mut m: serde_json::Map<String, serde_json::Value> =
                changed.iter().filter_map(|k| full.get(*k).map(|v| ((*k).to_string(), v.clone()))).collect();
            if transfer.is_some() {
                m.insert("owner_id".into(), r.owner_id.into());
            }
            m.into()
        };
        let e = self
            .audit_entry(if transfer.is_some() { "record.transfer" } else { "record.update" })
            .record(module, id)
            .detail(serde_json::json!({"before": pick(&before.record), "after": pick(&after.record)}));
        audit::append(&mut tx, self.db().engine, &e).await?;
        tx.commit().await?;
        Ok(self.present(&after.record))
    }

    pub async fn delete(&self, module: Module, id: RecordId) -> Result<(), StoreError> {
        let s = self.require_module(module, Action::Delete)?;
        // The inline monitoring rule (mass delete) is part of the record's DELETE below: it decides before
        // anything is written, in the same statement.
        let limit = self.delete_limit().await?;
        let mut tx = self.db().begin_write().await?;
        let facts = self
            .facts_to_act_on(&mut tx, module, id, Action::Delete, || format!("you may not delete this {module} record"))
            .await?;
        for child in Module::RECORDS.iter().filter_map(|m| schema(*m)) {
            for f in child.fields.iter().filter(|f| f.kind == FieldKind::Ref(module)) {
                let mut q = self.db().sql();
                q.push("SELECT 1 AS x FROM ").push(child.table).push(" WHERE org_id = ").bind(self.principal.org);
                q.push(" AND ").push(f.name).push(" = ").bind(id).push(" LIMIT 1");
                if q.fetch_optional(&mut *tx).await?.is_some() {
                    return Err(StoreError::Conflict(format!(
                        "the record still has related {}; delete or move them first",
                        child.module
                    )));
                }
            }
        }
        let mut q = self.db().sql();
        q.push("DELETE FROM ")
            .push(s.table)
            .push(" WHERE org_id = ")
            .bind(self.principal.org)
            .push(" AND id = ")
            .bind(id);
        if let Some(limit) = &limit {
            q.push(" AND ");
            limit.push_count(&mut q, self.principal.org, self.principal.user);
            q.push(" < ").bind(i64::try_from(limit.max).unwrap_or(i64::MAX));
        }
        if q.execute(&mut *tx).await? == 0 {
            // Nothing deleted (the transaction rolls back): the rule stopped it, or another request deleted the
            // record after it was read.
            if let Some(limit) = &limit {
                let mut c = self.db().sql();
                c.push("SELECT ");
                limit.push_count(&mut c, self.principal.org, self.principal.user);
                c.push(" AS n");
                let n: i64 = c.fetch_one(&mut *tx).await?.try_get("n")?;
                if n as u64 >= limit.max {
                    return Err(limit.refusal());
                }
            }
            return Err(StoreError::NotFound);
        }
        for table in ["record_team", "record_shares"] {
            let mut q = self.db().sql();
            q.push("DELETE FROM ").push(table).push(" WHERE org_id = ").bind(self.principal.org);
            q.push(" AND module = ").bind(module.as_str()).push(" AND record_id = ").bind(id);
            q.execute(&mut *tx).await?;
        }
        let e = self
            .audit_entry("record.delete")
            .record(module, id)
            .detail(serde_json::json!({"before": crate::audit_query::values(&facts.record)}));
        audit::append(&mut tx, self.db().engine, &e).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A related list: the `child` records of a parent record the caller may view.
    pub async fn related(
        &self,
        parent: Module,
        parent_id: RecordId,
        child: Module,
        q: &ListQuery,
    ) -> Result<Page, StoreError> {
        self.require_module(parent, Action::View)?;
        // A child module the caller cannot view does not exist for them, related or not.
        self.require_module(child, Action::View)?;
        let facts = self.facts(parent, parent_id).await?;
        if !self.access().decide(parent, Action::View, &facts) {
            return Err(StoreError::NotFound);
        }
        let cs = schema_of(child)?;
        let link = cs
            .fields
            .iter()
            .find(|f| f.kind == FieldKind::Ref(parent))
            .ok_or_else(|| StoreError::BadQuery(format!("{child} is not related to {parent}")))?;
        let mut q = q.clone();
        q.filters.push(FieldFilter { field: link.name.into(), op: CmpOp::Eq, value: parent_id.into() });
        let page = self.list_for(child, Action::View, &q).await?;
        let mut detail = crate::audit_query::page_detail(&q, &page);
        detail["parent"] = serde_json::json!({"module": parent, "id": parent_id});
        self.record_access(self.audit_entry("record.related").module(child).detail(detail)).await?;
        Ok(page)
    }

    /// Shares a record with a user, group, department or role at a level (needs `share` on the record; nobody
    /// shares beyond their own level on it).
    pub async fn share(&self, module: Module, id: RecordId, key: ShareKey, level: Level) -> Result<(), StoreError> {
        self.require_module(module, Action::Share)?;
        let mut tx = self.db().begin_write().await?;
        let facts = self
            .facts_to_act_on(&mut tx, module, id, Action::Share, || format!("you may not share this {module} record"))
            .await?;
        let dir = self.access().directory();
        let known = match key {
            ShareKey::User(u) => dir.user(u).is_some(),
            ShareKey::Department(d) => dir.has_department(d),
            ShareKey::Group(_) | ShareKey::Role(_) => true,
        };
        if !known {
            return Err(StoreError::invalid("target", "no such user or department"));
        }
        self.require_level_held(module, &facts, level)?;
        let mut q = self.db().sql();
        q.push("DELETE FROM record_shares WHERE org_id = ")
            .bind(self.principal.org)
            .push(" AND module = ")
            .bind(module.as_str());
        q.push(" AND record_id = ").bind(id).push(" AND share_key = ").bind(key.encode());
        q.execute(&mut *tx).await?;
        let mut q = self.db().sql();
        q.push(
            "INSERT INTO record_shares (org_id, module, record_id, share_key, level, created_by, created_at) VALUES (",
        )
        .bind(self.principal.org)
        .push(", ")
        .bind(module.as_str())
        .push(", ")
        .bind(id)
        .push(", ")
        .bind(key.encode())
        .push(", ")
        .bind(level.as_i64())
        .push(", ")
        .bind(self.principal.user)
        .push(", ")
        .bind(now_ms())
        .push(")");
        q.execute(&mut *tx).await?;
        let e = self
            .audit_entry("record.share")
            .record(module, id)
            .detail(serde_json::json!({"target": key, "level": level}));
        audit::append(&mut tx, self.db().engine, &e).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Adds or changes a record-team member (needs `share` on the record).
    pub async fn set_team_member(
        &self,
        module: Module,
        id: RecordId,
        user: UserId,
        level: Option<Level>,
    ) -> Result<(), StoreError> {
        self.require_module(module, Action::Share)?;
        let mut tx = self.db().begin_write().await?;
        let facts = self
            .facts_to_act_on(&mut tx, module, id, Action::Share, || {
                format!("you may not change the team of this {module} record")
            })
            .await?;
        if self.access().directory().user(user).is_none() {
            return Err(StoreError::invalid("user_id", "no such user"));
        }
        if let Some(level) = level {
            self.require_level_held(module, &facts, level)?;
        }
        let mut q = self.db().sql();
        q.push("DELETE FROM record_team WHERE org_id = ")
            .bind(self.principal.org)
            .push(" AND module = ")
            .bind(module.as_str());
        q.push(" AND record_id = ").bind(id).push(" AND user_id = ").bind(user);
        q.execute(&mut *tx).await?;
        if let Some(level) = level {
            let mut q = self.db().sql();
            q.push("INSERT INTO record_team (org_id, module, record_id, user_id, level) VALUES (")
                .bind(self.principal.org)
                .push(", ")
                .bind(module.as_str())
                .push(", ")
                .bind(id)
                .push(", ")
                .bind(user)
                .push(", ")
                .bind(level.as_i64())
                .push(")");
            q.execute(&mut *tx).await?;
        }
        let e = self
            .audit_entry("record.team")
            .record(module, id)
            .detail(serde_json::json!({"user": user, "level": level}));
        audit::append(&mut tx, self.db().engine, &e).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The record's facts read in the write transaction `conn`, if the caller may do `action` on it: a record they
    /// may not view answers like a missing one (404); one they view but may not act on is refused with `refusal`.
    async fn facts_to_act_on(
        &self,
        conn: &mut AnyConnection,
        module: Module,
        id: RecordId,
        action: Action,
        refusal: impl FnOnce() -> String,
    ) -> Result<RecordFacts, StoreError> {
        let facts =
            load_facts(conn, self.db().engine, self.principal.org, module, id).await?.ok_or(StoreError::NotFound)?;
        if !self.access().decide(module, Action::View, &facts) {
            return Err(StoreError::NotFound);
        }
        if !self.access().decide(module, action, &facts) {
            return Err(StoreError::Forbidden(refusal()));
        }
        Ok(facts)
    }

    /// Nobody hands out more than they hold: read needs view, edit needs edit, full needs edit and delete on the
    /// record (the share right itself is checked by the caller). Sharing and teams never escalate.
    fn require_level_held(&self, module: Module, facts: &RecordFacts, level: Level) -> Result<(), StoreError> {
        let needed: &[Action] = match level {
            Level::Read => &[Action::View],
            Level::Edit => &[Action::Edit],
            Level::Full => &[Action::Edit, Action::Delete],
        };
        match needed.iter().find(|a| !self.access().decide(module, **a, facts)) {
            Some(missing) => Err(StoreError::Forbidden(format!(
                "you may not grant {} access to this {module} record: you may not {missing} it yourself",
                level.as_str()
            ))),
            None => Ok(()),
        }
    }

    /// Who the record is shared with and its team (needs `share` on the record: the list names people).
    pub async fn sharing(&self, module: Module, id: RecordId) -> Result<Sharing, StoreError> {
        self.require_module(module, Action::Share)?;
        let facts = self.facts(module, id).await?;
        if !self.access().decide(module, Action::View, &facts) {
            return Err(StoreError::NotFound);
        }
        if !self.access().decide(module, Action::Share, &facts) {
            return Err(StoreError::Forbidden(format!("you may not see the sharing of this {module} record")));
        }
        self.record_access(self.audit_entry("record.sharing").record(module, id)).await?;
        let mut shares = facts.shares;
        shares.sort_by_key(|s| s.key);
        let mut team = facts.team;
        team.sort_by_key(|t| t.user);
        Ok(Sharing { shares, team })
    }

    /// Revokes a manual share (needs `share` on the record). Narrowing access needs no level of one's own.
    pub async fn unshare(&self, module: Module, id: RecordId, key: ShareKey) -> Result<(), StoreError> {
        self.require_module(module, Action::Share)?;
        let mut tx = self.db().begin_write().await?;
        self.facts_to_act_on(&mut tx, module, id, Action::Share, || format!("you may not share this {module} record"))
            .await?;
        let mut q = self.db().sql();
        q.push("DELETE FROM record_shares WHERE org_id = ")
            .bind(self.principal.org)
            .push(" AND module = ")
            .bind(module.as_str());
        q.push(" AND record_id = ").bind(id).push(" AND share_key = ").bind(key.encode());
        if q.execute(&mut *tx).await? == 0 {
            return Err(StoreError::invalid("target", "the record is not shared with that target"));
        }
        let e = self.audit_entry("record.unshare").record(module, id).detail(serde_json::json!({"target": key}));
        audit::append(&mut tx, self.db().engine, &e).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Suggestions for a picker: up to `limit` (1–20) records the caller may view whose searchable fields contain
    /// `text`, as id and label only. The same policy filter as every list; the label is the record's name field,
    /// or `#id` when the caller may not read it.
    pub async fn lookup(&self, module: Module, text: &str, limit: u32) -> Result<Vec<LookupItem>, StoreError> {
        if !(1..=20).contains(&limit) {
            return Err(StoreError::BadQuery("limit must be between 1 and 20".into()));
        }
        let q = ListQuery { q: Some(text.to_owned()), limit: Some(limit), ..ListQuery::default() };
        let page = self.list_for(module, Action::View, &q).await?;
        let s = schema_of(module)?;
        let label_field = s.fields.iter().find(|f| f.required && f.searchable).map(|f| f.name);
        let items: Vec<LookupItem> = page
            .items
            .iter()
            .filter_map(|r| {
                let id = r.get("id")?.as_i64()?;
                let label = label_field
                    .and_then(|f| r.get(f))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("#{id}"));
                Some(LookupItem { id, label })
            })
            .collect();
        let ids: Vec<i64> = items.iter().map(|i| i.id).collect();
        self.record_access(
            self.audit_entry("record.lookup").module(module).detail(serde_json::json!({"q": text, "ids": ids})),
        )
        .await?;
        Ok(items)
    }
}

/// Loads a record with its team, shares and parent, within the organization. System read: callers decide.
pub(crate) async fn load_facts(
    conn: &mut AnyConnection,
    engine: crate::db::Engine,
    org: crm_domain::OrgId,
    module: Module,
    id: RecordId,
) -> Result<Option<RecordFacts>, StoreError> {
    let Some((s, sql)) = facts_sql(engine, org, module, id) else { return Ok(None) };
    let Some(row) = sql.fetch_optional(&mut *conn).await? else { return Ok(None) };
    let mut facts = facts_from_row(s, &row)?;
    if let Some((parent, pid)) = parent_of(s, &facts) {
        facts.parent = Box::pin(load_facts(conn, engine, org, parent, pid)).await?.map(Box::new);
    }
    Ok(Some(facts))
}

/// [`load_facts`] outside any transaction, through [`crate::db::Db::read_first`] (inline on SQLite): the read of
/// a single-record request.
pub(crate) async fn read_facts(
    db: &crate::db::Db,
    org: crm_domain::OrgId,
    module: Module,
    id: RecordId,
) -> Result<Option<RecordFacts>, StoreError> {
    let Some((s, sql)) = facts_sql(db.engine, org, module, id) else { return Ok(None) };
    let Some(row) = db.read_first(&sql).await? else { return Ok(None) };
    let mut facts = facts_from_row(s, &row)?;
    if let Some((parent, pid)) = parent_of(s, &facts) {
        facts.parent = Box::pin(read_facts(db, org, parent, pid)).await?.map(Box::new);
    }
    Ok(Some(facts))
}

/// The statement reading a record's facts.
fn facts_sql(
    engine: crate::db::Engine,
    org: crm_domain::OrgId,
    module: Module,
    id: RecordId,
) -> Option<(&'static ModuleSchema, Sql)> {
    let s = schema(module)?;
    // One statement per record: its row with its team and shares folded into two text columns. Each statement is
    // a round trip to the database (on SQLite a hop to the connection's worker thread), and a single-record read
    // is made of little else, so three statements cost nearly three times one.
    let aggregate = |expr: &str, table: &str| {
        let agg = match engine {
            crate::db::Engine::Sqlite => format!("group_concat({expr}, ',')"),
            crate::db::Engine::Postgres => format!("string_agg({expr}, ',')"),
        };
        format!("(SELECT {agg} FROM {table} x WHERE x.org_id = r.org_id AND x.module = ")
    };
    let mut sql = Sql::new(engine);
    sql.push("SELECT ");
    select_columns(&mut sql, s, "r");
    sql.push(", ")
        .push(&aggregate("CAST(x.user_id AS TEXT) || ':' || CAST(x.level AS TEXT)", "record_team"))
        .bind(module.as_str())
        .push(" AND x.record_id = r.id) AS facts_team, ")
        .push(&aggregate("x.share_key || '=' || CAST(x.level AS TEXT)", "record_shares"))
        .bind(module.as_str())
        .push(" AND x.record_id = r.id) AS facts_shares");
    sql.push(" FROM ").push(s.table).push(" r WHERE r.org_id = ").bind(org).push(" AND r.id = ").bind(id);
    Some((s, sql))
}

/// A record's facts (without its parent's) from the row of [`facts_sql`].
fn facts_from_row(s: &ModuleSchema, row: &impl Columns) -> Result<RecordFacts, StoreError> {
    let record = decode(s, row)?;
    let mut facts = RecordFacts::new(record);
    let team = row.text("facts_team")?;
    for item in team.as_deref().unwrap_or("").split(',').filter(|i| !i.is_empty()) {
        // An entry that does not decode grants nothing (as a row with an unknown level never did).
        if let Some((user, level)) =
            item.split_once(':').and_then(|(u, l)| Some((u.parse().ok()?, Level::from_i64(l.parse().ok()?)?)))
        {
            facts.team.push(TeamEntry { user, level });
        }
    }
    let shares = row.text("facts_shares")?;
    for item in shares.as_deref().unwrap_or("").split(',').filter(|i| !i.is_empty()) {
        if let Some((key, level)) =
            item.split_once('=').and_then(|(k, l)| Some((ShareKey::decode(k)?, Level::from_i64(l.parse().ok()?)?)))
        {
            facts.shares.push(ShareEntry { key, level });
        }
    }
    Ok(facts)
}

/// The parent record whose facts a record's decision also needs (a contact's customer, …), if it has one.
fn parent_of(s: &ModuleSchema, facts: &RecordFacts) -> Option<(Module, RecordId)> {
    let (field, parent) = s.parent?;
    facts.record.fields.get(field).and_then(Value::as_int).map(|pid| (parent, pid))
}
