//! Parser throughput for `bench/bench.sh`: parses every line of a dump file (info, match fields
//! expanded to value/mask constraints, actions tokenized), repeating until a second has passed,
//! and prints `lines wall_seconds cpu_seconds`. `parse_bench FILE PASSES` parses the file
//! exactly PASSES times instead (a fixed amount of work, e.g. to count instructions with
//! `valgrind --tool=callgrind`, as a busy machine makes timings noisy). CPU time is the process's user + system time
//! (`getrusage`) over the parse loop only (not the file read), so that a busy machine, which
//! stretches the wall time, changes it little.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Instant;

use dirty_flow_exporter::parse::fields::expand_match;
use dirty_flow_exporter::parse::{parse_line, Line};

/// User + system CPU seconds of this process so far.
#[allow(unsafe_code)]
fn cpu_seconds() -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` into the pointer it is given; RUSAGE_SELF is valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    // SAFETY: zero-initialised, then filled by the successful call above.
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: parse_bench FILE [PASSES]");
    let passes: Option<u64> = args.next().map(|p| p.parse().expect("PASSES: a number"));
    let text = std::fs::read_to_string(&path).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    let mut fields = Vec::new();
    let (mut n, mut errors, mut actions) = (0u64, 0u64, 0u64);
    let cpu_start = cpu_seconds();
    let start = Instant::now();
    let mut done = 0u64;
    while passes.map_or(start.elapsed().as_secs_f64() < 1.0, |p| done < p) {
        done += 1;
        for l in &lines {
            match parse_line(l) {
                Ok(Line::Flow(f)) => {
                    expand_match(f.match_text, &mut fields);
                    actions += f.actions().count() as u64;
                }
                Ok(_) => {}
                Err(_) => errors += 1,
            }
            n += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;
    eprintln!("parsed {n} lines, {errors} errors, {actions} actions");
    println!("{n} {secs:.4} {cpu:.4}");
}
