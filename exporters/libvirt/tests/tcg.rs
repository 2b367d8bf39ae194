//! A real QEMU guest under TCG (software emulation) through a private libvirtd: the bulk stat
//! groups the test driver lacks (cpu-total, balloon, vcpu, interface, block), the neutron port on
//! interface counters, and the kernel's own view of vCPU affinity from procfs. Changing a vCPU
//! thread's affinity behind libvirt's back (taskset) shows up as a mismatch from the kernel
//! (`procfs`, `vcpuinfo`) but not from libvirt's bookkeeping (`pininfo`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod support;

use std::process::Command;
use std::time::Duration;

use e2e_tests::{assert_promtool_clean, sample_value, wait_for};
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
