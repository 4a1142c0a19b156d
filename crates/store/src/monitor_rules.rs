//! The monitoring rules of an organization: one validated JSON document per organization (`monitor_rules`), with
//! defaults for every rule not stated. Saving it bumps the organization's policy version in the same transaction,
//! so the copy each process caches (keyed by that version, which every request reads anyway) is replaced at the next
//! request and the inline guards cost no query to find their thresholds.

use crate::audit;
use crate::auth::{Day, HoursWindow};
use crate::{Scoped, Store, StoreError, now_ms};
use crm_domain::{Action, Module, OrgId, ValueError};
use crm_policy::Scope;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Every rule the detector knows, in the order they are documented.
pub const RULE_NAMES: [&str; 13] = [
    "failed_sign_ins_account",
    "failed_sign_ins_ip",
    "new_network",
    "off_hours",
    "bulk_read",
    "large_export",
    "repeated_exports",
    "mass_delete",
    "mass_transfer",
    "reveals",
    "privilege_change",
    "probing",
    "baseline",
];

/// What the secret of a configured webhook reads as (it is never shown); sending it back keeps the stored one.
pub const SECRET_PLACEHOLDER: &str = "********";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// What happens when a rule fires, besides recording the alert (always) and showing it on the live feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseKind {
    /// POST the alert to the organization's webhook (HMAC-SHA256 signed, retried).
    Notify,
    /// The user's sessions must prove themselves again (step-up) before any sensitive feature.
    RequireStepUp,
    /// End every session of the user.
    RevokeSessions,
    /// Lock the account (sessions end; an administrator unlocks).
    LockUser,
}

impl ResponseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseKind::Notify => "notify",
            ResponseKind::RequireStepUp => "require_step_up",
            ResponseKind::RevokeSessions => "revoke_sessions",
            ResponseKind::LockUser => "lock_user",
        }
    }
}

/// One rule. `threshold` is the count in `window_minutes` that fires it (rules without a count ignore it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rule {
    pub enabled: bool,
    pub severity: Severity,
    pub threshold: u64,
    pub window_minutes: u64,
    /// Role ids the rule watches; empty: every user.
    pub roles: Vec<i64>,
    pub responses: Vec<ResponseKind>,
    /// Inline blocking (`large_export`: rows an export may have without a fresh step-up; `mass_delete`: deletes a
    /// user may make in the window). `null`: never blocks.
    pub block_above: Option<u64>,
}

impl Default for Rule {
    fn default() -> Rule {
        Rule {
            enabled: true,
            severity: Severity::Medium,
            threshold: 1,
            window_minutes: 10,
            roles: Vec::new(),
            responses: Vec::new(),
            block_above: None,
        }
    }
}

/// Behaviour baselines (rule `baseline`): records read per hour, and exports per day (in the organization's time
/// zone), each against the user's own history and their peers' (users sharing a role).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineSettings {
    /// Standard deviations above the user's mean an hour must be.
    pub sigma: f64,
    /// Days of history compared.
    pub history_days: u64,
    /// Active hours of history needed before the user is judged at all.
    pub min_history_hours: u64,
    /// Exports per day: days with exports in the history needed before the user is judged at all.
    pub min_history_days: u64,
    /// Exports per day: the fewest exports in a day that are judged (fewer never alert).
    pub min_exports_per_day: u64,
}

impl Default for BaselineSettings {
    fn default() -> Self {
        BaselineSettings {
            sigma: 3.0,
            history_days: 14,
            min_history_hours: 5,
            min_history_days: 5,
            min_exports_per_day: 5,
        }
    }
}

/// Where `notify` posts alerts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://` or `https://` URL.
    pub url: String,
    /// HMAC-SHA256 key of the `X-CRM-Signature` header (at least 16 characters; shown as `********`).
    pub secret: String,
}

/// Webhooks are delivered over `https://` (checked against the Mozilla roots and the server's extra CA file) or plain
/// `http://` (receivers inside the network); anything else is refused when the rules are saved.
fn check_webhook_url(url: &str) -> Result<(), String> {
    const USAGE: &str = "must be an https:// (or, inside your network, http://) URL with a host";
    if url.len() > 2000 || url.contains(char::is_whitespace) {
        return Err(format!("{USAGE}, at most 2000 characters and without spaces"));
    }
    let parsed: hyper::Uri = url.parse().map_err(|e| format!("{USAGE}: {e}"))?;
    match parsed.scheme_str() {
        Some("https" | "http") => {}
        Some(other) => return Err(format!("{USAGE}; {other}:// is not delivered")),
        None => return Err(format!("{USAGE}: the scheme is missing")),
    }
    let Some(authority) = parsed.authority() else { return Err(format!("{USAGE}: the host is missing")) };
    if authority.as_str().contains('@') {
        return Err(format!("{USAGE}, without a user name or password (the signature authenticates the sender)"));
    }
    if authority.host().is_empty() {
        return Err(format!("{USAGE}: the host is missing"));
    }
    Ok(())
}

/// The whole monitoring configuration of an organization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// Rule name → rule; rules left out keep their defaults.
    pub rules: BTreeMap<String, Rule>,
    /// Working hours in the organization's time zone (its security settings); activity outside every window fires
    /// `off_hours`.
    pub working_hours: Vec<HoursWindow>,
    pub baseline: BaselineSettings,
    pub webhook: Option<Webhook>,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        let weekdays = vec![Day::Mon, Day::Tue, Day::Wed, Day::Thu, Day::Fri];
        MonitorConfig {
            rules: RULE_NAMES.iter().map(|n| (n.to_string(), default_rule(n))).collect(),
            working_hours: vec![HoursWindow { days: weekdays, start: "07:00".into(), end: "21:00".into() }],
            baseline: BaselineSettings::default(),
            webhook: None,
        }
    }
}

/// The default of each rule.
pub fn default_rule(name: &str) -> Rule {
    use ResponseKind::*;
    use Severity::*;
    let r = |severity, threshold, window_minutes| Rule { severity, threshold, window_minutes, ..Rule::default() };
    match name {
        "failed_sign_ins_account" => r(Medium, 5, 5),
        "failed_sign_ins_ip" => r(High, 20, 5),
        "new_network" => r(Low, 1, 0),
        "off_hours" => r(Low, 1, 0),
        "bulk_read" => Rule { responses: vec![RequireStepUp], ..r(High, 200, 10) },
        "large_export" => Rule { block_above: Some(1000), ..r(High, 1000, 0) },
        "repeated_exports" => r(Medium, 5, 60),
        "mass_delete" => Rule { block_above: Some(100), ..r(Critical, 50, 10) },
        "mass_transfer" => r(High, 50, 10),
        "reveals" => r(Medium, 10, 10),
        "privilege_change" => r(High, 1, 0),
        "probing" => r(High, 20, 5),
        "baseline" => r(Medium, 50, 60),
        _ => Rule::default(),
    }
}

impl MonitorConfig {
    /// The rule named `name` (its default when the document leaves it out).
    pub fn rule(&self, name: &str) -> Rule {
        self.rules.get(name).cloned().unwrap_or_else(|| default_rule(name))
    }

    /// How far back the first detector of an organization reads the trail: the longest window of an enabled rule
    /// (60 minutes by default), at most a day.
    pub fn replay_minutes(&self) -> u64 {
        RULE_NAMES
            .iter()
            .map(|n| self.rule(n))
            .filter(|r| r.enabled)
            .map(|r| r.window_minutes)
            .max()
            .unwrap_or(0)
            .min(1440)
    }

    /// Fills in the rules left out, then checks every value; errors name the field (`rules.bulk_read.threshold`).
    pub fn validated(mut self, known_roles: &[i64]) -> Result<MonitorConfig, StoreError> {
        let mut errors = Vec::new();
        for name in self.rules.keys() {
            if !RULE_NAMES.contains(&name.as_str()) {
                errors.push(ValueError::new(
                    format!("rules.{name}"),
                    format!("unknown rule; known: {}", RULE_NAMES.join(", ")),
                ));
            }
        }
        for name in RULE_NAMES {
            self.rules.entry(name.to_string()).or_insert_with(|| default_rule(name));
        }
        for (name, r) in &self.rules {
            let f = |field: &str| format!("rules.{name}.{field}");
            if r.threshold == 0 || r.threshold > 10_000_000 {
                errors.push(ValueError::new(f("threshold"), "must be between 1 and 10000000"));
            }
            let windowed = !matches!(name.as_str(), "new_network" | "off_hours" | "large_export" | "privilege_change");
            if windowed && !(1..=10_080).contains(&r.window_minutes) {
                errors.push(ValueError::new(f("window_minutes"), "must be between 1 and 10080 (a week)"));
            }
            if r.window_minutes > 10_080 {
                errors.push(ValueError::new(f("window_minutes"), "must be at most 10080 (a week)"));
            }
            for role in &r.roles {
                if !known_roles.contains(role) {
                    errors.push(ValueError::new(f("roles"), format!("no role with id {role}")));
                }
            }
            if r.block_above.is_some() && !matches!(name.as_str(), "large_export" | "mass_delete") {
                errors.push(ValueError::new(f("block_above"), "only large_export and mass_delete block inline"));
            }
            if r.block_above == Some(0) {
                errors.push(ValueError::new(f("block_above"), "must be at least 1 (or null to never block)"));
            }
            if r.responses.contains(&ResponseKind::Notify) && self.webhook.is_none() {
                errors.push(ValueError::new(f("responses"), "notify needs a webhook"));
            }
        }
        for (i, w) in self.working_hours.iter().enumerate() {
            for (field, v) in [("start", &w.start), ("end", &w.end)] {
                if let Err(m) = crate::auth::settings::parse_clock(v) {
                    errors.push(ValueError::new(format!("working_hours[{i}].{field}"), m));
                }
            }
        }
        let b = &self.baseline;
        if !(b.sigma.is_finite() && (0.5..=20.0).contains(&b.sigma)) {
            errors.push(ValueError::new("baseline.sigma", "must be between 0.5 and 20"));
        }
        if !(1..=90).contains(&b.history_days) {
            errors.push(ValueError::new("baseline.history_days", "must be between 1 and 90"));
        }
        if !(1..=1000).contains(&b.min_history_hours) {
            errors.push(ValueError::new("baseline.min_history_hours", "must be between 1 and 1000"));
        }
        if !(1..=90).contains(&b.min_history_days) {
            errors.push(ValueError::new("baseline.min_history_days", "must be between 1 and 90"));
        }
        if !(1..=100_000).contains(&b.min_exports_per_day) {
            errors.push(ValueError::new("baseline.min_exports_per_day", "must be between 1 and 100000"));
        }
        if let Some(w) = &self.webhook {
            if let Err(why) = check_webhook_url(&w.url) {
                errors.push(ValueError::new("webhook.url", why));
            }
            if w.secret.chars().count() < 16 || w.secret.len() > 256 {
                errors.push(ValueError::new("webhook.secret", "must be 16 to 256 characters"));
            }
        }
        if errors.is_empty() { Ok(self) } else { Err(StoreError::Invalid(errors)) }
    }

    /// The document as administrators read it: the webhook secret is never shown.
    pub fn redacted(&self) -> MonitorConfig {
        let mut c = self.clone();
        if let Some(w) = &mut c.webhook {
            w.secret = SECRET_PLACEHOLDER.into();
        }
        c
    }
}

/// Rules cached per organization by policy version.
#[derive(Default)]
pub(crate) struct RulesCache {
    by_org: std::sync::Mutex<BTreeMap<OrgId, (i64, Arc<MonitorConfig>)>>,
}

impl Store {
    /// The organization's monitoring configuration at `version` of its policy (cached; loaded when it moved).
    pub(crate) async fn monitor_config(&self, org: OrgId, version: i64) -> Result<Arc<MonitorConfig>, StoreError> {
        {
            let cache = self.monitor.rules.by_org.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((v, c)) = cache.get(&org)
                && *v == version
            {
                return Ok(Arc::clone(c));
            }
        }
        let mut q = self.db.sql();
        q.push("SELECT config FROM monitor_rules WHERE org_id = ").bind(org);
        let config = match q.fetch_optional(&self.db.pool).await? {
            Some(r) => {
                let text: String = r.try_get("config")?;
                let mut c: MonitorConfig = serde_json::from_str(&text)
                    .map_err(|e| StoreError::Config(format!("stored monitoring rules of organization {org}: {e}")))?;
                for name in RULE_NAMES {
                    c.rules.entry(name.to_string()).or_insert_with(|| default_rule(name));
                }
                c
            }
            None => MonitorConfig::default(),
        };
        let config = Arc::new(config);
        self.monitor.rules.by_org.lock().unwrap_or_else(|e| e.into_inner()).insert(org, (version, Arc::clone(&config)));
        Ok(config)
    }
}

impl Scoped<'_> {
    /// Only administrators over every user configure monitoring (the rules watch everyone).
    fn require_monitor_admin(&self) -> Result<(), StoreError> {
        self.require_admin(Module::Users, Action::View)?;
        if !self.access().can(Module::Users, Action::Edit)
            || !self.access().scopes(Module::Users, Action::Edit).contains(&Scope::All)
        {
            return Err(StoreError::Forbidden("configuring monitoring needs edit rights over every user".into()));
        }
        Ok(())
    }

    /// The organization's monitoring rules (the webhook secret is not shown).
    pub async fn monitor_rules(&self) -> Result<MonitorConfig, StoreError> {
        self.require_monitor_admin()?;
        Ok(self.store.monitor_config(self.principal.org, self.principal.policy_version).await?.redacted())
    }

    /// Replaces the monitoring rules after validating them; audited as `monitor.rules` with the document (secret
    /// left out). Bumps the policy version, so every process uses the new rules at its next request.
    pub async fn set_monitor_rules(&self, config: MonitorConfig) -> Result<MonitorConfig, StoreError> {
        self.require_monitor_admin()?;
        let org = self.principal.org;
        let policy = self.config().await?;
        let roles: Vec<i64> = policy.roles.iter().map(|r| r.id).collect();
        let mut config = config;
        if let Some(w) = &mut config.webhook
            && w.secret == SECRET_PLACEHOLDER
        {
            let current = self.store.monitor_config(org, self.principal.policy_version).await?;
            match &current.webhook {
                Some(old) => w.secret = old.secret.clone(),
                None => return Err(StoreError::invalid("webhook.secret", "must be 16 to 256 characters")),
            }
        }
        let config = config.validated(&roles)?;
        let doc = serde_json::to_string(&config).map_err(|e| StoreError::Config(e.to_string()))?;
        let now = now_ms();
        let mut tx = self.db().begin_write().await?;
        let mut q = self.db().sql();
        q.push("UPDATE organizations SET policy_version = policy_version + 1 WHERE id = ").bind(org);
        q.push(" RETURNING policy_version");
        let version: i64 = q.fetch_optional(&mut *tx).await?.ok_or(StoreError::NotFound)?.try_get("policy_version")?;
        let mut del = self.db().sql();
        del.push("DELETE FROM monitor_rules WHERE org_id = ").bind(org);
        del.execute(&mut *tx).await?;
        let mut ins = self.db().sql();
        ins.push("INSERT INTO monitor_rules (org_id, config, version, updated_at, updated_by) VALUES (")
            .bind(org)
            .push(", ")
            .bind(doc)
            .push(", ")
            .bind(version)
            .push(", ")
            .bind(now)
            .push(", ")
            .bind(self.principal.user)
            .push(")");
        ins.execute(&mut *tx).await?;
        let shown = config.redacted();
        let e = self
            .audit_entry("monitor.rules")
            .target("monitoring")
            .detail(serde_json::json!({"version": version, "config": shown}));
        audit::append(&mut tx, self.db().engine, &e).await?;
        tx.commit().await?;
        Ok(shown)
    }
}

#[cfg(test)]
mod webhook_url_tests {
    use super::check_webhook_url;

    #[test]
    fn only_https_and_http_urls_with_a_host() {
        for ok in ["https://hooks.example.com/crm?x=1", "http://10.0.0.5:8080/hook", "https://127.0.0.1:8443/"] {
            assert_eq!(check_webhook_url(ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("ftp://files.example.com/hook", "ftp:// is not delivered"),
            ("https://user:pw@hooks.example.com/x", "without a user name or password"),
            ("hooks.example.com/x", "https://"),
            ("https://", "https://"),
            ("file:///etc/passwd", "https://"),
            ("https://hooks.example.com/a b", "without spaces"),
        ] {
            let err = check_webhook_url(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
