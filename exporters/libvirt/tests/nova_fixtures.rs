//! Domain XML written by nova itself (`tests/fixtures/nova/`, nova 34.0.0 and 31.0.0 through
//! nova's functional-test stack), loaded into libvirt's test driver in process: every healthy
//! guest is classified as nova means it and gives no finding, and each broken case, derived from
//! nova's XML with the change a known nova bug makes, gives exactly its finding.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod support;

use std::path::{Path, PathBuf};

use e2e_tests::{sample, sample_with};
use libvirt_exporter::cpuset::parse_cpuset;

/// The host generate.py booted on.
const SETS: [&str; 2] = [
    "--nova.cpu-shared-set=0,5",
    "--nova.cpu-dedicated-set=1-4,6-9",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nova")
        .join(name)
}

/// Case (the comment assemble.py writes before each domain) to libvirt domain name.
fn domains(node_xml: &str) -> Vec<(String, String)> {
    node_xml
        .split("\n<!-- ")
        .skip(1)
        .map(|d| {
            let case = d[..d.find(" -->").unwrap()].to_string();
            let s = d.find("<name>").unwrap() + "<name>".len();
            (case, d[s..s + d[s..].find('<').unwrap()].to_string())
        })
        .collect()
}

async fn scrape_xml(node_xml: &str, args: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("node.xml");
    std::fs::write(&path, node_xml).unwrap();
    support::scrape_in_process(&format!("test://{}", path.display()), args).await
}

/// The class of each vCPU of `domain`, in vCPU order, as one letter each, from its
/// `libvirt_domain_pinning_info` (checked against `libvirt_domain_vcpu_pinning_info` when the
/// output has it).
fn kinds(out: &str, domain: &str) -> String {
    let mut v: Vec<(u32, char)> = Vec::new();
    for s in e2e_tests::parse_samples(out).filter(|s| s.name == "libvirt_domain_pinning_info") {
        let l = s.labels();
        let get = |k: &str| l.iter().find(|(n, _)| n == k).map(|(_, v)| v.to_string());
        if get("domain").as_deref() != Some(domain) {
            continue;
        }
        for (label, kind) in [
            ("dedicated_vcpus", 'd'),
            ("floating_vcpus", 'f'),
            ("unknown_vcpus", 'u'),
        ] {
            let set = parse_cpuset(&get(label).unwrap()).unwrap();
            v.extend(set.iter().map(|i| (i, kind)));
        }
    }
    v.sort_unstable();
    let summary: String = v.into_iter().map(|(_, k)| k).collect();
    let mut per_vcpu: Vec<(u32, char)> = e2e_tests::parse_samples(out)
        .filter(|s| s.name == "libvirt_domain_vcpu_pinning_info")
        .filter_map(|s| {
            let l = s.labels();
            let get = |k: &str| l.iter().find(|(n, _)| n == k).map(|(_, v)| v.to_string());
            (get("domain")? == domain).then(|| {
                (
                    get("vcpu").unwrap().parse().unwrap(),
                    get("kind").unwrap().chars().next().unwrap(),
                )
            })
        })
        .collect();
    if !per_vcpu.is_empty() {
        per_vcpu.sort_unstable();
        let detail: String = per_vcpu.into_iter().map(|(_, k)| k).collect();
        assert_eq!(
            detail, summary,
            "{domain}: per-vCPU detail and summary differ"
        );
    }
    summary
}

const FINDINGS: &[&str] = &[
    "libvirt_domain_pinning_overlap_cpus",
    "libvirt_domain_pinning_dedicated_in_shared_cpus",
    "libvirt_domain_pinning_outside_dedicated_set_cpus",
    "libvirt_domain_pinning_outside_shared_set_cpus",
    "libvirt_domain_pinning_emulator_overlap_cpus",
    "libvirt_domain_openstack_metadata_malformed",
];

/// Every finding of every domain, `(metric, domain) -> value` (a finding is exported only while
/// it is not 0).
fn nonzero_findings(out: &str) -> Vec<String> {
    let mut v: Vec<String> = e2e_tests::parse_samples(out)
        .filter(|s| FINDINGS.contains(&s.name))
        .inspect(|s| assert_ne!(s.value, 0.0, "{}", s.series))
        .map(|s| format!("{} {}", s.series, s.value))
        .collect();
    v.sort();
    v
}

/// The class nova means for each case's vCPUs: `d`edicated, `f`loating.
const KINDS: &[(&str, &str)] = &[
    ("dedicated", "dd"),
    ("shared", "f"),
    ("shared-numa1", "f"),
    ("shared-numa2", "ff"),
    ("mixed", "fd"),
    ("emulator-share", "d"),
    ("emulator-isolate", "d"),
    ("image-dedicated", "d"),
    ("boot-from-volume", "f"),
];

#[tokio::test]
async fn healthy_guests_written_by_nova_give_no_finding() {
    for file in ["nova34.xml", "nova31.xml"] {
        let xml = std::fs::read_to_string(fixture(file)).unwrap();
        let doms = domains(&xml);
        assert_eq!(doms.len(), KINDS.len(), "{file}");
        let out = scrape_xml(&xml, &SETS).await;
        for (case, want) in KINDS {
            let dom = &doms.iter().find(|(c, _)| c == case).unwrap().1;
            assert_eq!(kinds(&out, dom), *want, "{file} {case}");
            for metric in FINDINGS {
                assert_eq!(
                    sample_with(&out, metric, &[("domain", dom)]),
                    None,
                    "{file} {case} {metric}"
                );
            }
        }
        assert_eq!(nonzero_findings(&out), Vec::<String>::new(), "{file}");
        // One domain at most per host CPU; CPUs 0 and 5 are the shared ones (a host CPU without
        // a dedicated claim has no series).
        let dedicated: Vec<(String, f64)> = (0..10)
            .map(|c| {
                let s = format!("libvirt_host_cpu_dedicated_domains{{cpu=\"{c}\"}}");
                (c.to_string(), sample(&out, &s).unwrap_or(0.0))
            })
            .collect();
        // nova 31 records no emulator policy: the isolated emulator's CPU 3 is not a claim.
        let want_used: &[u32] = if file == "nova34.xml" {
            &[1, 2, 3, 4, 6, 7, 8]
        } else {
            &[1, 2, 4, 6, 7, 8]
        };
        for (c, n) in &dedicated {
            let want = if want_used.contains(&c.parse().unwrap()) {
                1.0
            } else {
                0.0
            };
            assert_eq!(*n, want, "{file} cpu {c}");
        }
    }
}

#[tokio::test]
async fn without_the_host_sets_nova_34_is_still_judged_and_nova_31_is_not_guessed() {
    let xml = std::fs::read_to_string(fixture("nova34.xml")).unwrap();
    let doms = domains(&xml);
    let out = scrape_xml(&xml, &[]).await;
    for (case, want) in KINDS {
        let dom = &doms.iter().find(|(c, _)| c == case).unwrap().1;
        assert_eq!(kinds(&out, dom), *want, "nova34 {case}");
    }
    assert_eq!(nonzero_findings(&out), Vec::<String>::new());

    // nova 31 wrote no policy: without the sets nothing is known, nothing is reported.
    let xml = std::fs::read_to_string(fixture("nova31.xml")).unwrap();
    let doms = domains(&xml);
    let out = scrape_xml(&xml, &[]).await;
    for (case, want) in KINDS {
        let dom = &doms.iter().find(|(c, _)| c == case).unwrap().1;
        assert_eq!(kinds(&out, dom), "u".repeat(want.len()), "nova31 {case}");
    }
    assert_eq!(nonzero_findings(&out), Vec::<String>::new());
}

#[tokio::test]
async fn nova_34_metadata_is_exported_whole() {
    let xml = std::fs::read_to_string(fixture("nova34.xml")).unwrap();
    let doms = domains(&xml);
    let dom = |case: &str| doms.iter().find(|(c, _)| c == case).unwrap().1.clone();
    let out = scrape_xml(&xml, &SETS).await;
    let image = dom("image-dedicated");
    assert_eq!(
        sample_with(
            &out,
            "libvirt_domain_openstack_image_info",
            &[
                ("domain", &image),
                ("image_id", "3b8e4a43-7d0c-4b2f-9a51-2f6c1e0d9a17"),
                ("container_format", "bare"),
                ("disk_format", "qcow2"),
                ("min_disk_gb", "1"),
                ("min_ram_mb", "256"),
            ]
        ),
        Some(1.0),
        "{out}"
    );
    assert_eq!(
        sample_with(
            &out,
            "libvirt_domain_openstack_image_property_info",
            &[
                ("domain", &image),
                ("key", "hw_cpu_policy"),
                ("value", "dedicated")
            ]
        ),
        Some(1.0)
    );
    // Booted from a volume: nova writes an image without uuid.
    let bfv = dom("boot-from-volume");
    assert_eq!(
        sample_with(
            &out,
            "libvirt_domain_openstack_image_info",
            &[("domain", &bfv), ("image_id", ""), ("disk_format", "raw")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample_with(
            &out,
            "libvirt_domain_openstack_info",
            &[
                ("domain", &bfv),
                ("root_type", "volume"),
                ("nova_version", "34.0.0")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample_with(
            &out,
            "libvirt_domain_pinning_info",
            &[
                ("domain", &dom("emulator-isolate")),
                ("emulator_policy", "isolate"),
                ("emulator_cpuset", "3"),
                ("dedicated_cpus", "1,3")
            ]
        ),
        Some(1.0)
    );
    assert!(!out.contains("hostname="), "no hostname label");
}

/// `xml` with `from` replaced by `to` inside the domain of `case` only.
fn in_case(xml: &str, case: &str, from: &str, to: &str) -> String {
    let marker = format!("<!-- {case} -->");
    let start = xml.find(&marker).unwrap();
    let end = start + xml[start..].find("</domain>").unwrap();
    let chunk = &xml[start..end];
    assert!(chunk.contains(from), "{case}: {from}");
    format!(
        "{}{}{}",
        &xml[..start],
        chunk.replace(from, to),
        &xml[end..]
    )
}

#[tokio::test]
async fn broken_cases_derived_from_nova_give_exactly_their_finding() {
    let xml = std::fs::read_to_string(fixture("nova34.xml")).unwrap();
    let doms = domains(&xml);
    let dom = |case: &str| doms.iter().find(|(c, _)| c == case).unwrap().1.clone();
    let (ded, iso, share, img, mixed) = (
        dom("dedicated"),
        dom("emulator-isolate"),
        dom("emulator-share"),
        dom("image-dedicated"),
        dom("mixed"),
    );

    // LP#1417667: before NUMA-aware live migration (Train), a migrated guest kept the pins of
    // its source host and could land on CPUs another guest holds: image-dedicated on CPU 2.
    let broken = in_case(&xml, "image-dedicated", "cpuset=\"7\"", "cpuset=\"2\"");
    let out = scrape_xml(&broken, &SETS).await;
    // Its emulator (pinned with its vCPU) sits on dedicated's vCPU, and dedicated's emulator
    // (on its own CPUs 2,4) on image-dedicated's.
    assert_eq!(
        nonzero_findings(&out),
        [
            format!("libvirt_domain_pinning_emulator_overlap_cpus{{domain=\"{ded}\"}} 1"),
            format!("libvirt_domain_pinning_emulator_overlap_cpus{{domain=\"{img}\"}} 1"),
            format!("libvirt_domain_pinning_overlap_cpus{{domain=\"{ded}\"}} 1"),
            format!("libvirt_domain_pinning_overlap_cpus{{domain=\"{img}\"}} 1"),
        ]
    );
    assert_eq!(
        sample(&out, "libvirt_host_cpu_dedicated_domains{cpu=\"2\"}"),
        Some(2.0)
    );

    // The same bug with hw:emulator_threads_policy=isolate: the isolated emulator thread lands
    // on another guest's dedicated vCPU (CPU 2).
    let broken = in_case(
        &xml,
        "emulator-isolate",
        "<emulatorpin cpuset=\"3\"/>",
        "<emulatorpin cpuset=\"2\"/>",
    );
    let out = scrape_xml(&broken, &SETS).await;
    assert_eq!(
        nonzero_findings(&out),
        [
            format!("libvirt_domain_pinning_emulator_overlap_cpus{{domain=\"{iso}\"}} 1"),
            format!("libvirt_domain_pinning_overlap_cpus{{domain=\"{ded}\"}} 1"),
            format!("libvirt_domain_pinning_overlap_cpus{{domain=\"{iso}\"}} 1"),
        ]
    );
    assert_eq!(
        sample_with(
            &out,
            "libvirt_domain_pinning_emulator_overlap_info",
            &[("domain", &iso), ("other_domain", &ded), ("cpus", "2")]
        ),
        Some(1.0)
    );

    // The same bug with hw:emulator_threads_policy=share after cpu_shared_set changed on the
    // destination: the shared emulator reaches dedicated CPU 9.
    let broken = in_case(
        &xml,
        "emulator-share",
        "<emulatorpin cpuset=\"0,5\"/>",
        "<emulatorpin cpuset=\"0,5,9\"/>",
    );
    let out = scrape_xml(&broken, &SETS).await;
    assert_eq!(
        nonzero_findings(&out),
        [format!(
            "libvirt_domain_pinning_outside_shared_set_cpus{{domain=\"{share}\"}} 1"
        )]
    );

    // Metadata nova would refuse (a mask naming every vCPU, an unknown policy): flagged, the
    // vCPUs left out, no pinning finding, the rest of the metadata exported.
    let broken = in_case(&xml, "mixed", "\">^0<", "\">^0-1<");
    let broken = in_case(
        &broken,
        "dedicated",
        "hw:cpu_policy\">dedicated<",
        "hw:cpu_policy\">pinned<",
    );
    let out = scrape_xml(&broken, &SETS).await;
    assert_eq!(
        nonzero_findings(&out),
        [
            format!("libvirt_domain_openstack_metadata_malformed{{domain=\"{ded}\"}} 1"),
            format!("libvirt_domain_openstack_metadata_malformed{{domain=\"{mixed}\"}} 1"),
        ]
    );
    assert_eq!(kinds(&out, &mixed), "uu");
    assert_eq!(kinds(&out, &ded), "uu");
    assert_eq!(
        sample_with(
            &out,
            "libvirt_domain_openstack_info",
            &[("domain", &mixed), ("instance_name", "mixed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&out, "libvirt_openstack_metadata_errors_total"),
        Some(2.0)
    );
}

/// One domain of a fixture, by case, as its own XML.
fn domain_of(node_xml: &str, case: &str) -> String {
    let marker = format!("<!-- {case} -->\n");
    let start = node_xml.find(&marker).unwrap() + marker.len();
    let end = start + node_xml[start..].find("</domain>").unwrap() + "</domain>".len();
    node_xml[start..end].to_string()
}

/// NUMA placement needs the host's topology, which libvirt's test driver reports only for
/// `test:///default` (two cells: CPUs 0-7 and 8-15). nova's dedicated guest (CPUs 2 and 4,
/// memory strictly on node 0) is healthy there; the same guest with its memory bound to node 1,
/// as LP#1417667 (live migration keeping the source host's NUMA placement) leaves it, computes
/// on remote memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numa_placement_against_the_host_topology() {
    let node = std::fs::read_to_string(fixture("nova34.xml")).unwrap();
    let healthy = domain_of(&node, "dedicated");
    assert!(healthy.contains(r#"<memory mode="strict" nodeset="0"/>"#));
    let broken = healthy
        .replace("<name>instance-00000001</name>", "<name>moved</name>")
        .replace(
            r#"<memory mode="strict" nodeset="0"/>"#,
            r#"<memory mode="strict" nodeset="1"/>"#,
        )
        .replace(
            r#"<memnode cellid="0" mode="strict" nodeset="0"/>"#,
            r#"<memnode cellid="0" mode="strict" nodeset="1"/>"#,
        )
        .replace(
            r#"<vcpupin vcpu="0" cpuset="2"/>"#,
            r#"<vcpupin vcpu="0" cpuset="3"/>"#,
        )
        .replace(
            r#"<vcpupin vcpu="1" cpuset="4"/>"#,
            r#"<vcpupin vcpu="1" cpuset="5"/>"#,
        )
        .replace(r#"cpuset="2,4""#, r#"cpuset="3,5""#);
    let uuid_of = |x: &str| {
        let s = x.find("<uuid>").unwrap() + 6;
        x[s..s + 36].to_string()
    };
    let broken = broken.replace(&uuid_of(&healthy), "00000000-0000-4000-8000-0000000000aa");
    let conn = tokio::task::spawn_blocking(|| {
        virt::connect::Connect::open(Some("test:///default")).unwrap()
    })
    .await
    .unwrap();
    let conn = std::sync::Arc::new(conn);
    let c = std::sync::Arc::clone(&conn);
    let (h, b) = (healthy.clone(), broken.clone());
    tokio::task::spawn_blocking(move || {
        // test:///default's own guest floats over every CPU: out of the way.
        c.lookup_domain_by_name("test").unwrap().destroy().unwrap();
        c.create_domain_xml(&h, 0).unwrap();
        c.create_domain_xml(&b, 0).unwrap();
    })
    .await
    .unwrap();
    let out = support::scrape_in_process("test:///default", &[]).await;
    assert_eq!(
        sample(
            &out,
            r#"libvirt_domain_pinning_numa_remote_cpus{domain="instance-00000001"}"#
        ),
        None,
        "{out}"
    );
    assert_eq!(
        sample(
            &out,
            r#"libvirt_domain_pinning_numa_remote_cpus{domain="moved"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample_with(
            &out,
            "libvirt_domain_pinning_numa_mismatch_info",
            &[
                ("domain", "moved"),
                ("cpus", "3,5"),
                ("cpu_nodes", "0"),
                ("memory_nodes", "1")
            ]
        ),
        Some(1.0)
    );
    assert!(
        !out.contains(r#"libvirt_domain_pinning_numa_mismatch_info{domain="instance-00000001""#)
    );
    // Nothing else is wrong with either guest.
    assert_eq!(nonzero_findings(&out), Vec::<String>::new());
    drop(conn);
}
