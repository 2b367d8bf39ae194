//! The binary refuses bad flag values at start, with an error naming the flag and its range
//! (no daemon needed: it exits before binding).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the exporter with `args`; returns its exit code and stderr. Should it start serving
/// instead of exiting, it is killed (by its PID) after 10 s and the test fails.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dirty_flow_exporter"))
        .args(args)
        .arg("--web.listen-address=127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the exporter");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the exporter accepted {args:?} and kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    (status.code(), err)
}

#[test]
fn parser_nice_out_of_range_is_refused_at_start() {
    for bad in ["20", "-1", "ten"] {
        let (code, err) = run(&[&format!("--ovs.parser-nice={bad}")]);
        assert_eq!(code, Some(2), "{bad}: {err}");
        assert!(
            err.contains("--ovs.parser-nice") && err.contains("from 0") && err.contains("to 19"),
            "{bad}: {err}"
        );
    }
}
