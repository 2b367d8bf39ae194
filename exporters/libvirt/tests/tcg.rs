//! A real QEMU guest under TCG (software emulation) through a private libvirtd: the bulk stat
//! groups the test driver lacks (cpu-total, balloon, vcpu, interface, block), the neutron port on
//! interface counters, and the kernel's own view of vCPU affinity from procfs. Changing a vCPU
//! thread's affinity behind libvirt's back (taskset) shows up as a mismatch from the kernel
//! (`procfs`, `vcpuinfo`) but not from libvirt's bookkeeping (`pininfo`).
//! Domain jobs: a memory-only dump stalled on a FIFO, and a live migration to a second libvirtd
//! on this machine, each seen while it runs and gone after.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod support;

use std::process::Command;
use std::time::Duration;

use e2e_tests::{assert_promtool_clean, sample_value, signal_pid, wait_for, ChildGuard};
use support::{own_cpus, ExporterProc, QemuLibvirtd};

const PORT: &str = "3f6c1e2a-7b4d-4e5f-8a9b-0c1d2e3f4a5b";

fn guest_xml(dir: &std::path::Path, cpus: &str, first: u32) -> String {
    format!(
        r#"<domain type='qemu'>
  <name>tcg-1</name>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:name>tiny</nova:name>
      <nova:flavor name="t1.tiny" id="t1"><nova:memory>64</nova:memory><nova:vcpus>2</nova:vcpus></nova:flavor>
      <nova:ports><nova:port uuid="{PORT}"><nova:ip type="fixed" address="10.0.0.9" ipVersion="4"/></nova:port></nova:ports>
    </nova:instance>
  </metadata>
  <memory unit='MiB'>64</memory>
  <vcpu placement='static' cpuset='{cpus}'>2</vcpu>
  <cputune><vcpupin vcpu='0' cpuset='{first}'/></cputune>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{disk}'/><target dev='vda' bus='virtio'/></disk>
    <interface type='ethernet'><target dev='tap{short}'/><model type='virtio'/></interface>
    <memballoon model='virtio'/>
  </devices>
</domain>"#,
        disk = dir.join("disk.raw").display(),
        short = &PORT[..11],
    )
}

#[test]
fn qemu_guest_under_tcg() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = QemuLibvirtd::start(tmp.path());
    std::fs::File::create(tmp.path().join("disk.raw"))
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let cpus = own_cpus();
    let set = libvirt_exporter::cpuset::CpuSet::from_iter(cpus.iter().copied()).to_string();
    let xml_path = tmp.path().join("guest.xml");
    std::fs::write(&xml_path, guest_xml(tmp.path(), &set, cpus[0])).unwrap();
    daemon.virsh(&["create", xml_path.to_str().unwrap()]);

    let exporter = ExporterProc::start(&[
        format!("--libvirt.uri={}", daemon.uri(true)),
        "--libvirt.timeout=5s".into(),
        "--path.procfs=/proc".into(),
        // virDomainGetVcpus is repeated this often (not every scrape).
        "--libvirt.vcpuinfo-interval=2s".into(),
        // libvirt's pin info is asked for again only on events (or after an hour).
        "--libvirt.pininfo-interval=1h".into(),
        // Every bulk stat group, the per-vCPU and guest memory series included.
        "--domain.vcpu-detail".into(),
        "--domain.memory-detail".into(),
    ]);
    let mut body = String::new();
    wait_for(
        "stats of the running guest",
        Duration::from_secs(30),
        || {
            body = exporter.scrape().1;
            sample_value(&body, r#"libvirt_domain_vcpu_time_seconds_total{domain="tcg-1",vcpu="0"}"#).is_some()
            && sample_value(&body, r#"libvirt_domains_affinity_checked{source="procfs"}"#) == Some(1.0)
            // The balloon group's rss can lag the guest's start on a loaded machine.
            && sample_value(&body, r#"libvirt_domain_memory_stats_rss_bytes{domain="tcg-1"}"#).is_some()
        },
    );
    assert_eq!(sample_value(&body, "libvirt_up "), Some(1.0));
    assert!(
        sample_value(
            &body,
            r#"libvirt_domain_info_cpu_time_seconds_total{domain="tcg-1"}"#
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(
        sample_value(
            &body,
            r#"libvirt_domain_memory_stats_maximum_bytes{domain="tcg-1"}"#
        ),
        Some(64.0 * 1048576.0)
    );
    assert!(sample_value(
        &body,
        r#"libvirt_domain_memory_stats_current_balloon_bytes{domain="tcg-1"}"#
    )
    .is_some());
    assert!(
        sample_value(
            &body,
            r#"libvirt_domain_memory_stats_rss_bytes{domain="tcg-1"}"#
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(
        sample_value(&body, r#"libvirt_domain_vcpu_current{domain="tcg-1"}"#),
        Some(2.0)
    );
    assert!(sample_value(
        &body,
        r#"libvirt_domain_vcpu_state{domain="tcg-1",vcpu="1"}"#
    )
    .is_some());
    assert_eq!(
        sample_value(
            &body,
            r#"libvirt_domain_block_stats_capacity_bytes{domain="tcg-1",target_device="vda"}"#
        ),
        Some(8.0 * 1048576.0)
    );
    assert!(sample_value(
        &body,
        r#"libvirt_domain_block_stats_read_requests_total{domain="tcg-1",target_device="vda"}"#
    )
    .is_some());
    let iface = format!(
        r#"libvirt_domain_interface_stats_receive_bytes_total{{domain="tcg-1",target_device="tap{}",port_id="{PORT}"}}"#,
        &PORT[..11]
    );
    assert!(
        sample_value(&body, &iface).is_some(),
        "no interface counters with the port: {body}"
    );
    assert!(body.contains(r#"instance_name="tiny""#));
    // Each source was compared and agrees with the declaration: no mismatch series.
    for source in ["pininfo", "vcpuinfo", "procfs"] {
        assert_eq!(
            sample_value(
                &body,
                &format!(r#"libvirt_domains_affinity_checked{{source="{source}"}}"#)
            ),
            Some(1.0),
            "{source}: {body}"
        );
    }
    assert!(
        !body.contains("libvirt_domain_pinning_affinity_mismatch_vcpus{"),
        "{body}"
    );
    // QEMU's bulk stats are complete: no per-domain stats calls.
    for group in ["cpu_total", "balloon", "vcpu", "block", "interface"] {
        assert_eq!(
            sample_value(
                &body,
                &format!(r#"libvirt_domain_stats_fallbacks_total{{group="{group}"}}"#)
            ),
            Some(0.0),
            "{group}: {body}"
        );
    }
    assert_promtool_clean(&body);

    // Re-pin vCPU 1's thread behind libvirt's back: the kernel disagrees with the declaration.
    if cpus.len() >= 2 {
        let pid = daemon.qemu_pid("tcg-1").expect("QEMU pid file");
        let tid = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .find(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.trim() == "CPU 1/TCG")
            })
            .map(|t| t.file_name().to_string_lossy().into_owned())
            .expect("vCPU 1 thread");
        let st = Command::new("taskset")
            .args(["-p", "-c", &cpus[1].to_string(), &tid])
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "taskset: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        let body = exporter.scrape().1;
        let m = |s: &str| {
            sample_value(
                &body,
                &format!(
                    r#"libvirt_domain_pinning_affinity_mismatch_vcpus{{domain="tcg-1",source="{s}"}}"#
                ),
            )
        };
        // The kernel's own view is read on every scrape; libvirt's reading of it
        // (virDomainGetVcpus) on its next check, within --libvirt.vcpuinfo-interval.
        assert_eq!(m("procfs"), Some(1.0), "{body}");
        assert_eq!(m("pininfo"), None, "{body}");
        let mut body = body;
        wait_for("the vcpuinfo check", Duration::from_secs(15), || {
            body = exporter.scrape().1;
            sample_value(
                &body,
                r#"libvirt_domain_pinning_affinity_mismatch_vcpus{domain="tcg-1",source="vcpuinfo"}"#,
            ) == Some(1.0)
        });
        assert!(body.contains(&format!(r#"libvirt_domain_vcpu_affinity_mismatch_info{{domain="tcg-1",vcpu="1",source="procfs",declared="{set}",live="{}"}}"#, cpus[1])), "{body}");

        // Re-pin vCPU 0 through libvirt, live: a tunable event makes the exporter fetch the XML
        // and the pin info again, so the new declaration shows and libvirt's pin info follows
        // it (a stale pin info, kept for --libvirt.pininfo-interval, would show a mismatch).
        let one = cpus[1].to_string();
        daemon.virsh(&["vcpupin", "tcg-1", "0", &one, "--live"]);
        let declared =
            format!(r#"libvirt_domain_vcpu_pinning_info{{domain="tcg-1",vcpu="0",cpuset="{one}""#);
        wait_for("the live re-pin", Duration::from_secs(15), || {
            body = exporter.scrape().1;
            body.contains(&declared)
        });
        assert_eq!(
            sample_value(
                &body,
                r#"libvirt_domain_pinning_affinity_mismatch_vcpus{domain="tcg-1",source="pininfo"}"#
            ),
            None,
            "{body}"
        );
    }
    daemon.virsh(&["destroy", "tcg-1"]);
}

/// A domain job on a QEMU guest under TCG, seen while it runs and gone after: a memory-only
/// dump (`virsh dump --memory-only`, a job of operation `dump` that pauses the guest with
/// reason `dump`) into a FIFO that the test reads only once it has seen the job, so the job
/// runs, stalled, for as long as the test needs. (A managed save of a guest without an OS
/// writes a few hundred KiB of zero pages and is over before a scrape can see it.)
#[test]
fn a_job_is_exported_while_it_runs_and_not_after() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = QemuLibvirtd::start(tmp.path());
    let xml = r#"<domain type='qemu'>
  <name>tcg-job</name>
  <memory unit='MiB'>64</memory>
  <vcpu placement='static'>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator><memballoon model='none'/></devices>
</domain>"#;
    let xml_path = tmp.path().join("job.xml");
    std::fs::write(&xml_path, xml).unwrap();
    // Persistent, so that it stays (shut off) after the destroy at the end.
    daemon.virsh(&["define", xml_path.to_str().unwrap()]);
    daemon.virsh(&["start", "tcg-job"]);
    let fifo = tmp.path().join("dump.fifo");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());

    let exporter = ExporterProc::start(&[
        format!("--libvirt.uri={}", daemon.uri(true)),
        "--libvirt.timeout=2s".into(),
        "--path.procfs=".into(),
    ]);
    let body = exporter.scrape().1;
    assert_eq!(
        sample_value(
            &body,
            r#"libvirt_scrape_collector_success{collector="job"}"#
        ),
        Some(1.0),
        "{body}"
    );
    assert!(
        !body.contains(r#"libvirt_domain_job_info_type{domain="tcg-job""#),
        "{body}"
    );

    // The reader opens the FIFO (pairing with libvirt's writer) and reads only when told.
    let (drain, drain_rx) = std::sync::mpsc::channel::<()>();
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::File::open(&fifo).unwrap();
            let _ = drain_rx.recv();
            let mut n = 0u64;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match std::io::Read::read(&mut f, &mut buf) {
                    Ok(0) | Err(_) => return n,
                    Ok(k) => n += k as u64,
                }
            }
        })
    };
    let mut dump = ChildGuard::spawn(
        Command::new("virsh")
            .arg("-c")
            .arg(daemon.uri(false))
            .args(["dump", "--memory-only", "tcg-job"])
            .arg(&fifo)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );

    let ty = r#"libvirt_domain_job_info_type{domain="tcg-job",operation="dump"}"#;
    let v = |body: &str, m: &str| {
        sample_value(
            body,
            &format!(r#"libvirt_domain_job_info_{m}{{domain="tcg-job"}}"#),
        )
    };
    let mut body = String::new();
    wait_for("the dump job", Duration::from_secs(30), || {
        body = exporter.scrape().1;
        sample_value(&body, ty).is_some() && v(&body, "memory_processed_bytes").is_some()
    });
    // Unbounded (2): QEMU's dump does not know its end.
    assert_eq!(sample_value(&body, ty), Some(2.0), "{body}");
    let total = v(&body, "memory_total_bytes").unwrap();
    let processed = v(&body, "memory_processed_bytes").unwrap();
    let remaining = v(&body, "memory_remaining_bytes").unwrap();
    assert!(total >= 64.0 * 1048576.0, "{body}");
    assert!(
        processed < total && processed + remaining == total,
        "{body}"
    );
    assert!(v(&body, "time_elapsed_seconds").unwrap() > 0.0, "{body}");
    assert_eq!(
        sample_value(
            &body,
            r#"libvirt_domain_paused_reason_info{domain="tcg-job",reason="dump"}"#
        ),
        Some(1.0),
        "{body}"
    );
    // A dump moves memory only: libvirt fills no data_* field, which is counted.
    assert_eq!(v(&body, "data_total_bytes"), None, "{body}");
    assert!(
        sample_value(
            &body,
            r#"libvirt_domain_job_info_unfilled_fields_total{field="data_total"}"#
        )
        .unwrap()
            >= 1.0,
        "{body}"
    );
    assert_promtool_clean(&body);
    // Stalled on the full FIFO (once the pipes' buffers are full): no progress between
    // scrapes, the job still there.
    let mut last = processed;
    wait_for("the stalled dump", Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_millis(300));
        let now = v(&exporter.scrape().1, "memory_processed_bytes");
        let stalled = now == Some(last);
        last = now.unwrap_or(-1.0);
        stalled
    });
    assert!(last < total, "{last} of {total}");

    // QEMU stopped (SIGSTOP): libvirt asks QEMU's monitor for the dump's progress and waits,
    // so the job call does not answer in time. Counted as a timeout, that domain's job series
    // lost on this scrape only; the collector succeeds. Back once QEMU runs again.
    let qemu = daemon.qemu_pid("tcg-job").expect("QEMU pid file");
    signal_pid(qemu, "STOP").unwrap();
    let stopped = exporter.scrape().1;
    signal_pid(qemu, "CONT").unwrap();
    assert!(
        sample_value(
            &stopped,
            r#"libvirt_domain_job_info_failures_total{reason="timeout"}"#
        ) >= Some(1.0),
        "{stopped}"
    );
    assert_eq!(
        sample_value(
            &stopped,
            r#"libvirt_scrape_collector_success{collector="job"}"#
        ),
        Some(1.0),
        "{stopped}"
    );
    assert_eq!(sample_value(&stopped, ty), None, "{stopped}");
    wait_for("the job series again", Duration::from_secs(20), || {
        sample_value(&exporter.scrape().1, ty).is_some()
    });

    drain.send(()).unwrap();
    let dumped = reader.join().unwrap();
    assert!(dumped as f64 >= total, "{dumped} bytes dumped");
    let status = dump
        .wait_exit(Duration::from_secs(30))
        .expect("virsh dump ends");
    assert!(status.success(), "virsh dump: {status:?}");
    wait_for(
        "no job series after the job",
        Duration::from_secs(15),
        || {
            body = exporter.scrape().1;
            !body.contains(r#"domain_job_info_type{domain="tcg-job""#)
                && !body.contains(r#"libvirt_domain_job_info_memory_total_bytes{domain="tcg-job"}"#)
        },
    );
    assert!(
        !body.contains(r#"libvirt_domain_paused_reason_info{domain="tcg-job""#),
        "resumed after the dump: {body}"
    );

    // Stopped: its lifecycle event makes the collector ask it once; a domain that is not
    // running has no job, which is no failure.
    let failures = |body: &str| -> Vec<Option<f64>> {
        ["error", "timeout", "unsupported"]
            .iter()
            .map(|r| {
                sample_value(
                    body,
                    &format!(r#"libvirt_domain_job_info_failures_total{{reason="{r}"}}"#),
                )
            })
            .collect()
    };
    let before = failures(&body);
    daemon.virsh(&["destroy", "tcg-job"]);
    wait_for("the shut-off domain", Duration::from_secs(15), || {
        body = exporter.scrape().1;
        body.contains(
            r#"libvirt_domain_info_state{domain="tcg-job",state_desc="the domain is shut off"} 5"#,
        )
    });
    let body = exporter.scrape().1;
    assert_eq!(failures(&body), before, "{body}");
}

/// A guest "kernel" that keeps its memory dirty: a multiboot image (the a.out kludge: header
/// fields give the load and entry addresses, so QEMU's `-kernel` loads it as is) whose code,
/// at 1 MiB, increments one word in every 4 KiB page from 2 MiB to 48 MiB, for ever:
/// `mov edi, 0x200000; l: inc dword [edi]; add edi, 0x1000; cmp edi, 0x3000000; jb l; jmp 0`.
/// Pre-copy cannot converge over a 1 MiB/s link, so a live migration runs until aborted.
fn dirtying_kernel() -> Vec<u8> {
    let (magic, flags, load) = (0x1BAD_B002u32, 0x0001_0000u32, 0x0010_0000u32);
    let header = [
        magic,
        flags,
        0u32.wrapping_sub(magic.wrapping_add(flags)),
        load,      // header_addr: the header is at the start of the image
        load,      // load_addr
        0,         // load_end_addr: the whole file
        0,         // bss_end_addr: none
        load + 32, // entry_addr: the code after the header
    ];
    let code = [
        0xBF, 0x00, 0x00, 0x20, 0x00, // mov edi, 0x200000
        0xFF, 0x07, // inc dword [edi]
        0x81, 0xC7, 0x00, 0x10, 0x00, 0x00, // add edi, 0x1000
        0x81, 0xFF, 0x00, 0x00, 0x00, 0x03, // cmp edi, 0x3000000
        0x72, 0xF0, // jb inc
        0xEB, 0xE9, // jmp mov
    ];
    header
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .chain(code)
        .collect()
}

/// A live migration between two libvirtds on this machine (each its own host UUID), followed
/// while it runs and gone once aborted. The guest stays running, so no state reason points at
/// the job: the exporter finds it through the migration-iteration event that QEMU sends when
/// the first pass starts, delivered by the events helper.
#[test]
fn a_live_migration_is_followed_while_it_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let src = QemuLibvirtd::start_as(
        &tmp.path().join("src"),
        Some("5a1e0000-0000-4000-8000-000000000001"),
    );
    let dst = QemuLibvirtd::start_as(
        &tmp.path().join("dst"),
        Some("5a1e0000-0000-4000-8000-000000000002"),
    );
    let kernel = tmp.path().join("dirty.bin");
    std::fs::write(&kernel, dirtying_kernel()).unwrap();
    let xml = format!(
        r#"<domain type='qemu'>
  <name>tcg-mig</name>
  <memory unit='MiB'>64</memory>
  <vcpu placement='static'>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{}</kernel></os>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator><memballoon model='none'/></devices>
</domain>"#,
        kernel.display()
    );
    let xml_path = tmp.path().join("mig.xml");
    std::fs::write(&xml_path, xml).unwrap();
    src.virsh(&["create", xml_path.to_str().unwrap()]);

    let exporter = ExporterProc::start(&[
        format!("--libvirt.uri={}", src.uri(true)),
        "--libvirt.timeout=5s".into(),
        "--path.procfs=".into(),
    ]);
    let body = exporter.scrape().1;
    assert!(
        !body.contains(r#"libvirt_domain_job_info_type{domain="tcg-mig""#),
        "{body}"
    );

    let mut migrate = ChildGuard::spawn(
        Command::new("virsh")
            .arg("-c")
            .arg(src.uri(false))
            .args(["migrate", "--live", "tcg-mig"])
            .arg(dst.uri(false))
            .args([
                "--migrateuri",
                "tcp://127.0.0.1",
                "--listen-address",
                "127.0.0.1",
                "--bandwidth",
                "1",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let ty = r#"libvirt_domain_job_info_type{domain="tcg-mig",operation="migration_out"}"#;
    let v = |body: &str, m: &str| {
        sample_value(
            body,
            &format!(r#"libvirt_domain_job_info_{m}{{domain="tcg-mig"}}"#),
        )
    };
    let mut body = String::new();
    wait_for("the migration job", Duration::from_secs(30), || {
        body = exporter.scrape().1;
        sample_value(&body, ty).is_some() && v(&body, "data_processed_bytes") > Some(0.0)
    });
    assert_eq!(sample_value(&body, ty), Some(2.0), "{body}");
    let total = v(&body, "data_total_bytes").unwrap();
    let remaining = v(&body, "data_remaining_bytes").unwrap();
    assert!(total >= 64.0 * 1048576.0 && remaining > 0.0, "{body}");
    assert!(v(&body, "memory_remaining_bytes").unwrap() > 0.0, "{body}");
    assert!(v(&body, "time_elapsed_seconds").unwrap() > 0.0, "{body}");
    // Running all along: found by its event, not by a paused state.
    assert!(
        !body.contains(r#"libvirt_domain_paused_reason_info{domain="tcg-mig""#),
        "{body}"
    );
    assert_eq!(
        sample_value(
            &body,
            r#"libvirt_domain_info_state{domain="tcg-mig",state_desc="the domain is running"}"#
        ),
        Some(1.0),
        "{body}"
    );
    assert_promtool_clean(&body);
    // Progress is reported as it goes (1 MiB/s).
    let processed = v(&body, "data_processed_bytes").unwrap();
    wait_for("migration progress", Duration::from_secs(15), || {
        v(&exporter.scrape().1, "data_processed_bytes") > Some(processed)
    });

    src.virsh(&["domjobabort", "tcg-mig"]);
    let status = migrate
        .wait_exit(Duration::from_secs(30))
        .expect("virsh migrate ends");
    assert!(!status.success(), "the migration was aborted: {status:?}");
    wait_for(
        "no job series after the abort",
        Duration::from_secs(15),
        || {
            body = exporter.scrape().1;
            !body.contains(r#"libvirt_domain_job_info_type{domain="tcg-mig""#)
                && v(&body, "data_remaining_bytes").is_none()
        },
    );
    src.virsh(&["destroy", "tcg-mig"]);
    drop(dst);
}
