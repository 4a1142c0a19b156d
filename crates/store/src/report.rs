//! Group-by reports (counts and totals per value of a field) through the same policy predicate as lists: a
//! report can never count or sum a record its reader could not list.

use crate::records::Scoped;
use crate::{ListQuery, StoreError};
use crm_domain::{Action, FieldKind, Module, schema};
use serde::Serialize;
use sqlx::Row;

/// One group of a report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReportRow {
    /// The group's value of the grouping field (`null` for records without one).
    pub key: serde_json::Value,
    pub count: i64,
    /// Sum of the `sum` field over the group, when one was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
}

/// At most this many groups, largest first.
const MAX_GROUPS: i64 = 200;

impl Scoped<'_> {
    /// Counts (and optionally sums a number or money field) per value of `group_by`, over the records the caller
    /// may view that match the query. Needs the `reports` module besides the record module; the grouping and summed
    /// fields must be readable in clear (hidden and masked fields are refused like in filters).
    pub async fn report(
        &self,
        module: Module,
        group_by: &str,
        sum: Option<&str>,
        q: &ListQuery,
    ) -> Result<Vec<ReportRow>, StoreError> {
        if !self.access().can(Module::Reports, Action::View) {
            return Err(StoreError::NotFound);
        }
        let s = self.require_module(module, Action::View)?;
        if q.after.is_some() || q.sort.is_some() || q.limit.is_some() {
            return Err(StoreError::BadQuery("a report takes only q and filters".into()));
        }
        let group = self.readable_field(module, s, group_by)?;
        let group_col = match group {
            Some(d) if !matches!(d.kind, FieldKind::Text { max } if max > 200) => d.name,
            Some(_) => return Err(StoreError::BadQuery(format!("field {group_by} cannot be grouped"))),
            None if group_by == "owner_id" => "owner_id",
            None => return Err(StoreError::BadQuery(format!("field {group_by} cannot be grouped"))),
        };
        let group_is_int = group.is_none_or(|d| d.kind.is_integer());
        let sum_col = match sum {
            None => None,
            Some(f) => match self.readable_field(module, s, f)? {
                Some(d) if matches!(d.kind, FieldKind::Int | FieldKind::Money) => Some(d.name),
                _ => return Err(StoreError::BadQuery(format!("field {f} cannot be summed"))),
            },
        };
        let table = schema(module).map(|s| s.table).ok_or(StoreError::NotFound)?;
        let mut sql = self.db().sql();
        sql.push(&format!("SELECT r.{group_col} AS k, COUNT(*) AS n"));
        if let Some(c) = sum_col {
            sql.push(&format!(", CAST(COALESCE(SUM(r.{c}), 0) AS BIGINT) AS total"));
        }
        sql.push(" FROM ").push(table).push(" r");
        self.where_clause(&mut sql, module, Action::View, q)?;
        sql.push(&format!(" GROUP BY r.{group_col} ORDER BY n DESC, k LIMIT ")).bind(MAX_GROUPS);
        let rows = if self.access().pred(module, Action::View).is_never() {
            Vec::new()
        } else {
            sql.fetch_all(&self.db().pool).await?
        };
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let key = if group_is_int {
                r.try_get::<Option<i64>, _>("k")?.map(serde_json::Value::from)
            } else {
                r.try_get::<Option<String>, _>("k")?.map(serde_json::Value::from)
            };
            let total = match sum_col {
                Some(_) => Some(r.try_get::<i64, _>("total")?),
                None => None,
            };
            out.push(ReportRow { key: key.unwrap_or(serde_json::Value::Null), count: r.try_get("n")?, total });
        }
        self.record_access(self.audit_entry("record.report").module(module).detail(serde_json::json!({
            "query": q, "group_by": group_by, "sum": sum, "groups": out.len()
        })))
        .await?;
        Ok(out)
    }
}
