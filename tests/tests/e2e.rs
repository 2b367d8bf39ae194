//! The whole chain, end to end: `scripts/demo.sh` (the script behind `make demo`) started in a
//! temp dir on free loopback ports, with fast timings and a test-only copy of `alerts/rules`
//! whose `for:` durations are divided by 60, and without the demo's faults (`DEMO_FAULTS=0`).
//!
//! Asserts: every scrape target is up and every shipped alerting rule is loaded; no fault alert
//! is pending or firing on the clean node; then a dirty flow added with `ovs-ofctl add-flow`, a
//! "Reconciler error" line and a kernel OOM line appended to pod logs, and a domain whose pin
//! overlaps a pinned domain defined and started with `virsh` each reach the webhook receiver as
//! their alert (name and key labels, and the evidence in the description); every dashboard
//! panel query returns data (`dashboards/test.py --prometheus`); deleting the dirty flow
//! resolves its alert at the webhook; SIGTERM stops the script and every process it started.
//!
//! It prints (and writes to `$CARGO_TARGET_TMPDIR/e2e-alert-latency.txt`) the time from each
//! injection to its notification, beside the time projected for the shipped settings: the
//! PodMonitor's scrape interval (`deploy/kubernetes/base/podmonitor.yaml`), Prometheus' default
//! evaluation interval (asked from a real Prometheus started without one), each rule's `for:`
//! (`alerts/rules`) and the Alertmanager route's `group_wait` (`alerts/alertmanager.yml`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e_tests::{
    bin, free_port, http_get, pid_alive, repo_root, run_ok, signal_pid, url_encode, wait_until,
    ChildGuard,
};
use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

/// Test timings: Prometheus scrape and evaluation, Alertmanager group_wait and group_interval.
const SCRAPE: &str = "1s";
const EVAL: &str = "1s";
const GROUP_WAIT: &str = "1s";
const GROUP_INTERVAL: &str = "1s";
/// `for:` and `keep_firing_for:` of the test copy of the rules are the shipped ones divided by this.
const TIME_SCALE: f64 = 60.0;

// --- durations -------------------------------------------------------------------------------

/// Parses a Prometheus duration ("90s", "5m", "1h30m", "250ms").
fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim().trim_matches(|c| c == '"' || c == '\'');
    if s.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "w" => 7.0 * 86400.0,
            "y" => 365.0 * 86400.0,
            _ => return None,
        };
        total += n * unit;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_secs_f64(total))
}

/// The test copy of a shipped `for:`: divided by [`TIME_SCALE`], whole seconds, at least 1 s
/// (0 stays 0).
fn scaled(d: Duration) -> Duration {
    if d.is_zero() {
        return d;
    }
    Duration::from_secs(((d.as_secs_f64() / TIME_SCALE).ceil() as u64).max(1))
}

/// "45s", "2m", "6m15s", "1.5s".
fn secs(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 {
        return format!("{}s", d.as_secs_f64());
    }
    let (m, s) = (d.as_secs() / 60, d.as_secs() % 60);
    match (m, s) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

// --- rule files --------------------------------------------------------------------------------

/// Alerting rules of the `*.yml` files in `dir`: name -> (`for`, the group's own `interval`).
fn alerting_rules(dir: &Path) -> BTreeMap<String, (Duration, Option<Duration>)> {
    let mut out = BTreeMap::new();
    for path in rule_files(dir) {
        let y: Yaml = serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for group in y["groups"].as_sequence().expect("groups") {
            let interval = group["interval"]
                .as_str()
                .map(|s| parse_duration(s).unwrap());
            for rule in group["rules"].as_sequence().expect("rules") {
                if let Some(name) = rule["alert"].as_str() {
                    let f = rule["for"]
                        .as_str()
                        .map(|s| parse_duration(s).unwrap_or_else(|| panic!("for: {s}")))
                        .unwrap_or_default();
                    out.insert(name.to_string(), (f, interval));
                }
            }
        }
    }
    out
}

fn rule_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    v.sort();
    v
}

/// Copies the rule files of `src` to `dst` with every `for:` and `keep_firing_for:` scaled down
/// and every group `interval:` set to the test's evaluation interval [`EVAL`]. Text
/// substitution, so the copy is the shipped file but for those values.
fn write_scaled_rules(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for path in rule_files(src) {
        let text = std::fs::read_to_string(&path).unwrap();
        let mut out = String::with_capacity(text.len());
        for line in text.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("interval:") {
                let indent = &line[..line.len() - trimmed.len()];
                writeln!(out, "{indent}interval: {EVAL}").unwrap();
                continue;
            }
            let key = ["for:", "keep_firing_for:"]
                .into_iter()
                .find(|k| trimmed.starts_with(k));
            match key {
                Some(k) => {
                    let indent = &line[..line.len() - trimmed.len()];
                    let value = trimmed[k.len()..].split('#').next().unwrap_or("");
                    let d = parse_duration(value)
                        .unwrap_or_else(|| panic!("{}: bad duration {line:?}", path.display()));
                    writeln!(out, "{indent}{k} {}s", scaled(d).as_secs()).unwrap();
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        std::fs::write(dst.join(path.file_name().unwrap()), out).unwrap();
    }
}

// --- the shipped settings for the projection -------------------------------------------------

/// `deploy/kubernetes/base/podmonitor.yaml`: scrape interval per endpoint port name.
fn podmonitor_intervals(repo: &Path) -> BTreeMap<String, Duration> {
    let path = repo.join("deploy/kubernetes/base/podmonitor.yaml");
    let y: Yaml = serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    y["spec"]["podMetricsEndpoints"]
        .as_sequence()
        .expect("podMetricsEndpoints")
        .iter()
        .map(|e| {
            let port = e["port"].as_str().expect("port").to_string();
            let interval = e["interval"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: endpoint {port} has no interval", path.display()));
            (port, parse_duration(interval).unwrap())
        })
        .collect()
}

/// Does Alertmanager matcher `m` (`name="v"`, `name!="v"`, `name=~"re"`, `name!~"re"`) hold?
fn matcher_holds(m: &str, labels: &BTreeMap<String, String>) -> bool {
    let ops = ["=~", "!~", "!=", "="];
    let (i, op) = ops
        .iter()
        .filter_map(|op| m.find(op).map(|i| (i, *op)))
        .min_by_key(|(i, op)| (*i, std::cmp::Reverse(op.len())))
        .unwrap_or_else(|| panic!("unsupported matcher {m:?}"));
    let name = m[..i].trim();
    let value = m[i + op.len()..].trim().trim_matches('"');
    let actual = labels.get(name).map(String::as_str).unwrap_or("");
    let re = || regex::Regex::new(&format!("^(?:{value})$")).unwrap();
    match op {
        "=" => actual == value,
        "!=" => actual != value,
        "=~" => re().is_match(actual),
        _ => !re().is_match(actual),
    }
}

/// `alerts/alertmanager.yml`: (receiver, group_wait, group_interval) of the route an alert with
/// `labels` takes (first matching child, recursively; timings inherited).
fn route_for(repo: &Path, labels: &BTreeMap<String, String>) -> (String, Duration, Duration) {
    let path = repo.join("alerts/alertmanager.yml");
    let y: Yaml = serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut node = &y["route"];
    let get = |n: &Yaml, k: &str| n[k].as_str().map(|s| parse_duration(s).unwrap());
    let mut receiver = node["receiver"]
        .as_str()
        .expect("route.receiver")
        .to_string();
    let mut wait = get(node, "group_wait").expect("route.group_wait");
    let mut interval = get(node, "group_interval").expect("route.group_interval");
    loop {
        let child = node["routes"].as_sequence().and_then(|routes| {
            routes.iter().find(|r| {
                r["matchers"].as_sequence().is_some_and(|ms| {
                    ms.iter()
                        .all(|m| matcher_holds(m.as_str().unwrap_or(""), labels))
                })
            })
        });
        let Some(child) = child else { break };
        node = child;
        if let Some(r) = node["receiver"].as_str() {
            receiver = r.to_string();
        }
        wait = get(node, "group_wait").unwrap_or(wait);
        interval = get(node, "group_interval").unwrap_or(interval);
    }
    (receiver, wait, interval)
}

/// Prometheus' default `evaluation_interval`, as a real Prometheus started with a config that
/// sets none reports it (`/api/v1/status/config`).
fn prometheus_default_evaluation_interval(tmp: &Path) -> Duration {
    let dir = tmp.join("prom-default");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("prometheus.yml"), "scrape_configs: []\n").unwrap();
    let port = free_port();
    let mut child = ChildGuard::new(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus (package prometheus) must be installed"),
    )
    .terminate_on_drop(Duration::from_secs(10));
    let url = format!("http://127.0.0.1:{port}/api/v1/status/config");
    let mut config = None;
    wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
        config = get_json(&url).and_then(|j| j["data"]["yaml"].as_str().map(String::from));
        config.is_some()
    });
    child.stop(Duration::from_secs(10));
    let config = config.expect("the throwaway Prometheus did not answer");
    let y: Yaml = serde_yaml_ng::from_str(&config).unwrap();
    parse_duration(
        y["global"]["evaluation_interval"]
            .as_str()
            .expect("evaluation_interval"),
    )
    .unwrap()
}

// --- processes ---------------------------------------------------------------------------------

/// `scripts/demo.sh` running in the test's temp dir.
struct Demo {
    child: ChildGuard,
    work: PathBuf,
    out: PathBuf,
    env: BTreeMap<String, String>,
}

impl Demo {
    fn start(tmp: &Path, rules: &Path, ports: &Ports) -> Self {
        let repo = repo_root();
        let bin_dir = bin("log_pattern_exporter").parent().unwrap().to_path_buf();
        for b in ["libvirt_exporter", "dirty_flow_exporter"] {
            bin(b);
        }
        let work = tmp.join("work");
        let out = tmp.join("demo.out");
        let child = ChildGuard::spawn(
            Command::new("bash")
                .arg(repo.join("scripts/demo.sh"))
                .arg(&bin_dir)
                .env("DEMO_WORK", &work)
                .env("DEMO_QUIET", "1")
                .env("DEMO_FAULTS", "0")
                .env("DEMO_SCRAPE_INTERVAL", SCRAPE)
                .env("DEMO_EVAL_INTERVAL", EVAL)
                .env("DEMO_GROUP_WAIT", GROUP_WAIT)
                .env("DEMO_GROUP_INTERVAL", GROUP_INTERVAL)
                .env("DEMO_RULES_DIR", rules)
                .env("LOG_PORT", ports.log.to_string())
                .env("LIBVIRT_PORT", ports.libvirt.to_string())
                .env("OVS_PORT", ports.ovs.to_string())
                .env("PROM_PORT", ports.prom.to_string())
                .env("AM_PORT", ports.am.to_string())
                .env("HOOK_PORT", ports.hook.to_string())
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&out).unwrap())
                .stderr(std::fs::File::create(tmp.join("demo.err")).unwrap()),
        );
        let mut demo = Self {
            child,
            work,
            out,
            env: BTreeMap::new(),
        };
        let ready = demo.work.join("ready");
        let mut exited = None;
        wait_until(Duration::from_secs(180), Duration::from_millis(100), || {
            exited = demo.child.try_wait();
            ready.exists() || exited.is_some()
        });
        assert!(
            ready.exists(),
            "the demo did not become ready (exit {exited:?}):\n{}",
            demo.logs()
        );
        let env = std::fs::read_to_string(demo.work.join("demo.env")).unwrap();
        demo.env = env
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        demo
    }

    fn var(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("demo.env has no {key}"))
    }

    /// "name pid" lines of the processes the script started, and the OVS daemons' pidfiles.
    fn pids(&self) -> Vec<(String, u32)> {
        let mut v: Vec<(String, u32)> = std::fs::read_to_string(self.work.join("demo.pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.rsplit_once(' '))
            .filter_map(|(n, p)| Some((n.to_string(), p.parse().ok()?)))
            .collect();
        for d in ["ovsdb-server", "ovs-vswitchd"] {
            if let Some(pid) = std::fs::read_to_string(self.work.join(format!("ovs/{d}.pid")))
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                v.push((d.to_string(), pid));
            }
        }
        v
    }

    /// The script's output and the tail of every log in the work dir (for failure messages).
    fn logs(&self) -> String {
        let mut s = String::new();
        let mut files = vec![self.out.clone(), self.out.with_file_name("demo.err")];
        for dir in [self.work.clone(), self.work.join("libvirt")] {
            if let Ok(rd) = std::fs::read_dir(&dir) {
                let mut logs: Vec<PathBuf> = rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.extension()
                            .is_some_and(|e| e == "log" || e == "out" || e == "jsonl")
                    })
                    .collect();
                logs.sort();
                files.extend(logs);
            }
        }
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            writeln!(s, "--- {}\n{}", f.display(), tail.join("\n")).unwrap();
        }
        s
    }

    /// SIGTERM to the script; its trap stops what it started. Returns its exit status.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        self.child.stop(Duration::from_secs(30))
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let pids = self.pids();
        self.stop();
        // Whatever the script left running (it was killed, or its trap failed): by PID.
        for (_, pid) in &pids {
            if pid_alive(*pid) {
                let _ = signal_pid(*pid, "KILL");
            }
        }
    }
}

struct Ports {
    log: u16,
    libvirt: u16,
    ovs: u16,
    prom: u16,
    am: u16,
    hook: u16,
}

impl Ports {
    fn free() -> Self {
        let mut seen = std::collections::BTreeSet::new();
        let mut next = || loop {
            let p = free_port();
            if seen.insert(p) {
                return p;
            }
        };
        Self {
            log: next(),
            libvirt: next(),
            ovs: next(),
            prom: next(),
            am: next(),
            hook: next(),
        }
    }
}

// --- HTTP and Prometheus -----------------------------------------------------------------------

fn get_json(url: &str) -> Option<Json> {
    match http_get(url, &[]) {
        Ok((200, _, body)) => serde_json::from_slice(&body).ok(),
        _ => None,
    }
}

/// The result vector of an instant query (empty on any error).
fn query(prom: &str, q: &str) -> Vec<Json> {
    get_json(&format!("{prom}/api/v1/query?query={}", url_encode(q)))
        .and_then(|j| j["data"]["result"].as_array().cloned())
        .unwrap_or_default()
}

/// The value of a one-element instant query result.
fn scalar(prom: &str, q: &str) -> Option<f64> {
    let r = query(prom, q);
    match r.as_slice() {
        [one] => one["value"][1].as_str().and_then(|v| v.parse().ok()),
        _ => None,
    }
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A CRI log line with the current UTC time (`date`, to avoid a time crate).
fn cri_line(stream: &str, msg: &str) -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.%NZ"])
        .output()
        .unwrap();
    let ts = String::from_utf8_lossy(&out.stdout).trim().to_string();
    format!("{ts} {stream} F {msg}\n")
}

fn append(path: &str, line: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    f.write_all(line.as_bytes()).unwrap();
}

// --- the faults ----------------------------------------------------------------------------------

/// One injected fault and the notification it must produce.
struct Fault {
    what: &'static str,
    alert: &'static str,
    /// Labels the notified alert must carry.
    labels: Vec<(&'static str, String)>,
    /// Text its description must contain (the evidence the rule's template joins in).
    description_has: Option<String>,
    /// The PodMonitor endpoint (port name) of the exporter that sees it.
    podmonitor_port: &'static str,
    injected_at: f64,
    /// (received at, receiver, labels, description) of the first matching notification.
    notified: Option<(f64, String, BTreeMap<String, String>, String)>,
}

/// Finds, in the webhook's notifications file, the first alert in `status` ("firing",
/// "resolved") matching `fault`.
fn find_notification(
    path: &Path,
    fault: &Fault,
    status: &str,
) -> Option<(f64, String, BTreeMap<String, String>, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    for line in text.lines() {
        let Ok(msg) = serde_json::from_str::<Json>(line) else {
            continue;
        };
        for a in msg["alerts"].as_array().into_iter().flatten() {
            let labels: BTreeMap<String, String> = a["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect();
            let matches = a["status"] == status
                && labels.get("alertname").map(String::as_str) == Some(fault.alert)
                && fault.labels.iter().all(|(k, v)| labels.get(*k) == Some(v));
            if matches {
                return Some((
                    msg["receivedUnix"].as_f64()?,
                    msg["receiver"].as_str().unwrap_or("").to_string(),
                    labels,
                    a["annotations"]["description"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                ));
            }
        }
    }
    None
}

fn names_in_notifications(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut names = Vec::new();
    for line in text.lines() {
        if let Ok(msg) = serde_json::from_str::<Json>(line) {
            for a in msg["alerts"].as_array().into_iter().flatten() {
                if let Some(n) = a["labels"]["alertname"].as_str() {
                    names.push(n.to_string());
                }
            }
        }
    }
    names
}

// --- tests -------------------------------------------------------------------------------------

#[test]
fn durations_parse_and_scale() {
    assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
    assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
    assert_eq!(parse_duration("'30s'"), Some(Duration::from_secs(30)));
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("5"), None);
    assert_eq!(parse_duration("m"), None);
    assert_eq!(parse_duration("5x"), None);
    assert_eq!(scaled(Duration::from_secs(300)), Duration::from_secs(5));
    assert_eq!(scaled(Duration::from_secs(30)), Duration::from_secs(1));
    assert_eq!(scaled(Duration::ZERO), Duration::ZERO);
    assert_eq!(secs(Duration::from_secs(375)), "6m15s");
    assert_eq!(secs(Duration::from_secs(120)), "2m");
    assert_eq!(secs(Duration::from_millis(1500)), "1.5s");
    assert_eq!(secs(Duration::ZERO), "0s");
}

/// The fast lane's promise, from the shipped files alone: scrape (PodMonitor) + the rule group's
/// own evaluation interval + `for` + the route's group_wait (group_interval for a new alert of a
/// group that has already notified) is at most 45 s for the alerts a bad flow or log line raises.
#[test]
fn fast_lane_alerts_reach_a_receiver_within_45s_at_shipped_settings() {
    let repo = repo_root();
    let rules = alerting_rules(&repo.join("alerts/rules"));
    let scrape = podmonitor_intervals(&repo);
    for (alert, port, severity) in [
        ("OvsDirtyFlows", "dirty-flow", "critical"),
        ("LogPatternMatched", "log-pattern", "warning"),
        ("LogPatternMatched", "log-pattern", "critical"),
        ("OomKillerInvoked", "log-pattern", "warning"),
    ] {
        let (for_, group_interval) = rules[alert];
        let eval = group_interval.unwrap_or_else(|| panic!("{alert}: its group has no interval"));
        let labels = BTreeMap::from([
            ("alertname".to_string(), alert.to_string()),
            ("severity".to_string(), severity.to_string()),
        ]);
        let (receiver, group_wait, group_interval) = route_for(&repo, &labels);
        for (wait, what) in [
            (group_wait, "group_wait"),
            (group_interval, "group_interval"),
        ] {
            let worst = scrape[port] + eval + for_ + wait;
            assert!(
                worst <= Duration::from_secs(45),
                "{alert} ({severity}): worst case {} (scrape {}, eval {}, for {}, {what} {})",
                secs(worst),
                secs(scrape[port]),
                secs(eval),
                secs(for_),
                secs(wait)
            );
        }
        let expected = if severity == "critical" {
            "pager"
        } else {
            "chat"
        };
        assert_eq!(receiver, expected, "{alert} ({severity})");
    }
}

#[test]
fn route_selection_follows_the_shipped_alertmanager_config() {
    let repo = repo_root();
    let labels = |sev: &str| BTreeMap::from([("severity".to_string(), sev.to_string())]);
    let (critical, _, _) = route_for(&repo, &labels("critical"));
    let (warning, _, _) = route_for(&repo, &labels("warning"));
    let (info, _, info_interval) = route_for(&repo, &labels("info"));
    assert_eq!(critical, "pager");
    assert_eq!(warning, "chat");
    assert_eq!(info, "mail");
    assert_eq!(info_interval, Duration::from_secs(30 * 60));
    assert!(matcher_holds(
        r#"alertname=~"Libvirt.*""#,
        &BTreeMap::from([("alertname".to_string(), "LibvirtDown".to_string())])
    ));
    assert!(!matcher_holds(r#"rack=~".+""#, &BTreeMap::new()));
}

#[test]
fn injected_faults_reach_the_webhook_and_every_panel_has_data() {
    let repo = repo_root();
    let tmp = tempfile::tempdir().unwrap();

    // Test-only rules: the shipped ones with `for:` scaled down.
    let rules = tmp.path().join("rules");
    write_scaled_rules(&repo.join("alerts/rules"), &rules);
    let shipped_rules = alerting_rules(&repo.join("alerts/rules"));
    let test_rules = alerting_rules(&rules);
    assert_eq!(
        shipped_rules.keys().collect::<Vec<_>>(),
        test_rules.keys().collect::<Vec<_>>()
    );
    for (name, (f, _)) in &shipped_rules {
        assert_eq!(test_rules[name].0, scaled(*f), "{name}");
    }

    let ports = Ports::free();
    let mut demo = Demo::start(tmp.path(), &rules, &ports);
    let prom = demo.var("PROMETHEUS").to_string();
    let notifications = PathBuf::from(demo.var("NOTIFICATIONS"));

    // All targets up.
    let mut targets = Json::Null;
    let all_up = wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
        targets = get_json(&format!("{prom}/api/v1/targets")).unwrap_or(Json::Null);
        let active = targets["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        active.len() == 3 && active.iter().all(|t| t["health"] == "up")
    });
    assert!(all_up, "targets not all up: {targets:#}\n{}", demo.logs());
    let mut jobs: Vec<String> = targets["data"]["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["labels"]["job"].as_str().unwrap().to_string())
        .collect();
    jobs.sort();
    assert_eq!(jobs, ["dirty_flow", "libvirt", "log_pattern"]);

    // Every shipped alerting rule is loaded (the test copy parses).
    let loaded = get_json(&format!("{prom}/api/v1/rules?type=alert")).expect("rules API");
    let mut names: Vec<String> = loaded["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, shipped_rules.keys().cloned().collect::<Vec<_>>());

    // The clean node: the exporters report no fault, and no fault alert is pending or firing.
    let clean = wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
        scalar(&prom, "count(libvirt_domain_pinning_info)").is_some_and(|n| n > 0.0)
            && scalar(&prom, "node:libvirt_pinning_broken_cpus:sum") == Some(0.0)
            && scalar(&prom, "count(ovs_dirty_flows{bridge=\"br-int\"})").is_some_and(|n| n > 0.0)
            && scalar(
                &prom,
                r#"count(log_pattern_matches_total{rule="reconciler_error",namespace="operators"})"#,
            ) == Some(1.0)
            && scalar(&prom, "count(topology:node_rack:info{rack!=\"\"})") == Some(1.0)
    });
    assert!(
        clean,
        "the exporters' series did not appear\n{}",
        demo.logs()
    );
    // Pinning findings exist only while non-zero.
    assert!(query(&prom, "libvirt_domain_pinning_overlap_cpus").is_empty());
    assert_eq!(scalar(&prom, "sum(ovs_dirty_flows)"), Some(0.0));
    assert_eq!(
        scalar(
            &prom,
            r#"sum(log_pattern_matches_total{rule=~"reconciler_error|kernel_oom_killer_all"})"#
        ),
        Some(0.0)
    );
    // A few evaluations on the clean series.
    std::thread::sleep(parse_duration(EVAL).unwrap() * 3);
    let fault_alerts = [
        "OvsDirtyFlows",
        "LogPatternMatched",
        "OomKillerInvoked",
        "LibvirtPinningSharedHostCpu",
    ];
    let active = get_json(&format!("{prom}/api/v1/alerts")).expect("alerts API");
    for a in active["data"]["alerts"].as_array().unwrap() {
        let name = a["labels"]["alertname"].as_str().unwrap_or("");
        assert!(
            !fault_alerts.contains(&name),
            "{name} is {} on the clean node: {a}",
            a["state"]
        );
    }
    let before = names_in_notifications(&notifications);
    assert!(
        !before.iter().any(|n| fault_alerts.contains(&n.as_str())),
        "fault notifications before any injection: {before:?}"
    );

    // Inject the faults.
    let node = demo.var("NODE").to_string();
    let rack = demo.var("RACK").to_string();
    let fault_domain = demo.var("FAULT_DOMAIN").to_string();
    let mut faults = vec![
        Fault {
            what: "ovs-ofctl add-flow (output to a missing port)",
            alert: "OvsDirtyFlows",
            labels: vec![
                ("bridge", "br-int".into()),
                ("check", "missing_port".into()),
                ("node", node.clone()),
                ("rack", rack.clone()),
                ("severity", "critical".into()),
            ],
            description_has: Some("output:99".into()),
            podmonitor_port: "dirty-flow",
            injected_at: 0.0,
            notified: None,
        },
        Fault {
            what: "\"Reconciler error\" appended to a pod log",
            alert: "LogPatternMatched",
            labels: vec![
                ("rule", "reconciler_error".into()),
                ("namespace", "operators".into()),
                ("container", "manager".into()),
                ("node", node.clone()),
                ("rack", rack.clone()),
                ("severity", "warning".into()),
            ],
            description_has: None,
            podmonitor_port: "log-pattern",
            injected_at: 0.0,
            notified: None,
        },
        Fault {
            what: "kernel OOM kill appended to a pod log",
            alert: "OomKillerInvoked",
            labels: vec![
                ("process", "e2e-victim".into()),
                ("node", node.clone()),
                ("rack", rack.clone()),
            ],
            description_has: Some("e2e-victim".into()),
            podmonitor_port: "log-pattern",
            injected_at: 0.0,
            notified: None,
        },
        Fault {
            what: "virsh define+start, pin overlapping a pinned domain",
            alert: "LibvirtPinningSharedHostCpu",
            labels: vec![
                ("domain", fault_domain.clone()),
                ("node", node.clone()),
                ("rack", rack.clone()),
                ("severity", "critical".into()),
            ],
            description_has: Some(demo.var("FAULT_PARTNER").to_string()),
            podmonitor_port: "libvirt",
            injected_at: 0.0,
            notified: None,
        },
    ];
    faults[0].injected_at = now_unix();
    run_ok(
        Command::new("ovs-ofctl")
            .arg("add-flow")
            .arg(demo.var("OVS_MGMT"))
            .arg(demo.var("DIRTY_FLOW")),
    );
    faults[1].injected_at = now_unix();
    append(
        demo.var("POD_LOG_OPERATORS"),
        &cri_line(
            "stderr",
            r#"level=error msg="Reconciler error" controller=e2e error="injected by the end-to-end test""#,
        ),
    );
    faults[2].injected_at = now_unix();
    append(
        demo.var("POD_LOG_NOVA"),
        &cri_line("stderr", "Out of memory: Killed process 31337 (e2e-victim)"),
    );
    faults[3].injected_at = now_unix();
    let uri = demo.var("LIBVIRT_URI").to_string();
    run_ok(
        Command::new("virsh")
            .args(["-q", "-c", &uri, "define"])
            .arg(demo.var("FAULT_DOMAIN_XML")),
    );
    run_ok(Command::new("virsh").args(["-q", "-c", &uri, "start", &fault_domain]));

    // Each reaches the webhook.
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline && faults.iter().any(|f| f.notified.is_none()) {
        for f in faults.iter_mut().filter(|f| f.notified.is_none()) {
            f.notified = find_notification(&notifications, f, "firing");
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // Every dashboard panel query returns data (the node now has every demo fault).
    let dashboards = Command::new("python3")
        .arg(repo.join("dashboards/test.py"))
        .arg("--prometheus")
        .arg(&prom)
        .output()
        .expect("python3");

    // The table: measured here, and projected for the shipped settings.
    let default_eval = prometheus_default_evaluation_interval(tmp.path());
    let scrape_intervals = podmonitor_intervals(&repo);
    let (test_scrape, test_eval) = (
        parse_duration(SCRAPE).unwrap(),
        parse_duration(EVAL).unwrap(),
    );
    let mut table = String::new();
    writeln!(
        table,
        "\nInjection -> notification at the webhook receiver.\n\
         measured: this run (scrape {SCRAPE}, evaluation {EVAL}, group_wait {GROUP_WAIT}, `for` / \
         {TIME_SCALE}); model: the worst case of the same settings.\n\
         shipped: scrape from deploy/kubernetes/base/podmonitor.yaml, evaluation = Prometheus' \
         default ({}), `for` from alerts/rules, group_wait of the alert's route in \
         alerts/alertmanager.yml.\n\
         typical = half of each interval waited; worst = all of it (scrape + evaluation + `for` \
         rounded up to evaluations + group_wait); later alert = worst for a new alert of an \
         alert group that has already notified (group_interval instead of group_wait).",
        secs(default_eval)
    )
    .unwrap();
    writeln!(
        table,
        "{:<52} {:<28} {:>8} {:>6} | {:>7} {:>5} {:>4} {:>10} {:>8} {:>6} {:>11}",
        "injection",
        "alert",
        "measured",
        "model",
        "scrape",
        "eval",
        "for",
        "group_wait",
        "typical",
        "worst",
        "later alert"
    )
    .unwrap();
    for f in &faults {
        let (shipped_for, group_interval_override) = shipped_rules[f.alert];
        let test_for = test_rules[f.alert].0;
        let scrape = scrape_intervals[f.podmonitor_port];
        let eval = group_interval_override.unwrap_or(default_eval);
        let for_rounded = |for_: Duration, eval: Duration| {
            eval * (for_.as_secs_f64() / eval.as_secs_f64()).ceil() as u32
        };
        let labels: BTreeMap<String, String> = match &f.notified {
            Some((_, _, l, _)) => l.clone(),
            None => f
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        };
        let (_, group_wait, group_interval) = route_for(&repo, &labels);
        let typical = scrape / 2 + eval / 2 + for_rounded(shipped_for, eval) + group_wait;
        let worst = scrape + eval + for_rounded(shipped_for, eval) + group_wait;
        let later = scrape + eval + for_rounded(shipped_for, eval) + group_interval;
        let test_bound = test_scrape
            + test_eval
            + for_rounded(test_for, test_eval)
            + parse_duration(GROUP_WAIT).unwrap();
        let measured = match &f.notified {
            Some((at, _, _, _)) => format!("{:.1}s", at - f.injected_at),
            None => "NONE".to_string(),
        };
        writeln!(
            table,
            "{:<52} {:<28} {:>8} {:>6} | {:>7} {:>5} {:>4} {:>10} {:>8} {:>6} {:>11}",
            f.what,
            f.alert,
            measured,
            secs(test_bound),
            secs(scrape),
            secs(eval),
            secs(shipped_for),
            secs(group_wait),
            secs(typical),
            secs(worst),
            secs(later)
        )
        .unwrap();
    }
    println!("{table}");
    let mut received = names_in_notifications(&notifications);
    received.sort();
    received.dedup();
    println!("alerts notified in this run: {}", received.join(", "));
    let report = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-alert-latency.txt");
    let _ = std::fs::write(&report, &table);
    println!("(also in {})", report.display());

    // The assertions on what arrived.
    for f in &faults {
        let Some((_, receiver, labels, description)) = &f.notified else {
            panic!(
                "no {} notification for: {} (labels {:?})\nreceived: {:?}\n{}",
                f.alert,
                f.what,
                f.labels,
                names_in_notifications(&notifications),
                demo.logs()
            );
        };
        let (expected_receiver, _, _) = route_for(&repo, labels);
        assert_eq!(receiver, &expected_receiver, "{}", f.alert);
        if let Some(text) = &f.description_has {
            assert!(
                description.contains(text.as_str()),
                "{}: description lacks {text:?}: {description}",
                f.alert
            );
        }
    }
    assert!(
        dashboards.status.success(),
        "dashboards/test.py --prometheus failed:\n{}{}",
        String::from_utf8_lossy(&dashboards.stdout),
        String::from_utf8_lossy(&dashboards.stderr)
    );
    println!("{}", String::from_utf8_lossy(&dashboards.stdout).trim());

    // Repaired: the dirty flow deleted, its alert is resolved at the webhook (the pager route
    // sends resolved notifications).
    let removed_at = now_unix();
    let dirty_match = demo
        .var("DIRTY_FLOW")
        .split(",actions=")
        .next()
        .unwrap()
        .replace("cookie=0x1,", "");
    run_ok(
        Command::new("ovs-ofctl")
            .args(["--strict", "del-flows"])
            .arg(demo.var("OVS_MGMT"))
            .arg(&dirty_match),
    );
    let mut resolved = None;
    wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
        resolved = find_notification(&notifications, &faults[0], "resolved");
        resolved.is_some()
    });
    let Some((at, receiver, _, _)) = resolved else {
        panic!(
            "no resolved OvsDirtyFlows after del-flows {dirty_match}\n{}",
            demo.logs()
        );
    };
    assert_eq!(receiver, "pager");
    println!(
        "dirty flow deleted -> OvsDirtyFlows resolved at the webhook: {:.1}s",
        at - removed_at
    );

    // SIGTERM stops the script and everything it started, also when a second SIGTERM comes
    // while it stops them (as from `timeout make demo`: make passes it on, timeout sends it to
    // the whole group).
    let pids = demo.pids();
    assert!(pids.len() >= 11, "{pids:?}");
    demo.child.signal("TERM").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(5), || pids
            .iter()
            .any(|(_, p)| !pid_alive(*p))),
        "nothing stopped within 10 s of SIGTERM"
    );
    let _ = demo.child.signal("TERM");
    let status = demo
        .stop()
        .expect("demo.sh did not exit within 30 s of SIGTERM");
    assert_eq!(status.code(), Some(143), "demo.sh exit: {status:?}");
    let left: Vec<_> = pids.iter().filter(|(_, p)| pid_alive(*p)).collect();
    assert!(
        left.is_empty(),
        "still running after the demo stopped: {left:?}"
    );
}
