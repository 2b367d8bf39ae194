//! Tenant rule sets (`--config.dir`) in the running exporter, on real files in a watched
//! directory while lines flow through the real tailer: isolation (a wide selector sees only the
//! tenant's namespaces, a namespace matcher cannot widen it), a broken file keeping its last
//! good version while the other tenants keep counting, a changed and a removed file, rule and
//! series budgets with their overflow, a ConfigMap-volume symlink swap, and `check-rules` exit
//! codes and output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e_tests::{assert_promtool_clean, sample, samples, sum_samples, wait_for};
use support::*;

const T: Duration = Duration::from_secs(20);

/// A pod tree, a platform file and a rule set directory.
struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
    pods: PathBuf,
    rules: PathBuf,
    platform: PathBuf,
}

impl Sandbox {
    fn new(platform: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let rules = root.join("rules.d");
        std::fs::create_dir_all(&rules).unwrap();
        let platform_path = write_config(&root, platform);
        Self {
            pods: root.join("pods"),
            rules,
            platform: platform_path,
            root,
            _dir: dir,
        }
    }

    /// A container's log file (its directory created).
    fn log(&self, ns: &str, pod: &str) -> PathBuf {
        container_dir(&self.pods, ns, pod, "app").join("0.log")
    }

    fn start(&self, extra: &[&str]) -> Exporter {
        let mut a = args(
            &self.pods,
            &self.root.join("state.json"),
            &self.platform,
            &[&format!("--config.dir={}", self.rules.display())],
        );
        if !extra
            .iter()
            .any(|a| a.starts_with("--config.dir.rescan-interval"))
        {
            // Long: what these tests see, inotify made happen.
            a.push("--config.dir.rescan-interval=1h".to_string());
        }
        a.extend(extra.iter().map(|s| s.to_string()));
        Exporter::start(&self.root, &a)
    }

    fn write(&self, file: &str, text: &str) {
        // Written in place, as a sidecar does (truncate, then write).
        std::fs::write(self.rules.join(file), text).unwrap();
    }
}

/// `log_pattern_matches_total` of a tenant's rule on pod `<ns>/<pod>`, container `app`.
fn key(tenant: &str, rule: &str, ns: &str, pod: &str) -> String {
    let t = if tenant.is_empty() {
        String::new()
    } else {
        format!("tenant=\"{tenant}\",")
    };
    format!(
        "log_pattern_matches_total{{{t}rule=\"{rule}\",namespace=\"{ns}\",pod=\"{pod}\",container=\"app\"}}"
    )
}

fn valid(tenant: &str) -> String {
    format!("log_pattern_ruleset_valid{{tenant=\"{tenant}\",file=\"{tenant}.yml\"}}")
}

/// Samples of a tenant's rule, whatever the source.
fn tenant_series(text: &str, tenant: &str, rule: &str) -> Vec<String> {
    let prefix = format!("log_pattern_matches_total{{tenant=\"{tenant}\",rule=\"{rule}\"");
    samples(text)
        .into_keys()
        .filter(|k| k.starts_with(&prefix))
        .collect()
}

const PLATFORM: &str = r#"start_at: beginning
rules:
  - name: errors
    expr: '{} |= "ERROR"'
tenants:
  team-a:
    namespaces: [team-a, team-a-stage]
"#;

const TEAM_A: &str = r#"rules:
  - name: errors
    expr: '{namespace=~".+"} |= "ERROR"'
"#;

/// team-b's selector names team-a's namespace: the binding (team-b only) is ANDed into it.
const TEAM_B: &str = r#"rules:
  - name: errors
    expr: '{namespace=~"team-a|team-b"} |= "ERROR"'
"#;

const TEAM_A_BROKEN: &str = r#"rules:
  - name: errors
    expr: '{namespace=~".+"} |= "ERROR" | distinct x'
"#;

#[test]
fn isolation_broken_changed_and_removed_files() {
    let sb = Sandbox::new(PLATFORM);
    sb.write("team-a.yml", TEAM_A);
    sb.write("team-b.yml", TEAM_B);
    let pods = [
        ("team-a", "api"),
        ("team-a-stage", "api"),
        ("team-b", "web"),
        ("other", "x"),
    ];
    for (ns, pod) in pods {
        append(&sb.log(ns, pod), &cri("ERROR one"));
    }
    let exp = sb.start(&[]);
    wait_for("every pod's first line", T, || {
        sum_samples(&exp.scrape(), "log_pattern_matches_total{rule=\"errors\"") == 4.0
    });
    let t = exp.scrape();
    // team-a's wide selector sees its two granted namespaces, and nothing else.
    assert_eq!(
        sample(&t, &key("team-a", "errors", "team-a", "api")),
        Some(1.0)
    );
    assert_eq!(
        sample(&t, &key("team-a", "errors", "team-a-stage", "api")),
        Some(1.0)
    );
    assert_eq!(tenant_series(&t, "team-a", "errors").len(), 2, "{t}");
    // team-b named team-a in its selector: it still sees only team-b.
    assert_eq!(
        tenant_series(&t, "team-b", "errors"),
        [key("team-b", "errors", "team-b", "web")]
    );
    assert_eq!(
        sample(&t, &key("team-b", "errors", "team-b", "web")),
        Some(1.0)
    );
    // The platform's rule keeps its full scope and no tenant label.
    assert_eq!(sample(&t, &key("", "errors", "other", "x")), Some(1.0));
    assert_eq!(sample(&t, &valid("team-a")), Some(1.0));
    assert_eq!(sample(&t, &valid("team-b")), Some(1.0));
    assert_eq!(
        sample(&t, "log_pattern_ruleset_rules{tenant=\"team-a\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&t, "log_pattern_ruleset_series{tenant=\"team-a\"}"),
        Some(2.0)
    );
    assert!(
        sample(
            &t,
            "log_pattern_ruleset_last_reload_success_timestamp_seconds{tenant=\"team-a\",file=\"team-a.yml\"}"
        )
        .unwrap()
            > 1.7e9
    );
    assert_eq!(
        sample(
            &t,
            "log_pattern_rule_info{tenant=\"team-b\",rule=\"errors\",alert=\"false\",severity=\"warning\"}"
        ),
        Some(1.0)
    );
    assert_promtool_clean(&t);

    // team-a's file breaks: rejected with its position, its last good version keeps counting,
    // team-b is untouched.
    sb.write("team-a.yml", TEAM_A_BROKEN);
    wait_for("team-a's file rejected", T, || {
        sample(&exp.scrape(), &valid("team-a")) == Some(0.0)
    });
    let logs = exp.logs();
    assert!(
        logs.contains("team-a.yml:3:43: rules[0]: invalid expr")
            && logs.contains("last good version stays in force"),
        "{logs}"
    );
    assert_eq!(
        sample(
            &exp.scrape(),
            "log_pattern_ruleset_reloads_total{tenant=\"team-a\",file=\"team-a.yml\",result=\"failure\"}"
        ),
        Some(1.0)
    );
    for (ns, pod) in pods {
        append(&sb.log(ns, pod), &cri("ERROR two"));
    }
    wait_for("every tenant counting on", T, || {
        let t = exp.scrape();
        sample(&t, &key("team-a", "errors", "team-a", "api")) == Some(2.0)
            && sample(&t, &key("team-a", "errors", "team-a-stage", "api")) == Some(2.0)
            && sample(&t, &key("team-b", "errors", "team-b", "web")) == Some(2.0)
            && sample(&t, &key("", "errors", "other", "x")) == Some(2.0)
    });

    // team-b adds a rule: its existing counter continues, the new rule starts at 0.
    sb.write(
        "team-b.yml",
        &format!("{TEAM_B}  - name: warns\n    expr: '{{}} |= \"WARN\"'\n"),
    );
    wait_for("team-b's new rule", T, || {
        sample(&exp.scrape(), &key("team-b", "warns", "team-b", "web")) == Some(0.0)
    });
    append(&sb.log("team-b", "web"), &cri("WARN and ERROR"));
    wait_for("team-b's rules counting", T, || {
        let t = exp.scrape();
        sample(&t, &key("team-b", "warns", "team-b", "web")) == Some(1.0)
            && sample(&t, &key("team-b", "errors", "team-b", "web")) == Some(3.0)
    });

    // team-a's file fixed with another rule; team-b's file removed: its rules are gone.
    sb.write(
        "team-a.yml",
        "rules:\n  - name: fatal\n    expr: '{} |= \"FATAL\"'\n",
    );
    std::fs::remove_file(sb.rules.join("team-b.yml")).unwrap();
    wait_for("team-a fixed, team-b gone", T, || {
        let t = exp.scrape();
        sample(&t, &valid("team-a")) == Some(1.0)
            && sample(&t, &valid("team-b")).is_none()
            && tenant_series(&t, "team-b", "errors").is_empty()
    });
    append(&sb.log("team-a-stage", "api"), &cri("FATAL ERROR"));
    wait_for("team-a's new rule counting", T, || {
        sample(
            &exp.scrape(),
            &key("team-a", "fatal", "team-a-stage", "api"),
        ) == Some(1.0)
    });
    let t = exp.scrape();
    assert!(tenant_series(&t, "team-a", "errors").is_empty(), "{t}");
    assert!(!t.contains("tenant=\"team-b\""), "{t}");
    assert_eq!(
        sample(&t, &key("", "errors", "team-a-stage", "api")),
        Some(3.0)
    );
    assert_promtool_clean(&t);

    // The platform revokes team-a-stage (SIGHUP): team-a's series there are gone at once.
    write_config(&sb.root, &PLATFORM.replace(", team-a-stage", ""));
    exp.signal("-HUP");
    wait_for("the grant revoked", T, || {
        let t = exp.scrape();
        sample(&t, &key("team-a", "fatal", "team-a-stage", "api")).is_none()
            && sample(&t, &key("team-a", "fatal", "team-a", "api")) == Some(0.0)
    });
    append(&sb.log("team-a-stage", "api"), &cri("FATAL again"));
    append(&sb.log("team-a", "api"), &cri("FATAL here"));
    wait_for("team-a counting in team-a only", T, || {
        sample(&exp.scrape(), &key("team-a", "fatal", "team-a", "api")) == Some(1.0)
    });
    assert_eq!(tenant_series(&exp.scrape(), "team-a", "fatal").len(), 1);
}

#[test]
fn rule_and_series_budgets_overflow() {
    let sb = Sandbox::new(
        "start_at: beginning\ntenants:\n  big:\n    max_rules: 5\n    max_series: 100\n",
    );
    let three = "rules:\n  - {name: r1, expr: '{} |= \"E\"'}\n  - {name: r2, expr: '{} |= \"E\"'}\n  - {name: r3, expr: '{} |= \"E\"'}\n";
    sb.write("small.yml", three);
    sb.write("big.yml", three);
    for p in ["p1", "p2", "p3", "p4"] {
        append(&sb.log("small", p), &cri("E"));
        append(&sb.log("big", p), &cri("E"));
    }
    // Defaults: 2 rules, 3 series per tenant; the platform raises them for `big`.
    let exp = sb.start(&["--tenant.max-rules=2", "--tenant.max-series=3"]);
    wait_for("every line of big", T, || {
        let t = exp.scrape();
        (1..=3).all(|i| {
            sum_samples(
                &t,
                &format!("log_pattern_matches_total{{tenant=\"big\",rule=\"r{i}\""),
            ) == 4.0
        }) && sum_samples(&t, "log_pattern_matches_total{tenant=\"small\"") == 8.0
    });
    let t = exp.scrape();
    let g = |name: &str, tenant: &str| {
        sample(&t, &format!("log_pattern_{name}{{tenant=\"{tenant}\"}}"))
    };
    // Rule budget: small's r3 (past 2, in file order) is left out and reported.
    assert_eq!(g("ruleset_rules", "small"), Some(2.0));
    assert_eq!(g("ruleset_rules_over_budget", "small"), Some(1.0));
    assert_eq!(g("ruleset_rules_limit", "small"), Some(2.0));
    assert!(!t.contains("tenant=\"small\",rule=\"r3\""), "{t}");
    assert_eq!(g("ruleset_rules", "big"), Some(3.0));
    assert_eq!(g("ruleset_rules_over_budget", "big"), Some(0.0));
    assert_eq!(g("ruleset_series_limit", "big"), Some(100.0));
    // Series budget: small's 2 rules x 4 pods want 8 series; 3 exist, the other lines went to
    // the overflow series of their rule and to the tenant's overflow counter.
    assert_eq!(g("ruleset_series", "small"), Some(3.0));
    assert_eq!(g("ruleset_series_limit", "small"), Some(3.0));
    let small: Vec<(String, f64)> = samples(&t)
        .into_iter()
        .filter(|(k, _)| k.starts_with("log_pattern_matches_total{tenant=\"small\""))
        .collect();
    let in_series: f64 = small
        .iter()
        .filter(|(k, _)| !k.contains("overflow"))
        .map(|(_, v)| v)
        .sum();
    let overflowed: f64 = small
        .iter()
        .filter(|(k, _)| k.contains("overflow=\"true\""))
        .map(|(_, v)| v)
        .sum();
    assert_eq!((in_series, overflowed), (3.0, 5.0), "{small:?}");
    assert_eq!(
        sample(
            &t,
            "log_pattern_ruleset_series_overflow_total{tenant=\"small\"}"
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &t,
            "log_pattern_ruleset_series_overflow_total{tenant=\"big\"}"
        ),
        Some(0.0)
    );
    assert_eq!(g("ruleset_series", "big"), Some(12.0));
    // A new pod of small: no new series, its lines overflow.
    append(&sb.log("small", "p5"), &cri("E"));
    wait_for("the new pod's lines in the overflow", T, || {
        sample(
            &exp.scrape(),
            "log_pattern_ruleset_series_overflow_total{tenant=\"small\"}",
        ) == Some(7.0)
    });
    let t = exp.scrape();
    assert_eq!(
        sample(&t, "log_pattern_ruleset_series{tenant=\"small\"}"),
        Some(3.0)
    );
    assert!(
        !t.contains("pod=\"p5\""),
        "no series for p5 beyond the platform's"
    );
    assert_promtool_clean(&t);

    // After SIGKILL every tenant value resumes from the state file, overflow included.
    let mut exp = exp;
    exp.kill();
    let exp = sb.start(&["--tenant.max-rules=2", "--tenant.max-series=3"]);
    let after = exp.scrape();
    let durable = |text: &str| -> Vec<(String, f64)> {
        samples(text)
            .into_iter()
            .filter(|(k, _)| {
                k.starts_with("log_pattern_matches_total{tenant=")
                    || k.starts_with("log_pattern_ruleset_series")
            })
            .collect()
    };
    assert_eq!(durable(&after), durable(&t));
    assert_monotonic(&[t, after]);
}

/// Lines flow into two tenants' pods while team-a's file is changed, broken, fixed and
/// swapped every few hundred milliseconds: rules whose identity never changes count every line
/// exactly once, and none of their counters (nor any other) ever goes down.
#[test]
fn rule_files_churn_while_lines_flow() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let sb = Sandbox::new(PLATFORM);
    let errors = "rules:\n  - name: errors\n    expr: '{} |= \"ERROR\"'\n";
    let versions = [
        format!("{errors}  - name: warns\n    expr: '{{}} |= \"WARN\"'\n"),
        TEAM_A_BROKEN.to_string(),
        format!("{errors}  - name: fatal\n    expr: '{{}} |= \"FATAL\"'\n"),
        "rules: [\n".to_string(),
        errors.to_string(),
    ];
    sb.write("team-a.yml", errors);
    sb.write("team-b.yml", TEAM_B);
    let logs = [
        sb.log("team-a", "api"),
        sb.log("team-a-stage", "api"),
        sb.log("team-b", "web"),
    ];
    for l in &logs {
        append(l, "");
    }
    let exp = sb.start(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let history = scraper(exp.port, Arc::clone(&stop));
    let writer = {
        let logs = logs.clone();
        std::thread::spawn(move || {
            for i in 0..600 {
                for l in &logs {
                    append(l, &cri(&format!("ERROR {i} WARN FATAL")));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let examined = || {
        let t = exp.scrape();
        ["success", "failure"]
            .map(|r| {
                sample(&t, &format!("log_pattern_ruleset_reloads_total{{tenant=\"team-a\",file=\"team-a.yml\",result=\"{r}\"}}"))
                    .unwrap_or(0.0)
            })
            .iter()
            .sum::<f64>()
    };
    for (i, v) in versions.iter().cycle().take(10).enumerate() {
        sb.write("team-a.yml", v);
        // Each version is examined (none merged into the next) while the lines flow.
        wait_for("the version examined", T, || examined() == (i + 2) as f64);
    }
    writer.join().unwrap();
    wait_for("every line counted", T, || {
        let t = exp.scrape();
        sample(&t, &key("team-a", "errors", "team-a", "api")) == Some(600.0)
            && sample(&t, &key("team-a", "errors", "team-a-stage", "api")) == Some(600.0)
            && sample(&t, &key("team-b", "errors", "team-b", "web")) == Some(600.0)
            && sample(&t, &key("", "errors", "team-b", "web")) == Some(600.0)
    });
    stop.store(true, Ordering::Relaxed);
    let history = history.join().unwrap();
    assert!(history.len() > 10, "{} scrapes", history.len());
    // warns and fatal come and go with the versions (a rule removed and added back starts at 0
    // as a new series, as after any reload); every other counter only grows.
    let steady: Vec<String> = history
        .iter()
        .map(|t| {
            t.lines()
                .filter(|l| !l.contains("rule=\"warns\"") && !l.contains("rule=\"fatal\""))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    assert_monotonic(&steady);
    let t = exp.scrape();
    assert_eq!(
        sample(&t, &valid("team-a")),
        Some(1.0),
        "the last version is good"
    );
    assert!(tenant_series(&t, "team-a", "warns").is_empty());
    assert!(tenant_series(&t, "team-a", "fatal").is_empty());
    assert_eq!(
        sample(
            &t,
            "log_pattern_ruleset_reloads_total{tenant=\"team-a\",file=\"team-a.yml\",result=\"failure\"}"
        ),
        Some(4.0),
        "two broken versions, twice each"
    );
}

/// How kubelet updates a ConfigMap volume (and how config-sync sidecars in "atomic" mode
/// write): the files are symlinks through `..data`, which is swapped by a rename.
fn configmap_version(dir: &Path, version: &str, files: &[(&str, &str)]) {
    let v = dir.join(format!("..{version}"));
    std::fs::create_dir(&v).unwrap();
    for (name, text) in files {
        std::fs::write(v.join(name), text).unwrap();
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link).unwrap();
        }
    }
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

#[test]
fn configmap_symlink_swap() {
    let sb = Sandbox::new("start_at: beginning\n");
    configmap_version(
        &sb.rules,
        "v1",
        &[(
            "team-a.yml",
            "rules:\n  - {name: one, expr: '{} |= \"ONE\"'}\n",
        )],
    );
    let log = sb.log("team-a", "api");
    append(&log, &cri("ONE TWO"));
    let exp = sb.start(&[]);
    wait_for("v1 counting", T, || {
        sample(&exp.scrape(), &key("team-a", "one", "team-a", "api")) == Some(1.0)
    });
    configmap_version(
        &sb.rules,
        "v2",
        &[("team-a.yml", "rules:\n  - {name: one, expr: '{} |= \"ONE\"'}\n  - {name: two, expr: '{} |= \"TWO\"'}\n")],
    );
    std::fs::remove_dir_all(sb.rules.join("..v1")).unwrap();
    wait_for("v2 in force", T, || {
        sample(&exp.scrape(), &key("team-a", "two", "team-a", "api")) == Some(0.0)
    });
    // A broken version swapped in: rejected, v2 stays.
    configmap_version(&sb.rules, "v3", &[("team-a.yml", "rules: [")]);
    wait_for("v3 rejected", T, || {
        sample(&exp.scrape(), &valid("team-a")) == Some(0.0)
    });
    append(&log, &cri("ONE TWO"));
    wait_for("v2 still counting", T, || {
        let t = exp.scrape();
        sample(&t, &key("team-a", "one", "team-a", "api")) == Some(2.0)
            && sample(&t, &key("team-a", "two", "team-a", "api")) == Some(1.0)
    });
    assert!(
        exp.logs()
            .contains("team-a.yml:2:1: did not find expected node content"),
        "{}",
        exp.logs()
    );
}

/// A change inotify on the directory cannot see (the file is a symlink to another directory):
/// the periodic rescan finds it.
#[test]
fn periodic_rescan_finds_what_inotify_cannot_see() {
    let sb = Sandbox::new("start_at: beginning\n");
    let elsewhere = sb.root.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let target = elsewhere.join("team-a.yml");
    std::fs::write(&target, "rules:\n  - {name: one, expr: '{} |= \"ONE\"'}\n").unwrap();
    std::os::unix::fs::symlink(&target, sb.rules.join("team-a.yml")).unwrap();
    append(&sb.log("team-a", "api"), &cri("ONE"));
    let exp = sb.start(&["--config.dir.rescan-interval=300ms"]);
    wait_for("the first version", T, || {
        sample(&exp.scrape(), &key("team-a", "one", "team-a", "api")) == Some(1.0)
    });
    std::fs::write(&target, "rules:\n  - {name: two, expr: '{} |= \"ONE\"'}\n").unwrap();
    wait_for("the change found by a rescan", T, || {
        sample(&exp.scrape(), &key("team-a", "two", "team-a", "api")) == Some(0.0)
    });
}

/// The watched directory itself replaced (moved away, a new one made at its path): the watch
/// follows the path, not the old inode.
#[test]
fn replaced_directory_is_watched_again() {
    let sb = Sandbox::new("start_at: beginning\n");
    sb.write(
        "team-a.yml",
        "rules:\n  - {name: one, expr: '{} |= \"ONE\"'}\n",
    );
    append(&sb.log("team-a", "api"), &cri("ONE"));
    let exp = sb.start(&[]);
    wait_for("the first version", T, || {
        sample(&exp.scrape(), &key("team-a", "one", "team-a", "api")) == Some(1.0)
    });
    std::fs::rename(&sb.rules, sb.root.join("old-rules.d")).unwrap();
    std::fs::create_dir(&sb.rules).unwrap();
    sb.write(
        "team-a.yml",
        "rules:\n  - {name: two, expr: '{} |= \"ONE\"'}\n",
    );
    wait_for("the new directory's file", T, || {
        sample(&exp.scrape(), &key("team-a", "two", "team-a", "api")) == Some(0.0)
    });
    // And it is watched: a change there is seen without a rescan.
    sb.write(
        "team-b.yml",
        "rules:\n  - {name: three, expr: '{} |= \"ONE\"'}\n",
    );
    wait_for("a file added to the new directory", T, || {
        sample(&exp.scrape(), &valid("team-b")) == Some(1.0)
    });
    // (Rules count the lines read once they are in force.)
    append(&sb.log("team-b", "api"), &cri("ONE"));
    wait_for("its rule counting", T, || {
        sample(&exp.scrape(), &key("team-b", "three", "team-b", "api")) == Some(1.0)
    });
}

fn check_rules(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_log_pattern_exporter"))
        .arg("check-rules")
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn check_rules_verdicts_and_exit_codes() {
    let sb = Sandbox::new(PLATFORM);
    let dir = sb.rules.to_str().unwrap().to_string();
    sb.write("team-a.yml", TEAM_A);
    sb.write("team-b.yml", TEAM_B);
    let platform = format!("--config.file={}", sb.platform.display());
    let (code, out) = check_rules(&[&platform, &dir]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ok   ")
            && out.contains("team-a.yml: tenant team-a, 1 rules, namespaces team-a,team-a-stage"),
        "{out}"
    );
    assert!(out.contains("2 file(s), 0 invalid"), "{out}");

    sb.write("team-c.yml", TEAM_A_BROKEN);
    sb.write(
        "team-d.yml",
        "rules:\n  - {name: a, expr: '{} |= \"A\"'}\n  - {name: b, expr: '{} |= \"B\"'}\n",
    );
    sb.write("Bad_Name.yml", TEAM_A);
    let (code, out) = check_rules(&[&platform, "--tenant.max-rules=1", &dir]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("team-c.yml:3:43: rules[0]: invalid expr"),
        "{out}"
    );
    assert!(
        out.contains("team-d.yml: tenant team-d has 2 rules, over its budget of 1; left out: b"),
        "{out}"
    );
    assert!(out.contains("Bad_Name.yml: the file name must be"), "{out}");
    assert!(out.contains("5 file(s), 3 invalid"), "{out}");
    // One file alone, as a team's CI checks its own.
    let (code, out) = check_rules(&[sb.rules.join("team-b.yml").to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("namespaces team-b"), "{out}");
    // Usage and I/O errors: 2.
    let (code, out) = check_rules(&[sb.root.join("missing").to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    let (code, _) = check_rules(&[]);
    assert_eq!(code, 2);
    let empty = sb.root.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (code, out) = check_rules(&[empty.to_str().unwrap()]);
    assert_eq!((code, out.contains("no *.yml")), (2, true), "{out}");
}
