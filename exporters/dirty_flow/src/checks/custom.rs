//! User-defined checks from the config: every given condition on table, priority, cookie (with
//! mask), match fields and actions must hold for a flow to count.

use crate::config::CustomCheck;
use crate::parse::fields::FieldMatch;
use crate::parse::{Flow, Table};

/// Whether the cheap conditions (table, priority, cookie, regexes) hold.
fn prefilter(c: &CustomCheck, flow: &Flow<'_>) -> bool {
    if let Some(tables) = &c.tables {
        let ok = tables.iter().any(|t| match flow.table {
            Table::Id(n) => t.parse::<u8>().ok() == Some(n),
            Table::Name(s) => t == s,
        });
        if !ok {
            return false;
        }
    }
    if flow.priority < c.priority_min || flow.priority > c.priority_max {
        return false;
    }
    if let Some((v, m)) = c.cookie {
        if flow.cookie & m != v {
            return false;
        }
    }
    if let Some(r) = &c.match_regex {
        if !r.is_match(flow.match_text) {
            return false;
        }
    }
    if let Some(r) = &c.actions_regex {
        if !r.is_match(flow.actions_text) {
            return false;
        }
    }
    true
}

/// Whether the check needs the flow's expanded match fields.
pub fn needs_fields(c: &CustomCheck) -> bool {
    !c.match_fields.is_empty() || !c.match_absent.is_empty()
}

/// Evaluates `c` on `flow`; `fields` are the flow's expanded match (see
/// [`crate::parse::fields::expand_match`]), computed by the caller only when [`needs_fields`].
pub fn matches(c: &CustomCheck, flow: &Flow<'_>, fields: &[FieldMatch<'_>]) -> bool {
    if !prefilter(c, flow) {
        return false;
    }
    c.match_fields
        .iter()
        .all(|cond| fields.iter().any(|f| cond.holds_for(f)))
        && c.match_absent
            .iter()
            .all(|a| fields.iter().all(|f| f.field != a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{compile, RawConfig};
    use crate::parse::fields::expand_match;
    use crate::parse::parse_flow;

    fn check(yaml: &str) -> CustomCheck {
        let raw: RawConfig = common::config::parse_yaml(std::path::Path::new("t"), yaml).unwrap();
        compile(raw).unwrap().checks.remove(0)
    }

    fn eval(c: &CustomCheck, line: &str) -> bool {
        let f = parse_flow(line).unwrap();
        let mut fields = Vec::new();
        expand_match(f.match_text, &mut fields);
        matches(c, &f, &fields)
    }

    #[test]
    fn conditions() {
        let c = check("checks: [{name: a, table: [10], priority_min: 40, cookie: '0xab0/0xff0', match: {nw_src: '10.0.0.0/8', in_port: 1}, actions_regex: 'output:2'}]");
        let good = " cookie=0xabc, duration=1s, table=10, priority=50,tcp,in_port=1,nw_src=10.0.0.0/24,tp_dst=80 actions=output:2";
        assert!(eval(&c, good));
        assert!(!eval(&c, &good.replace("table=10", "table=11")));
        assert!(!eval(&c, &good.replace("priority=50", "priority=30")));
        assert!(!eval(&c, &good.replace("0xabc", "0xbbc")));
        assert!(!eval(&c, &good.replace("10.0.0.0/24", "11.0.0.0/24")));
        assert!(!eval(
            &c,
            &good.replace("nw_src=10.0.0.0/24", "nw_src=0.0.0.0/1")
        ));
        assert!(!eval(&c, &good.replace("in_port=1,", "")));
        assert!(!eval(&c, &good.replace("output:2", "output:3")));

        let c = check("checks: [{name: b, match_absent: [eth_type], actions_regex: NORMAL}]");
        assert!(eval(&c, " priority=0 actions=NORMAL"));
        assert!(!eval(&c, " priority=0,ip actions=NORMAL"));

        let c = check("checks: [{name: c, table: 20, match: {ct_state: '+trk'}}]");
        assert!(eval(
            &c,
            " table=20, priority=5,ct_state=+est+trk,ip actions=drop"
        ));
        assert!(!eval(
            &c,
            " table=20, priority=5,ct_state=-trk,ip actions=drop"
        ));
    }
}
