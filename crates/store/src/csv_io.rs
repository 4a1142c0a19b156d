//! CSV export and import of customers and contacts (RFC 4180, UTF-8), through [`Scoped`] like every other path.
//!
//! - **Export** needs the module's `export` permission and walks the caller's export predicate page by page with
//!   the list machinery, so it shows exactly what a list would under the `export` scope: columns `id`, `owner_id`,
//!   then every field the caller may read (hidden fields absent, masked fields masked). One `record.export` audit
//!   entry per export.
//! - **Import** needs the module's `import` permission and applies to every row the rules of create (field
//!   permissions, validation, owner assignment, visible references, the record staying inside the caller's
//!   access). It is all-or-nothing: every row is checked first, then all rows are inserted in one write
//!   transaction with one `record.import` audit entry; any error leaves nothing written. Errors name the line of
//!   the file where the offending record starts (`line 3: name`).
//!
//! Spreadsheet formula injection: a text cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return is
//! exported with a leading `'` (so spreadsheets show it as text instead of running it), and so is one that starts
//! with `'` itself; import removes that one leading `'` again, so export → import gives back the same text.

use crate::StoreError;
use crate::audit::{self, AuditEntry};
use crate::records::{ListQuery, Scoped};
use crm_domain::{Action, Module, ModuleSchema, RecordId, UserId, Value, ValueError};
use crm_policy::FieldAccess;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

/// The modules with CSV import and export.
pub const CSV_MODULES: [Module; 2] = [Module::Customers, Module::Contacts];

/// At most this many errors are reported for one import; the rest are counted.
const MAX_REPORTED_ERRORS: usize = 100;
/// Rows per page when walking the export.
const EXPORT_PAGE: u32 = 200;

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub created: usize,
}

fn csv_schema(module: Module) -> Result<&'static ModuleSchema, StoreError> {
    if !CSV_MODULES.contains(&module) {
        return Err(StoreError::NotFound);
    }
    crm_domain::schema(module).ok_or(StoreError::NotFound)
}

/// Characters that make a spreadsheet read a cell as a formula.
fn is_formula_start(c: char) -> bool {
    matches!(c, '=' | '+' | '-' | '@' | '\t' | '\r')
}

fn escape_text(s: &str) -> std::borrow::Cow<'_, str> {
    match s.chars().next() {
        Some(c) if is_formula_start(c) || c == '\'' => format!("'{s}").into(),
        _ => s.into(),
    }
}

fn unescape_text(s: &str) -> &str {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some('\''), Some(c)) if is_formula_start(c) || c == '\'' => &s[1..],
        _ => s,
    }
}

fn cell(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => escape_text(s).into_owned(),
        Some(other) => other.to_string(),
    }
}

fn at_line(line: u64, e: ValueError) -> ValueError {
    ValueError::new(format!("line {line}: {}", e.field), e.message)
}

/// Collects line-numbered errors up to [`MAX_REPORTED_ERRORS`], counting the rest.
#[derive(Default)]
struct Errors {
    list: Vec<ValueError>,
    more: usize,
}

impl Errors {
    fn push(&mut self, e: ValueError) {
        if self.list.len() < MAX_REPORTED_ERRORS {
            self.list.push(e);
        } else {
            self.more += 1;
        }
    }
    fn full(&self) -> bool {
        self.list.len() >= MAX_REPORTED_ERRORS
    }
    fn into_result(mut self) -> Result<(), StoreError> {
        if self.list.is_empty() {
            return Ok(());
        }
        if self.more > 0 {
            self.list.push(ValueError::new("file", format!("{} more errors not shown", self.more)));
        }
        Err(StoreError::Invalid(self.list))
    }
}

/// One column of the import file.
enum Column {
    /// `id`: an export's record id, ignored (import always creates new records).
    Ignored,
    Owner,
    Field(&'static crm_domain::FieldDef),
}

/// One data row of the import file, checked and ready to insert.
struct Row {
    line: u64,
    values: BTreeMap<&'static str, Value>,
    owner: UserId,
}

/// Decodes the file: optional UTF-8 byte-order mark, then UTF-8 text. The error names the line of the first bad
/// byte.
fn decode_utf8(bytes: &[u8]) -> Result<&str, StoreError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF".as_slice()).unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let line = 1 + bytes[..at].iter().filter(|b| **b == b'\n').count();
        StoreError::invalid(
            &format!("line {line}"),
            "the file is not valid UTF-8 text here: save it as \"CSV UTF-8\" (a file in GBK/GB18030 must be converted first)",
        )
    })
}

impl<'s> Scoped<'s> {
    /// The records of `module` the caller may export, matching the query's filters and search, as CSV (header
    /// row, CRLF line ends, no byte-order mark), with the number of data rows. Sorted by `q.sort` (default: id
    /// ascending); `q.after` and `q.limit` are ignored. Needs the `export` permission: view-only users get
    /// `Forbidden`, users without the module `NotFound`.
    pub async fn export_csv(&self, module: Module, q: &ListQuery) -> Result<(String, usize), StoreError> {
        csv_schema(module)?;
        let s = self.require_module(module, Action::Export)?;
        let mut columns: Vec<&'static str> = vec!["id", "owner_id"];
        columns.extend(
            s.fields
                .iter()
                .filter(|f| self.access().field_access(module, f.name) != FieldAccess::Hidden)
                .map(|f| f.name),
        );

        let mut out = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
        let write_err = |e: csv::Error| StoreError::Config(format!("writing CSV: {e}"));
        out.write_record(&columns).map_err(write_err)?;
        let mut page_q = ListQuery {
            after: None,
            limit: Some(EXPORT_PAGE),
            sort: Some(q.sort.clone().unwrap_or_else(|| "id".into())),
            asc: if q.sort.is_some() { q.asc } else { true },
            ..q.clone()
        };
        let mut ids: Vec<RecordId> = Vec::new();
        loop {
            let page = self.list_for(module, Action::Export, &page_q).await?;
            for r in &page.items {
                out.write_record(columns.iter().map(|c| cell(r.get(*c)))).map_err(write_err)?;
                ids.extend(r.get("id").and_then(serde_json::Value::as_i64));
            }
            match page.next_cursor {
                Some(c) => page_q.after = Some(c),
                None => break,
            }
        }
        let bytes = out.into_inner().map_err(|e| StoreError::Config(format!("writing CSV: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|e| StoreError::Config(format!("writing CSV: {e}")))?;
        // The inline monitoring rule (large export without step-up) decides before anything is written.
        self.guard_export(ids.len()).await?;

        let mut tx = self.db().begin_write().await?;
        let e = AuditEntry { module: Some(module), ..self.audit_entry("record.export") }.detail(serde_json::json!({
            "module": module,
            "rows": ids.len(),
            "columns": columns,
            "filters": q.filters,
            "q": q.q,
            "sort": page_q.sort,
            "asc": page_q.asc,
            "ids": ids,
        }));
        audit::append(&mut tx, self.db().engine, &e).await?;
        tx.commit().await?;
        Ok((text, ids.len()))
    }

    /// Creates one record per data row of a CSV file (header row required; UTF-8, with or without a byte-order
    /// mark), all or nothing. Needs the `import` permission, and each row meets the rules of create: unknown and
    /// hidden columns are refused alike, read-only ones by name; values are validated by the module schema; the
    /// optional `owner_id` column must name a user the caller may assign records to; references must name records
    /// the caller may view. An `id` column (as in an export) is ignored. Errors are `Invalid`, each field named
    /// with the line where its record starts (`line 3: name`); then nothing is written. `progress` is told
    /// `(rows inserted, rows in total)` while inserting.
    pub async fn import_csv(
        &self,
        module: Module,
        bytes: &[u8],
        progress: Option<&dyn Fn(usize, usize)>,
    ) -> Result<ImportReport, StoreError> {
        csv_schema(module)?;
        let s = self.require_module(module, Action::Import)?;
        let text = decode_utf8(bytes)?;
        let rows = self.check_rows(module, s, text)?;

        let total = rows.len();
        let report = |done: usize| {
            if let Some(p) = progress {
                p(done, total);
            }
        };
        report(0);
        let mut errors = Errors::default();
        let mut ids: Vec<RecordId> = Vec::with_capacity(total);
        let mut tx = self.db().begin_write().await?;
        for (i, row) in rows.iter().enumerate() {
            match self.insert_record(&mut tx, module, s, Action::Import, &row.values, row.owner).await {
                Ok(facts) => ids.push(facts.record.id),
                Err(StoreError::Invalid(errs)) => errs.into_iter().for_each(|e| errors.push(at_line(row.line, e))),
                Err(StoreError::Forbidden(m)) => errors.push(ValueError::new(format!("line {}", row.line), m)),
                Err(e) => return Err(e),
            }
            if errors.full() {
                break;
            }
            report(i + 1);
        }
        // Any error: the transaction rolls back on drop, nothing is written.
        errors.into_result()?;
        let e = AuditEntry { module: Some(module), ..self.audit_entry("record.import") }
            .detail(serde_json::json!({"module": module, "count": ids.len(), "ids": ids}));
        audit::append(&mut tx, self.db().engine, &e).await?;
        tx.commit().await?;
        Ok(ImportReport { created: ids.len() })
    }

    /// Parses and checks every row without touching the database: header, field permissions, values, owners.
    fn check_rows(&self, module: Module, s: &'static ModuleSchema, text: &str) -> Result<Vec<Row>, StoreError> {
        let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text.as_bytes());
        let mut records = reader.records();
        let header = match records.next() {
            Some(Ok(h)) => h,
            Some(Err(e)) => return Err(StoreError::invalid("line 1", format!("malformed CSV: {e}"))),
            None => return Err(StoreError::invalid("line 1", "a header row naming the columns is required")),
        };
        let columns = self.header_columns(module, s, &header)?;

        let mut errors = Errors::default();
        let mut rows = Vec::new();
        for rec in records {
            let rec = match rec {
                Ok(r) => r,
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    errors.push(ValueError::new(format!("line {line}"), format!("malformed CSV: {e}")));
                    continue;
                }
            };
            let line = rec.position().map_or(0, |p| p.line());
            if rec.len() != columns.len() {
                errors.push(ValueError::new(
                    format!("line {line}"),
                    format!("has {} fields but the header has {}", rec.len(), columns.len()),
                ));
                continue;
            }
            let mut input = serde_json::Map::new();
            // Fields whose cell is already refused (not a number), so they are not also reported missing.
            let mut bad: Vec<&str> = Vec::new();
            for (col, raw) in columns.iter().zip(rec.iter()) {
                let (name, integer) = match col {
                    Column::Ignored => continue,
                    Column::Owner => ("owner_id", true),
                    Column::Field(def) => (def.name, def.kind.is_integer()),
                };
                let v = if raw.trim().is_empty() {
                    if name == "owner_id" {
                        continue;
                    }
                    serde_json::Value::Null
                } else if integer {
                    match raw.trim().parse::<i64>() {
                        Ok(i) => i.into(),
                        Err(_) => {
                            let m = if name == "owner_id" { "must be a user id" } else { "must be a whole number" };
                            errors.push(ValueError::new(format!("line {line}: {name}"), m));
                            bad.push(name);
                            continue;
                        }
                    }
                } else {
                    // Line ends inside a cell become `\n`, whatever the file's own line ends.
                    unescape_text(raw).replace("\r\n", "\n").replace('\r', "\n").into()
                };
                input.insert(name.to_string(), v);
            }
            match self.prepare_new(module, s, &input) {
                Ok((values, owner)) if bad.is_empty() => rows.push(Row { line, values, owner }),
                Ok(_) => {}
                Err(StoreError::Invalid(errs)) => errs
                    .into_iter()
                    .filter(|e| !bad.contains(&e.field.as_str()))
                    .for_each(|e| errors.push(at_line(line, e))),
                Err(e) => return Err(e),
            }
        }
        errors.into_result()?;
        Ok(rows)
    }

    /// Maps the header row to columns under the caller's field permissions. Unknown and hidden columns are refused
    /// alike (`unknown field`), read-only and masked ones by name, as in create; so are duplicate columns and
    /// missing required ones.
    fn header_columns(
        &self,
        module: Module,
        s: &'static ModuleSchema,
        header: &csv::StringRecord,
    ) -> Result<Vec<Column>, StoreError> {
        let mut errors = Errors::default();
        let mut seen = HashSet::new();
        let mut columns = Vec::with_capacity(header.len());
        for (i, raw) in header.iter().enumerate() {
            let name = raw.trim();
            let err = |m: &str| ValueError::new(format!("line 1: {name}"), m);
            if name.is_empty() {
                errors.push(ValueError::new(format!("line 1: column {}", i + 1), "has no name"));
                continue;
            }
            if !seen.insert(name.to_string()) {
                errors.push(err("appears twice in the header"));
                continue;
            }
            let col = match name {
                "id" => Column::Ignored,
                "owner_id" => Column::Owner,
                _ => match s.field(name) {
                    None => {
                        errors.push(err("unknown field"));
                        continue;
                    }
                    Some(def) => match self.access().field_access(module, def.name) {
                        FieldAccess::Hidden => {
                            errors.push(err("unknown field"));
                            continue;
                        }
                        FieldAccess::Editable => Column::Field(def),
                        FieldAccess::Masked | FieldAccess::ReadOnly => {
                            errors.push(err("is read-only for you"));
                            continue;
                        }
                    },
                },
            };
            columns.push(col);
        }
        for def in s.fields.iter().filter(|d| d.required && !seen.contains(d.name)) {
            // Hidden fields are never named here.
            if self.access().field_access(module, def.name) != FieldAccess::Hidden {
                errors.push(ValueError::new(format!("line 1: {}", def.name), "is required: add this column"));
            }
        }
        errors.into_result()?;
        if columns.len() != header.len() {
            // Unreachable: every refused column is an error above.
            return Err(StoreError::invalid("line 1", "invalid header"));
        }
        Ok(columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_escaping_round_trips() {
        for s in ["=1+2", "+86 138", "-", "@x", "'", "''=", "'=x", "plain", "", "华为", "a'b", "'a"] {
            assert_eq!(unescape_text(&escape_text(s)), s, "{s:?}");
        }
        assert_eq!(escape_text("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(escape_text("'a"), "''a");
        assert_eq!(unescape_text("'a"), "'a", "a quote before ordinary text is data");
    }

    #[test]
    fn utf8_errors_name_the_line() {
        assert_eq!(decode_utf8(b"\xEF\xBB\xBFname\n").unwrap(), "name\n");
        match decode_utf8(b"name\nok\n\xC4\xE3\xBA\xC3\n") {
            Err(StoreError::Invalid(e)) => assert_eq!(e[0].field, "line 3"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn numbers_and_nulls_are_written_plain() {
        assert_eq!(cell(Some(&serde_json::json!(-5))), "-5");
        assert_eq!(cell(Some(&serde_json::json!(null))), "");
    }
}
