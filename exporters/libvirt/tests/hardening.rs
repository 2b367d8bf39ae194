//! Adversarial inputs against the real libvirt test driver: hostile nova metadata and domain
//! names, secrets in the domain XML, metadata that looks like domain elements. What a user would
//! see: the exposition passes `promtool check metrics`, no secret reaches metrics or logs (at
//! debug level), and every vCPU is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod support;

use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use e2e_tests::ChildGuard;

const HOST: &str = "<cpu><mhz>2400</mhz><model>x86_64</model><active>16</active><max>16</max><nodes>1</nodes><sockets>2</sockets><cores>4</cores><threads>2</threads></cpu><memory>67108864</memory>";

/// One scrape of both collectors, in process, on a test-driver node file.
async fn scrape(node: &Path, extra: &[&str]) -> String {
    support::scrape_in_process(&format!("test://{}", node.display()), extra).await
}

/// A domain whose metadata (another application's, in its own default namespace, which libvirt
/// keeps verbatim before `<vcpu>`) holds an element named `vcpu`: every one of its 4 vCPUs is
/// still reported and checked, on every scrape (without events every scrape fetches the XML).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_named_like_domain_elements_does_not_hide_vcpus() {
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("node.xml");
    std::fs::write(
        &node,
        format!(
            "<node>{HOST}<domain type='test'><name>hinted</name>\
             <uuid>00000031-aaaa-4bbb-8ccc-000000000031</uuid>\
             <metadata><app xmlns='urn:example:app'><vcpu>1</vcpu></app></metadata>\
             <memory unit='KiB'>1048576</memory><vcpu placement='static'>4</vcpu>\
             <cputune><vcpupin vcpu='0' cpuset='4'/><vcpupin vcpu='1' cpuset='5'/>\
             <vcpupin vcpu='2' cpuset='6'/><vcpupin vcpu='3' cpuset='7'/></cputune>\
             <os><type arch='x86_64'>hvm</type></os><devices/></domain></node>"
        ),
    )
    .unwrap();
    let body = scrape(&node, &["--libvirt.events=false", "--domain.vcpu-detail"]).await;
    for v in 0..4 {
        for name in ["libvirt_domain_vcpu_state", "libvirt_domain_vcpu_cpu"] {
            let series = format!("{name}{{domain=\"hinted\",vcpu=\"{v}\"}}");
            assert!(body.contains(&series), "{series} missing:\n{body}");
        }
    }
}

/// XML that libvirt accepts must not lose a domain's metadata and pinning claims: metadata of
/// another application nested 100 deep (libxml2, which libvirt parses with, allows 256) and a
/// pin to CPU 9000 (libvirt allows CPUs up to 16383) on a shut-off domain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xml_libvirt_accepts_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("node.xml");
    let nova = |name: &str| {
        format!(
            "<nova:instance xmlns:nova='http://openstack.org/xmlns/libvirt/nova/1.1'>\
             <nova:name>{name}</nova:name><nova:flavor name='c1' id='1'><nova:extraSpecs>\
             <nova:extraSpec name='hw:cpu_policy'>dedicated</nova:extraSpec>\
             </nova:extraSpecs></nova:flavor></nova:instance>"
        )
    };
    let deep = format!("{}x{}", "<a>".repeat(100), "</a>".repeat(100));
    std::fs::write(
        &node,
        format!(
            "<node>{HOST}\
             <domain type='test'><name>deep</name>\
             <uuid>00000051-aaaa-4bbb-8ccc-000000000051</uuid>\
             <metadata><app xmlns='urn:example:app'>{deep}</app>{}</metadata>\
             <memory unit='KiB'>1048576</memory><vcpu placement='static'>1</vcpu>\
             <cputune><vcpupin vcpu='0' cpuset='4'/></cputune>\
             <os><type arch='x86_64'>hvm</type></os><devices/></domain>\
             <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>\
             <name>farpin</name><uuid>00000052-aaaa-4bbb-8ccc-000000000052</uuid>\
             <metadata>{}</metadata>\
             <memory unit='KiB'>1048576</memory><vcpu placement='static'>1</vcpu>\
             <cputune><vcpupin vcpu='0' cpuset='9000'/></cputune>\
             <os><type arch='x86_64'>hvm</type></os><devices/>\
             <test:runstate>5</test:runstate></domain></node>",
            nova("deep-one"),
            nova("far-one"),
        ),
    )
    .unwrap();
    let body = scrape(&node, &[]).await;
    assert_eq!(
        e2e_tests::sample_value(&body, "libvirt_domain_xml_parse_errors_total"),
        Some(0.0),
        "{body}"
    );
    for (domain, name) in [("deep", "deep-one"), ("farpin", "far-one")] {
        assert_eq!(
            e2e_tests::sample_with(
                &body,
                "libvirt_domain_openstack_info",
                &[("domain", domain), ("instance_name", name)]
            ),
            Some(1.0),
            "{domain}:\n{body}"
        );
    }
    for (domain, cpus) in [("deep", "4"), ("farpin", "9000")] {
        assert_eq!(
            e2e_tests::sample_with(
                &body,
                "libvirt_domain_pinning_info",
                &[
                    ("domain", domain),
                    ("dedicated_vcpus", "0"),
                    ("dedicated_cpus", cpus)
                ]
            ),
            Some(1.0),
            "{domain}:\n{body}"
        );
    }
}

/// A process that looks like the QEMU of guest `name` to a procfs scan (argv[0] `qemu-...`,
/// `-name guest=NAME`) with one thread named `CPU 0/KVM` bound to host CPU `cpu`: any local
/// user can start one. Stopped by PID on drop.
fn decoy_qemu(name: &str, cpu: u32) -> ChildGuard {
    const PROGRAM: &str = "import ctypes, os, sys, threading, time\n\
        def vcpu():\n\
        \x20   ctypes.CDLL(None).prctl(15, b'CPU 0/KVM', 0, 0, 0)\n\
        \x20   os.sched_setaffinity(0, {int(sys.argv[-1])})\n\
        \x20   print('ready', flush=True)\n\
        \x20   time.sleep(3600)\n\
        threading.Thread(target=vcpu, daemon=True).start()\n\
        time.sleep(3600)\n";
    let mut child = Command::new("/usr/bin/python3")
        .arg0("qemu-system-x86_64")
        .args(["-c", PROGRAM, "-name"])
        .arg(format!("guest={name},debug-threads=on"))
        .arg(cpu.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (package python3) must be installed");
    let stdout = child.stdout.take().unwrap();
    let guard = ChildGuard::new(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    guard
}

/// A local process posing as a running domain's QEMU must not decide the `procfs` affinity
/// check: the kernel's view was read from whichever process came last in the scan, so a decoy
/// could hide a real mismatch (or show one). When several processes claim one guest, none is
/// trusted and the `procfs` source is left out for that domain (`pininfo` and `vcpuinfo` stay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_claiming_a_guest_does_not_decide_its_procfs_affinity() {
    let cpus = support::own_cpus();
    let (a, b) = (cpus[0], *cpus.last().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("node.xml");
    // A unique guest name: the host's real /proc is scanned.
    let name = format!("decoy-{}", std::process::id());
    std::fs::write(
        &node,
        format!(
            "<node>{HOST}<domain type='test'><name>{name}</name>\
             <uuid>00000061-aaaa-4bbb-8ccc-000000000061</uuid>\
             <memory unit='KiB'>1048576</memory><vcpu placement='static'>1</vcpu>\
             <cputune><vcpupin vcpu='0' cpuset='{a}'/></cputune>\
             <os><type arch='x86_64'>hvm</type></os><devices/></domain></node>"
        ),
    )
    .unwrap();
    // The node's only domain: the sources compared for it, and no mismatch.
    let checked = |body: &str, source: &str| {
        e2e_tests::sample_with(
            body,
            "libvirt_domains_affinity_checked",
            &[("source", source)],
        )
    };
    let mismatch = "libvirt_domain_pinning_affinity_mismatch_vcpus{";
    // One process: its vCPU thread is read (and agrees with the declaration).
    let _first = decoy_qemu(&name, a);
    let body = scrape(&node, &["--path.procfs=/proc"]).await;
    assert_eq!(checked(&body, "procfs"), Some(1.0), "{body}");
    assert!(!body.contains(mismatch), "{body}");
    // A second one, bound elsewhere: which of them is QEMU cannot be told.
    let _second = decoy_qemu(&name, if a == b { a } else { b });
    let body = scrape(&node, &["--path.procfs=/proc"]).await;
    assert_eq!(checked(&body, "procfs"), Some(0.0), "{body}");
    assert_eq!(checked(&body, "pininfo"), Some(1.0), "{body}");
    assert!(!body.contains(mismatch), "{body}");
}

/// What an operator sees from a hostile node through the real binary (HTTP, text format, debug
/// logs): label values with quotes, backslashes, newlines, tabs, carriage returns and Unicode
/// come out escaped and read back unchanged, `promtool check metrics` is clean, and none of the
/// domain XML's secrets (VNC password, Ceph/iSCSI auth users and secrets, HTTPS credentials,
/// query token, cookies) reaches the metrics or the log.
#[test]
fn hostile_labels_and_secrets_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("node.xml");
    std::fs::write(
        &node,
        format!(
            r#"<node>{HOST}<domain type='test'><name>evil"name\x{{}}=,é</name>
  <uuid>00000021-aaaa-4bbb-8ccc-000000000021</uuid>
  <metadata><nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
    <nova:name>q"uote\back&#10;new&#13;cr&#9;tab # }} {{x="y"}} ünï</nova:name>
    <nova:flavor name='f"l\a&#10;v'><nova:vcpus>1</nova:vcpus></nova:flavor>
  </nova:instance></metadata>
  <memory unit='KiB'>1048576</memory><vcpu placement='static'>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='network' device='disk'><driver name='qemu' type='raw'/>
      <auth username='cinder-SECRET-1'><secret type='ceph' uuid='11111111-2222-3333-4444-555555555555'/></auth>
      <source protocol='rbd' name='volumes/volume-1'><host name='mon1.example' port='6789'/></source>
      <target dev='vda' bus='virtio'/></disk>
    <disk type='network' device='disk'><driver name='qemu' type='raw'/>
      <source protocol='iscsi' name='iqn.2013-07.com.example:iscsi-nopool/1'><host name='iscsi.example' port='3260'/>
        <auth username='iscsi-SECRET-2'><secret type='iscsi' usage='libvirtiscsi'/></auth></source>
      <target dev='vdb' bus='virtio'/></disk>
    <disk type='network' device='cdrom'><driver name='qemu' type='raw'/>
      <source protocol='https' name='/images/x.iso' query='token=SECRET-3'><host name='user:SECRET-4@web.example' port='443'/>
        <cookies><cookie name='sess'>SECRET-5</cookie></cookies></source>
      <target dev='sda' bus='sata'/><readonly/></disk>
    <graphics type='vnc' port='-1' autoport='yes' passwd='SECRET-6'/>
  </devices></domain></node>"#
        ),
    )
    .unwrap();
    let log = tmp.path().join("exporter.log");
    let exporter = support::ExporterProc::start_logging(
        &[
            format!("--libvirt.uri=test://{}", node.display()),
            "--path.procfs=".into(),
            "--log.level=debug".into(),
        ],
        Some(&log),
    );
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let (status, body) = exporter.scrape();
        assert_eq!(status, 200);
        e2e_tests::assert_promtool_clean(&body);
        bodies.push(body);
    }
    drop(exporter);
    let body = &bodies[1];
    let domain = "evil\"name\\x{}=,é";
    assert_eq!(
        e2e_tests::sample_with(
            body,
            "libvirt_domain_openstack_info",
            &[
                ("domain", domain),
                (
                    "instance_name",
                    "q\"uote\\back\nnew\rcr\ttab # } {x=\"y\"} ünï"
                ),
                ("flavor_name", "f\"l\\a\nv"),
            ]
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        e2e_tests::sample_with(body, "libvirt_up", &[]),
        Some(1.0),
        "{body}"
    );
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("level=debug"), "debug logging is on: {log}");
    for text in bodies.iter().chain([&log]) {
        assert!(!text.contains("SECRET"), "a secret leaked:\n{text}");
    }
}

/// Continues a stopped process when dropped, so a failing test never leaves it stopped.
struct Continue<'a>(&'a ChildGuard);

impl Drop for Continue<'_> {
    fn drop(&mut self) {
        let _ = self.0.signal("CONT");
    }
}

/// A libvirtd that hangs (stopped with SIGSTOP: its socket still accepts, nothing answers): each
/// scrape still answers within about `--libvirt.timeout` with HTTP 200, `libvirt_up 0` and the
/// collectors marked failed, and the exporter recovers by itself once libvirtd answers again.
#[test]
fn hung_libvirtd_times_out_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/overlapping.xml");
    let daemon = support::Libvirtd::start_test_driver(tmp.path());
    let exporter = support::ExporterProc::start(&[
        format!("--libvirt.uri={}", daemon.test_uri(&node)),
        "--libvirt.timeout=1s".into(),
        "--path.procfs=".into(),
    ]);
    let up = |body: &str| e2e_tests::sample_with(body, "libvirt_up", &[]);
    let (status, body) = exporter.scrape();
    assert_eq!((status, up(&body)), (200, Some(1.0)), "{body}");

    daemon.guard.signal("STOP").unwrap();
    let stopped = Continue(&daemon.guard);
    for _ in 0..2 {
        let started = std::time::Instant::now();
        let (status, body) = exporter.scrape();
        let took = started.elapsed();
        assert_eq!((status, up(&body)), (200, Some(0.0)), "{body}");
        assert!(took < std::time::Duration::from_secs(5), "{took:?}");
        for collector in ["domain", "host"] {
            assert_eq!(
                e2e_tests::sample_with(
                    &body,
                    "libvirt_scrape_collector_success",
                    &[("collector", collector)]
                ),
                Some(0.0),
                "{body}"
            );
        }
        e2e_tests::assert_promtool_clean(&body);
    }
    drop(stopped);
    let mut body = String::new();
    e2e_tests::wait_for(
        "libvirt_up 1 after SIGCONT",
        std::time::Duration::from_secs(20),
        || {
            body = exporter.scrape().1;
            up(&body) == Some(1.0)
        },
    );
    assert_eq!(
        e2e_tests::sample_with(&body, "libvirt_domains", &[]),
        Some(2.0)
    );
}

/// `--nova.config-file` naming something that is not a regular file (a FIFO nobody writes, a
/// device such as /dev/zero): reading it blocked a runtime thread forever (the FIFO: every later
/// scrape and /-/healthy hung, SIGTERM did not stop the exporter) or grew without bound (the
/// device). Now each scrape answers at once with `nova_config_loaded 0` and the rest of the
/// metrics.
#[test]
fn nova_config_that_is_not_a_regular_file_neither_hangs_nor_grows() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("nova.conf");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    let node = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dedicated.xml");
    for config in [fifo.as_path(), Path::new("/dev/zero")] {
        let exporter = support::ExporterProc::start(&[
            format!("--libvirt.uri=test://{}", node.display()),
            format!("--nova.config-file={}", config.display()),
            "--path.procfs=".into(),
            "--libvirt.timeout=2s".into(),
        ]);
        for _ in 0..2 {
            let started = std::time::Instant::now();
            let (status, body) = exporter.scrape();
            let took = started.elapsed();
            assert_eq!(status, 200, "{config:?}");
            assert!(
                took < std::time::Duration::from_secs(5),
                "{config:?}: {took:?}"
            );
            for (name, want) in [("libvirt_nova_config_loaded", 0.0), ("libvirt_up", 1.0)] {
                assert_eq!(
                    e2e_tests::sample_with(&body, name, &[]),
                    Some(want),
                    "{config:?} {name}:\n{body}"
                );
            }
        }
        let (status, _) = e2e_tests::local_get(exporter.port, "/-/healthy").unwrap();
        assert_eq!(status, 200);
    }
}

/// Domains defined, started, renamed, destroyed and undefined by another client while the
/// exporter scrapes (between its bulk list and each domain's own calls): every scrape succeeds,
/// and its output stays a valid exposition with one series per domain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domains_churning_during_scrapes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use virt::connect::Connect;

    // test:///default is one driver shared in this process while a connection stays open.
    let admin = tokio::task::spawn_blocking(|| Connect::open(Some("test:///default")).unwrap())
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let xml = format!(
                    "<domain type='test'><name>churn-{n}</name><memory>524288</memory>\
                     <vcpu>1</vcpu><cputune><vcpupin vcpu='0' cpuset='{}'/></cputune>\
                     <os><type>hvm</type></os></domain>",
                    n % 8
                );
                let d = admin.define_domain_xml(&xml).unwrap();
                if n % 3 == 0 {
                    d.rename(&format!("renamed-{n}"), 0).unwrap();
                }
                d.create().unwrap();
                d.destroy().unwrap();
                d.undefine().unwrap();
            }
            n
        })
    };
    let flags = <libvirt_exporter::Flags as clap::Parser>::parse_from([
        "x",
        "--libvirt.uri=test:///default",
        "--path.procfs=",
        "--libvirt.events=false",
        "--libvirt.concurrency=2",
    ]);
    let domain = libvirt_exporter::collectors(&flags).remove(0);
    let mut last = String::new();
    for _ in 0..150 {
        let mut reg = common::Sink::new("libvirt");
        domain
            .collect(&mut reg)
            .await
            .expect("every scrape succeeds");
        let mut om = String::new();
        reg.encode(&mut om).unwrap();
        last = common::exposition::openmetrics_to_text(&om);
        let states = last
            .lines()
            .filter(|l| l.starts_with("libvirt_domain_info_state{"))
            .count();
        assert_eq!(
            Some(states as f64),
            e2e_tests::sample_with(&last, "libvirt_domains", &[]),
            "{last}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let changes = churn.join().unwrap();
    assert!(changes > 10, "only {changes} domains churned");
    e2e_tests::assert_promtool_clean(&last);
}

/// A read under `--path.procfs` that never returns (the kernel blocks reads of a process's
/// `cmdline` while its memory map is locked; here a FIFO stands in for such a file): the scan
/// of QEMU processes times out, and later scrapes do not start another scan beside the stuck one
/// (each left a thread behind, and 64 stuck threads make the exporter refuse every libvirt call).
#[test]
fn a_procfs_scan_that_blocks_is_not_repeated() {
    let tmp = tempfile::tempdir().unwrap();
    let procfs = tmp.path().join("proc");
    std::fs::create_dir_all(procfs.join("1")).unwrap();
    let st = Command::new("mkfifo")
        .arg(procfs.join("1/cmdline"))
        .status()
        .unwrap();
    assert!(st.success());
    let node = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dedicated.xml");
    let exporter = support::ExporterProc::start(&[
        format!("--libvirt.uri=test://{}", node.display()),
        format!("--path.procfs={}", procfs.display()),
        "--libvirt.timeout=1s".into(),
    ]);
    // Threads of the exporter blocked opening the FIFO.
    let blocked = || {
        std::fs::read_dir(format!("/proc/{}/task", exporter.guard.pid()))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("wchan")).ok())
            .filter(|w| w.contains("wait_for_partner"))
            .count()
    };
    for _ in 0..4 {
        let started = std::time::Instant::now();
        let (status, body) = exporter.scrape();
        assert_eq!(status, 200);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(
            e2e_tests::sample_with(&body, "libvirt_up", &[]),
            Some(1.0),
            "{body}"
        );
    }
    assert_eq!(blocked(), 1, "one stuck procfs scan at most");
}

/// SIGTERM stops the exporter while libvirtd hangs: a libvirt call stuck past its timeout holds
/// a blocking thread, which the async runtime's shutdown waited for forever (the exporter
/// outlived SIGTERM until SIGKILL).
#[test]
fn sigterm_stops_the_exporter_while_libvirtd_hangs() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/overlapping.xml");
    let daemon = support::Libvirtd::start_test_driver(tmp.path());
    let mut exporter = support::ExporterProc::start(&[
        format!("--libvirt.uri={}", daemon.test_uri(&node)),
        "--libvirt.timeout=1s".into(),
        "--path.procfs=".into(),
    ]);
    let (_, body) = exporter.scrape();
    assert_eq!(e2e_tests::sample_with(&body, "libvirt_up", &[]), Some(1.0));
    daemon.guard.signal("STOP").unwrap();
    let _stopped = Continue(&daemon.guard);
    let (_, body) = exporter.scrape();
    assert_eq!(e2e_tests::sample_with(&body, "libvirt_up", &[]), Some(0.0));
    let status = exporter.guard.terminate(std::time::Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "still running 5s after SIGTERM: {status:?}"
    );
}

/// Issue 23: an invalid 7.4 MB `cpu_dedicated_set` in nova.conf was logged whole on every scrape
/// (7 GB of log in 100 s) and memory plateaued at 310-360 MB. Now the error quotes a bounded
/// excerpt, is logged once while it stays the same, and the exporter's peak memory stays small.
#[test]
fn a_huge_invalid_nova_set_is_logged_once_and_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("nova.conf");
    let value = "4-7,".repeat(1_850_000) + "x";
    std::fs::write(
        &conf,
        format!("[compute]\ncpu_dedicated_set = {value}\ncpu_shared_set = 0-3\n"),
    )
    .unwrap();
    let log = tmp.path().join("exporter.log");
    let node = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dedicated.xml");
    let exporter = support::ExporterProc::start_logging(
        &[
            format!("--libvirt.uri=test://{}", node.display()),
            format!("--nova.config-file={}", conf.display()),
            "--path.procfs=".into(),
        ],
        Some(&log),
    );
    for _ in 0..5 {
        let (status, body) = exporter.scrape();
        assert_eq!(status, 200);
        assert_eq!(
            e2e_tests::sample_with(&body, "libvirt_nova_config_loaded", &[]),
            Some(0.0)
        );
        assert_eq!(e2e_tests::sample_with(&body, "libvirt_up", &[]), Some(1.0));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let warnings = text
        .matches("CPU sets (logged again only when the error changes)")
        .count();
    assert_eq!(warnings, 1, "{text}");
    assert!(text.len() < 16 << 10, "{} bytes of log", text.len());
    assert!(text.contains("cpu_dedicated_set = 4-7,4-7,"), "{text}");
    // Peak resident memory: a bounded multiple of the file (7.4 MB), not hundreds of MB.
    let status = std::fs::read_to_string(format!("/proc/{}/status", exporter.guard.pid())).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(hwm_kib < 100 << 10, "peak RSS {hwm_kib} KiB");

    // A changed error is logged again; a fixed file is read.
    std::fs::write(&conf, "[compute]\ncpu_dedicated_set = 4-y\n").unwrap();
    let (_, body) = exporter.scrape();
    assert_eq!(
        e2e_tests::sample_with(&body, "libvirt_nova_config_loaded", &[]),
        Some(0.0)
    );
    std::fs::write(&conf, "[compute]\ncpu_dedicated_set = 4-15\n").unwrap();
    let (_, body) = exporter.scrape();
    assert_eq!(
        e2e_tests::sample_with(&body, "libvirt_nova_config_loaded", &[]),
        Some(1.0)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("CPU sets (logged again only when the error changes)")
            .count(),
        2,
        "{text}"
    );
    assert!(text.contains("4-y"), "{text}");
}
