//! App-log timestamps end to end: the real binary reads files that a real Python `logging`
//! wrote (its default `asctime` layout, in a UTC+2 local time), with a traceback whose lines
//! carry no stamp, and JSON lines with an epoch `ts`; the event lag is served per source, the
//! lines without a stamp are counted and still matched. util-linux `logger`'s RFC 3164 and
//! RFC 5424 messages parse to the time they were sent. A format that cannot parse is a
//! `--config.check` error with file, line and column.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e_tests::{sample_with, wait_for};
use support::*;

/// A Python program logging as applications do: `logging` with its default date layout
/// (`%Y-%m-%d %H:%M:%S,mmm`), an exception with its traceback, and JSON lines with an epoch.
const PRODUCER: &str = r#"
import json, logging, sys, time
logging.basicConfig(filename=sys.argv[1], level=logging.INFO,
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")
log = logging.getLogger("billing")
for i in range(20):
    log.info("request %d served", i)
try:
    1 / 0
except ZeroDivisionError:
    log.exception("invoice run failed")
with open(sys.argv[2], "w") as f:
    for i in range(10):
        f.write(json.dumps({"ts": time.time(), "level": "info", "msg": "tick %d" % i}) + "\n")
"#;

fn run_producer(text_log: &Path, json_log: &Path) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(PRODUCER)
        .arg(text_log)
        .arg(json_log)
        // Local time two hours east of UTC, without needing tzdata (POSIX TZ syntax).
        .env("TZ", "XXX-2")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn lag_per_source_and_unparsed_stamps_counted_and_matched() {
    let d = tempfile::tempdir().unwrap();
    let pods = d.path().join("pods");
    let app = d.path().join("app");
    let json = d.path().join("json");
    for p in [&pods, &app, &json] {
        std::fs::create_dir_all(p).unwrap();
    }
    run_producer(&app.join("billing.log"), &json.join("ticks.log"));
    let text = std::fs::read_to_string(app.join("billing.log")).unwrap();
    let stamped = text.lines().filter(|l| l.starts_with("20")).count();
    let unstamped = text.lines().count() - stamped;
    assert_eq!(stamped, 21, "{text}");
    assert!(unstamped >= 2, "a traceback follows the error: {text}");
    let app_source = format!("{}/*.log", app.display());
    let json_source = format!("{}/*.log", json.display());
    let config = write_config(
        d.path(),
        &format!(
            "start_at: beginning\nrules:\n- name: zero\n  contains: ZeroDivisionError\n- name: tick\n  contains: tick\nsources:\n- path: {app_source}\n  timestamp:\n    format: \"%Y-%m-%d %H:%M:%S,%f\"\n    timezone: \"+02:00\"\n- path: {json_source}\n  timestamp: {{field: ts, format: unix}}\n"
        ),
    );
    // Lines at least this old when read: a stamp read in the wrong zone would be hours off
    // (or in the future, observed as 0).
    std::thread::sleep(Duration::from_millis(1500));
    let e = Exporter::start(
        d.path(),
        &args(&pods, &d.path().join("state.json"), &config, &[]),
    );
    let lag = |text: &str, source: &str, series: &str, le: Option<&str>| {
        let mut labels = vec![("source", source)];
        labels.extend(le.map(|le| ("le", le)));
        sample_with(
            text,
            &format!("log_pattern_event_lag_seconds_{series}"),
            &labels,
        )
    };
    let mut m = String::new();
    wait_for("every line read", Duration::from_secs(20), || {
        m = e.scrape();
        lag(&m, &app_source, "count", None) == Some(stamped as f64)
            && lag(&m, &json_source, "count", None) == Some(10.0)
    });
    for (source, n) in [(&app_source, stamped), (&json_source, 10)] {
        let n = n as f64;
        assert_eq!(lag(&m, source, "bucket", Some("1.0")), Some(0.0), "{m}");
        assert_eq!(lag(&m, source, "bucket", Some("30.0")), Some(n), "{m}");
        let sum = lag(&m, source, "sum", None).unwrap();
        assert!(sum >= 1.5 * n && sum <= 30.0 * n, "{source}: {sum}");
    }
    assert_eq!(lag(&m, "pods", "count", None), Some(0.0), "{m}");
    let errors = |source: &str| {
        sample_with(
            &m,
            "log_pattern_timestamp_parse_errors_total",
            &[("source", source)],
        )
    };
    assert_eq!(errors(&app_source), Some(unstamped as f64), "{m}");
    assert_eq!(errors(&json_source), Some(0.0), "{m}");
    // The traceback's last line has no stamp, and is matched all the same.
    let matched = |rule: &str| sample_with(&m, "log_pattern_matches_total", &[("rule", rule)]);
    assert_eq!(matched("zero"), Some(1.0), "{m}");
    assert_eq!(matched("tick"), Some(10.0), "{m}");
    e2e_tests::assert_promtool_clean(&m);
}

/// A format that cannot parse and a zone name the tz database does not have, each refused by
/// `--config.check` at the value's line and column; a known zone passes.
#[test]
fn a_timestamp_format_that_cannot_parse_is_a_config_check_error_with_its_position() {
    let cases = [
        (
            "sources:\n- path: /var/log/app/*.log\n  timestamp:\n    regex: 'at=(\\S+)'\n    format: '%Y-%m-%d %H:%M:%S%Q'\n",
            Some((":5:13: ", "%Q is not supported")),
        ),
        (
            "sources:\n- path: /var/log/app/*.log\n  timestamp:\n    format: rfc3164\n    timezone: Europe/Frankfurt\n",
            Some((":5:15: ", "timezone \"Europe/Frankfurt\" is neither")),
        ),
        (
            "sources:\n- path: /var/log/app/*.log\n  timestamp:\n    format: rfc3164\n    timezone: Europe/Berlin\n",
            None,
        ),
    ];
    for (text, want) in cases {
        let d = tempfile::tempdir().unwrap();
        let config = write_config(d.path(), text);
        let out = Command::new(env!("CARGO_BIN_EXE_log_pattern_exporter"))
            .arg(format!("--config.file={}", config.display()))
            .arg("--config.check")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let Some((at, message)) = want else {
            assert!(out.status.success(), "{text}: {err}");
            continue;
        };
        assert!(!out.status.success(), "{err}");
        assert!(err.contains(&format!("{}{at}", config.display())), "{err}");
        assert!(err.contains(message), "{err}");
    }
}

/// Unix seconds now.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// util-linux `logger` writing RFC 3164 and RFC 5424 messages (its local time two hours east
/// of UTC, or Berlin's with its daylight saving time, given as the POSIX rule so that the
/// test needs no tzdata) to a Unix socket of the test: each stamp parses to the time it was
/// sent.
#[test]
fn syslog_stamps_from_util_linux_logger_parse_to_the_time_they_were_sent() {
    use log_pattern_exporter::timestamp::TimestampConfig;
    let d = tempfile::tempdir().unwrap();
    let sock_path = d.path().join("log.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let berlin = "CET-1CEST,M3.5.0,M10.5.0/3";
    let cases = [
        (
            "--rfc3164",
            "XXX-2",
            "{format: rfc3164, timezone: '+02:00'}",
            1.0,
        ),
        (
            "--rfc3164",
            berlin,
            "{format: rfc3164, timezone: Europe/Berlin}",
            1.0,
        ),
        ("--rfc5424", "XXX-2", "{format: rfc5424}", 1e-6),
    ];
    for (flag, tz, config, precision) in cases {
        let cfg: TimestampConfig = serde_yaml_ng::from_str(config).unwrap();
        let before = unix_now();
        let status = Command::new("logger")
            .arg("-u")
            .arg(&sock_path)
            .args([
                flag,
                "-t",
                "billing",
                "-p",
                "user.warning",
                "invoice run failed",
            ])
            .env("TZ", tz)
            .status()
            .expect("logger runs");
        let after = unix_now();
        assert!(status.success());
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).unwrap();
        let line = &buf[..n];
        let text = String::from_utf8_lossy(line);
        assert!(text.ends_with("invoice run failed"), "{text}");
        let got = cfg
            .parse_at(line, after)
            .unwrap_or_else(|| panic!("{flag}: {text}"));
        assert!(
            got >= (before / precision).floor() * precision - 1e-6 && got <= after + 1e-6,
            "{flag}: {text}: {got} not in [{before}, {after}]"
        );
    }
}
