//! The checks file (`--config.file`): allowed cookies, the stale-cookie mode and user-defined
//! checks, validated and compiled once at startup (regexes compiled, match values parsed).
//!
//! ```yaml
//! allowed_cookies: ["0x1", "0xabcd000000000000/0xffff000000000000"]
//! stale_cookie:
//!   mode: auto        # auto | static | off
//!   window: 10m       # cookies first seen within this of the dominant one are its generation
//!   grace: 5m         # the dominant cookie must be this old before others count as stale
//! checks:
//!   - name: flood_from_tenant_port
//!     help: "FLOOD must never be used in table 0"
//!     table: [0]
//!     priority_min: 1
//!     cookie: "0x0/0xffff"
//!     match: {in_port: "5", nw_src: "10.0.0.0/8"}
//!     match_absent: [dl_vlan]
//!     match_regex: "dl_dst=ff:ff"
//!     actions_regex: "FLOOD|NORMAL"
//! bridges:            # per bridge, a check on or off over its controller's default
//!   br-int: {overlap: on, stale_cookie: off}
//! ```

use std::path::Path;
use std::time::Duration;

use common::ConfigError;
use regex::Regex;
use serde::Deserialize;

use crate::parse::actions::{port_number, PortRef};
use crate::parse::fields::{canonical, expand, FieldMatch};

/// Names of the built-in checks, always exported.
pub const BUILTIN_CHECKS: &[&str] = &["missing_port", "stale_cookie", "overlap"];

/// The checks file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Cookies the bridge's owner uses now (hex, optionally `/mask`).
    #[serde(default)]
    pub allowed_cookies: Vec<String>,
    #[serde(default)]
    pub stale_cookie: RawStaleCookie,
    #[serde(default)]
    pub checks: Vec<RawCheck>,
    /// Per bridge, check name -> on or off (over the bridge controller's defaults).
    #[serde(default)]
    pub bridges: std::collections::BTreeMap<String, std::collections::BTreeMap<String, OnOff>>,
}

/// A check switched on or off for a bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnOff {
    On,
    Off,
}

/// `stale_cookie:` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStaleCookie {
    #[serde(default)]
    pub mode: Option<StaleMode>,
    #[serde(default)]
    pub window: Option<String>,
    #[serde(default)]
    pub grace: Option<String>,
}

/// How `stale_cookie` decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StaleMode {
    /// Allowed cookies plus the dominant cookie's generation (see the README).
    Auto,
    /// Only the allowed cookies are current.
    Static,
    /// The check always reports 0.
    Off,
}

/// One user-defined check as written. Every given condition must hold for a flow to count.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    pub name: String,
    #[serde(default)]
    pub help: Option<String>,
    /// Table numbers.
    #[serde(default)]
    pub table: Option<TableList>,
    #[serde(default)]
    pub priority: Option<u16>,
    #[serde(default)]
    pub priority_min: Option<u16>,
    #[serde(default)]
    pub priority_max: Option<u16>,
    /// `0xVALUE[/0xMASK]`.
    #[serde(default)]
    pub cookie: Option<String>,
    /// Field -> value: the flow must match only packets within this value/mask.
    #[serde(default, rename = "match")]
    pub match_fields: std::collections::BTreeMap<String, serde_yaml_value::Scalar>,
    /// Fields the flow must not match on.
    #[serde(default)]
    pub match_absent: Vec<String>,
    #[serde(default)]
    pub match_regex: Option<String>,
    #[serde(default)]
    pub actions_regex: Option<String>,
}

/// A YAML scalar that may be written as a number or a string (`in_port: 5`).
pub mod serde_yaml_value {
    use serde::de::{Error, SeqAccess, Unexpected, Visitor};
    use serde::{Deserialize, Deserializer};

    #[derive(Debug, Clone)]
    pub enum Scalar {
        Int(u64),
        Str(String),
    }

    impl Scalar {
        pub fn text(&self) -> String {
            match self {
                Scalar::Int(n) => n.to_string(),
                Scalar::Str(s) => s.clone(),
            }
        }
    }

    /// Scalars, and with `seq` sequences of them: what a wrong value is is said in the
    /// message ("invalid type: map, expected a number or a string").
    struct ScalarVisitor;

    impl<'de> Visitor<'de> for ScalarVisitor {
        type Value = Scalar;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a number or a string")
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<Scalar, E> {
            Ok(Scalar::Int(v))
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<Scalar, E> {
            u64::try_from(v)
                .map(Scalar::Int)
                .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<Scalar, E> {
            Ok(Scalar::Str(v.to_string()))
        }
    }

    impl<'de> Deserialize<'de> for Scalar {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(ScalarVisitor)
        }
    }

    /// `table: 0` or `table: [0, 10]`.
    pub(super) struct TableVisitor;

    impl<'de> Visitor<'de> for TableVisitor {
        type Value = super::TableList;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a table number, or a list of them")
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
            ScalarVisitor.visit_u64(v).map(super::TableList::One)
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
            ScalarVisitor.visit_i64(v).map(super::TableList::One)
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
            ScalarVisitor.visit_str(v).map(super::TableList::One)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut all = Vec::new();
            while let Some(s) = seq.next_element::<Scalar>()? {
                all.push(s);
            }
            Ok(super::TableList::Many(all))
        }
    }
}

/// `table: 0` or `table: [0, 10]` (numbers: flows are dumped without table names).
#[derive(Debug, Clone)]
pub enum TableList {
    One(serde_yaml_value::Scalar),
    Many(Vec<serde_yaml_value::Scalar>),
}

impl<'de> Deserialize<'de> for TableList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(serde_yaml_value::TableVisitor)
    }
}

/// A compiled match condition (field within value/mask).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldCond {
    pub field: String,
    pub opaque: bool,
    pub value: u128,
    pub mask: u128,
}

impl FieldCond {
    /// Whether a flow constraint on the same field restricts packets to within this one.
    pub fn holds_for(&self, f: &FieldMatch<'_>) -> bool {
        f.field == self.field
            && f.opaque == self.opaque
            && (f.mask & self.mask) == self.mask
            && (f.value & self.mask) == self.value
    }
}

/// A compiled user-defined check.
#[derive(Debug, Clone)]
pub struct CustomCheck {
    pub name: String,
    pub help: String,
    pub tables: Option<Vec<String>>,
    pub priority_min: u16,
    pub priority_max: u16,
    pub cookie: Option<(u64, u64)>,
    pub match_fields: Vec<FieldCond>,
    pub match_absent: Vec<String>,
    pub match_regex: Option<Regex>,
    pub actions_regex: Option<Regex>,
}

/// Stale-cookie settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleCookie {
    pub mode: StaleMode,
    pub window: Duration,
    pub grace: Duration,
}

impl Default for StaleCookie {
    fn default() -> Self {
        Self {
            mode: StaleMode::Auto,
            window: Duration::from_secs(600),
            grace: Duration::from_secs(300),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `(value, mask)` pairs.
    pub allowed_cookies: Vec<(u64, u64)>,
    pub stale_cookie: StaleCookie,
    pub checks: Vec<CustomCheck>,
    /// `bridges:`: (bridge, check) -> on or off.
    pub bridge_checks: std::collections::BTreeMap<(String, String), OnOff>,
}

impl Config {
    /// Whether `check` runs on `bridge`: the config's setting for the bridge, else on (every
    /// check runs on every controller's bridges; the controller changes how some are judged,
    /// see [`crate::controller`]).
    pub fn check_on(&self, bridge: &str, check: &str) -> bool {
        self.bridge_checks
            .get(&(bridge.to_string(), check.to_string()))
            .is_none_or(|v| *v == OnOff::On)
    }

    /// Whether `cookie` is one of the allowed cookies.
    pub fn cookie_allowed(&self, cookie: u64) -> bool {
        self.allowed_cookies
            .iter()
            .any(|&(v, m)| cookie & m == v & m)
    }
}

/// Parses `0xVALUE[/0xMASK]` (the `0x` is optional).
pub fn parse_cookie(s: &str) -> Result<(u64, u64), String> {
    let hex = |t: &str| {
        let t = t.trim();
        let h = t.strip_prefix("0x").unwrap_or(t);
        u64::from_str_radix(h, 16)
            .map_err(|_| format!("{s:?} is not a hex cookie (0xVALUE[/0xMASK])"))
    };
    match s.split_once('/') {
        Some((v, m)) => {
            let (v, m) = (hex(v)?, hex(m)?);
            Ok((v & m, m))
        }
        None => Ok((hex(s)?, u64::MAX)),
    }
}

fn valid_name(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_lowercase())
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

pub use common::config::MAX_CONFIG_BYTES;

/// Loads, validates and compiles a checks file (a regular file of at most
/// [`MAX_CONFIG_BYTES`]).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = common::config::read_text_file(path, MAX_CONFIG_BYTES)?;
    let raw: RawConfig = common::config::parse_yaml(path, &text)?;
    compile(raw).map_err(|m| ConfigError::invalid(path, m))
}

/// Validates and compiles a parsed checks file.
pub fn compile(raw: RawConfig) -> Result<Config, String> {
    let mut cfg = Config::default();
    for c in &raw.allowed_cookies {
        cfg.allowed_cookies
            .push(parse_cookie(c).map_err(|e| format!("allowed_cookies: {e}"))?);
    }
    if let Some(m) = raw.stale_cookie.mode {
        cfg.stale_cookie.mode = m;
    }
    let dur = |what: &str, v: &Option<String>, d: Duration| match v {
        None => Ok(d),
        Some(s) => common::cli::parse_duration(s).map_err(|e| format!("stale_cookie.{what}: {e}")),
    };
    cfg.stale_cookie.window = dur("window", &raw.stale_cookie.window, cfg.stale_cookie.window)?;
    cfg.stale_cookie.grace = dur("grace", &raw.stale_cookie.grace, cfg.stale_cookie.grace)?;
    if cfg.stale_cookie.mode == StaleMode::Static && cfg.allowed_cookies.is_empty() {
        return Err("stale_cookie.mode static needs allowed_cookies".into());
    }

    let mut seen: Vec<&str> = BUILTIN_CHECKS.to_vec();
    for rc in &raw.checks {
        let ctx = |m: String| format!("check {:?}: {m}", rc.name);
        if !valid_name(&rc.name) {
            return Err(ctx("name must match [a-z][a-z0-9_]*".into()));
        }
        if seen.contains(&rc.name.as_str()) {
            return Err(ctx(
                "duplicate name (or the name of a built-in check)".into()
            ));
        }
        seen.push(&rc.name);
        let tables = rc.table.as_ref().map(|t| match t {
            TableList::One(s) => vec![s.text()],
            TableList::Many(v) => v.iter().map(|s| s.text()).collect(),
        });
        // Flows are dumped with `--no-names`: a table shows as its number only, and a name
        // (or a number out of range) would never match.
        if let Some(bad) = tables
            .iter()
            .flatten()
            .find(|t| !matches!(t.parse::<u8>(), Ok(0..=254)))
        {
            return Err(ctx(format!(
                "table {bad:?}: give the table's number, 0 to 254 (flows are read with \
                 `ovs-ofctl --no-names`, which shows no table names)"
            )));
        }
        let (mut pmin, mut pmax) = (
            rc.priority_min.unwrap_or(0),
            rc.priority_max.unwrap_or(u16::MAX),
        );
        if let Some(p) = rc.priority {
            if rc.priority_min.is_some() || rc.priority_max.is_some() {
                return Err(ctx("priority excludes priority_min/priority_max".into()));
            }
            (pmin, pmax) = (p, p);
        }
        if pmin > pmax {
            return Err(ctx("priority_min > priority_max".into()));
        }
        let cookie = rc
            .cookie
            .as_deref()
            .map(parse_cookie)
            .transpose()
            .map_err(|e| ctx(format!("cookie: {e}")))?;
        let mut match_fields = Vec::new();
        for (k, v) in &rc.match_fields {
            let text = v.text();
            if k.is_empty() || text.is_empty() {
                // No flow prints an empty field name or `field=` without a value.
                return Err(ctx(format!(
                    "match {k:?}: {text:?}: the checks cannot read an empty field or value: \
                     no flow would ever match it"
                )));
            }
            // Likewise ports: `in_port=tap1` never appears in a `--no-names` dump.
            if canonical(k) == "in_port" && matches!(port_number(&text), Some(PortRef::Name(_))) {
                return Err(ctx(format!(
                    "match {k}: {text:?}: give the port's number (flows are read with \
                     `ovs-ofctl --no-names`, which shows no port names)"
                )));
            }
            let mut out = Vec::new();
            expand(k, Some(&text), &mut out);
            for f in out {
                // Numbers, addresses and flags are printed in a form the checks read: one they
                // cannot read is a typo that no flow's text would ever equal.
                let unreadable = f.opaque
                    && (text.starts_with(|c: char| c.is_ascii_digit())
                        || matches!(f.field, "ct_state" | "tcp_flags"));
                if unreadable {
                    return Err(ctx(format!(
                        "match {k}: the checks cannot read {text:?} (an integer or hex \
                         value, MAC, IPv4 or IPv6 address, each with an optional /mask or \
                         /prefix, or +flag-flag): no flow would ever match it"
                    )));
                }
                if f.opaque && !matches!(k.as_str(), "in_port") {
                    // Opaque values compare by text only; still usable, but say so early.
                    tracing::debug!(check = %rc.name, field = %k, value = %text, "match value compared as text");
                }
                match_fields.push(FieldCond {
                    field: f.field.to_string(),
                    opaque: f.opaque,
                    value: f.value & f.mask,
                    mask: f.mask,
                });
            }
        }
        if rc.match_absent.iter().any(String::is_empty) {
            return Err(ctx(
                "match_absent: the checks cannot read an empty field name".into(),
            ));
        }
        let regex = |what: &str, r: &Option<String>| {
            r.as_deref()
                .map(Regex::new)
                .transpose()
                .map_err(|e| ctx(format!("{what}: {e}")))
        };
        let check = CustomCheck {
            name: rc.name.clone(),
            help: rc.help.clone().unwrap_or_default(),
            tables,
            priority_min: pmin,
            priority_max: pmax,
            cookie,
            match_fields,
            match_absent: rc
                .match_absent
                .iter()
                .map(|f| canonical(f).to_string())
                .collect(),
            match_regex: regex("match_regex", &rc.match_regex)?,
            actions_regex: regex("actions_regex", &rc.actions_regex)?,
        };
        let has_condition = check.tables.is_some()
            || rc.priority.is_some()
            || rc.priority_min.is_some()
            || rc.priority_max.is_some()
            || check.cookie.is_some()
            || !check.match_fields.is_empty()
            || !check.match_absent.is_empty()
            || check.match_regex.is_some()
            || check.actions_regex.is_some();
        if !has_condition {
            return Err(ctx("has no condition (it would flag every flow)".into()));
        }
        cfg.checks.push(check);
    }
    for (bridge, checks) in &raw.bridges {
        for (check, v) in checks {
            if !seen.contains(&check.as_str()) {
                return Err(format!(
                    "bridges.{bridge}.{check}: no such check (built-in: {}; or a name from checks:)",
                    BUILTIN_CHECKS.join(", ")
                ));
            }
            cfg.bridge_checks
                .insert((bridge.clone(), check.clone()), *v);
        }
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        let raw: RawConfig =
            common::config::parse_yaml(Path::new("t.yml"), text).map_err(|e| e.to_string())?;
        compile(raw)
    }

    #[test]
    fn checks_on_or_off_per_bridge() {
        let c = parse(
            r#"
checks:
  - {name: no_flood, actions_regex: FLOOD}
bridges:
  br-int: {overlap: off, stale_cookie: on}
  br-tun: {no_flood: off}
"#,
        )
        .unwrap();
        assert!(!c.check_on("br-int", "overlap"));
        assert!(c.check_on("br-int", "stale_cookie"));
        assert!(c.check_on("br-int", "missing_port"));
        assert!(!c.check_on("br-tun", "no_flood"));
        assert!(c.check_on("br-tun", "overlap"));
        // Unset: on.
        assert!(c.check_on("br-ex", "overlap"));
        assert!(c.check_on("br-ex", "no_flood"));
        for (text, want) in [
            (
                "bridges: {br-int: {overlapp: off}}",
                "bridges.br-int.overlapp: no such check",
            ),
            ("bridges: {br-int: {overlap: maybe}}", "unknown variant"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn full_example() {
        let c = parse(
            r#"
allowed_cookies: ["0x1", "0xabcd000000000000/0xffff000000000000"]
stale_cookie: {mode: auto, window: 1m, grace: 30s}
checks:
  - name: flood_in_table_0
    table: [0, 10]
    priority_min: 1
    cookie: "0x0/0xffff"
    match: {in_port: 5, nw_src: "10.0.0.0/8"}
    match_absent: [eth_type]
    actions_regex: "FLOOD"
"#,
        )
        .unwrap();
        assert!(c.cookie_allowed(1));
        assert!(c.cookie_allowed(0xabcd_0000_0000_1234));
        assert!(!c.cookie_allowed(2));
        assert_eq!(c.stale_cookie.window, Duration::from_secs(60));
        let k = &c.checks[0];
        assert_eq!(k.tables, Some(vec!["0".to_string(), "10".to_string()]));
        assert_eq!(k.cookie, Some((0, 0xffff)));
        assert_eq!(k.match_absent, vec!["dl_type"]);
        assert_eq!(k.match_fields.len(), 2);
    }

    #[test]
    fn names_that_no_names_dumps_never_show_are_refused() {
        // The exporter dumps with `ovs-ofctl --no-names`: tables and ports appear as numbers
        // only, so a check on a table or port name would never match, silently.
        for bad in [
            "checks: [{name: a, table: acl_in}]",
            "checks: [{name: a, table: [0, classifier]}]",
            "checks: [{name: a, table: 256}]",
            "checks: [{name: a, table: 255}]",
            "checks: [{name: a, match: {in_port: tap1}}]",
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(
                err.contains("--no-names") || err.contains("0 to 254"),
                "{bad}: {err}"
            );
        }
        for good in [
            "checks: [{name: a, table: [0, 254, '7']}]",
            "checks: [{name: a, match: {in_port: LOCAL}}]",
            "checks: [{name: a, match: {in_port: 5}}]",
            "checks: [{name: a, match: {in_port: CONTROLLER}}]",
        ] {
            assert!(parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn match_values_no_flow_can_show_are_refused() {
        // A value the checks cannot read is compared as text, and OVS prints numbers,
        // addresses and flags in a form they read: a typo here made the check never match.
        for bad in [
            "checks: [{name: a, match: {nw_src: '10.0.0.0/33'}}]",
            "checks: [{name: a, match: {nw_dst: '10.0.0.300'}}]",
            "checks: [{name: a, match: {dl_dst: '00:11:22:33:44:zz'}}]",
            "checks: [{name: a, match: {reg0: '5/0xzz'}}]",
            "checks: [{name: a, match: {ct_state: '+trk+estt'}}]",
            "checks: [{name: a, match: {tcp_flags: '+sin'}}]",
            "checks: [{name: a, match: {'': 1}}]",
            "checks: [{name: a, match: {ip: ''}}]",
            "checks: [{name: a, match_absent: ['']}]",
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(err.contains("cannot read"), "{bad}: {err}");
        }
        for good in [
            "checks: [{name: a, match: {nw_src: '10.0.0.0/8', ipv6_dst: 'fe80::/10'}}]",
            "checks: [{name: a, match: {dl_dst: '01:00:00:00:00:00/01:00:00:00:00:00'}}]",
            "checks: [{name: a, match: {ct_state: '+trk-est', tcp_flags: '+syn'}}]",
            "checks: [{name: a, match: {tun_flags: '+oam', nw_frag: later}}]",
            "checks: [{name: a, match: {ipv6_src: '2001:db8::/32', tp_dst: '0x50/0xfff0'}}]",
        ] {
            assert!(parse(good).is_ok(), "{good}: {:?}", parse(good).err());
        }
    }

    #[test]
    fn rejects_bad_checks() {
        for bad in [
            "allowed_cookies: [zz]",
            "checks: [{name: Bad}]",
            "checks: [{name: overlap, table: 0}]",
            "checks: [{name: a, table: 0}, {name: a, table: 1}]",
            "checks: [{name: nothing}]",
            "checks: [{name: a, actions_regex: '('}]",
            "checks: [{name: a, priority: 1, priority_min: 0}]",
            "checks: [{name: a, cookie: 'xyz'}]",
            "stale_cookie: {mode: static}",
            "stale_cookie: {grace: 5}",
            "unknown: 1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("").is_ok() || parse("{}").is_ok());
    }

    /// `--config.file` naming a device, a FIFO or a huge file: an error naming the file at
    /// once, never a read until out of memory or a block waiting for a writer.
    /// A value of the wrong kind says what was expected, where: not serde's "data did not
    /// match any variant of untagged enum".
    #[test]
    fn wrong_kinds_of_values_say_what_was_expected() {
        let p = Path::new("c.yml");
        let parse = |t: &str| common::config::parse_yaml::<RawConfig>(p, t).map(|_| ());
        let err = parse("checks:\n- name: a\n  match: {in_port: {x: 1}}\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.yml:3:"), "{err}");
        assert!(err.contains("expected a number or a string"), "{err}");
        let err = parse("checks:\n- name: a\n  table: {x: 1}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("expected a table number, or a list of them"),
            "{err}"
        );
        let err = parse("checks:\n- name: a\n  table: [0, -1]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid value: integer `-1`"), "{err}");
        assert!(parse("checks:\n- name: a\n  table: [0, \"10\"]\n  match: {in_port: 5, nw_dst: \"10.0.0.1\"}\n").is_ok());
        assert!(parse("checks:\n- name: a\n  table: 3\n").is_ok());
    }

    #[test]
    fn only_bounded_regular_files_are_read() {
        let zero = load(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(
            zero.contains("/dev/zero") && zero.contains("a character device, not a regular file"),
            "{zero}"
        );
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo.yml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = load(&fifo).unwrap_err().to_string();
        assert!(
            err.contains("fifo.yml") && err.contains("a FIFO, not a regular file"),
            "{err}"
        );
        // Sparse: no disk used, and never read.
        let big = d.path().join("big.yml");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        let err = load(&big).unwrap_err().to_string();
        assert!(
            err.contains("big.yml") && err.contains("above the limit of 4194304 bytes"),
            "{err}"
        );
        let bad = d.path().join("bad.yml");
        std::fs::write(&bad, b"checks: []\n\xff\n").unwrap();
        let err = load(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.yml: not UTF-8 text"), "{err}");
        let good = d.path().join("good.yml");
        std::fs::write(&good, "allowed_cookies: [\"0x1\"]\n").unwrap();
        assert_eq!(load(&good).unwrap().allowed_cookies, [(1, u64::MAX)]);
    }
}
