//! CPU pinning analysis: who claims which host CPU, and each way that pinning can be broken.
//!
//! Pure functions over the declared pinning of the running domains (paused ones keep their CPUs;
//! shut-off ones hold none), so every rule is tested without libvirt. A vCPU is *dedicated* when
//! its domain's flavor says `hw:cpu_policy=dedicated`, or (for `mixed` and for domains without
//! nova's flavor) when it is pinned to exactly one host CPU; every other vCPU *floats* over its
//! declared set, or over every host CPU when it has none. The findings:
//! - a host CPU claimed by dedicated vCPUs of more than one domain (nova's pinning after a live
//!   migration or evacuation gone wrong);
//! - a dedicated CPU that floating vCPUs may also use;
//! - dedicated CPUs outside nova's `cpu_dedicated_set`, floating CPUs outside `cpu_shared_set`.
//!
//! The overlapping pairs are evidence, bounded per domain (`evidence_limit`, the other domains
//! first by name): n domains on one CPU make n x (n - 1) pairs. The per-domain counts stay exact.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use crate::cpuset::CpuSet;
use crate::domain_xml::DomainXml;
use crate::nova_conf::NovaCpuSets;

/// One vCPU's claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuClaim {
    pub vcpu: u32,
    pub cpus: CpuSet,
    pub dedicated: bool,
}

/// A domain's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainClaims {
    pub domain: String,
    pub vcpus: Vec<VcpuClaim>,
}

impl DomainClaims {
    /// Host CPUs of the domain's dedicated vCPUs.
    pub fn dedicated_cpus(&self) -> CpuSet {
        self.vcpus
            .iter()
            .filter(|v| v.dedicated)
            .fold(CpuSet::new(), |acc, v| acc.union(&v.cpus))
    }

    /// Host CPUs its floating vCPUs may use.
    pub fn floating_cpus(&self) -> CpuSet {
        self.vcpus
            .iter()
            .filter(|v| !v.dedicated)
            .fold(CpuSet::new(), |acc, v| acc.union(&v.cpus))
    }
}

/// The claims a domain's XML declares, on a host with `host_cpus` CPUs.
pub fn claims_of(dom: &DomainXml, host_cpus: u32) -> DomainClaims {
    let policy = dom.cpu_policy();
    let vcpus = (0..dom.vcpus_current)
        .map(|vcpu| {
            let declared = dom.vcpu_affinity(vcpu);
            let single = declared.is_some_and(|s| s.len() == 1);
            let dedicated = match policy {
                Some("dedicated") => declared.is_some(),
                Some("shared") => false,
                _ => single,
            };
            VcpuClaim {
                vcpu,
                cpus: declared.cloned().unwrap_or_else(|| CpuSet::all(host_cpus)),
                dedicated,
            }
        })
        .collect();
    DomainClaims {
        domain: dom.name.clone(),
        vcpus,
    }
}

/// Use of one host CPU.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CpuUse {
    /// Dedicated vCPUs pinned to it.
    pub pinned_vcpus: u32,
    /// Distinct domains with dedicated vCPUs on it (more than one is broken).
    pub dedicated_domains: u32,
    /// Distinct domains whose floating vCPUs may run on it.
    pub floating_domains: u32,
}

/// What is wrong with one domain's pinning; empty sets mean nothing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DomainFindings {
    pub dedicated_cpus: CpuSet,
    pub floating_cpus: CpuSet,
    /// Its dedicated CPUs that another domain's dedicated vCPUs also claim.
    pub overlap: CpuSet,
    /// Other domains sharing its dedicated CPUs that are left out of [`PinningReport::overlaps`]
    /// by the evidence limit.
    pub overlap_omitted: usize,
    /// Its dedicated CPUs that floating vCPUs (of any domain) may use.
    pub dedicated_in_shared: CpuSet,
    /// Its dedicated CPUs outside `cpu_dedicated_set` (`None`: the set is not known).
    pub outside_dedicated_set: Option<CpuSet>,
    /// Its floating CPUs outside `cpu_shared_set` (`None`: the set is not known).
    pub outside_shared_set: Option<CpuSet>,
}

/// The whole host.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PinningReport {
    /// Every host CPU (and a CPU beyond them that a dedicated vCPU is pinned to alone).
    pub cpus: BTreeMap<u32, CpuUse>,
    pub domains: BTreeMap<String, DomainFindings>,
    /// `(domain, other domain, shared CPUs)` for ordered pairs of overlapping domains, sorted:
    /// for each domain, at most `evidence_limit` other domains, the first ones by name.
    pub overlaps: Vec<(String, String, CpuSet)>,
}

/// Analyses the claims of the running domains, keeping at most `evidence_limit` overlapping
/// pairs per domain.
pub fn analyse<C: std::borrow::Borrow<DomainClaims>>(
    claims: &[C],
    host_cpus: u32,
    nova: &NovaCpuSets,
    evidence_limit: usize,
) -> PinningReport {
    let claims: Vec<&DomainClaims> = claims.iter().map(C::borrow).collect();
    let claims = claims.as_slice();
    let mut report = PinningReport::default();
    for c in 0..host_cpus {
        report.cpus.insert(c, CpuUse::default());
    }
    let dedicated: Vec<CpuSet> = claims.iter().map(|c| c.dedicated_cpus()).collect();
    let floating: Vec<CpuSet> = claims.iter().map(|c| c.floating_cpus()).collect();
    let all_floating = floating.iter().fold(CpuSet::new(), |a, s| a.union(s));

    // Per-CPU entries (3 series each) beyond the host's CPUs only for a CPU a dedicated vCPU is
    // pinned to alone: libvirt accepts any cpuset up to CPU 16383, and one wide set would make
    // thousands of entries. The per-domain findings below keep every CPU.
    let pinned_alone: CpuSet = claims
        .iter()
        .flat_map(|d| d.vcpus.iter().filter(|v| v.dedicated))
        .filter_map(|v| v.cpus.single())
        .filter(|c| *c >= host_cpus)
        .collect();
    let counted = |c: &u32| *c < host_cpus || pinned_alone.contains(*c);
    for (i, d) in claims.iter().enumerate() {
        for v in d.vcpus.iter().filter(|v| v.dedicated) {
            for c in v.cpus.iter().filter(counted) {
                report.cpus.entry(c).or_default().pinned_vcpus += 1;
            }
        }
        for c in dedicated[i].iter().filter(counted) {
            report.cpus.entry(c).or_default().dedicated_domains += 1;
        }
        for c in floating[i].iter().filter(counted) {
            report.cpus.entry(c).or_default().floating_domains += 1;
        }
    }

    // Which domains claim each CPU as dedicated: overlaps come from CPUs with several, so the
    // cost grows with domains x CPUs, not domains squared.
    let mut owners: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, set) in dedicated.iter().enumerate() {
        for c in set.iter() {
            owners.entry(c).or_default().push(i);
        }
    }
    // Per domain, the other domains on its CPUs. Work and memory grow with the candidates
    // visited (at worst domains squared, as plain index visits), never with a map of every pair.
    let mut overlap_of: Vec<CpuSet> = vec![CpuSet::new(); claims.len()];
    let mut omitted: Vec<usize> = vec![0; claims.len()];
    let mut seen: Vec<bool> = vec![false; claims.len()];
    for (i, set) in dedicated.iter().enumerate() {
        let mut others: Vec<usize> = Vec::new();
        for c in set.iter() {
            let Some(doms) = owners.get(&c).filter(|d| d.len() > 1) else {
                continue;
            };
            for &j in doms {
                if j != i && claims[i].domain != claims[j].domain {
                    overlap_of[i].insert(c);
                    if !seen[j] {
                        seen[j] = true;
                        others.push(j);
                    }
                }
            }
        }
        for &j in &others {
            seen[j] = false;
        }
        // The first ones by name, then by position for equal names (deterministic).
        others.sort_by(|&a, &b| (&claims[a].domain, a).cmp(&(&claims[b].domain, b)));
        omitted[i] = others.len().saturating_sub(evidence_limit);
        for &j in others.iter().take(evidence_limit) {
            report.overlaps.push((
                claims[i].domain.clone(),
                claims[j].domain.clone(),
                dedicated[i].intersection(&dedicated[j]),
            ));
        }
    }

    for (i, d) in claims.iter().enumerate() {
        let findings = DomainFindings {
            dedicated_in_shared: dedicated[i].intersection(&all_floating),
            outside_dedicated_set: nova.dedicated.as_ref().map(|s| dedicated[i].difference(s)),
            outside_shared_set: nova.shared.as_ref().map(|s| floating[i].difference(s)),
            dedicated_cpus: dedicated[i].clone(),
            floating_cpus: floating[i].clone(),
            overlap: std::mem::take(&mut overlap_of[i]),
            overlap_omitted: omitted[i],
        };
        report.domains.insert(d.domain.clone(), findings);
    }
    report
        .overlaps
        .sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpuset::parse_cpuset;

    fn claim(domain: &str, vcpus: &[(&str, bool)]) -> DomainClaims {
        DomainClaims {
            domain: domain.into(),
            vcpus: vcpus
                .iter()
                .enumerate()
                .map(|(i, (s, d))| VcpuClaim {
                    vcpu: i as u32,
                    cpus: parse_cpuset(s).unwrap(),
                    dedicated: *d,
                })
                .collect(),
        }
    }

    fn s(set: &CpuSet) -> String {
        set.to_string()
    }

    #[test]
    fn per_cpu_entries_are_bounded_by_the_host() {
        // libvirt accepts cpusets up to CPU 16383 whatever the host: one domain floating over
        // 0-8191 made 8,192 per-CPU entries (3 series each) on a 16-CPU host.
        let claims = vec![
            claim("wide", &[("0-8191", false), ("0-8191", false)]),
            claim("wide-dedicated", &[("20-8191", true)]),
            claim("far", &[("40", true)]),
            claim("near", &[("4", true)]),
        ];
        let r = analyse(&claims, 16, &NovaCpuSets::default(), 5);
        // The host's CPUs, and a CPU beyond them that a dedicated vCPU is pinned to alone.
        assert_eq!(r.cpus.len(), 17);
        let cpus: Vec<u32> = r.cpus.keys().copied().collect();
        let want: Vec<u32> = (0..16).chain([40]).collect();
        assert_eq!(cpus, want);
        assert_eq!(r.cpus[&40].dedicated_domains, 2);
        assert_eq!(r.cpus[&4].floating_domains, 1);
        // The per-domain findings keep every CPU.
        assert_eq!(r.domains["wide-dedicated"].dedicated_cpus.len(), 8172);
        assert_eq!(r.domains["far"].overlap.to_string(), "40");
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            claims: Vec<DomainClaims>,
            nova: NovaCpuSets,
            // per domain: overlap, dedicated_in_shared, outside dedicated set, outside shared set
            want: Vec<(
                &'static str,
                &'static str,
                &'static str,
                &'static str,
                &'static str,
            )>,
        }
        let sets = NovaCpuSets {
            dedicated: Some(parse_cpuset("4-11").unwrap()),
            shared: Some(parse_cpuset("0-3").unwrap()),
        };
        let cases = vec![
            Case {
                name: "clean dedicated and shared",
                claims: vec![
                    claim("a", &[("4", true), ("5", true)]),
                    claim("b", &[("6", true), ("7", true)]),
                    claim("s", &[("0-3", false)]),
                ],
                nova: sets.clone(),
                want: vec![
                    ("a", "", "", "", ""),
                    ("b", "", "", "", ""),
                    ("s", "", "", "", ""),
                ],
            },
            Case {
                name: "two dedicated domains on the same CPUs",
                claims: vec![
                    claim("a", &[("4", true), ("5", true)]),
                    claim("b", &[("5", true), ("6", true)]),
                ],
                nova: NovaCpuSets::default(),
                want: vec![("a", "5", "", "-", "-"), ("b", "5", "", "-", "-")],
            },
            Case {
                name: "dedicated inside a floating set, and floating outside the shared set",
                claims: vec![
                    claim("a", &[("2", true), ("12", true)]),
                    claim("s", &[("0-5", false)]),
                ],
                nova: sets.clone(),
                want: vec![("a", "", "2", "2,12", ""), ("s", "", "", "", "4-5")],
            },
            Case {
                name: "mixed domain",
                claims: vec![claim("m", &[("4", true), ("0-3", false)])],
                nova: sets,
                want: vec![("m", "", "", "", "")],
            },
        ];
        for c in cases {
            let r = analyse(&c.claims, 16, &c.nova, 5);
            for (d, overlap, in_shared, out_ded, out_sh) in c.want {
                let f = &r.domains[d];
                let opt = |o: &Option<CpuSet>| o.as_ref().map(s).unwrap_or_else(|| "-".into());
                assert_eq!(
                    (
                        s(&f.overlap).as_str(),
                        s(&f.dedicated_in_shared).as_str(),
                        opt(&f.outside_dedicated_set).as_str(),
                        opt(&f.outside_shared_set).as_str()
                    ),
                    (overlap, in_shared, out_ded, out_sh),
                    "{}: domain {d}",
                    c.name
                );
            }
        }
    }

    #[test]
    fn per_cpu_counts() {
        let r = analyse(
            &[
                claim("a", &[("4", true), ("5", true)]),
                claim("b", &[("5", true)]),
                claim("s", &[("5-6", false)]),
            ],
            8,
            &NovaCpuSets::default(),
            5,
        );
        assert_eq!(r.cpus.len(), 8);
        assert_eq!(
            r.cpus[&5],
            CpuUse {
                pinned_vcpus: 2,
                dedicated_domains: 2,
                floating_domains: 1
            }
        );
        assert_eq!(
            r.cpus[&4],
            CpuUse {
                pinned_vcpus: 1,
                dedicated_domains: 1,
                floating_domains: 0
            }
        );
        assert_eq!(r.cpus[&0], CpuUse::default());
        assert_eq!(r.overlaps.len(), 2);
        assert_eq!(r.overlaps[0].0, "a");
        assert_eq!(r.overlaps[0].2.to_string(), "5");
    }

    #[test]
    fn overlap_evidence_is_bounded_per_domain_and_counts_stay_exact() {
        // d00..d11 all pinned to CPU 3; d00 also shares CPU 4 with d11 alone.
        let mut claims: Vec<_> = (0..12)
            .map(|i| claim(&format!("d{i:02}"), &[("3", true)]))
            .collect();
        claims[0]
            .vcpus
            .push(claim("x", &[("4", true)]).vcpus.remove(0));
        claims[11]
            .vcpus
            .push(claim("x", &[("4", true)]).vcpus.remove(0));
        claims.reverse();
        let r = analyse(&claims, 8, &NovaCpuSets::default(), 3);
        let of = |d: &str| {
            r.overlaps
                .iter()
                .filter(|o| o.0 == d)
                .map(|o| format!("{}:{}", o.1, o.2))
                .collect::<Vec<_>>()
        };
        assert_eq!(of("d00"), ["d01:3", "d02:3", "d03:3"]);
        assert_eq!(of("d11"), ["d00:3-4", "d01:3", "d02:3"]);
        assert_eq!(of("d01"), ["d00:3", "d02:3", "d03:3"]);
        assert_eq!(r.overlaps.len(), 12 * 3);
        assert_eq!(r.domains["d00"].overlap_omitted, 11 - 3);
        assert_eq!(r.domains["d00"].overlap.to_string(), "3-4");
        assert_eq!(r.domains["d05"].overlap.to_string(), "3");
        assert_eq!(r.cpus[&3].dedicated_domains, 12);

        // Limit 0: no pairs, every other domain counted as omitted.
        let r = analyse(&claims, 8, &NovaCpuSets::default(), 0);
        assert!(r.overlaps.is_empty());
        assert_eq!(r.domains["d07"].overlap_omitted, 11);
        assert_eq!(r.domains["d07"].overlap.to_string(), "3");
        // A limit above the others: every pair, nothing omitted.
        let r = analyse(&claims, 8, &NovaCpuSets::default(), 100);
        assert_eq!(r.overlaps.len(), 12 * 11);
        assert_eq!(r.domains["d07"].overlap_omitted, 0);
    }

    #[test]
    fn claims_follow_policy() {
        let xml = |policy: &str, cputune: &str, vcpu: &str| {
            format!(
                r#"<domain><name>d</name><metadata><nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1"><nova:flavor name="f"><nova:extraSpecs>{policy}</nova:extraSpecs></nova:flavor></nova:instance></metadata>{vcpu}<cputune>{cputune}</cputune></domain>"#
            )
        };
        let spec =
            |p: &str| format!(r#"<nova:extraSpec name="hw:cpu_policy">{p}</nova:extraSpec>"#);
        let pins = "<vcpupin vcpu='0' cpuset='2'/><vcpupin vcpu='1' cpuset='4-5'/>";
        let parse = |x: String| crate::domain_xml::parse_domain_xml(&x).unwrap();
        let ded = |d: &DomainClaims| d.vcpus.iter().map(|v| v.dedicated).collect::<Vec<_>>();

        let d = claims_of(&parse(xml(&spec("dedicated"), pins, "<vcpu>2</vcpu>")), 8);
        assert_eq!(ded(&d), vec![true, true]);
        let d = claims_of(&parse(xml(&spec("shared"), pins, "<vcpu>2</vcpu>")), 8);
        assert_eq!(ded(&d), vec![false, false]);
        let d = claims_of(&parse(xml(&spec("mixed"), pins, "<vcpu>2</vcpu>")), 8);
        assert_eq!(ded(&d), vec![true, false]);
        // No flavor policy: a single-CPU pin is dedicated; no pin floats everywhere.
        let d = claims_of(
            &parse(xml("", "<vcpupin vcpu='0' cpuset='2'/>", "<vcpu>2</vcpu>")),
            8,
        );
        assert_eq!(ded(&d), vec![true, false]);
        assert_eq!(d.vcpus[1].cpus.to_string(), "0-7");
        // <vcpu cpuset> bounds vCPUs without their own pin.
        let d = claims_of(&parse(xml("", "", "<vcpu cpuset='0-1'>1</vcpu>")), 8);
        assert_eq!(d.floating_cpus().to_string(), "0-1");
    }
}
