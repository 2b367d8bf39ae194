//! Adversarial inputs against the real libvirt test driver: hostile nova metadata and domain
//! names, secrets in the domain XML, metadata that looks like domain elements. What a user would
//! see: the exposition passes `promtool check metrics`, no secret reaches metrics or logs (at
//! debug level), and every vCPU is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::path::Path;

use e2e_tests::assert_promtool_clean;
use libvirt_exporter::{collectors, Flags};

const HOST: &str = "<cpu><mhz>2400</mhz><model>x86_64</model><active>16</active><max>16</max><nodes>1</nodes><sockets>2</sockets><cores>4</cores><threads>2</threads></cpu><memory>67108864</memory>";

/// One scrape of both collectors, in process, as the text format.
async fn scrape(node: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "libvirt_exporter".to_string(),
        format!("--libvirt.uri=test://{}", node.display()),
        "--path.procfs=".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let flags = <Flags as clap::Parser>::parse_from(args);
    let mut om = String::new();
    for c in collectors(&flags) {
        let mut reg = common::Sink::new("libvirt");
        c.collect(&mut reg).await.expect("collector succeeds");
        reg.encode(&mut om).unwrap();
    }
    common::exposition::openmetrics_to_text(&om)
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
    let body = scrape(&node, &["--libvirt.events=false"]).await;
    for v in 0..4 {
        for name in ["libvirt_domain_vcpu_state", "libvirt_domain_vcpu_cpu"] {
            let series = format!("{name}{{domain=\"hinted\",vcpu=\"{v}\"}}");
            assert!(body.contains(&series), "{series} missing:\n{body}");
        }
    }
}
