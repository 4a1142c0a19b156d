//! The detector: tails each organization's audit trail, keeps the per-minute read rollup, evaluates the rules,
//! raises alerts exactly once per incident and takes the configured responses. Also the probing rule (refused
//! requests, recorded beside the trail), the live-feed poller and signed webhook deliveries.
//!
//! Several processes may run it on one database. Each pass moves the organization's cursor with a compare-and-set
//! in the same transaction as the rollup increments, and only the process whose step committed evaluates those
//! entries; an alert's unique incident key catches what could still race (a rule evaluated from two steps that
//! both see the same window).

use crate::audit::{self, AuditEntry, StoredEntry};
use crate::monitor::{ALERT_COLUMNS, Alert};
use crate::monitor_rules::{MonitorConfig, ResponseKind};
use crate::{Store, StoreError, now_ms};
use crm_domain::{Action, Module, OrgId, UserId};
use crm_policy::{Role, Scope, UserStatus};
use serde_json::{Value, json};
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Most entries of one organization evaluated in one step.
const BATCH: i64 = 5000;
/// How often the detector and the feed poller run.
const TICK: Duration = Duration::from_millis(100);

/// The monitor's background tasks in this process; dropping the handle stops them.
pub struct MonitorHandle {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for MonitorHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What a rule found: one incident.
#[derive(Debug, Clone)]
pub(crate) struct Finding {
    pub rule: &'static str,
    pub subject: Option<UserId>,
    pub subject_key: String,
    pub trigger_seq: Option<i64>,
    pub trigger_at: i64,
    /// An alert of the same rule and subject within this span before the trigger covers this incident too.
    pub dedupe_ms: i64,
    pub incident: String,
    pub detail: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Check {
    FailedAccount(UserId),
    FailedIp(String),
    NewNetwork(UserId, String),
    OffHours(UserId),
    BulkRead(UserId),
    Baseline(UserId),
    ExportBaseline(UserId),
    LargeExport(i64),
    RepeatedExports(UserId),
    MassDelete(UserId),
    MassTransfer(UserId),
    Reveals(UserId),
    Privilege(i64),
}

/// Records an entry stands for in the read rollup.
fn records_read(e: &StoredEntry) -> Option<i64> {
    match e.action.as_str() {
        "record.view" => Some(1),
        "record.list" | "record.related" => {
            serde_json::from_str::<Value>(&e.detail).ok()?.get("rows")?.as_i64().filter(|n| *n > 0)
        }
        _ => None,
    }
}

/// The network an address belongs to for "never seen" purposes: IPv4 /24, IPv6 /64.
pub(crate) fn network_of(ip: &str) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        Ok(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Err(_) => ip.to_string(),
    }
}

/// Does a role carry administrator rights or organization-wide reach?
fn broad(role: &Role) -> bool {
    role.view_all
        || role.modify_all
        || role.permissions.get(&Module::Users).is_some_and(|m| m.get(&Action::Edit) == Some(&Scope::All))
}

/// The 95th percentile (nearest rank) of sorted values; 0 when there are none.
/// One user's activity against their own history and their peers' (the baseline rule, for reads per hour and
/// exports per day alike): the user's limit is mean + `sigma` standard deviations of their own periods, and at least
/// their highest; the peers' mark is the 95th percentile of their periods.
struct BaselineComparison {
    mean: f64,
    std: f64,
    own_max: f64,
    own_limit: f64,
    p95: i64,
}

impl BaselineComparison {
    fn new(own: &[f64], mut peer: Vec<i64>, sigma: f64) -> BaselineComparison {
        let n = own.len().max(1) as f64;
        let mean = own.iter().sum::<f64>() / n;
        let std = (own.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        let own_max = own.iter().copied().fold(0.0, f64::max);
        peer.sort_unstable();
        BaselineComparison {
            mean,
            std,
            own_max,
            own_limit: (mean + sigma * std).max(own_max),
            p95: percentile95(&peer),
        }
    }

    /// Is `current` above both the user's own limit and the peers' mark?
    fn deviates(&self, current: i64) -> bool {
        (current as f64) > self.own_limit && current > self.p95
    }
}

fn percentile95(sorted: &[i64]) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * 0.95).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn windowed(
    rule: &'static str,
    subject: Option<UserId>,
    key: String,
    e: &StoredEntry,
    window_ms: i64,
    detail: Value,
) -> Finding {
    Finding {
        rule,
        subject,
        incident: format!("{rule}:{key}:{}", e.at / window_ms.max(1)),
        subject_key: key,
        trigger_seq: Some(e.seq),
        trigger_at: e.at,
        dedupe_ms: window_ms,
        detail,
    }
}

impl Store {
    /// Starts this process's detector and live-feed poller (the server does at start).
    pub fn start_monitor(&self) -> MonitorHandle {
        let detector = {
            let store = self.clone();
            tokio::spawn(async move {
                loop {
                    if let Err(e) = store.monitor_pass().await {
                        tracing::warn!(error = %e, "monitoring pass failed");
                    }
                    tokio::time::sleep(TICK).await;
                }
            })
        };
        let feed = {
            let store = self.clone();
            tokio::spawn(async move { store.feed_loop().await })
        };
        MonitorHandle { tasks: vec![detector, feed] }
    }

    /// One detection pass over every organization's new audit entries; returns the alerts raised.
    pub async fn monitor_pass(&self) -> Result<usize, StoreError> {
        let mut q = self.db.sql();
        q.push("SELECT id, policy_version, audit_seq, settings FROM organizations ORDER BY id");
        let orgs = q.fetch_all(&self.db.pool).await?;
        let mut raised = 0;
        for r in orgs {
            let (org, version, seq): (i64, i64, i64) =
                (r.try_get("id")?, r.try_get("policy_version")?, r.try_get("audit_seq")?);
            let settings: String = r.try_get("settings")?;
            let tz = crate::auth::SecuritySettings::from_org_settings(&settings).time_zone;
            match self.monitor_org(org, version, seq, &tz).await {
                Ok(n) => raised += n,
                Err(e) => tracing::warn!(org, error = %e, "monitoring an organization failed"),
            }
        }
        Ok(raised)
    }

    async fn monitor_org(&self, org: OrgId, version: i64, head: i64, tz: &str) -> Result<usize, StoreError> {
        let mut q = self.db.sql();
        q.push("SELECT last_seq, last_denial, (SELECT COALESCE(MAX(id), 0) FROM access_denials WHERE org_id = ")
            .bind(org)
            .push(") AS denial_head FROM monitor_cursor WHERE org_id = ")
            .bind(org);
        let (last, last_denial, denial_head): (i64, i64, i64) = match q.fetch_optional(&self.db.pool).await? {
            Some(r) => (r.try_get("last_seq")?, r.try_get("last_denial")?, r.try_get("denial_head")?),
            None => {
                // The first detector ever to run for the organization starts where the rules' longest window
                // begins, so incidents from before it started are still detected. Later starts (of this or any
                // process) continue from the shared cursor; an incident already alerted is not alerted again
                // (incident keys, and the per-window check of windowed rules).
                let config = self.monitor_config(org, version).await?;
                let cutoff = now_ms() - (config.replay_minutes() as i64) * 60_000;
                let start = self.last_seq_at_or_before(org, head, cutoff).await?;
                let mut ins = self.db.sql();
                ins.push("INSERT INTO monitor_cursor (org_id, last_seq, last_denial, updated_at) VALUES (")
                    .bind(org)
                    .push(", ")
                    .bind(start)
                    .push(", (SELECT COALESCE(MAX(id), 0) FROM access_denials WHERE org_id = ")
                    .bind(org)
                    .push(" AND at <= ")
                    .bind(cutoff)
                    .push("), ")
                    .bind(now_ms())
                    .push(") ON CONFLICT (org_id) DO NOTHING");
                ins.execute(&self.db.pool).await?;
                return Ok(0);
            }
        };
        if last >= head && last_denial >= denial_head {
            return Ok(0);
        }
        let entries = if last < head {
            let mut conn = self.db.pool.acquire().await?;
            audit::load_range(&mut conn, self.db.engine, org, last + 1, head, BATCH).await?
        } else {
            Vec::new()
        };
        let new_last = entries.last().map_or(last, |e| e.seq);
        let mut denials: BTreeMap<UserId, (i64, i64, i64, Option<String>)> = BTreeMap::new();
        let mut new_denial = last_denial;
        if last_denial < denial_head {
            let mut q = self.db.sql();
            q.push("SELECT id, user_id, at, status, ip FROM access_denials WHERE org_id = ").bind(org);
            q.push(" AND id > ").bind(last_denial).push(" AND id <= ").bind(denial_head);
            q.push(" ORDER BY id LIMIT ").bind(BATCH);
            for r in q.fetch_all(&self.db.pool).await? {
                let id: i64 = r.try_get("id")?;
                new_denial = new_denial.max(id);
                let d = (id, r.try_get("at")?, r.try_get("status")?, r.try_get("ip")?);
                denials.insert(r.try_get("user_id")?, d);
            }
        }

        // Claim the step and add its reads to the rollup in one transaction.
        // (user, minute) → (records read, exports).
        let mut reads: BTreeMap<(UserId, i64), (i64, i64)> = BTreeMap::new();
        for e in &entries {
            if let (Some(actor), Some(n)) = (e.actor_id, records_read(e)) {
                reads.entry((actor, e.at / 60_000)).or_default().0 += n;
            }
            if let (Some(actor), "record.export") = (e.actor_id, e.action.as_str()) {
                reads.entry((actor, e.at / 60_000)).or_default().1 += 1;
            }
        }
        let mut tx = self.db.begin_write().await?;
        let mut cas = self.db.sql();
        cas.push("UPDATE monitor_cursor SET last_seq = ").bind(new_last).push(", last_denial = ").bind(new_denial);
        cas.push(", updated_at = ").bind(now_ms()).push(" WHERE org_id = ").bind(org);
        cas.push(" AND last_seq = ").bind(last).push(" AND last_denial = ").bind(last_denial);
        if cas.execute(&mut *tx).await? == 0 {
            return Ok(0); // another process took this step
        }
        for ((user, minute), (n, exports)) in &reads {
            let mut up = self.db.sql();
            up.push("INSERT INTO activity_rollup (org_id, user_id, minute, reads, exports) VALUES (")
                .bind(org)
                .push(", ")
                .bind(*user)
                .push(", ")
                .bind(*minute)
                .push(", ")
                .bind(*n)
                .push(", ")
                .bind(*exports)
                .push(") ON CONFLICT (org_id, user_id, minute) DO UPDATE SET reads = activity_rollup.reads + excluded.reads, exports = activity_rollup.exports + excluded.exports");
            up.execute(&mut *tx).await?;
        }
        tx.commit().await?;

        let mut checks: BTreeMap<Check, &StoredEntry> = BTreeMap::new();
        for e in &entries {
            let actor = e.actor_id;
            match (e.action.as_str(), e.outcome.as_str()) {
                ("session.sign_in", "failure") => {
                    if let Some(s) = e.subject_id {
                        checks.insert(Check::FailedAccount(s), e);
                    }
                    if let Some(ip) = &e.ip {
                        checks.insert(Check::FailedIp(ip.clone()), e);
                    }
                }
                ("session.sign_in", "success") => {
                    if let (Some(s), Some(ip)) = (e.subject_id, &e.ip) {
                        checks.entry(Check::NewNetwork(s, network_of(ip))).or_insert(e);
                    }
                    if let Some(s) = e.subject_id {
                        checks.entry(Check::OffHours(s)).or_insert(e);
                    }
                }
                ("record.view" | "record.list" | "record.related", _) => {
                    if let Some(a) = actor {
                        checks.insert(Check::BulkRead(a), e);
                        checks.insert(Check::Baseline(a), e);
                    }
                }
                ("record.export", _) => {
                    checks.insert(Check::LargeExport(e.seq), e);
                    if let Some(a) = actor {
                        checks.insert(Check::RepeatedExports(a), e);
                        checks.insert(Check::ExportBaseline(a), e);
                    }
                }
                ("record.delete", _) => {
                    if let Some(a) = actor {
                        checks.insert(Check::MassDelete(a), e);
                    }
                }
                ("record.transfer", _) => {
                    if let Some(a) = actor {
                        checks.insert(Check::MassTransfer(a), e);
                    }
                }
                ("record.reveal", _) => {
                    if let Some(a) = actor {
                        checks.insert(Check::Reveals(a), e);
                    }
                }
                ("user.roles" | "policy.update", _) => {
                    checks.insert(Check::Privilege(e.seq), e);
                }
                _ => {}
            }
            if let Some(a) = actor
                && e.action.starts_with("record.")
            {
                checks.entry(Check::OffHours(a)).or_insert(e);
            }
        }
        let config = self.monitor_config(org, version).await?;
        let mut raised = 0;
        for (check, e) in checks {
            let found = match self.evaluate(org, version, &config, tz, &check, e).await {
                Ok(f) => f,
                Err(err) => {
                    tracing::warn!(org, error = %err, ?check, "a monitoring rule could not be evaluated");
                    continue;
                }
            };
            for f in found {
                raised += self.raise_logged(org, version, f).await;
            }
        }
        for (user, (id, at, status, ip)) in denials {
            match self.probing(org, &config, user, id, at, status, ip).await {
                Ok(Some(f)) => raised += self.raise_logged(org, version, f).await,
                Ok(None) => {}
                Err(err) => tracing::warn!(org, user, error = %err, "the probing rule could not be evaluated"),
            }
        }
        Ok(raised)
    }

    /// The last sequence number of the organization's trail written at or before `cutoff` (0 when none), by
    /// binary search over `seq` (entries are appended in time order; purged ones count as old), so the first start
    /// does not scan the trail.
    async fn last_seq_at_or_before(&self, org: OrgId, head: i64, cutoff: i64) -> Result<i64, StoreError> {
        let at = async |seq: i64| -> Result<Option<i64>, StoreError> {
            let mut q = self.db.sql();
            q.push("SELECT at FROM audit_log WHERE org_id = ").bind(org).push(" AND seq = ").bind(seq);
            Ok(q.fetch_optional(&self.db.pool).await?.map(|r| r.try_get("at")).transpose()?)
        };
        if head <= 0 || at(head).await?.is_none_or(|t| t <= cutoff) {
            return Ok(head.max(0));
        }
        // at(lo) <= cutoff (0: before the trail), at(hi) > cutoff.
        let (mut lo, mut hi) = (0i64, head);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if at(mid).await?.is_none_or(|t| t <= cutoff) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// [`Store::raise`], logging a failure instead of abandoning the rest of the step; 1 when an alert was raised.
    async fn raise_logged(&self, org: OrgId, version: i64, f: Finding) -> usize {
        let rule = f.rule;
        match self.raise(org, version, f).await {
            Ok(a) => usize::from(a.is_some()),
            Err(err) => {
                tracing::error!(org, rule, error = %err, "an alert could not be raised");
                0
            }
        }
    }

    /// The probing rule: refused requests of `user` in the window ending at their refusal `id`.
    #[allow(clippy::too_many_arguments)]
    async fn probing(
        &self,
        org: OrgId,
        config: &MonitorConfig,
        user: UserId,
        id: i64,
        at: i64,
        status: i64,
        ip: Option<String>,
    ) -> Result<Option<Finding>, StoreError> {
        let rule = config.rule("probing");
        if !rule.enabled {
            return Ok(None);
        }
        let window_ms = (rule.window_minutes as i64) * 60_000;
        let mut c = self.db.sql();
        c.push("SELECT COUNT(*) AS n FROM access_denials WHERE org_id = ").bind(org).push(" AND user_id = ").bind(user);
        c.push(" AND at > ").bind(at - window_ms).push(" AND id <= ").bind(id);
        let n: i64 = c.fetch_one(&self.db.pool).await?.try_get("n")?;
        if n < rule.threshold as i64 {
            return Ok(None);
        }
        Ok(Some(Finding {
            rule: "probing",
            subject: Some(user),
            subject_key: format!("user:{user}"),
            trigger_seq: None,
            trigger_at: at,
            dedupe_ms: window_ms,
            incident: format!("probing:user:{user}:{}", at / window_ms.max(1)),
            detail: json!({"denials": n, "threshold": rule.threshold, "window_minutes": rule.window_minutes,
                "last_status": status, "ip": ip}),
        }))
    }

    async fn count_window(
        &self,
        org: OrgId,
        (column, value): (&'static str, crate::db::Arg),
        (action, outcome): (&'static str, Option<&'static str>),
        e: &StoredEntry,
        window_ms: i64,
    ) -> Result<i64, StoreError> {
        // The action and outcome are the rule's constants, written as literals: the partial indexes of migration 8
        // (`audit_log_sign_in_*`, `audit_log_actor_watched`) hold only the watched actions, and a planner can use
        // one only when the query's text names its action (PostgreSQL's generic plans never see a bound value).
        debug_assert!(!action.contains('\'') && !outcome.is_some_and(|o| o.contains('\'')));
        let mut q = self.db.sql();
        q.push("SELECT COUNT(*) AS n FROM audit_log WHERE org_id = ").bind(org);
        q.push(" AND ").push(column).push(" = ").bind(value).push(" AND action = '").push(action).push("'");
        if let Some(o) = outcome {
            q.push(" AND outcome = '").push(o).push("'");
        }
        q.push(" AND at > ").bind(e.at - window_ms).push(" AND seq <= ").bind(e.seq);
        Ok(q.fetch_one(&self.db.pool).await?.try_get("n")?)
    }

    async fn evaluate(
        &self,
        org: OrgId,
        version: i64,
        config: &MonitorConfig,
        tz: &str,
        check: &Check,
        e: &StoredEntry,
    ) -> Result<Vec<Finding>, StoreError> {
        let rule_name: &'static str = match check {
            Check::FailedAccount(_) => "failed_sign_ins_account",
            Check::FailedIp(_) => "failed_sign_ins_ip",
            Check::NewNetwork(..) => "new_network",
            Check::OffHours(_) => "off_hours",
            Check::BulkRead(_) => "bulk_read",
            Check::Baseline(_) | Check::ExportBaseline(_) => "baseline",
            Check::LargeExport(_) => "large_export",
            Check::RepeatedExports(_) => "repeated_exports",
            Check::MassDelete(_) => "mass_delete",
            Check::MassTransfer(_) => "mass_transfer",
            Check::Reveals(_) => "reveals",
            Check::Privilege(_) => "privilege_change",
        };
        let rule = config.rule(rule_name);
        if !rule.enabled {
            return Ok(Vec::new());
        }
        let window_ms = (rule.window_minutes as i64) * 60_000;
        let threshold = rule.threshold as i64;
        let base = json!({"threshold": threshold, "window_minutes": rule.window_minutes});
        let with = |extra: Value| {
            let mut d = base.clone();
            if let (Some(d), Some(x)) = (d.as_object_mut(), extra.as_object()) {
                d.extend(x.clone());
            }
            d
        };
        let found = match check {
            Check::FailedAccount(u) => {
                let n = self
                    .count_window(org, ("subject_id", (*u).into()), ("session.sign_in", Some("failure")), e, window_ms)
                    .await?;
                (n >= threshold).then(|| {
                    let d = with(json!({"failures": n, "last_ip": e.ip}));
                    windowed(rule_name, Some(*u), format!("user:{u}"), e, window_ms, d)
                })
            }
            Check::FailedIp(ip) => {
                let n = self
                    .count_window(org, ("ip", ip.clone().into()), ("session.sign_in", Some("failure")), e, window_ms)
                    .await?;
                (n >= threshold).then(|| {
                    windowed(rule_name, None, format!("ip:{ip}"), e, window_ms, with(json!({"failures": n, "ip": ip})))
                })
            }
            Check::NewNetwork(u, net) => {
                let mut q = self.db.sql();
                q.push("SELECT DISTINCT ip FROM audit_log WHERE org_id = ").bind(org);
                q.push(" AND subject_id = ").bind(*u).push(" AND action = 'session.sign_in' AND outcome = 'success'");
                q.push(" AND seq < ").bind(e.seq).push(" AND ip IS NOT NULL LIMIT 1000");
                let known: Vec<String> = q
                    .fetch_all(&self.db.pool)
                    .await?
                    .iter()
                    .map(|r| r.try_get::<String, _>("ip"))
                    .collect::<Result<_, _>>()?;
                let nets: std::collections::BTreeSet<String> = known.iter().map(|ip| network_of(ip)).collect();
                // A first sign-in has nothing to compare with.
                (!nets.is_empty() && !nets.contains(net)).then(|| Finding {
                    rule: rule_name,
                    subject: Some(*u),
                    subject_key: format!("user:{u}"),
                    trigger_seq: Some(e.seq),
                    trigger_at: e.at,
                    dedupe_ms: 0,
                    incident: format!("{rule_name}:user:{u}:{net}"),
                    detail: json!({"ip": e.ip, "network": net, "known_networks": nets.len()}),
                })
            }
            Check::OffHours(u) => {
                let (day, minute) = crate::auth::settings::local_day_minute(tz, e.at);
                let inside =
                    config.working_hours.is_empty() || config.working_hours.iter().any(|w| w.contains(day, minute));
                (!inside).then(|| {
                    let zone = jiff::tz::TimeZone::get(tz).unwrap_or(jiff::tz::TimeZone::UTC);
                    let local = jiff::Timestamp::from_millisecond(e.at)
                        .map(|t| t.to_zoned_datetime(zone).datetime().to_string())
                        .unwrap_or_default();
                    let date = local.get(..10).unwrap_or("").to_string();
                    Finding {
                        rule: rule_name,
                        subject: Some(*u),
                        subject_key: format!("user:{u}"),
                        trigger_seq: Some(e.seq),
                        trigger_at: e.at,
                        dedupe_ms: 0,
                        incident: format!("{rule_name}:user:{u}:{date}"),
                        detail: json!({"action": e.action, "local_time": local, "time_zone": tz,
                            "working_hours": config.working_hours}),
                    }
                })
            }
            Check::BulkRead(u) => {
                let minute = e.at / 60_000;
                let mut q = self.db.sql();
                q.push("SELECT CAST(COALESCE(SUM(reads), 0) AS BIGINT) AS n FROM activity_rollup WHERE org_id = ")
                    .bind(org);
                q.push(" AND user_id = ").bind(*u).push(" AND minute > ").bind(minute - rule.window_minutes as i64);
                q.push(" AND minute <= ").bind(minute);
                let n: i64 = q.fetch_one(&self.db.pool).await?.try_get("n")?;
                (n >= threshold).then(|| {
                    windowed(rule_name, Some(*u), format!("user:{u}"), e, window_ms, with(json!({"records_read": n})))
                })
            }
            Check::Baseline(u) => self.baseline(org, version, config, *u, e).await?,
            Check::ExportBaseline(u) => self.export_baseline(org, version, config, tz, *u, e).await?,
            Check::LargeExport(_) => {
                let d: Value = serde_json::from_str(&e.detail).unwrap_or(Value::Null);
                let rows = d.get("rows").and_then(Value::as_i64).unwrap_or(0);
                (rows >= threshold).then(|| Finding {
                    rule: rule_name,
                    subject: e.actor_id,
                    subject_key: e.actor_id.map(|a| format!("user:{a}")).unwrap_or_else(|| "system".into()),
                    trigger_seq: Some(e.seq),
                    trigger_at: e.at,
                    dedupe_ms: 0,
                    incident: format!("{rule_name}:seq:{}", e.seq),
                    detail: json!({"rows": rows, "module": e.module, "threshold": threshold}),
                })
            }
            Check::RepeatedExports(u) | Check::MassDelete(u) | Check::MassTransfer(u) | Check::Reveals(u) => {
                let (action, what) = match check {
                    Check::RepeatedExports(_) => ("record.export", "exports"),
                    Check::MassDelete(_) => ("record.delete", "deletes"),
                    Check::MassTransfer(_) => ("record.transfer", "transfers"),
                    _ => ("record.reveal", "reveals"),
                };
                let n = self.count_window(org, ("actor_id", (*u).into()), (action, None), e, window_ms).await?;
                (n >= threshold)
                    .then(|| windowed(rule_name, Some(*u), format!("user:{u}"), e, window_ms, with(json!({what: n}))))
            }
            Check::Privilege(_) => self.privilege(org, version, e).await?,
        };
        Ok(found.into_iter().collect())
    }

    async fn privilege(&self, org: OrgId, version: i64, e: &StoredEntry) -> Result<Option<Finding>, StoreError> {
        let d: Value = serde_json::from_str(&e.detail).unwrap_or(Value::Null);
        let policy = self.org_policy(org, version).await?;
        let mut changes: Vec<Value> = Vec::new();
        let subject = if e.action == "user.roles" {
            let roles: Vec<i64> = d
                .get("roles")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_i64).collect())
                .unwrap_or_default();
            let granted: Vec<i64> = roles.into_iter().filter(|r| policy.config.role(*r).is_some_and(broad)).collect();
            if !granted.is_empty() {
                changes.push(json!({"change": "broad_role_assigned", "roles": granted}));
            }
            e.subject_id
        } else {
            let c = d.get("changes").cloned().unwrap_or(Value::Null);
            let removed = c.pointer("/restriction_rules/removed").and_then(Value::as_array).map_or(0, Vec::len);
            if removed > 0 {
                changes.push(json!({"change": "restriction_rules_removed", "count": removed}));
            }
            let role = |v: &Value| serde_json::from_value::<Role>(v.clone()).ok();
            let mut broadened = Vec::new();
            for ch in c.pointer("/roles/changed").and_then(Value::as_array).into_iter().flatten() {
                if let (Some(b), Some(a)) = (ch.get("before").and_then(role), ch.get("after").and_then(role))
                    && broad(&a)
                    && !broad(&b)
                {
                    broadened.push(a.id);
                }
            }
            for added in c.pointer("/roles/added").and_then(Value::as_array).into_iter().flatten() {
                if let Some(r) = role(added).filter(broad) {
                    broadened.push(r.id);
                }
            }
            if !broadened.is_empty() {
                changes.push(json!({"change": "role_broadened", "roles": broadened}));
            }
            e.actor_id
        };
        if changes.is_empty() {
            return Ok(None);
        }
        Ok(Some(Finding {
            rule: "privilege_change",
            subject,
            subject_key: subject.map(|s| format!("user:{s}")).unwrap_or_else(|| "organization".into()),
            trigger_seq: Some(e.seq),
            trigger_at: e.at,
            dedupe_ms: 0,
            incident: format!("privilege_change:seq:{}", e.seq),
            detail: json!({"action": e.action, "by": e.actor_id, "changes": changes}),
        }))
    }

    /// Records read this hour against the user's own hourly history and their peers' (users sharing a role).
    async fn baseline(
        &self,
        org: OrgId,
        version: i64,
        config: &MonitorConfig,
        user: UserId,
        e: &StoredEntry,
    ) -> Result<Option<Finding>, StoreError> {
        let rule = config.rule("baseline");
        let b = &config.baseline;
        let hour = e.at / 3_600_000;
        let mut q = self.db.sql();
        q.push("SELECT CAST(COALESCE(SUM(reads), 0) AS BIGINT) AS n FROM activity_rollup WHERE org_id = ").bind(org);
        q.push(" AND user_id = ")
            .bind(user)
            .push(" AND minute >= ")
            .bind(hour * 60)
            .push(" AND minute < ")
            .bind(hour * 60 + 60);
        let current: i64 = q.fetch_one(&self.db.pool).await?.try_get("n")?;
        if current < rule.threshold as i64 {
            return Ok(None);
        }
        let peers = self.peers_of(org, version, user).await?;
        let from = (hour - (b.history_days as i64) * 24) * 60;
        let mut q = self.db.sql();
        q.push("SELECT user_id, minute, reads FROM activity_rollup WHERE org_id = ").bind(org).push(" AND reads > 0");
        q.push(" AND user_id IN ").bind_list(std::iter::once(user).chain(peers.iter().copied()));
        q.push(" AND minute >= ").bind(from).push(" AND minute < ").bind(hour * 60);
        let mut hourly: BTreeMap<(UserId, i64), i64> = BTreeMap::new();
        for r in q.fetch_all(&self.db.pool).await? {
            let (u, m, n): (i64, i64, i64) = (r.try_get("user_id")?, r.try_get("minute")?, r.try_get("reads")?);
            *hourly.entry((u, m / 60)).or_default() += n;
        }
        let own: Vec<f64> = hourly.iter().filter(|((u, _), _)| *u == user).map(|(_, n)| *n as f64).collect();
        if (own.len() as u64) < b.min_history_hours {
            return Ok(None);
        }
        let peer: Vec<i64> = hourly.iter().filter(|((u, _), _)| *u != user).map(|(_, n)| *n).collect();
        let peer_len = peer.len();
        let c = BaselineComparison::new(&own, peer, b.sigma);
        if !c.deviates(current) {
            return Ok(None);
        }
        let BaselineComparison { mean, std, own_max, own_limit, p95 } = c;
        let explanation = format!(
            "{current} records read this hour; this user's own history over {} active hours: mean {mean:.1}, standard \
             deviation {std:.1}, highest {own_max:.0}, so the limit is {own_limit:.1} (mean + {} σ, at least the highest); \
             {} peers sharing a role: 95th percentile {p95} per hour over {} active hours",
            own.len(),
            b.sigma,
            peers.len(),
            peer_len
        );
        Ok(Some(Finding {
            rule: "baseline",
            subject: Some(user),
            subject_key: format!("user:{user}"),
            trigger_seq: Some(e.seq),
            trigger_at: e.at,
            dedupe_ms: 0,
            incident: format!("baseline:user:{user}:{hour}"),
            detail: json!({
                "metric": "records_read_per_hour",
                "current": current,
                "own": {"hours": own.len(), "mean": mean, "stddev": std, "max": own_max, "limit": own_limit},
                "peers": {"users": peers.len(), "hours": peer_len, "p95": p95},
                "sigma": b.sigma,
                "explanation": explanation,
            }),
        }))
    }

    /// The user's peers: other users sharing one of their roles.
    async fn peers_of(&self, org: OrgId, version: i64, user: UserId) -> Result<Vec<UserId>, StoreError> {
        let policy = self.org_policy(org, version).await?;
        let roles = policy.directory.user(user).map(|u| u.roles.clone()).unwrap_or_default();
        Ok(policy
            .directory
            .users()
            .filter(|p| p.id != user && p.roles.iter().any(|r| roles.contains(r)))
            .map(|p| p.id)
            .collect())
    }

    /// Exports today (the organization's time zone) against the user's own daily history and their peers'.
    async fn export_baseline(
        &self,
        org: OrgId,
        version: i64,
        config: &MonitorConfig,
        tz: &str,
        user: UserId,
        e: &StoredEntry,
    ) -> Result<Option<Finding>, StoreError> {
        let b = &config.baseline;
        let zone = jiff::tz::TimeZone::get(tz).unwrap_or(jiff::tz::TimeZone::UTC);
        let day_of = |minute: i64| {
            jiff::Timestamp::from_second(minute * 60).ok().map(|t| t.to_zoned_datetime(zone.clone()).date())
        };
        let Some(today) = day_of(e.at / 60_000) else { return Ok(None) };
        let peers = self.peers_of(org, version, user).await?;
        // A day more than the history, so the first local day is whole whatever the offset.
        let from = e.at / 60_000 - ((b.history_days as i64) + 2) * 1440;
        let mut q = self.db.sql();
        q.push("SELECT user_id, minute, exports FROM activity_rollup WHERE org_id = ").bind(org);
        q.push(" AND user_id IN ").bind_list(std::iter::once(user).chain(peers.iter().copied()));
        q.push(" AND exports > 0 AND minute >= ").bind(from).push(" AND minute <= ").bind(e.at / 60_000 + 1440);
        let first = today.checked_sub(jiff::Span::new().days(b.history_days as i64)).unwrap_or(today);
        let (mut current, mut daily): (i64, BTreeMap<(UserId, jiff::civil::Date), i64>) = (0, BTreeMap::new());
        for r in q.fetch_all(&self.db.pool).await? {
            let (u, m, n): (i64, i64, i64) = (r.try_get("user_id")?, r.try_get("minute")?, r.try_get("exports")?);
            let Some(day) = day_of(m) else { continue };
            if day == today && u == user {
                current += n;
            } else if day < today && day >= first {
                *daily.entry((u, day)).or_default() += n;
            }
        }
        if current < b.min_exports_per_day as i64 {
            return Ok(None);
        }
        let own: Vec<f64> = daily.iter().filter(|((u, _), _)| *u == user).map(|(_, n)| *n as f64).collect();
        if (own.len() as u64) < b.min_history_days {
            return Ok(None);
        }
        let peer: Vec<i64> = daily.iter().filter(|((u, _), _)| *u != user).map(|(_, n)| *n).collect();
        let peer_len = peer.len();
        let c = BaselineComparison::new(&own, peer, b.sigma);
        if !c.deviates(current) {
            return Ok(None);
        }
        let BaselineComparison { mean, std, own_max, own_limit, p95 } = c;
        let explanation = format!(
            "{current} exports today ({today}, {tz}); this user's own history over {} days with exports in the last {} \
             days: mean {mean:.1}, standard deviation {std:.1}, highest {own_max:.0}, so the limit is {own_limit:.1} \
             (mean + {} σ, at least the highest); {} peers sharing a role: 95th percentile {p95} exports a day over {} \
             days with exports",
            own.len(),
            b.history_days,
            b.sigma,
            peers.len(),
            peer_len
        );
        Ok(Some(Finding {
            rule: "baseline",
            subject: Some(user),
            subject_key: format!("user:{user}"),
            trigger_seq: Some(e.seq),
            trigger_at: e.at,
            dedupe_ms: 0,
            incident: format!("baseline:exports:user:{user}:{today}"),
            detail: json!({
                "metric": "exports_per_day",
                "current": current,
                "day": today.to_string(),
                "time_zone": tz,
                "own": {"days": own.len(), "mean": mean, "stddev": std, "max": own_max, "limit": own_limit},
                "peers": {"users": peers.len(), "days": peer_len, "p95": p95},
                "sigma": b.sigma,
                "explanation": explanation,
            }),
        }))
    }

    /// Inserts the alert of a finding unless the incident already has one, audits it and takes the rule's
    /// responses. Returns the alert when this call created it.
    pub(crate) async fn raise(&self, org: OrgId, version: i64, f: Finding) -> Result<Option<Alert>, StoreError> {
        let config = self.monitor_config(org, version).await?;
        let rule = config.rule(f.rule);
        if !rule.enabled {
            return Ok(None);
        }
        if !rule.roles.is_empty() {
            let Some(u) = f.subject else { return Ok(None) };
            let policy = self.org_policy(org, version).await?;
            let roles = policy.directory.user(u).map(|u| u.roles.clone()).unwrap_or_default();
            if !roles.iter().any(|r| rule.roles.contains(r)) {
                return Ok(None);
            }
        }
        if f.dedupe_ms > 0 {
            let mut q = self.db.sql();
            q.push("SELECT id FROM alerts WHERE org_id = ").bind(org).push(" AND rule = ").bind(f.rule);
            q.push(" AND subject_key = ").bind(f.subject_key.as_str());
            q.push(" AND trigger_at > ").bind(f.trigger_at - f.dedupe_ms).push(" LIMIT 1");
            if q.fetch_optional(&self.db.pool).await?.is_some() {
                return Ok(None);
            }
        }
        // Most findings of an incident already alerted (off hours, a new network) stop here, without a write.
        let mut known = self.db.sql();
        known
            .push("SELECT id FROM alerts WHERE org_id = ")
            .bind(org)
            .push(" AND incident_key = ")
            .bind(f.incident.as_str());
        if known.fetch_optional(&self.db.pool).await?.is_some() {
            return Ok(None);
        }
        let now = now_ms();
        let mut tx = self.db.begin_write().await?;
        let mut q = self.db.sql();
        q.push("INSERT INTO alerts (org_id, rule, severity, subject_id, subject_key, incident_key, status, assignee_id, resolution_note, trigger_seq, trigger_at, created_at, updated_at, detail) VALUES (")
            .bind(org)
            .push(", ")
            .bind(f.rule)
            .push(", ")
            .bind(rule.severity.as_str())
            .push(", ")
            .bind(f.subject)
            .push(", ")
            .bind(f.subject_key.as_str())
            .push(", ")
            .bind(f.incident.as_str())
            .push(", 'open', NULL, NULL, ")
            .bind(f.trigger_seq)
            .push(", ")
            .bind(f.trigger_at)
            .push(", ")
            .bind(now)
            .push(", ")
            .bind(now)
            .push(", ")
            .bind(f.detail.to_string())
            .push(") ON CONFLICT (org_id, incident_key) DO NOTHING RETURNING ")
            .push(ALERT_COLUMNS);
        let Some(row) = q.fetch_optional(&mut *tx).await? else { return Ok(None) };
        let alert = Alert::from_row(&row)?;
        let mut e = AuditEntry::new(org, None, "alert.raise").target(format!("alert:{}", alert.id)).detail(
            json!({"alert": alert.id, "rule": f.rule, "severity": alert.severity, "trigger_seq": f.trigger_seq}),
        );
        if let Some(s) = f.subject {
            e = e.subject(s);
        }
        audit::append(&mut tx, self.db.engine, &e).await?;
        tx.commit().await?;
        tracing::info!(org, alert = alert.id, rule = f.rule, subject = ?f.subject, "monitoring alert raised");
        for r in &rule.responses {
            if let Err(err) = self.respond(org, &alert, *r, &config).await {
                tracing::error!(org, alert = alert.id, response = r.as_str(), error = %err, "monitoring response failed");
            }
        }
        Ok(Some(alert))
    }

    async fn respond(&self, org: OrgId, a: &Alert, r: ResponseKind, config: &MonitorConfig) -> Result<(), StoreError> {
        let entry = |detail: Value| {
            let mut e = AuditEntry::new(org, None, "monitor.response").target(format!("alert:{}", a.id)).detail(detail);
            if let Some(s) = a.subject_id {
                e = e.subject(s);
            }
            e
        };
        if r == ResponseKind::Notify {
            let Some(hook) = config.webhook.clone() else { return Ok(()) };
            let store = self.clone();
            let alert = a.clone();
            tokio::spawn(async move {
                let result = store.deliver(org, &alert, &hook).await;
                let (delivered, attempts, error) = match result {
                    Ok(n) => (true, n, None),
                    Err((n, e)) => (false, n, Some(e)),
                };
                let detail = json!({"alert": alert.id, "rule": alert.rule, "response": "notify", "delivered": delivered,
                    "attempts": attempts, "error": error});
                let mut e =
                    AuditEntry::new(org, None, "monitor.response").target(format!("alert:{}", alert.id)).detail(detail);
                if let Some(s) = alert.subject_id {
                    e = e.subject(s);
                }
                if let Err(err) = store.append_audit(e).await {
                    tracing::error!(error = %err, "could not audit a webhook delivery");
                }
            });
            return Ok(());
        }
        let Some(user) = a.subject_id else { return Ok(()) };
        let now = now_ms();
        match r {
            ResponseKind::RequireStepUp | ResponseKind::RevokeSessions => {
                let mut tx = self.db.begin_write().await?;
                let n = if r == ResponseKind::RequireStepUp {
                    let mut q = self.db.sql();
                    q.push("UPDATE sessions SET verified_at = NULL WHERE org_id = ").bind(org);
                    q.push(" AND user_id = ").bind(user).push(" AND revoked_at IS NULL");
                    q.execute(&mut *tx).await?
                } else {
                    crate::auth::sessions::revoke_user_sessions(&mut tx, self.db.engine, org, user, None, now).await?
                };
                let e = entry(json!({"alert": a.id, "rule": a.rule, "response": r.as_str(), "sessions": n}));
                audit::append(&mut tx, self.db.engine, &e).await?;
                tx.commit().await?;
            }
            ResponseKind::LockUser => {
                self.unscoped_system_access().set_user_status(org, None, user, UserStatus::Locked).await?;
                self.append_audit(entry(json!({"alert": a.id, "rule": a.rule, "response": "lock_user"}))).await?;
            }
            ResponseKind::Notify => {}
        }
        Ok(())
    }

    /// Posts the alert to the webhook, retrying with backoff; records every attempt in `alert_deliveries`.
    /// Returns the attempts made.
    async fn deliver(&self, org: OrgId, a: &Alert, hook: &crate::monitor_rules::Webhook) -> Result<i64, (i64, String)> {
        let body = json!({"organization": org, "alert": a}).to_string();
        let mut q = self.db.sql();
        q.push(
            "INSERT INTO alert_deliveries (org_id, alert_id, url, attempts, status, last_error, updated_at) VALUES (",
        )
        .bind(org)
        .push(", ")
        .bind(a.id)
        .push(", ")
        .bind(hook.url.as_str())
        .push(", 0, 'pending', NULL, ")
        .bind(now_ms())
        .push(") RETURNING id");
        let id: Option<i64> = match q.fetch_one(&self.db.pool).await {
            Ok(r) => r.try_get("id").ok(),
            Err(_) => None,
        };
        // (Cannot fail short of a broken build; recorded like any failed attempt if it does.)
        let sender = self.webhook_sender().map_err(|e| e.to_string());
        let mut last_error = String::new();
        for attempt in 1..=5i64 {
            let ts = now_ms().to_string();
            let sig = crate::webhook::hmac_sha256_hex(hook.secret.as_bytes(), format!("{ts}.{body}").as_bytes());
            let headers = [
                ("X-CRM-Timestamp", ts),
                ("X-CRM-Signature", format!("sha256={sig}")),
                ("X-CRM-Alert", a.id.to_string()),
            ];
            let result = match &sender {
                Ok(sender) => sender.post(&hook.url, &headers, body.clone()).await,
                Err(e) => Err(e.clone()),
            };
            let (status, error) = match &result {
                Ok(s) if (200..300).contains(s) => ("delivered", None),
                Ok(s) => ("failing", Some(format!("HTTP {s}"))),
                Err(e) => ("failing", Some(e.clone())),
            };
            if let Some(id) = id {
                let mut up = self.db.sql();
                up.push("UPDATE alert_deliveries SET attempts = ").bind(attempt).push(", status = ").bind(status);
                up.push(", last_error = ").bind(error.clone()).push(", updated_at = ").bind(now_ms());
                up.push(" WHERE id = ").bind(id);
                let _ = up.execute(&self.db.pool).await;
            }
            match error {
                None => return Ok(attempt),
                Some(e) => last_error = e,
            }
            tokio::time::sleep(Duration::from_millis(200 * (1 << attempt))).await;
        }
        if let Some(id) = id {
            let mut up = self.db.sql();
            up.push("UPDATE alert_deliveries SET status = 'failed' WHERE id = ").bind(id);
            let _ = up.execute(&self.db.pool).await;
        }
        Err((5, last_error))
    }

    /// Records a refused request (403 or 404) of the signed-in user of the current request (the detector evaluates
    /// the probing rule over them). Outside a request, or before authentication, does nothing.
    pub async fn record_denial(&self, status: u16, method: &str, path: &str) -> Result<(), StoreError> {
        let Some(ctx) = audit::current_request_context() else { return Ok(()) };
        let Some((org, user)) = ctx.principal() else { return Ok(()) };
        let now = now_ms();
        let path: String = path.chars().take(300).collect();
        let mut q = self.db.sql();
        q.push("INSERT INTO access_denials (org_id, user_id, at, status, method, path, ip) VALUES (")
            .bind(org)
            .push(", ")
            .bind(user)
            .push(", ")
            .bind(now)
            .push(", ")
            .bind(i64::from(status))
            .push(", ")
            .bind(method)
            .push(", ")
            .bind(path)
            .push(", ")
            .bind(ctx.ip.clone())
            .push(")");
        q.execute(&self.db.pool).await?;
        Ok(())
    }

    /// Polls `alerts` for rows this process has not published yet and publishes them on the feed. Rows are found by
    /// creation time with a few seconds of overlap (ids of concurrent inserts may commit out of order).
    async fn feed_loop(&self) {
        let mut seen: HashMap<i64, i64> = HashMap::new();
        let mut first = true;
        let mut since = now_ms() - 5_000;
        loop {
            let started = now_ms();
            let mut q = self.db.sql();
            q.push("SELECT ").push(ALERT_COLUMNS).push(" FROM alerts WHERE created_at >= ").bind(since - 5_000);
            q.push(" ORDER BY id");
            match q.fetch_all(&self.db.pool).await {
                Ok(rows) => {
                    for r in &rows {
                        let Ok(a) = Alert::from_row(r) else { continue };
                        if seen.insert(a.id, a.created_at).is_none() && !first {
                            // No receiver is not an error: nobody is watching.
                            let _ = self.monitor.feed.send(a);
                        }
                    }
                    first = false;
                    since = started;
                    seen.retain(|_, c| *c >= since - 10_000);
                }
                Err(e) => tracing::warn!(error = %e, "polling alerts failed"),
            }
            tokio::time::sleep(TICK).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_group_addresses() {
        assert_eq!(network_of("10.1.2.3"), network_of("10.1.2.200"));
        assert_ne!(network_of("10.1.2.3"), network_of("10.1.3.3"));
        assert_eq!(network_of("2001:db8:1:2::5"), "2001:db8:1:2::/64");
    }
}
