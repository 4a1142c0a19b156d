//! An organization's security settings (stored under `security` in `organizations.settings`) and the pure checks
//! they drive: the password policy's limits, session timeouts, the soft-lockout schedule, IP allowlists in CIDR
//! notation and sign-in hours in the organization's time zone. Nothing here does I/O, so every rule has unit tests.
//!
//! Network and time restrictions are restrictions, not grants: the organization-wide allowlist and every rule of
//! every role the user holds must all admit the request (roles without a rule add nothing). An empty allowlist
//! admits any address.

use crm_domain::RoleId;
use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecuritySettings {
    pub password: PasswordPolicy,
    pub sessions: SessionPolicy,
    pub lockout: LockoutPolicy,
    pub network: NetworkPolicy,
    /// IANA time zone of the organization (`Asia/Shanghai`), used for sign-in hours.
    pub time_zone: String,
    /// Role id → the windows in which holders of the role may sign in and work. Roles not listed: any time.
    pub sign_in_hours: BTreeMap<RoleId, Vec<HoursWindow>>,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        SecuritySettings {
            password: PasswordPolicy::default(),
            sessions: SessionPolicy::default(),
            lockout: LockoutPolicy::default(),
            network: NetworkPolicy::default(),
            time_zone: "UTC".into(),
            sign_in_hours: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordPolicy {
    /// Characters (Unicode scalar values), 8 to 128; default 12.
    pub min_length: u32,
    /// 64 to 1024; default 128.
    pub max_length: u32,
    /// Refuse a password that contains the username (case-insensitive).
    pub forbid_username: bool,
    /// Refuse passwords from the bundled list of common passwords.
    pub forbid_common: bool,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy { min_length: 12, max_length: 128, forbid_username: true, forbid_common: true }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionPolicy {
    /// A session unused this long ends (5 to 1440 minutes; default 120).
    pub idle_minutes: u32,
    /// A session ends this long after sign-in whatever its use (1 to 720 hours; default 12).
    pub absolute_hours: u32,
    /// How long a step-up (re-entered code) counts as fresh for sensitive features (1 to 60 minutes; default 5).
    pub step_up_minutes: u32,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy { idle_minutes: 120, absolute_hours: 12, step_up_minutes: 5 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LockoutPolicy {
    /// Consecutive failures before the account is soft-locked (3 to 20; default 5).
    pub threshold: u32,
    /// The first lock's length; each further failure doubles it (1 s to 1 h; default 60 s).
    pub base_delay_seconds: u32,
    /// The longest lock (up to 24 h; default 1 h).
    pub max_delay_seconds: u32,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy { threshold: 5, base_delay_seconds: 60, max_delay_seconds: 3600 }
    }
}

impl LockoutPolicy {
    /// How long the account stays locked after its `failures`-th consecutive failure (0: not locked).
    pub fn delay_ms(&self, failures: i64) -> i64 {
        let over = failures - i64::from(self.threshold);
        if over < 0 {
            return 0;
        }
        let base = i64::from(self.base_delay_seconds) * 1000;
        let max = i64::from(self.max_delay_seconds) * 1000;
        base.saturating_mul(1i64 << over.min(30)).min(max)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkPolicy {
    /// Networks every sign-in and request must come from (`10.0.0.0/8`, `2001:db8::/32`, a bare address);
    /// empty: any address.
    pub allow: Vec<String>,
    /// Role id → networks holders of the role must come from, in addition to `allow`.
    pub roles: BTreeMap<RoleId, Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    const ALL: [Day; 7] = [Day::Mon, Day::Tue, Day::Wed, Day::Thu, Day::Fri, Day::Sat, Day::Sun];
    fn from_monday_zero(i: i8) -> Day {
        Day::ALL[i.rem_euclid(7) as usize]
    }
    fn index(self) -> i8 {
        Day::ALL.iter().position(|d| *d == self).unwrap_or(0) as i8
    }
}

/// A weekly window: on each of `days` from `start` to `end` (`HH:MM`, local time). A window whose end is not after
/// its start runs past midnight into the next day (`22:00`–`06:00` on Friday is Friday 22:00 to Saturday 06:00);
/// equal start and end is a whole day from `start`. No days: every day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoursWindow {
    #[serde(default)]
    pub days: Vec<Day>,
    pub start: String,
    pub end: String,
}

/// Why a policy refused a sign-in or a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    Network,
    Hours,
}

impl Denial {
    pub fn as_str(self) -> &'static str {
        match self {
            Denial::Network => "network_not_allowed",
            Denial::Hours => "outside_sign_in_hours",
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:10.1.2.3`, what a dual-stack socket reports for an IPv4 client) is the
/// IPv4 address it carries.
pub fn normalize_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Parses one allowlist entry: CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a bare address (a /32 or /128). Host bits
/// are cleared (`10.1.2.3/8` is `10.0.0.0/8`); an IPv4-mapped IPv6 network of prefix 96 or more is the IPv4
/// network it maps. `0.0.0.0/0` is every IPv4 address and `::/0` every IPv6 address (not IPv4 clients).
pub fn parse_network(entry: &str) -> Result<IpNet, String> {
    let s = entry.trim();
    let net: IpNet = if s.contains('/') {
        s.parse().map_err(|_| format!("{entry:?} is not an address or network in CIDR notation"))?
    } else {
        let ip: IpAddr = s.parse().map_err(|_| format!("{entry:?} is not an address or network in CIDR notation"))?;
        IpNet::from(ip)
    };
    let net = match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.network().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, n.prefix_len() - 96).map(IpNet::V4).unwrap_or(IpNet::V6(n)),
            None => IpNet::V6(n),
        },
        other => other,
    };
    Ok(net.trunc())
}

fn admits_list(list: &[String], ip: Option<IpAddr>) -> bool {
    if list.is_empty() {
        return true;
    }
    let Some(ip) = ip.map(normalize_ip) else { return false };
    list.iter().filter_map(|e| parse_network(e).ok()).any(|n| n.contains(&ip))
}

/// Minutes since midnight of `HH:MM` (`24:00` allowed as an end).
pub fn parse_clock(s: &str) -> Result<u32, String> {
    let bad = || format!("{s:?} is not a time of day HH:MM");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl HoursWindow {
    /// Is local time (`day`, `minute` since midnight) inside this window?
    pub fn contains(&self, day: Day, minute: u32) -> bool {
        let (Ok(start), Ok(end)) = (parse_clock(&self.start), parse_clock(&self.end)) else { return false };
        let on = |d: Day| self.days.is_empty() || self.days.contains(&d);
        let yesterday = Day::from_monday_zero(day.index() - 1);
        if start < end {
            on(day) && start <= minute && minute < end
        } else {
            // Runs past midnight into the next day (a whole day when start == end).
            (on(day) && minute >= start) || (on(yesterday) && minute < end)
        }
    }
}

/// The local weekday and minute of `now_ms` in `time_zone` (UTC when the zone is unknown).
pub fn local_day_minute(time_zone: &str, now_ms: i64) -> (Day, u32) {
    let tz = jiff::tz::TimeZone::get(time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let ts = jiff::Timestamp::from_millisecond(now_ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let z = ts.to_zoned_datetime(tz);
    let day = Day::from_monday_zero(z.weekday().to_monday_zero_offset());
    (day, z.hour() as u32 * 60 + z.minute() as u32)
}

impl SecuritySettings {
    /// Reads the `security` member of an organization's settings document; absent or unreadable members take
    /// their defaults (a broken document must not lock everybody out, and `validate` guards every write).
    pub fn from_org_settings(doc: &str) -> SecuritySettings {
        serde_json::from_str::<serde_json::Value>(doc)
            .ok()
            .and_then(|v| v.get("security").cloned())
            .and_then(|s| serde_json::from_value(s).ok())
            .unwrap_or_default()
    }

    /// Does the organization's network and time policy admit a user holding `roles`, from `ip`, at `now_ms`?
    pub fn admits(&self, roles: &[RoleId], ip: Option<IpAddr>, now_ms: i64) -> Result<(), Denial> {
        if !admits_list(&self.network.allow, ip) {
            return Err(Denial::Network);
        }
        for r in roles {
            if let Some(list) = self.network.roles.get(r)
                && !admits_list(list, ip)
            {
                return Err(Denial::Network);
            }
        }
        let windows: Vec<&Vec<HoursWindow>> =
            roles.iter().filter_map(|r| self.sign_in_hours.get(r)).filter(|w| !w.is_empty()).collect();
        if !windows.is_empty() {
            let (day, minute) = local_day_minute(&self.time_zone, now_ms);
            if !windows.iter().all(|ws| ws.iter().any(|w| w.contains(day, minute))) {
                return Err(Denial::Hours);
            }
        }
        Ok(())
    }

    /// Checks every limit and entry; returns field-level problems. Role ids must name roles in `known_roles`.
    /// Allowlist entries are rewritten in canonical form.
    pub fn validate(&mut self, known_roles: &[RoleId]) -> Result<(), Vec<(String, String)>> {
        let mut errors = Vec::new();
        let mut err = |f: &str, m: String| errors.push((f.to_string(), m));
        let p = &self.password;
        if !(8..=128).contains(&p.min_length) {
            err("password.min_length", "8 to 128".into());
        }
        if !(64..=1024).contains(&p.max_length) || p.max_length < p.min_length {
            err("password.max_length", "64 to 1024, and not below min_length".into());
        }
        let s = &self.sessions;
        if !(5..=1440).contains(&s.idle_minutes) {
            err("sessions.idle_minutes", "5 to 1440".into());
        }
        if !(1..=720).contains(&s.absolute_hours) {
            err("sessions.absolute_hours", "1 to 720".into());
        }
        if !(1..=60).contains(&s.step_up_minutes) {
            err("sessions.step_up_minutes", "1 to 60".into());
        }
        let l = &self.lockout;
        if !(3..=20).contains(&l.threshold) {
            err("lockout.threshold", "3 to 20".into());
        }
        if !(1..=3600).contains(&l.base_delay_seconds) {
            err("lockout.base_delay_seconds", "1 to 3600".into());
        }
        if l.max_delay_seconds < l.base_delay_seconds || l.max_delay_seconds > 86_400 {
            err("lockout.max_delay_seconds", "base_delay_seconds to 86400".into());
        }
        if jiff::tz::TimeZone::get(&self.time_zone).is_err() {
            err("time_zone", format!("{:?} is not an IANA time zone", self.time_zone));
        }
        let canon = |list: &mut Vec<String>, field: &str, err: &mut dyn FnMut(&str, String)| {
            if list.len() > 200 {
                err(field, "at most 200 networks".into());
            }
            for e in list.iter_mut() {
                match parse_network(e) {
                    Ok(n) => *e = n.to_string(),
                    Err(m) => err(field, m),
                }
            }
        };
        canon(&mut self.network.allow, "network.allow", &mut err);
        for (role, list) in self.network.roles.iter_mut() {
            if !known_roles.contains(role) {
                err("network.roles", format!("no such role {role}"));
            }
            canon(list, "network.roles", &mut err);
        }
        for (role, windows) in &self.sign_in_hours {
            if !known_roles.contains(role) {
                err("sign_in_hours", format!("no such role {role}"));
            }
            for w in windows {
                for t in [&w.start, &w.end] {
                    if let Err(m) = parse_clock(t) {
                        err("sign_in_hours", m);
                    }
                }
                if parse_clock(&w.start).is_ok_and(|m| m >= 1440) {
                    err("sign_in_hours", "a window starts before 24:00".into());
                }
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("address"))
    }
    fn allow(list: &[&str]) -> SecuritySettings {
        SecuritySettings {
            network: NetworkPolicy { allow: list.iter().map(|s| s.to_string()).collect(), ..Default::default() },
            ..Default::default()
        }
    }
    fn admitted(list: &[&str], addr: &str) -> bool {
        allow(list).admits(&[], ip(addr), 0).is_ok()
    }

    #[test]
    fn an_empty_allowlist_admits_everyone_even_an_unknown_address() {
        assert!(SecuritySettings::default().admits(&[1], None, 0).is_ok());
        assert!(admitted(&[], "203.0.113.9"));
    }

    #[test]
    fn slash_zero_covers_its_own_family_only() {
        assert!(admitted(&["0.0.0.0/0"], "203.0.113.9"));
        assert!(admitted(&["0.0.0.0/0"], "255.255.255.255"));
        assert!(!admitted(&["0.0.0.0/0"], "2001:db8::1"));
        assert!(admitted(&["::/0"], "2001:db8::1"));
        assert!(!admitted(&["::/0"], "203.0.113.9"), "an IPv4 client is not an IPv6 address");
        // An IPv4 client seen through a dual-stack socket is still an IPv4 client.
        assert!(admitted(&["0.0.0.0/0"], "::ffff:203.0.113.9"));
    }

    #[test]
    fn slash_32_and_bare_addresses_match_exactly_one_address() {
        assert!(admitted(&["198.51.100.7/32"], "198.51.100.7"));
        assert!(!admitted(&["198.51.100.7/32"], "198.51.100.8"));
        assert!(!admitted(&["198.51.100.7/32"], "198.51.100.6"));
        assert!(admitted(&["198.51.100.7"], "198.51.100.7"));
        assert!(!admitted(&["198.51.100.7"], "198.51.100.70"));
        assert!(admitted(&["2001:db8::7"], "2001:db8::7"));
        assert!(!admitted(&["2001:db8::7/128"], "2001:db8::8"));
    }

    #[test]
    fn network_boundaries_are_inclusive_and_host_bits_are_cleared() {
        assert!(admitted(&["10.0.0.0/8"], "10.0.0.0"));
        assert!(admitted(&["10.0.0.0/8"], "10.255.255.255"));
        assert!(!admitted(&["10.0.0.0/8"], "11.0.0.0"));
        assert!(!admitted(&["10.0.0.0/8"], "9.255.255.255"));
        assert_eq!(parse_network("10.1.2.3/8").map(|n| n.to_string()), Ok("10.0.0.0/8".to_string()));
        assert_eq!(parse_network(" 192.168.1.0/24 ").map(|n| n.to_string()), Ok("192.168.1.0/24".to_string()));
        assert!(parse_network("10.0.0.0/33").is_err());
        assert!(parse_network("not-an-ip").is_err());
        assert!(parse_network("").is_err());
    }

    #[test]
    fn ipv6_networks() {
        assert!(admitted(&["2001:db8::/32"], "2001:db8:ffff:1::42"));
        assert!(!admitted(&["2001:db8::/32"], "2001:db9::1"));
        assert!(admitted(&["fe80::/10"], "febf::1"));
        assert!(!admitted(&["fe80::/10"], "fec0::1"));
        assert!(!admitted(&["2001:db8::/32"], "10.0.0.1"));
    }

    #[test]
    fn ipv4_mapped_ipv6_addresses_and_networks_are_their_ipv4_form() {
        assert_eq!(normalize_ip("::ffff:10.1.2.3".parse().expect("ip")), "10.1.2.3".parse::<IpAddr>().expect("ip"));
        // A mapped client against a plain IPv4 allowlist.
        assert!(admitted(&["10.0.0.0/8"], "::ffff:10.1.2.3"));
        assert!(!admitted(&["10.0.0.0/8"], "::ffff:11.1.2.3"));
        // A mapped network in the allowlist is the IPv4 network.
        assert_eq!(parse_network("::ffff:10.0.0.0/104").map(|n| n.to_string()), Ok("10.0.0.0/8".to_string()));
        assert!(admitted(&["::ffff:10.0.0.0/104"], "10.9.9.9"));
        assert!(admitted(&["::ffff:10.0.0.0/104"], "::ffff:10.9.9.9"));
        assert!(!admitted(&["::ffff:10.0.0.0/104"], "11.0.0.1"));
        assert_eq!(parse_network("::ffff:192.0.2.1").map(|n| n.to_string()), Ok("192.0.2.1/32".to_string()));
        // Not mapped: the IPv4-compatible (deprecated) form stays IPv6.
        assert!(!admitted(&["::10.0.0.0/104"], "10.0.0.1"));
    }

    #[test]
    fn an_unknown_address_fails_a_non_empty_allowlist() {
        assert!(allow(&["0.0.0.0/0", "::/0"]).admits(&[], None, 0).is_err());
    }

    #[test]
    fn role_lists_are_restrictions_and_all_of_them_apply() {
        let mut s = allow(&["10.0.0.0/8"]);
        s.network.roles.insert(1, vec!["10.1.0.0/16".into()]);
        assert_eq!(s.admits(&[2], ip("10.2.0.1"), 0), Ok(()), "a role without a list adds nothing");
        assert_eq!(s.admits(&[1], ip("10.2.0.1"), 0), Err(Denial::Network));
        assert_eq!(
            s.admits(&[1, 2], ip("10.2.0.1"), 0),
            Err(Denial::Network),
            "another role does not lift a restriction"
        );
        assert_eq!(s.admits(&[1, 2], ip("10.1.0.1"), 0), Ok(()));
        assert_eq!(s.admits(&[1], ip("192.168.0.1"), 0), Err(Denial::Network), "the organization list still applies");
    }

    /// Milliseconds of a civil time in a zone.
    fn at(zone: &str, civil: &str) -> i64 {
        let dt: jiff::civil::DateTime = civil.parse().expect("civil time");
        dt.to_zoned_datetime(jiff::tz::TimeZone::get(zone).expect("zone")).expect("zoned").timestamp().as_millisecond()
    }

    fn hours(zone: &str, windows: Vec<HoursWindow>) -> SecuritySettings {
        SecuritySettings { time_zone: zone.into(), sign_in_hours: BTreeMap::from([(1, windows)]), ..Default::default() }
    }

    fn window(days: &[Day], start: &str, end: &str) -> HoursWindow {
        HoursWindow { days: days.to_vec(), start: start.into(), end: end.into() }
    }

    #[test]
    fn office_hours_in_the_organizations_time_zone() {
        let s =
            hours("Asia/Shanghai", vec![window(&[Day::Mon, Day::Tue, Day::Wed, Day::Thu, Day::Fri], "09:00", "18:00")]);
        // 2026-12-01 is a Tuesday.
        assert!(s.admits(&[1], None, at("Asia/Shanghai", "2026-12-01T09:00")).is_ok(), "the start is inside");
        assert!(s.admits(&[1], None, at("Asia/Shanghai", "2026-12-01T17:59")).is_ok());
        assert_eq!(
            s.admits(&[1], None, at("Asia/Shanghai", "2026-12-01T18:00")),
            Err(Denial::Hours),
            "the end is outside"
        );
        assert_eq!(s.admits(&[1], None, at("Asia/Shanghai", "2026-12-01T08:59")), Err(Denial::Hours));
        // 10:00 in Shanghai is 02:00 UTC: the same instant judged in UTC would be outside.
        let instant = at("UTC", "2026-12-01T02:00");
        assert!(s.admits(&[1], None, instant).is_ok(), "judged in the organization's zone, not the server's");
        let utc = SecuritySettings { time_zone: "UTC".into(), ..s.clone() };
        assert_eq!(utc.admits(&[1], None, instant), Err(Denial::Hours));
        // Saturday.
        assert_eq!(s.admits(&[1], None, at("Asia/Shanghai", "2026-12-05T10:00")), Err(Denial::Hours));
        // Users without the role are not restricted.
        assert!(s.admits(&[2], None, at("Asia/Shanghai", "2026-12-05T10:00")).is_ok());
    }

    #[test]
    fn a_night_shift_runs_across_midnight_into_the_next_day() {
        // Friday 22:00 to Saturday 06:00, New York time.
        let s = hours("America/New_York", vec![window(&[Day::Fri], "22:00", "06:00")]);
        let ny = |t: &str| s.admits(&[1], None, at("America/New_York", t));
        assert!(ny("2026-12-04T22:00").is_ok(), "Friday 22:00");
        assert!(ny("2026-12-04T23:59").is_ok(), "Friday 23:59");
        assert!(ny("2026-12-05T00:00").is_ok(), "Saturday 00:00 belongs to Friday's shift");
        assert!(ny("2026-12-05T05:59").is_ok(), "Saturday 05:59");
        assert_eq!(ny("2026-12-05T06:00"), Err(Denial::Hours), "Saturday 06:00: the shift is over");
        assert_eq!(ny("2026-12-05T22:30"), Err(Denial::Hours), "Saturday night is not a shift");
        assert_eq!(
            ny("2026-12-04T05:00"),
            Err(Denial::Hours),
            "Friday early morning belongs to Thursday's (absent) shift"
        );
        assert_eq!(ny("2026-12-04T21:59"), Err(Denial::Hours));
        // Sunday night to Monday morning wraps the week.
        let s = hours("UTC", vec![window(&[Day::Sun], "23:00", "01:00")]);
        assert!(s.admits(&[1], None, at("UTC", "2026-12-07T00:30")).is_ok(), "Monday 00:30 after Sunday's shift");
        assert_eq!(s.admits(&[1], None, at("UTC", "2026-12-08T00:30")), Err(Denial::Hours), "Tuesday 00:30");
    }

    #[test]
    fn hours_across_a_daylight_saving_change() {
        // Europe/Berlin leaves summer time on 2026-10-25; 08:00–17:00 local holds on both sides.
        let s = hours("Europe/Berlin", vec![window(&[], "08:00", "17:00")]);
        for day in ["2026-10-24", "2026-10-25", "2026-10-26"] {
            assert!(s.admits(&[1], None, at("Europe/Berlin", &format!("{day}T08:00"))).is_ok(), "{day} 08:00");
            assert_eq!(
                s.admits(&[1], None, at("Europe/Berlin", &format!("{day}T07:59"))),
                Err(Denial::Hours),
                "{day} 07:59"
            );
        }
    }

    #[test]
    fn a_whole_day_window_and_several_windows() {
        let s = hours("UTC", vec![window(&[Day::Sat], "00:00", "00:00")]);
        assert!(s.admits(&[1], None, at("UTC", "2026-12-05T00:00")).is_ok());
        assert!(s.admits(&[1], None, at("UTC", "2026-12-05T23:59")).is_ok());
        assert_eq!(s.admits(&[1], None, at("UTC", "2026-12-06T00:00")), Err(Denial::Hours));
        let s = hours("UTC", vec![window(&[], "08:00", "12:00"), window(&[], "13:00", "24:00")]);
        assert!(s.admits(&[1], None, at("UTC", "2026-12-05T23:59")).is_ok());
        assert_eq!(s.admits(&[1], None, at("UTC", "2026-12-05T12:30")), Err(Denial::Hours), "the lunch gap");
    }

    #[test]
    fn validation_names_every_bad_field_and_canonicalizes_networks() {
        let mut s = SecuritySettings::default();
        s.network.allow = vec!["10.1.2.3/8".into(), "::ffff:10.0.0.0/104".into()];
        assert_eq!(s.validate(&[1]), Ok(()));
        assert_eq!(s.network.allow, ["10.0.0.0/8", "10.0.0.0/8"]);
        let mut bad = SecuritySettings { time_zone: "Mars/Olympus".into(), ..Default::default() };
        bad.password.min_length = 4;
        bad.network.allow = vec!["300.0.0.1".into()];
        bad.network.roles.insert(99, vec![]);
        bad.sign_in_hours.insert(1, vec![window(&[], "25:00", "08:00")]);
        let errors = bad.validate(&[1]).expect_err("refused");
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        for f in ["password.min_length", "time_zone", "network.allow", "network.roles", "sign_in_hours"] {
            assert!(fields.contains(&f), "{f} missing from {errors:?}");
        }
    }

    #[test]
    fn the_lockout_delay_doubles_up_to_its_cap() {
        let l = LockoutPolicy::default();
        assert_eq!(l.delay_ms(4), 0);
        assert_eq!(l.delay_ms(5), 60_000);
        assert_eq!(l.delay_ms(6), 120_000);
        assert_eq!(l.delay_ms(7), 240_000);
        assert_eq!(l.delay_ms(50), 3_600_000);
        assert_eq!(l.delay_ms(i64::MAX), 3_600_000);
    }

    #[test]
    fn a_broken_settings_document_falls_back_to_defaults() {
        assert_eq!(SecuritySettings::from_org_settings("{}"), SecuritySettings::default());
        assert_eq!(SecuritySettings::from_org_settings("not json"), SecuritySettings::default());
        let doc = r#"{"security": {"time_zone": "Asia/Shanghai"}, "other": 1}"#;
        assert_eq!(SecuritySettings::from_org_settings(doc).time_zone, "Asia/Shanghai");
    }
}
