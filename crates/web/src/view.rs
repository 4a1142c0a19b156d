//! View models of records: built only from a record the scoped store returned (hidden fields are absent there,
//! masked ones masked), with labels and values formatted in the viewer's language.

use crate::i18n::Lang;
use crm_domain::{FieldKind, Module, schema};
use crm_policy::{Access, FieldAccess};
use crm_store::RecordOut;

/// One field of a record as the page shows it.
pub struct FieldView {
    pub name: &'static str,
    pub label: String,
    pub value: String,
    /// A link for references (`/app/r/customers/7`).
    pub href: Option<String>,
    /// The value shown is masked (`138****5678`).
    pub masked: bool,
    /// The viewer may reveal the clear value (an audited action).
    pub revealable: bool,
}

/// The fields of `record` in schema order, as the viewer may see them: only those the store put in the record.
pub fn record_fields(module: Module, record: &RecordOut, access: &Access, lang: Lang) -> Vec<FieldView> {
    let Some(s) = schema(module) else { return Vec::new() };
    s.fields
        .iter()
        .filter_map(|def| {
            // Absent means hidden from this viewer: nothing about it reaches the page.
            let raw = record.get(def.name)?;
            let masked = access.field_access(module, def.name) == FieldAccess::Masked;
            let (value, href) =
                if masked { (raw.as_str().unwrap_or("").to_string(), None) } else { format_value(def.kind, raw, lang) };
            Some(FieldView {
                name: def.name,
                label: lang.label("field", def.name),
                value,
                href,
                masked,
                revealable: masked && !raw.is_null() && access.may_reveal(module),
            })
        })
        .collect()
}

/// A value in the viewer's language, and a link for references.
pub fn format_value(kind: FieldKind, raw: &serde_json::Value, lang: Lang) -> (String, Option<String>) {
    match (kind, raw) {
        (_, serde_json::Value::Null) => (String::new(), None),
        (FieldKind::Money, v) => (v.as_i64().map(|c| lang.money(c)).unwrap_or_default(), None),
        (FieldKind::Int, v) => (v.as_i64().map(|n| lang.number(n)).unwrap_or_default(), None),
        (FieldKind::Date, v) => (lang.date(v.as_str().unwrap_or("")), None),
        (FieldKind::Enum(_), v) => (lang.label("enum", v.as_str().unwrap_or("")), None),
        (FieldKind::Ref(m), v) => match v.as_i64() {
            Some(id) => (format!("#{id}"), Some(format!("/app/r/{m}/{id}"))),
            None => (String::new(), None),
        },
        (FieldKind::Text { .. }, v) => {
            let s = v.as_str().unwrap_or("");
            // Codes such as industries have labels; free text shows as entered.
            (lang.label("enum", s), None)
        }
        (_, v) => (v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()), None),
    }
}

/// A system column (owner, times) in the viewer's language.
pub fn system_value(name: &str, record: &RecordOut, lang: Lang, tz: &str) -> String {
    match (name, record.get(name).and_then(|v| v.as_i64())) {
        ("created_at" | "updated_at", Some(ms)) => lang.datetime_in(ms, tz),
        (_, Some(n)) => format!("#{n}"),
        _ => String::new(),
    }
}

/// The columns a module's list shows, when the viewer may read them.
pub fn list_columns(module: Module) -> &'static [&'static str] {
    match module {
        Module::Customers => &["name", "industry", "customer_type", "region", "phone", "annual_revenue"],
        Module::Contacts => &["name", "title", "account_id", "phone", "email"],
        Module::Leads => &["name", "company", "status", "region", "phone"],
        Module::Opportunities => &["name", "stage", "amount", "close_date", "region", "account_id"],
        Module::Tickets => &["subject", "priority", "status", "region", "account_id"],
        Module::Activities => &["subject", "kind", "due_date", "account_id"],
        _ => &[],
    }
}

/// The field naming a record in lists and headings.
pub fn title_field(module: Module) -> &'static str {
    match module {
        Module::Tickets | Module::Activities => "subject",
        _ => "name",
    }
}
