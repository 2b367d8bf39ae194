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
             <nova:name>{name}</nova:name></nova:instance>"
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
    assert_eq!(
        e2e_tests::sample(
            &body,
            r#"libvirt_domain_pinning_dedicated_cpus{domain="deep"}"#
        ),
        Some(1.0)
    );
    assert!(
        body.contains(r#"libvirt_domain_vcpu_pinning_info{domain="farpin",vcpu="0",cpuset="9000",kind="dedicated"} 1"#),
        "{body}"
    );
}
