//! Baselines the benchmarks compare the pushed-down predicate against, and the fact loading the decision
//! benchmark needs. They live on [`Scoped`], so they stay inside the audited access layer: facts are returned only
//! for records the caller may view, and the baselines answer with ids only.

use crate::db::Sql;
use crate::records::{decode, load_facts, select_columns};
use crate::render::render;
use crate::{Scoped, StoreError};
use crm_domain::{Action, Level, Module, RecordId, schema};
use crm_policy::{RecordFacts, ShareEntry, ShareKey, TeamEntry};
use sqlx::Row;
use std::collections::HashMap;

impl Scoped<'_> {
    /// The facts (record, team, shares, parent) of records the caller may view, for in-memory decisions by other
    /// users' compiled access (the decision benchmark). Records the caller may not view are left out.
    pub async fn facts_of(&self, module: Module, ids: &[RecordId]) -> Result<Vec<RecordFacts>, StoreError> {
        self.require_module(module, Action::View)?;
        let mut conn = self.db().pool.acquire().await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(f) = load_facts(&mut conn, self.db().engine, self.principal.org, module, *id).await?
                && self.access().decide(module, Action::View, &f)
            {
                out.push(f);
            }
        }
        Ok(out)
    }

    /// The naive per-check baseline: one SQL query per decision (the rendered predicate plus `id = ?`), as CRMs
    /// that run their list filter for single records do.
    pub async fn sql_check(&self, module: Module, action: Action, id: RecordId) -> Result<bool, StoreError> {
        let s = schema(module).ok_or(StoreError::NotFound)?;
        let mut sql = self.db().sql();
        sql.push("SELECT 1 AS ok FROM ").push(s.table).push(" r WHERE r.org_id = ").bind(self.principal.org);
        sql.push(" AND r.id = ").bind(id).push(" AND ");
        render(&mut sql, self.access().pred(module, action), module, "r", self.principal.org, 1);
        Ok(sql.fetch_optional(&self.db().pool).await?.is_some())
    }

    /// The application-filtering baseline: read the module's rows newest first and keep those the in-memory
    /// decision allows, until `limit` are found (and count every visible one when `count` is set). Returns the ids
    /// of the first page and the count (or `None`). Modules controlled by their parent are not supported.
    pub async fn app_filter_first_page(
        &self,
        module: Module,
        limit: usize,
        count: bool,
    ) -> Result<(Vec<RecordId>, Option<i64>), StoreError> {
        let s = schema(module).ok_or(StoreError::NotFound)?;
        if has_parent(self.access().pred(module, Action::View)) {
            return Err(StoreError::BadQuery("the application-filter baseline does not follow parent records".into()));
        }
        let org = self.principal.org;
        let engine = self.db().engine;
        let mut team: HashMap<RecordId, Vec<TeamEntry>> = HashMap::new();
        let mut q = Sql::new(engine);
        q.push("SELECT record_id, user_id, level FROM record_team WHERE org_id = ")
            .bind(org)
            .push(" AND module = ")
            .bind(module.as_str());
        for r in q.fetch_all(&self.db().pool).await? {
            if let Some(level) = Level::from_i64(r.try_get("level")?) {
                team.entry(r.try_get("record_id")?).or_default().push(TeamEntry { user: r.try_get("user_id")?, level });
            }
        }
        let mut shares: HashMap<RecordId, Vec<ShareEntry>> = HashMap::new();
        let mut q = Sql::new(engine);
        q.push("SELECT record_id, share_key, level FROM record_shares WHERE org_id = ")
            .bind(org)
            .push(" AND module = ")
            .bind(module.as_str());
        for r in q.fetch_all(&self.db().pool).await? {
            let key: String = r.try_get("share_key")?;
            if let (Some(key), Some(level)) = (ShareKey::decode(&key), Level::from_i64(r.try_get("level")?)) {
                shares.entry(r.try_get("record_id")?).or_default().push(ShareEntry { key, level });
            }
        }
        let mut page = Vec::with_capacity(limit);
        let mut n = 0i64;
        // Fetched in chunks by keyset so memory stays bounded and the first page can stop early.
        let mut after: Option<(i64, i64)> = None;
        loop {
            let mut q = Sql::new(engine);
            q.push("SELECT ");
            select_columns(&mut q, s, "r");
            q.push(" FROM ").push(s.table).push(" r WHERE r.org_id = ").bind(org);
            if let Some((u, id)) = after {
                q.push(" AND (r.updated_at < ")
                    .bind(u)
                    .push(" OR (r.updated_at = ")
                    .bind(u)
                    .push(" AND r.id < ")
                    .bind(id)
                    .push("))");
            }
            q.push(" ORDER BY r.updated_at DESC, r.id DESC LIMIT 20000");
            let rows = q.fetch_all(&self.db().pool).await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let record = decode(s, row)?;
                after = Some((record.updated_at, record.id));
                let id = record.id;
                let mut facts = RecordFacts::new(record);
                facts.team = team.get(&id).cloned().unwrap_or_default();
                facts.shares = shares.get(&id).cloned().unwrap_or_default();
                if self.access().decide(module, Action::View, &facts) {
                    if page.len() < limit {
                        page.push(id);
                    }
                    n += 1;
                }
            }
            if !count && page.len() >= limit {
                break;
            }
        }
        Ok((page, count.then_some(n)))
    }
}

fn has_parent(p: &crm_policy::Pred) -> bool {
    use crm_policy::Pred;
    match p {
        Pred::Parent { .. } => true,
        Pred::And(items) | Pred::Or(items) => items.iter().any(has_parent),
        Pred::Because(_, inner) => has_parent(inner),
        _ => false,
    }
}
