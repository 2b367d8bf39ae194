//! The kernel's view of vCPU affinity: `Cpus_allowed_list` of QEMU's vCPU threads in procfs.
//!
//! libvirt starts QEMU with `-name guest=<domain>,debug-threads=on`, so each vCPU thread is named
//! `CPU <n>/KVM` (or `/TCG` under software emulation). Reading `<procfs>/<pid>/task/*/status`
//! gives the affinity the scheduler really applies, independent of what libvirt believes. The
//! procfs root is a flag (`--path.procfs`) so the exporter can run in a container with the host's
//! /proc mounted elsewhere.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::Path;

use crate::cpuset::{parse_cpuset, CpuSet};
use crate::error::ParseError;

/// `Cpus_allowed_list` from a `/proc/<pid>/status` text.
pub fn parse_cpus_allowed_list(status: &str) -> Result<CpuSet, ParseError> {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .ok_or_else(|| ParseError::invalid("status", "without Cpus_allowed_list"))?;
    parse_cpuset(line.trim())
}

/// The vCPU number of a QEMU thread name (`CPU 3/KVM` -> 3).
pub fn parse_vcpu_thread_name(comm: &str) -> Option<u32> {
    let rest = comm.trim().strip_prefix("CPU ")?;
    let (n, accel) = rest.split_once('/')?;
    if accel.is_empty() {
        return None;
    }
    n.parse().ok()
}

/// The guest name in a QEMU command line (NUL-separated), from `-name guest=NAME,...`.
pub fn parse_qemu_guest_name(cmdline: &[u8]) -> Option<String> {
    let mut args = cmdline.split(|b| *b == 0);
    while let Some(a) = args.next() {
        if a == b"-name" {
            let v = String::from_utf8_lossy(args.next()?).into_owned();
            // `guest=NAME,debug-threads=on`, or just `NAME`; `,,` escapes a comma.
            let v = v.strip_prefix("guest=").unwrap_or(&v).to_string();
            let mut name = String::new();
            let mut chars = v.chars().peekable();
            while let Some(c) = chars.next() {
                if c == ',' {
                    if chars.peek() == Some(&',') {
                        chars.next();
                        name.push(',');
                        continue;
                    }
                    break;
                }
                name.push(c);
            }
            return Some(name);
        }
    }
    None
}

/// QEMU processes by guest name, found by scanning `<procfs>/*/cmdline`. A guest name claimed
/// by more than one process is left out: any local user can start a process that looks like a
/// guest's QEMU, and whichever came last in the scan would otherwise decide the kernel's view of
/// that guest's pinning (hiding a real mismatch, or showing a false one).
pub fn find_qemu_processes(procfs: &Path) -> HashMap<String, u32> {
    let mut out = HashMap::new();
    let mut claimed_twice = Vec::new();
    let Ok(dir) = std::fs::read_dir(procfs) else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or(b"");
        if !String::from_utf8_lossy(argv0).contains("qemu") {
            continue;
        }
        if let Some(name) = parse_qemu_guest_name(&cmdline) {
            if let Some(other) = out.insert(name.clone(), pid) {
                claimed_twice.push((name, other, pid));
            }
        }
    }
    for (name, a, b) in claimed_twice {
        if out.remove(&name).is_some() {
            tracing::warn!(domain = %name, pids = %format!("{a},{b}"), "several processes claim to be this guest's QEMU; its vCPU thread affinity is not read from procfs");
        }
    }
    out
}

/// The affinity of each vCPU thread of process `pid`.
pub fn vcpu_thread_affinity(procfs: &Path, pid: u32) -> HashMap<u32, CpuSet> {
    let mut out = HashMap::new();
    let Ok(tasks) = std::fs::read_dir(procfs.join(pid.to_string()).join("task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let Ok(comm) = std::fs::read_to_string(t.path().join("comm")) else {
            continue;
        };
        let Some(vcpu) = parse_vcpu_thread_name(&comm) else {
            continue;
        };
        if let Ok(set) = std::fs::read_to_string(t.path().join("status"))
            .map_err(|_| ())
            .and_then(|s| parse_cpus_allowed_list(&s).map_err(|_| ()))
        {
            out.insert(vcpu, set);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let status =
            "Name:\tCPU 0/KVM\nCpus_allowed:\t0c\nCpus_allowed_list:\t2-3\nMems_allowed_list:\t0\n";
        assert_eq!(parse_cpus_allowed_list(status).unwrap().to_string(), "2-3");
        assert!(parse_cpus_allowed_list("Name:\tx\n").is_err());
        assert!(parse_cpus_allowed_list("Cpus_allowed_list:\tzz\n").is_err());
    }

    #[test]
    fn thread_names() {
        let cases = [
            ("CPU 0/KVM\n", Some(0)),
            ("CPU 12/TCG", Some(12)),
            ("CPU x/KVM", None),
            ("CPU 1/", None),
            ("qemu-system-x86", None),
            ("IO mon_iothread", None),
        ];
        for (c, want) in cases {
            assert_eq!(parse_vcpu_thread_name(c), want, "{c:?}");
        }
    }

    #[test]
    fn guest_names() {
        let cl =
            b"/usr/bin/qemu-system-x86_64\0-name\0guest=instance-00000001,debug-threads=on\0-S\0";
        assert_eq!(
            parse_qemu_guest_name(cl).as_deref(),
            Some("instance-00000001")
        );
        assert_eq!(
            parse_qemu_guest_name(b"qemu\0-name\0a,,b,x=y\0").as_deref(),
            Some("a,b")
        );
        assert_eq!(parse_qemu_guest_name(b"qemu\0-m\x00512\0"), None);
    }

    #[test]
    fn reads_own_threads() {
        // This process's own threads are not QEMU vCPUs: nothing is found, nothing fails.
        let me = std::process::id();
        assert!(vcpu_thread_affinity(Path::new("/proc"), me).is_empty());
        assert!(find_qemu_processes(Path::new("/nonexistent")).is_empty());
    }
}
