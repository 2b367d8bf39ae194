//! The demo (`demo/node.xml`) as `scripts/demo.sh` runs it: its domains started in libvirt's
//! `test:///default`, whose two NUMA cells (CPUs 0-7, 8-15) make the NUMA check run. The demo
//! shows exactly one broken pinning, db-1 and db-2 on host CPU 9, and nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod support;

use std::path::Path;

const FINDINGS: &[&str] = &[
    "libvirt_domain_pinning_overlap_cpus",
    "libvirt_domain_pinning_dedicated_in_shared_cpus",
    "libvirt_domain_pinning_outside_dedicated_set_cpus",
    "libvirt_domain_pinning_outside_shared_set_cpus",
    "libvirt_domain_pinning_emulator_overlap_cpus",
    "libvirt_domain_pinning_numa_remote_cpus",
    "libvirt_domain_openstack_metadata_malformed",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_one_overlapping_pair_and_nothing_else() {
    let node = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/node.xml"))
        .unwrap();
    let domains: Vec<String> = node
        .split("<domain ")
        .skip(1)
        .map(|d| format!("<domain {}</domain>", &d[..d.find("</domain>").unwrap()]))
        .collect();
    assert_eq!(domains.len(), 5);
    let conn = tokio::task::spawn_blocking(move || {
        let c = virt::connect::Connect::open(Some("test:///default")).unwrap();
        // The test driver's own sample guest is removed, as scripts/demo.sh does.
        c.lookup_domain_by_name("test").unwrap().destroy().unwrap();
        for d in &domains {
            c.create_domain_xml(d, 0).unwrap();
        }
        c
    })
    .await
    .unwrap();
    let out = support::scrape_in_process(
        "test:///default",
        &["--nova.cpu-dedicated-set=4-15", "--nova.cpu-shared-set=0-3"],
    )
    .await;
    let mut nonzero: Vec<String> = e2e_tests::parse_samples(&out)
        .filter(|s| FINDINGS.contains(&s.name))
        .map(|s| format!("{} {}", s.series, s.value))
        .collect();
    nonzero.sort();
    assert_eq!(
        nonzero,
        [
            "libvirt_domain_pinning_overlap_cpus{domain=\"instance-00000103\"} 1",
            "libvirt_domain_pinning_overlap_cpus{domain=\"instance-00000104\"} 1",
        ],
        "{out}"
    );
    // Every guest's memory is bound to the NUMA node of its CPUs: no NUMA finding (the check
    // itself is tested on the same topology in tests/nova_fixtures.rs).
    assert_eq!(
        e2e_tests::sample(
            &out,
            r#"libvirt_domain_pinning_numa_remote_cpus{domain="instance-00000104"}"#
        ),
        None
    );
    drop(conn);
}
