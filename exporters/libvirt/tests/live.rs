//! Live changes on the shared in-process `test:///default` driver: domains created, paused,
//! re-tagged and destroyed between scrapes are seen on the next scrape, and a domain's XML is
//! parsed again only when it changed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::sync::Arc;

use common::Collector;
use e2e_tests::sample_value;
use libvirt_exporter::{collectors, Flags};
use virt::connect::Connect;

async fn scrape(c: &Arc<dyn Collector>) -> String {
    let mut reg = common::Sink::new("libvirt");
    c.collect(&mut reg).await.expect("collect");
    let mut om = String::new();
    reg.encode(&mut om).unwrap();
    common::exposition::openmetrics_to_text(&om)
}

fn domain_xml(name: &str, display: &str) -> String {
    format!(
        r#"<domain type='test'>
  <name>{name}</name>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:name>{display}</nova:name>
      <nova:flavor name="c1.pinned" id="c1p"><nova:vcpus>1</nova:vcpus>
        <nova:extraSpecs><nova:extraSpec name="hw:cpu_policy">dedicated</nova:extraSpec></nova:extraSpecs>
      </nova:flavor>
    </nova:instance>
  </metadata>
  <memory>524288</memory>
  <vcpu>1</vcpu>
  <cputune><vcpupin vcpu='0' cpuset='1'/></cputune>
  <os><type>hvm</type></os>
</domain>"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_changes_are_seen_on_the_next_scrape() {
    // Keeps test:///default alive (and shared) for the whole test, and makes the changes.
    let admin = tokio::task::spawn_blocking(|| Connect::open(Some("test:///default")).unwrap())
        .await
        .unwrap();
    let admin = Arc::new(admin);
    let flags = <Flags as clap::Parser>::parse_from([
        "x",
        "--libvirt.uri=test:///default",
        "--path.procfs=",
    ]);
    let domain = collectors(&flags).remove(0);

    let t = scrape(&domain).await;
    assert_eq!(sample_value(&t, "libvirt_up "), Some(1.0));
    let before = sample_value(&t, "libvirt_domains ").unwrap();
    let parses = sample_value(&t, "libvirt_domain_xml_parses_total").unwrap();
    assert!(!t.contains("live-1"));

    // Unchanged domains are not parsed again, nor (with libvirt's events) even fetched.
    let fetches = sample_value(&t, "libvirt_domain_xml_fetches_total").unwrap();
    let t = scrape(&domain).await;
    assert_eq!(
        sample_value(&t, "libvirt_domain_xml_parses_total"),
        Some(parses)
    );
    assert_eq!(
        sample_value(&t, "libvirt_domain_xml_fetches_total"),
        Some(fetches)
    );

    // Created.
    let a = Arc::clone(&admin);
    tokio::task::spawn_blocking(move || {
        a.create_domain_xml(&domain_xml("live-1", "first-name"), 0)
            .unwrap();
    })
    .await
    .unwrap();
    let t = scrape(&domain).await;
    assert_eq!(sample_value(&t, "libvirt_domains "), Some(before + 1.0));
    assert!(t.contains(r#"instance_name="first-name""#), "{t}");
    assert_eq!(
        sample_value(
            &t,
            r#"libvirt_domain_info_state{domain="live-1",state_desc="the domain is running"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample_value(&t, r#"libvirt_host_cpu_pinned_vcpus{cpu="1"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample_value(&t, "libvirt_domain_xml_parses_total"),
        Some(parses + 1.0)
    );

    // Paused: still holds its CPU.
    let a = Arc::clone(&admin);
    tokio::task::spawn_blocking(move || {
        a.lookup_domain_by_name("live-1")
            .unwrap()
            .suspend()
            .unwrap()
    })
    .await
    .unwrap();
    let t = scrape(&domain).await;
    assert_eq!(
        sample_value(
            &t,
            r#"libvirt_domain_info_state{domain="live-1",state_desc="the domain is paused by user"}"#
        ),
        Some(3.0),
        "{t}"
    );
    assert_eq!(
        sample_value(&t, r#"libvirt_host_cpu_pinned_vcpus{cpu="1"}"#),
        Some(1.0)
    );

    // Metadata changed: parsed again, new name exported.
    let a = Arc::clone(&admin);
    tokio::task::spawn_blocking(move || {
        let d = a.lookup_domain_by_name("live-1").unwrap();
        d.set_metadata(
            virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(
                r#"<instance><name>second-name</name><flavor name="c1.pinned" id="c1p"><vcpus>1</vcpus><extraSpecs><extraSpec name="hw:cpu_policy">dedicated</extraSpec></extraSpecs></flavor></instance>"#,
            ),
            Some("nova"),
            Some("http://openstack.org/xmlns/libvirt/nova/1.1"),
            virt::sys::VIR_DOMAIN_AFFECT_LIVE,
        )
        .unwrap();
    })
    .await
    .unwrap();
    // libvirt delivers the change event from its event loop thread, asynchronously.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let t = scrape(&domain).await;
    assert!(t.contains(r#"instance_name="second-name""#), "{t}");
    assert!(sample_value(&t, "libvirt_domain_events_total").unwrap() >= 1.0);
    assert!(!t.contains(r#"instance_name="first-name""#));
    let after_change = sample_value(&t, "libvirt_domain_xml_parses_total").unwrap();
    assert!(
        after_change >= parses + 2.0,
        "metadata change not re-parsed"
    );

    // A second dedicated domain on the same CPU: broken pinning appears.
    let a = Arc::clone(&admin);
    tokio::task::spawn_blocking(move || {
        a.create_domain_xml(&domain_xml("live-2", "intruder"), 0)
            .unwrap();
    })
    .await
    .unwrap();
    let t = scrape(&domain).await;
    assert_eq!(
        sample_value(&t, r#"libvirt_host_cpu_dedicated_domains{cpu="1"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample_value(
            &t,
            r#"libvirt_domain_pinning_overlap_cpus{domain="live-2"}"#
        ),
        Some(1.0)
    );

    // Destroyed (transient domains vanish): gone on the next scrape, overlap cleared.
    let a = Arc::clone(&admin);
    tokio::task::spawn_blocking(move || {
        a.lookup_domain_by_name("live-1")
            .unwrap()
            .destroy()
            .unwrap();
        a.lookup_domain_by_name("live-2")
            .unwrap()
            .destroy()
            .unwrap();
    })
    .await
    .unwrap();
    let t = scrape(&domain).await;
    assert_eq!(sample_value(&t, "libvirt_domains "), Some(before));
    assert!(!t.contains("live-1") && !t.contains("live-2"), "{t}");
    // No dedicated claim left on CPU 1: no series for it.
    assert_eq!(
        sample_value(&t, r#"libvirt_host_cpu_dedicated_domains{cpu="1"}"#),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_events_every_xml_is_fetched_but_parsed_once() {
    let node = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mixed.xml");
    let flags = <Flags as clap::Parser>::parse_from([
        "x".to_string(),
        format!("--libvirt.uri=test://{}", node.display()),
        "--path.procfs=".into(),
        "--libvirt.events=false".into(),
    ]);
    let domain = collectors(&flags).remove(0);
    let t1 = scrape(&domain).await;
    let t2 = scrape(&domain).await;
    let n = sample_value(&t1, "libvirt_domains ").unwrap();
    assert_eq!(
        sample_value(&t1, "libvirt_domain_xml_fetches_total"),
        Some(n)
    );
    assert_eq!(
        sample_value(&t2, "libvirt_domain_xml_fetches_total"),
        Some(2.0 * n)
    );
    assert_eq!(
        sample_value(&t2, "libvirt_domain_xml_parses_total"),
        Some(n)
    );
    assert!(!t2.contains("libvirt_domain_events_total"));
}
