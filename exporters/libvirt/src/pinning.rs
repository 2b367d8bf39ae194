//! CPU pinning analysis: who claims which host CPU, and each way that pinning can be broken.
//!
//! Pure functions over the declared pinning of the running domains (paused ones keep their CPUs;
//! shut-off ones hold none), so every rule is tested without libvirt. Each vCPU with a declared
//! affinity is classified as nova means it ([`classify`]); a vCPU without one floats over every
//! host CPU. The findings:
//! - a host CPU claimed by dedicated vCPUs (or `isolate` emulator threads) of more than one
//!   domain (nova's pinning after a live migration or evacuation gone wrong);
//! - a dedicated CPU that floating vCPUs may also use;
//! - dedicated CPUs outside nova's `cpu_dedicated_set`, floating CPUs (and `share` emulator
//!   threads) outside `cpu_shared_set`;
//! - emulator threads pinned onto CPUs that another domain's dedicated vCPUs hold.
//!
//! The overlapping pairs are evidence, bounded per domain (`evidence_limit`, the other domains
//! first by name): n domains on one CPU make n x (n - 1) pairs. The per-domain counts stay exact.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use crate::capabilities::NumaTopology;
use crate::cpuset::CpuSet;
use crate::domain_xml::DomainXml;
use crate::nova_conf::NovaCpuSets;
use crate::nova_policy::{CpuPolicy, EmulatorPolicy, NovaCpu};

/// How a vCPU uses its host CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuKind {
    /// Pinned for itself alone.
    Dedicated,
    /// Shares its CPUs with others.
    Floating,
    /// Cannot be told (malformed metadata, or an older nova's pin outside the known sets): left
    /// out of the analysis.
    Unknown,
}

impl VcpuKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dedicated => "dedicated",
            Self::Floating => "floating",
            Self::Unknown => "unknown",
        }
    }
}

/// One vCPU's claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuClaim {
    pub vcpu: u32,
    pub cpus: CpuSet,
    pub kind: VcpuKind,
}

/// The emulator threads' claim (`<emulatorpin>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatorClaim {
    pub cpus: CpuSet,
    pub policy: EmulatorPolicy,
}

/// A domain's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainClaims {
    pub domain: String,
    pub vcpus: Vec<VcpuClaim>,
    pub emulator: Option<EmulatorClaim>,
    /// Host NUMA nodes its memory is bound to by `<numatune><memory mode="strict">`.
    pub strict_memory_nodes: Option<CpuSet>,
}

impl DomainClaims {
    fn vcpu_cpus(&self, kind: VcpuKind) -> CpuSet {
        self.vcpus
            .iter()
            .filter(|v| v.kind == kind)
            .fold(CpuSet::new(), |acc, v| acc.union(&v.cpus))
    }

    fn emulator_cpus(&self, policy: EmulatorPolicy) -> CpuSet {
        self.emulator
            .as_ref()
            .filter(|e| e.policy == policy)
            .map(|e| e.cpus.clone())
            .unwrap_or_default()
    }

    /// Host CPUs of the domain's dedicated vCPUs.
    pub fn dedicated_vcpu_cpus(&self) -> CpuSet {
        self.vcpu_cpus(VcpuKind::Dedicated)
    }

    /// Host CPUs the domain claims for itself: its dedicated vCPUs and `isolate` emulator
    /// threads.
    pub fn dedicated_cpus(&self) -> CpuSet {
        self.dedicated_vcpu_cpus()
            .union(&self.emulator_cpus(EmulatorPolicy::Isolate))
    }

    /// Host CPUs its floating vCPUs may use.
    pub fn floating_cpus(&self) -> CpuSet {
        self.vcpu_cpus(VcpuKind::Floating)
    }
}

/// The kind of a vCPU whose declared affinity is `set`, by nova's `cpu_shared_set` and
/// `cpu_dedicated_set` alone: inside the shared set floating, inside the dedicated set
/// dedicated; outside both known sets, dedicated when pinned to one CPU (a finding either way);
/// otherwise unknown.
fn by_host_sets(set: &CpuSet, sets: &NovaCpuSets) -> VcpuKind {
    if sets.shared.as_ref().is_some_and(|s| set.is_subset(s)) {
        VcpuKind::Floating
    } else if sets.dedicated.as_ref().is_some_and(|d| set.is_subset(d)) {
        VcpuKind::Dedicated
    } else if sets.shared.is_some() && sets.dedicated.is_some() {
        single_cpu(set)
    } else {
        VcpuKind::Unknown
    }
}

fn single_cpu(set: &CpuSet) -> VcpuKind {
    if set.len() == 1 {
        VcpuKind::Dedicated
    } else {
        VcpuKind::Floating
    }
}

/// The kind of vCPU `vcpu` of `dom` with declared affinity `declared` (`None`: any host CPU),
/// on a host with nova's `sets`, by the first rule that applies:
/// - malformed nova metadata: unknown;
/// - no declared affinity: floating (over every host CPU);
/// - nova's policy known from the flavor's extra specs or the image properties (a missing policy
///   is `shared` when nova wrote either): `dedicated` dedicated, `shared` floating, `mixed`
///   dedicated for the vCPUs of its dedicated mask and floating for the others;
/// - nova metadata without either (nova 31 and older), or `mixed` without a mask: by the host's
///   sets ([`by_host_sets`]);
/// - no nova metadata at all: dedicated when pinned to exactly one host CPU, else floating.
pub fn classify(
    dom: &DomainXml,
    vcpu: u32,
    declared: Option<&CpuSet>,
    sets: &NovaCpuSets,
) -> VcpuKind {
    if matches!(dom.nova_cpu.cpu, NovaCpu::Malformed) {
        return VcpuKind::Unknown;
    }
    let Some(set) = declared else {
        return VcpuKind::Floating;
    };
    match &dom.nova_cpu.cpu {
        NovaCpu::NotNova => single_cpu(set),
        NovaCpu::Malformed => VcpuKind::Unknown,
        NovaCpu::Policy(CpuPolicy::Dedicated, _) => VcpuKind::Dedicated,
        NovaCpu::Policy(CpuPolicy::Shared, _) => VcpuKind::Floating,
        NovaCpu::Policy(CpuPolicy::Mixed(Some(mask)), _) => {
            if mask.contains(vcpu) {
                VcpuKind::Dedicated
            } else {
                VcpuKind::Floating
            }
        }
        NovaCpu::Policy(CpuPolicy::Mixed(None), _) | NovaCpu::Unrecorded => by_host_sets(set, sets),
    }
}

/// The claims a domain's XML declares, on a host with `host_cpus` CPUs and nova's `sets`.
pub fn claims_of(dom: &DomainXml, host_cpus: u32, sets: &NovaCpuSets) -> DomainClaims {
    let vcpus = (0..dom.vcpus_current)
        .map(|vcpu| {
            let declared = dom.vcpu_affinity(vcpu);
            VcpuClaim {
                vcpu,
                cpus: declared.cloned().unwrap_or_else(|| CpuSet::all(host_cpus)),
                kind: classify(dom, vcpu, declared, sets),
            }
        })
        .collect();
    let emulator = match dom.nova_cpu.cpu {
        NovaCpu::Malformed => None,
        _ => dom.emulator_pin.as_ref().map(|cpus| EmulatorClaim {
            cpus: cpus.clone(),
            policy: dom.nova_cpu.emulator,
        }),
    };
    let strict_memory_nodes = dom
        .numa_memory
        .as_ref()
        .filter(|m| m.mode == "strict")
        .and_then(|m| crate::cpuset::parse_cpuset(&m.nodeset).ok())
        .filter(|n| !n.is_empty());
    DomainClaims {
        domain: dom.name.clone(),
        vcpus,
        emulator,
        strict_memory_nodes,
    }
}

/// The dedicated CPUs of `d` on NUMA nodes outside the nodes its memory is strictly bound to
/// (nova binds a pinned guest's memory to the nodes of its CPUs; a migration that kept the
/// source host's `<numatune>` does not). `None` when the domain binds no memory strictly or has
/// no dedicated vCPU. CPUs on no known node are not counted.
pub fn numa_remote_cpus(d: &DomainClaims, topo: &NumaTopology) -> Option<CpuSet> {
    let nodes = d.strict_memory_nodes.as_ref()?;
    let cpus = d.dedicated_vcpu_cpus();
    if cpus.is_empty() {
        return None;
    }
    let local = topo.cpus_of(nodes);
    let known = topo.cpus_of(&topo.cells.iter().map(|(n, _)| *n).collect());
    Some(cpus.intersection(&known).difference(&local))
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
    /// Its floating CPUs and `share` emulator CPUs outside `cpu_shared_set` (`None`: the set
    /// is not known).
    pub outside_shared_set: Option<CpuSet>,
    /// Its emulator CPUs that another domain's dedicated vCPUs hold.
    pub emulator_overlap: CpuSet,
    /// Other domains left out of [`PinningReport::emulator_overlaps`] by the evidence limit.
    pub emulator_overlap_omitted: usize,
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
    /// `(domain, other domain, CPUs)`: the domain's emulator threads are pinned onto CPUs the
    /// other domain's dedicated vCPUs hold; bounded and sorted like `overlaps`.
    pub emulator_overlaps: Vec<(String, String, CpuSet)>,
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
    let dedicated: Vec<CpuSet> = claims.iter().map(|c| c.dedicated_cpus()).collect();
    let floating: Vec<CpuSet> = claims.iter().map(|c| c.floating_cpus()).collect();
    let all_floating = floating.iter().fold(CpuSet::new(), |a, s| a.union(s));
    let mut report = PinningReport {
        cpus: cpu_uses(claims, &dedicated, &floating, host_cpus),
        ..PinningReport::default()
    };
    let (mut overlap_of, omitted) =
        dedicated_overlaps(claims, &dedicated, evidence_limit, &mut report.overlaps);
    let (mut emu_overlap, emu_omitted) =
        emulator_overlaps(claims, evidence_limit, &mut report.emulator_overlaps);
    for (i, d) in claims.iter().enumerate() {
        let share_emulator = d.emulator_cpus(EmulatorPolicy::Share);
        let findings = DomainFindings {
            dedicated_in_shared: dedicated[i].intersection(&all_floating),
            outside_dedicated_set: nova.dedicated.as_ref().map(|s| dedicated[i].difference(s)),
            outside_shared_set: nova
                .shared
                .as_ref()
                .map(|s| floating[i].union(&share_emulator).difference(s)),
            dedicated_cpus: dedicated[i].clone(),
            floating_cpus: floating[i].clone(),
            overlap: std::mem::take(&mut overlap_of[i]),
            overlap_omitted: omitted[i],
            emulator_overlap: std::mem::take(&mut emu_overlap[i]),
            emulator_overlap_omitted: emu_omitted[i],
        };
        report.domains.insert(d.domain.clone(), findings);
    }
    report
        .overlaps
        .sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    report
        .emulator_overlaps
        .sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    report
}

/// Per host CPU, the pinned vCPUs and the domains that claim it (dedicated or floating).
///
/// Entries (3 series each) beyond the host's CPUs exist only for a CPU a dedicated vCPU is
/// pinned to alone: libvirt accepts any cpuset up to CPU 16383, and one wide set would make
/// thousands of entries. The per-domain findings keep every CPU.
fn cpu_uses(
    claims: &[&DomainClaims],
    dedicated: &[CpuSet],
    floating: &[CpuSet],
    host_cpus: u32,
) -> BTreeMap<u32, CpuUse> {
    let mut cpus: BTreeMap<u32, CpuUse> = (0..host_cpus).map(|c| (c, CpuUse::default())).collect();
    let pinned_alone: CpuSet = claims
        .iter()
        .flat_map(|d| d.vcpus.iter().filter(|v| v.kind == VcpuKind::Dedicated))
        .filter_map(|v| v.cpus.single())
        .filter(|c| *c >= host_cpus)
        .collect();
    let counted = |c: &u32| *c < host_cpus || pinned_alone.contains(*c);
    for (i, d) in claims.iter().enumerate() {
        for v in d.vcpus.iter().filter(|v| v.kind == VcpuKind::Dedicated) {
            for c in v.cpus.iter().filter(counted) {
                cpus.entry(c).or_default().pinned_vcpus += 1;
            }
        }
        for c in dedicated[i].iter().filter(counted) {
            cpus.entry(c).or_default().dedicated_domains += 1;
        }
        for c in floating[i].iter().filter(counted) {
            cpus.entry(c).or_default().floating_domains += 1;
        }
    }
    cpus
}

/// Per domain, its dedicated CPUs another domain also claims as dedicated and how many other
/// domains were left out of `evidence` (which gets at most `evidence_limit` per domain, the
/// first by name).
///
/// Overlaps come from CPUs with several owners, so the cost grows with domains x CPUs, not
/// domains squared; work and memory grow with the candidates visited (at worst domains squared,
/// as plain index visits), never with a map of every pair.
fn dedicated_overlaps(
    claims: &[&DomainClaims],
    dedicated: &[CpuSet],
    evidence_limit: usize,
    evidence: &mut Vec<(String, String, CpuSet)>,
) -> (Vec<CpuSet>, Vec<usize>) {
    let mut owners: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, set) in dedicated.iter().enumerate() {
        for c in set.iter() {
            owners.entry(c).or_default().push(i);
        }
    }
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
            evidence.push((
                claims[i].domain.clone(),
                claims[j].domain.clone(),
                dedicated[i].intersection(&dedicated[j]),
            ));
        }
    }
    (overlap_of, omitted)
}

/// Per domain, its emulator CPUs that other domains' dedicated vCPUs hold, and how many other
/// domains were left out of `evidence` (bounded like [`dedicated_overlaps`]).
fn emulator_overlaps(
    claims: &[&DomainClaims],
    evidence_limit: usize,
    evidence: &mut Vec<(String, String, CpuSet)>,
) -> (Vec<CpuSet>, Vec<usize>) {
    let mut vcpu_owners: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, d) in claims.iter().enumerate() {
        for c in d.dedicated_vcpu_cpus().iter() {
            vcpu_owners.entry(c).or_default().push(i);
        }
    }
    let mut emu_overlap: Vec<CpuSet> = vec![CpuSet::new(); claims.len()];
    let mut emu_omitted: Vec<usize> = vec![0; claims.len()];
    for (i, d) in claims.iter().enumerate() {
        let Some(e) = &d.emulator else { continue };
        let mut others: BTreeMap<(&str, usize), CpuSet> = BTreeMap::new();
        for c in e.cpus.iter() {
            for &j in vcpu_owners.get(&c).map(Vec::as_slice).unwrap_or(&[]) {
                if j != i && claims[j].domain != d.domain {
                    emu_overlap[i].insert(c);
                    others
                        .entry((claims[j].domain.as_str(), j))
                        .or_default()
                        .insert(c);
                }
            }
        }
        emu_omitted[i] = others.len().saturating_sub(evidence_limit);
        for ((other, _), cpus) in others.into_iter().take(evidence_limit) {
            evidence.push((d.domain.clone(), other.to_string(), cpus));
        }
    }
    (emu_overlap, emu_omitted)
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
                    kind: if *d {
                        VcpuKind::Dedicated
                    } else {
                        VcpuKind::Floating
                    },
                })
                .collect(),
            emulator: None,
            strict_memory_nodes: None,
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

    /// A domain XML with nova metadata `meta` (`""`: none), `vcpus` vCPUs and `cputune`.
    fn dom(meta: &str, vcpus: u32, cputune: &str) -> DomainXml {
        let meta = if meta.is_empty() {
            String::new()
        } else {
            format!(
                r#"<metadata><nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">{meta}</nova:instance></metadata>"#
            )
        };
        crate::domain_xml::parse_domain_xml(&format!(
            "<domain><name>d</name>{meta}<vcpu>{vcpus}</vcpu><cputune>{cputune}</cputune></domain>"
        ))
        .unwrap()
    }

    /// nova 32+ flavor metadata with these extra specs.
    fn flavor(specs: &[(&str, &str)]) -> String {
        let specs: String = specs
            .iter()
            .map(|(k, v)| format!(r#"<nova:extraSpec name="{k}">{v}</nova:extraSpec>"#))
            .collect();
        format!(
            r#"<nova:flavor name="f" id="1"><nova:extraSpecs>{specs}</nova:extraSpecs></nova:flavor>"#
        )
    }

    fn kinds(d: &DomainClaims) -> String {
        d.vcpus
            .iter()
            .map(|v| &v.kind.as_str()[..1])
            .collect::<Vec<_>>()
            .join("")
    }

    #[test]
    fn claims_follow_nova() {
        // Host: shared 0 and 8 (one per NUMA node), dedicated 1-7 and 9-15.
        let sets = NovaCpuSets {
            dedicated: Some(parse_cpuset("1-7,9-15").unwrap()),
            shared: Some(parse_cpuset("0,8").unwrap()),
        };
        let pins = |cpus: &[&str]| -> String {
            cpus.iter()
                .enumerate()
                .map(|(i, c)| format!("<vcpupin vcpu='{i}' cpuset='{c}'/>"))
                .collect()
        };
        let old = r#"<nova:flavor name="f"><nova:vcpus>2</nova:vcpus></nova:flavor>"#;
        let cases: Vec<(&str, String, Vec<&str>, NovaCpuSets, &str)> = vec![
            // The false page of issue 15: nova 34 shared guest with hw:numa_nodes=1 on a single
            // shared CPU: no policy means shared.
            (
                "nova 34, no policy, one shared CPU",
                flavor(&[("hw:numa_nodes", "1")]),
                vec!["0", "0"],
                sets.clone(),
                "ff",
            ),
            (
                "nova 34, no policy, sets unknown",
                flavor(&[]),
                vec!["0", "0"],
                NovaCpuSets::default(),
                "ff",
            ),
            (
                "flavor dedicated",
                flavor(&[("hw:cpu_policy", "dedicated")]),
                vec!["1", "2"],
                sets.clone(),
                "dd",
            ),
            (
                "flavor shared on one CPU",
                flavor(&[("hw:cpu_policy", "shared")]),
                vec!["3", "3"],
                sets.clone(),
                "ff",
            ),
            (
                "mixed with mask ^0",
                flavor(&[("hw:cpu_policy", "mixed"), ("hw:cpu_dedicated_mask", "^0")]),
                vec!["0", "2"],
                sets.clone(),
                "fd",
            ),
            // mixed without a mask: by the host's sets.
            (
                "mixed, no mask",
                flavor(&[("hw:cpu_policy", "mixed")]),
                vec!["0", "2"],
                sets.clone(),
                "fd",
            ),
            (
                "image dedicated",
                format!(
                    r#"{}<nova:image uuid="i"><nova:properties><nova:property name="hw_cpu_policy">dedicated</nova:property></nova:properties></nova:image>"#,
                    flavor(&[])
                ),
                vec!["1", "2"],
                sets.clone(),
                "dd",
            ),
            // nova 31: no extra specs: the host's sets decide.
            (
                "nova 31, shared CPU",
                old.to_string(),
                vec!["0", "8"],
                sets.clone(),
                "ff",
            ),
            (
                "nova 31, dedicated CPUs",
                old.to_string(),
                vec!["1", "9"],
                sets.clone(),
                "dd",
            ),
            // Outside both sets: one CPU dedicated, several floating (a finding either way).
            (
                "nova 31, outside both",
                old.to_string(),
                vec!["16", "16-17"],
                sets.clone(),
                "df",
            ),
            // Only one set known and the pin outside it: cannot be told.
            (
                "nova 31, dedicated set only",
                old.to_string(),
                vec!["0", "1"],
                NovaCpuSets {
                    dedicated: sets.dedicated.clone(),
                    shared: None,
                },
                "ud",
            ),
            (
                "nova 31, no sets",
                old.to_string(),
                vec!["0", "1"],
                NovaCpuSets::default(),
                "uu",
            ),
            // No nova metadata: the one-CPU heuristic.
            (
                "no nova",
                String::new(),
                vec!["0", "1-2"],
                sets.clone(),
                "df",
            ),
            // Malformed policy: nothing is judged.
            (
                "unknown policy",
                flavor(&[("hw:cpu_policy", "pinned")]),
                vec!["1", "2"],
                sets.clone(),
                "uu",
            ),
            (
                "bad mask",
                flavor(&[("hw:cpu_policy", "mixed"), ("hw:cpu_dedicated_mask", "x")]),
                vec!["1", "2"],
                sets.clone(),
                "uu",
            ),
        ];
        for (name, meta, p, sets, want) in cases {
            let d = claims_of(&dom(&meta, p.len() as u32, &pins(&p)), 16, &sets);
            assert_eq!(kinds(&d), want, "{name}");
        }
        // No declared affinity floats over every host CPU, whatever the policy.
        let d = claims_of(
            &dom(
                &flavor(&[("hw:cpu_policy", "dedicated")]),
                2,
                "<vcpupin vcpu='0' cpuset='2'/>",
            ),
            8,
            &sets,
        );
        assert_eq!(kinds(&d), "df");
        assert_eq!(d.vcpus[1].cpus.to_string(), "0-7");
        // <vcpu cpuset> bounds vCPUs without their own pin.
        let x = crate::domain_xml::parse_domain_xml(
            "<domain><name>d</name><vcpu cpuset='0-1'>1</vcpu></domain>",
        )
        .unwrap();
        assert_eq!(claims_of(&x, 8, &sets).floating_cpus().to_string(), "0-1");
    }

    /// The false page of issue 15 end to end: three healthy nova 34 guests on a host with one
    /// shared CPU per NUMA node give no finding.
    #[test]
    fn shared_guests_on_a_single_shared_cpu_are_healthy() {
        let sets = NovaCpuSets {
            dedicated: Some(parse_cpuset("1-3,5-7").unwrap()),
            shared: Some(parse_cpuset("0,4").unwrap()),
        };
        let doms = [
            claims_of(&dom(&flavor(&[("hw:numa_nodes", "1")]), 2, "<vcpupin vcpu='0' cpuset='0'/><vcpupin vcpu='1' cpuset='0'/><emulatorpin cpuset='0'/>"), 8, &sets),
            claims_of(&dom(&flavor(&[("hw:numa_nodes", "2")]), 2, "<vcpupin vcpu='0' cpuset='0'/><vcpupin vcpu='1' cpuset='4'/><emulatorpin cpuset='0,4'/>"), 8, &sets),
            claims_of(&dom(&flavor(&[("hw:cpu_policy", "mixed"), ("hw:cpu_dedicated_mask", "^0")]), 2, "<vcpupin vcpu='0' cpuset='0'/><vcpupin vcpu='1' cpuset='1'/><emulatorpin cpuset='0-1'/>"), 8, &sets),
        ];
        let doms: Vec<DomainClaims> = doms
            .into_iter()
            .enumerate()
            .map(|(i, mut d)| {
                d.domain = format!("d{i}");
                d
            })
            .collect();
        let r = analyse(&doms, 8, &sets, 5);
        for (d, f) in &r.domains {
            assert!(
                f.overlap.is_empty() && f.dedicated_in_shared.is_empty(),
                "{d}: {f:?}"
            );
            assert_eq!(
                f.outside_dedicated_set.as_ref().map(CpuSet::len),
                Some(0),
                "{d}"
            );
            assert_eq!(
                f.outside_shared_set.as_ref().map(CpuSet::len),
                Some(0),
                "{d}"
            );
            assert!(f.emulator_overlap.is_empty(), "{d}: {f:?}");
        }
        assert_eq!(r.cpus[&0].dedicated_domains, 0);
        assert_eq!(r.cpus[&1].dedicated_domains, 1);
    }

    #[test]
    fn emulator_threads_join_the_analysis() {
        let sets = NovaCpuSets {
            dedicated: Some(parse_cpuset("2-7").unwrap()),
            shared: Some(parse_cpuset("0-1").unwrap()),
        };
        let ded = |extra: &[(&str, &str)], pins: &str, emu: &str| {
            let mut specs = vec![("hw:cpu_policy", "dedicated")];
            specs.extend_from_slice(extra);
            let tune = format!("{pins}<emulatorpin cpuset='{emu}'/>");
            claims_of(&dom(&flavor(&specs), 2, &tune), 8, &sets)
        };
        let named = |mut d: DomainClaims, n: &str| {
            d.domain = n.into();
            d
        };
        let a = named(
            ded(
                &[],
                "<vcpupin vcpu='0' cpuset='2'/><vcpupin vcpu='1' cpuset='3'/>",
                "2-3",
            ),
            "a",
        );
        // b isolates its emulator onto a's vCPU 1 (CPU 3).
        let b = named(
            ded(
                &[("hw:emulator_threads_policy", "isolate")],
                "<vcpupin vcpu='0' cpuset='4'/><vcpupin vcpu='1' cpuset='5'/>",
                "3",
            ),
            "b",
        );
        // c shares its emulator with the shared set, but also CPU 4 (b's vCPU).
        let c = named(
            ded(
                &[("hw:emulator_threads_policy", "share")],
                "<vcpupin vcpu='0' cpuset='6'/><vcpupin vcpu='1' cpuset='7'/>",
                "0-1,4",
            ),
            "c",
        );
        let r = analyse(&[a, b, c], 8, &sets, 5);
        let s = |x: &CpuSet| x.to_string();
        // Default policy: on its own CPUs, no finding.
        assert_eq!(s(&r.domains["a"].emulator_overlap), "");
        // isolate: a dedicated claim, so a and b overlap on CPU 3, and b's emulator sits on a's
        // vCPU.
        assert_eq!(s(&r.domains["b"].dedicated_cpus), "3-5");
        assert_eq!(s(&r.domains["a"].overlap), "3");
        assert_eq!(s(&r.domains["b"].overlap), "3");
        assert_eq!(s(&r.domains["b"].emulator_overlap), "3");
        // share: outside cpu_shared_set on CPU 4, and on b's vCPU.
        assert_eq!(
            r.domains["c"].outside_shared_set.as_ref().map(s).as_deref(),
            Some("4")
        );
        assert_eq!(s(&r.domains["c"].emulator_overlap), "4");
        assert_eq!(
            r.emulator_overlaps
                .iter()
                .map(|(d, o, c)| format!("{d}>{o}:{c}"))
                .collect::<Vec<_>>(),
            ["b>a:3", "c>b:4"]
        );
        // The evidence limit bounds the pairs, the count stays exact.
        let r = analyse(
            &[
                r_dom("x", "1-3"),
                r_dom_ded("p", "1"),
                r_dom_ded("q", "2"),
                r_dom_ded("r", "3"),
            ],
            8,
            &sets,
            2,
        );
        assert_eq!(r.emulator_overlaps.len(), 2);
        assert_eq!(r.domains["x"].emulator_overlap_omitted, 1);
        assert_eq!(r.domains["x"].emulator_overlap.to_string(), "1-3");
    }

    fn r_dom(name: &str, emu: &str) -> DomainClaims {
        DomainClaims {
            domain: name.into(),
            vcpus: vec![],
            emulator: Some(EmulatorClaim {
                cpus: parse_cpuset(emu).unwrap(),
                policy: EmulatorPolicy::None,
            }),
            strict_memory_nodes: None,
        }
    }

    fn r_dom_ded(name: &str, cpu: &str) -> DomainClaims {
        claim(name, &[(cpu, true)])
    }

    #[test]
    fn numa_remote_cpus_follow_the_host_topology() {
        let topo = NumaTopology {
            cells: vec![
                (0, parse_cpuset("0-3").unwrap()),
                (1, parse_cpuset("4-7").unwrap()),
            ],
        };
        let d = |numatune: &str, pins: &str, meta: &[(&str, &str)]| {
            let x = crate::domain_xml::parse_domain_xml(&format!(
                "<domain><name>d</name>{}<vcpu>2</vcpu><cputune>{pins}</cputune>{numatune}</domain>",
                format_args!(r#"<metadata><nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">{}</nova:instance></metadata>"#, flavor(meta)),
            ))
            .unwrap();
            claims_of(&x, 8, &NovaCpuSets::default())
        };
        let ded = [("hw:cpu_policy", "dedicated")];
        let pins = "<vcpupin vcpu='0' cpuset='1'/><vcpupin vcpu='1' cpuset='5'/>";
        let remote = |c: &DomainClaims| numa_remote_cpus(c, &topo).map(|s| s.to_string());
        // Memory on both nodes: nothing remote.
        let c = d(
            "<numatune><memory mode='strict' nodeset='0-1'/></numatune>",
            pins,
            &ded,
        );
        assert_eq!(remote(&c).as_deref(), Some(""));
        // Memory on node 1 only: CPU 1 computes on remote memory.
        let c = d(
            "<numatune><memory mode='strict' nodeset='1'/></numatune>",
            pins,
            &ded,
        );
        assert_eq!(remote(&c).as_deref(), Some("1"));
        // Not strict, no numatune, or no dedicated vCPU: not judged.
        let c = d(
            "<numatune><memory mode='preferred' nodeset='1'/></numatune>",
            pins,
            &ded,
        );
        assert_eq!(remote(&c), None);
        let c = d("", pins, &ded);
        assert_eq!(remote(&c), None);
        let c = d(
            "<numatune><memory mode='strict' nodeset='1'/></numatune>",
            pins,
            &[],
        );
        assert_eq!(remote(&c), None);
    }
}
