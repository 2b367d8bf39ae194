//! What nova asked for a domain's CPUs: its CPU policy, the dedicated vCPUs of a `mixed` guest
//! and its emulator threads policy, read from nova's metadata as nova reads them
//! (`get_cpu_policy_constraint`, `get_dedicated_cpu_constraint`, `get_realtime_cpu_constraint`
//! and `get_emulator_thread_policy_constraint` in nova/virt/hardware.py).
//!
//! The sources, most exact first: the flavor's extra specs (`hw:cpu_policy`,
//! `hw:cpu_dedicated_mask`, `hw:emulator_threads_policy`), then the image properties nova
//! writes under `<nova:image>` (`hw_cpu_policy`, `hw_cpu_dedicated_mask`,
//! `hw_emulator_threads_policy`). When nova wrote extra specs or an image (nova 32 and later) and
//! neither names a policy, the policy is `shared`, as for nova. Older nova writes neither: the
//! policy is then not known from the metadata and the pinning analysis falls back on the host's
//! sets ([`NovaCpu::Unrecorded`]).
//!
//! A value nova would refuse (an unknown policy, a mask that does not parse or names no vCPU or
//! every vCPU) and an image property that is not text are a *problem*: the caller counts it as
//! malformed metadata, and the domain's vCPUs are left out of the analysis so that nothing is
//! judged on a guess.
#![forbid(unsafe_code)]

use crate::cpuset::CpuSet;
use crate::nova::NovaInstance;
use crate::nova_conf::parse_nova_cpu_spec;

/// The CPU policy nova applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuPolicy {
    Shared,
    Dedicated,
    /// `mixed`: the dedicated vCPUs (the rest are shared), or `None` when the metadata names
    /// none (a realtime mask nova did not record).
    Mixed(Option<CpuSet>),
}

/// Where nova's CPU policy for a domain stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NovaCpu {
    /// No nova metadata at all.
    NotNova,
    /// nova metadata without extra specs or image (nova 31 and older): the policy is not
    /// recorded.
    Unrecorded,
    /// The policy, and which source gave it (`flavor`, `image` or `default`).
    Policy(CpuPolicy, &'static str),
    /// A value nova would not accept: see [`NovaCpuInfo::problem`].
    Malformed,
}

/// The emulator threads policy (`hw:emulator_threads_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmulatorPolicy {
    /// No policy: for a pinned guest, the emulator runs on the guest's own CPUs.
    #[default]
    None,
    /// On nova's `cpu_shared_set`.
    Share,
    /// On a dedicated host CPU of its own.
    Isolate,
}

impl EmulatorPolicy {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Share => "share",
            Self::Isolate => "isolate",
        }
    }
}

/// What nova asked for, with the reason if some of it was unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NovaCpuInfo {
    pub cpu: NovaCpu,
    pub emulator: EmulatorPolicy,
    /// Why the CPU metadata is malformed.
    pub problem: Option<String>,
}

impl Default for NovaCpuInfo {
    fn default() -> Self {
        Self {
            cpu: NovaCpu::NotNova,
            emulator: EmulatorPolicy::None,
            problem: None,
        }
    }
}

/// Reads a vCPU mask as nova does: a leading `^` excludes from all `vcpus` vCPUs, otherwise the
/// mask lists them. `None` when it does not parse, names no vCPU, every vCPU or one beyond them.
fn vcpu_mask(mask: &str, vcpus: u32) -> Option<CpuSet> {
    let all = CpuSet::all(vcpus);
    let set = if mask.trim().starts_with('^') {
        parse_nova_cpu_spec(&format!("0-{},{mask}", vcpus.checked_sub(1)?)).ok()?
    } else {
        parse_nova_cpu_spec(mask).ok()?
    };
    let ok = !set.is_empty() && set.is_subset(&all) && set != all;
    ok.then_some(set)
}

fn truthy(v: Option<&str>) -> bool {
    // oslo's strutils.bool_from_string, strict=False: these are true, everything else false.
    v.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "t" | "true" | "on" | "y" | "yes"
        )
    })
}

/// What nova asked for the CPUs of a domain with metadata `nova` (`None`: none; `Some(Err)`:
/// unreadable) and `vcpus` vCPUs (nova's flavor's count when it wrote one).
pub fn nova_cpu_info(nova: Option<&Result<NovaInstance, String>>, vcpus: u32) -> NovaCpuInfo {
    let n = match nova {
        None => return NovaCpuInfo::default(),
        Some(Err(_)) => {
            // The metadata as a whole is unreadable (counted by the caller already).
            return NovaCpuInfo {
                cpu: NovaCpu::Malformed,
                ..NovaCpuInfo::default()
            };
        }
        Some(Ok(n)) => n,
    };
    let vcpus = n
        .flavor
        .vcpus
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(vcpus);
    let flavor = |k: &str| {
        n.flavor
            .extra_spec(k)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let image = |k: &str| {
        n.image
            .as_ref()
            .and_then(|i| i.property(k))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let mut problems: Vec<String> = Vec::new();
    if let Some(bad) = n
        .image
        .as_ref()
        .map(|i| i.malformed_properties)
        .filter(|c| *c > 0)
    {
        problems.push(format!("{bad} image properties that are not text"));
    }

    let emulator = match flavor("hw:emulator_threads_policy")
        .map(|v| ("hw:emulator_threads_policy", v))
        .or_else(|| image("hw_emulator_threads_policy").map(|v| ("hw_emulator_threads_policy", v)))
    {
        None => EmulatorPolicy::None,
        Some((_, "share")) => EmulatorPolicy::Share,
        Some((_, "isolate")) => EmulatorPolicy::Isolate,
        Some((k, other)) => {
            problems.push(format!("unknown {k} {other:?}"));
            EmulatorPolicy::None
        }
    };

    let recorded = n.flavor.extra_specs_written || n.image.is_some();
    let known = |k: &str, v: &str, problems: &mut Vec<String>| match v {
        "shared" | "dedicated" | "mixed" => true,
        other => {
            problems.push(format!("unknown {k} {other:?}"));
            false
        }
    };
    let fp = flavor("hw:cpu_policy");
    let ip = image("hw_cpu_policy");
    let fp_ok = fp.is_none_or(|v| known("hw:cpu_policy", v, &mut problems));
    let ip_ok = ip.is_none_or(|v| known("hw_cpu_policy", v, &mut problems));
    let (policy, source) = match (fp, ip) {
        (Some(v), _) => (Some(v), "flavor"),
        (None, Some(v)) => (Some(v), "image"),
        (None, None) => (None, "default"),
    };
    let cpu = if !fp_ok || !ip_ok {
        NovaCpu::Malformed
    } else {
        match policy {
            None if !recorded => NovaCpu::Unrecorded,
            None | Some("shared") => NovaCpu::Policy(CpuPolicy::Shared, source),
            Some("dedicated") => NovaCpu::Policy(CpuPolicy::Dedicated, source),
            _ => {
                // mixed: the flavor's dedicated mask, else the image's, else the realtime mask
                // (image first) of a realtime guest, as nova takes it.
                let mask = flavor("hw:cpu_dedicated_mask")
                    .map(|m| (m, false))
                    .or_else(|| image("hw_cpu_dedicated_mask").map(|m| (m, false)))
                    .or_else(|| {
                        // nova's is_realtime_enabled reads the flavor only.
                        let rt = truthy(flavor("hw:cpu_realtime"));
                        rt.then(|| image("hw_cpu_realtime_mask").or(flavor("hw:cpu_realtime_mask")))
                            .flatten()
                            .map(|m| (m, true))
                    });
                match mask {
                    None => NovaCpu::Policy(CpuPolicy::Mixed(None), source),
                    Some((m, realtime)) => match vcpu_mask(m, vcpus) {
                        Some(set) => NovaCpu::Policy(CpuPolicy::Mixed(Some(set)), source),
                        None => {
                            let what = if realtime { "realtime" } else { "dedicated" };
                            problems
                                .push(format!("unusable {what} vCPU mask {m:?} for {vcpus} vCPUs"));
                            NovaCpu::Malformed
                        }
                    },
                }
            }
        }
    };
    let problem = (!problems.is_empty()).then(|| {
        // Bounded: a value is at most as long as the XML, but the log line need not be.
        let mut p = problems.join("; ");
        if p.len() > 256 {
            let mut end = 256;
            while !p.is_char_boundary(end) {
                end -= 1;
            }
            p.truncate(end);
            p.push_str("...");
        }
        p
    });
    // Image properties that are not text: the rest of the policy stands only if nothing it
    // relies on was among them, which cannot be told; leave the vCPUs out.
    let cpu = if n.image.as_ref().is_some_and(|i| i.malformed_properties > 0) {
        NovaCpu::Malformed
    } else {
        cpu
    };
    NovaCpuInfo {
        cpu,
        emulator,
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nova::parse_nova_metadata;

    fn meta(specs: &[(&str, &str)], image: Option<&[(&str, &str)]>, vcpus: u32) -> String {
        let specs: String = specs
            .iter()
            .map(|(k, v)| format!(r#"<nova:extraSpec name="{k}">{v}</nova:extraSpec>"#))
            .collect();
        let image = image
            .map(|props| {
                let props: String = props
                    .iter()
                    .map(|(k, v)| format!(r#"<nova:property name="{k}">{v}</nova:property>"#))
                    .collect();
                format!(r#"<nova:image uuid="i"><nova:properties>{props}</nova:properties></nova:image>"#)
            })
            .unwrap_or_default();
        format!(
            r#"<nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1"><nova:flavor name="f" id="1"><nova:vcpus>{vcpus}</nova:vcpus><nova:extraSpecs>{specs}</nova:extraSpecs></nova:flavor>{image}</nova:instance>"#
        )
    }

    fn info(xml: &str) -> NovaCpuInfo {
        let n = parse_nova_metadata(xml).map_err(|e| e.to_string());
        nova_cpu_info(Some(&n), 4)
    }

    fn mixed(s: &str) -> NovaCpu {
        NovaCpu::Policy(
            CpuPolicy::Mixed(Some(crate::cpuset::parse_cpuset(s).unwrap())),
            "flavor",
        )
    }

    #[test]
    fn policy_sources_in_nova_order() {
        let cases: Vec<(String, NovaCpu, EmulatorPolicy)> = vec![
            // nova 32+: specs written, no policy: shared.
            (
                meta(&[], None, 4),
                NovaCpu::Policy(CpuPolicy::Shared, "default"),
                EmulatorPolicy::None,
            ),
            (
                meta(&[("hw:cpu_policy", "dedicated")], None, 4),
                NovaCpu::Policy(CpuPolicy::Dedicated, "flavor"),
                EmulatorPolicy::None,
            ),
            // The flavor wins over the image.
            (
                meta(
                    &[("hw:cpu_policy", "shared")],
                    Some(&[("hw_cpu_policy", "dedicated")]),
                    4,
                ),
                NovaCpu::Policy(CpuPolicy::Shared, "flavor"),
                EmulatorPolicy::None,
            ),
            (
                meta(
                    &[],
                    Some(&[
                        ("hw_cpu_policy", "dedicated"),
                        ("hw_emulator_threads_policy", "isolate"),
                    ]),
                    4,
                ),
                NovaCpu::Policy(CpuPolicy::Dedicated, "image"),
                EmulatorPolicy::Isolate,
            ),
            (
                meta(
                    &[
                        ("hw:cpu_policy", "mixed"),
                        ("hw:cpu_dedicated_mask", "^0"),
                        ("hw:emulator_threads_policy", "share"),
                    ],
                    None,
                    4,
                ),
                mixed("1-3"),
                EmulatorPolicy::Share,
            ),
            (
                meta(
                    &[("hw:cpu_policy", "mixed"), ("hw:cpu_dedicated_mask", "2-3")],
                    None,
                    4,
                ),
                mixed("2-3"),
                EmulatorPolicy::None,
            ),
            // The realtime mask of a realtime guest (image first).
            (
                meta(
                    &[
                        ("hw:cpu_policy", "mixed"),
                        ("hw:cpu_realtime", "yes"),
                        ("hw:cpu_realtime_mask", "^0-1"),
                    ],
                    Some(&[("hw_cpu_realtime_mask", "^0")]),
                    4,
                ),
                mixed("1-3"),
                EmulatorPolicy::None,
            ),
            (
                meta(&[("hw:cpu_policy", "mixed")], None, 4),
                NovaCpu::Policy(CpuPolicy::Mixed(None), "flavor"),
                EmulatorPolicy::None,
            ),
        ];
        for (xml, cpu, emu) in cases {
            let i = info(&xml);
            assert_eq!((i.cpu, i.emulator, i.problem), (cpu, emu, None), "{xml}");
        }
    }

    #[test]
    fn old_nova_and_no_nova() {
        let old = r#"<nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1"><nova:flavor name="f"><nova:vcpus>2</nova:vcpus></nova:flavor></nova:instance>"#;
        assert_eq!(info(old).cpu, NovaCpu::Unrecorded);
        assert_eq!(nova_cpu_info(None, 2).cpu, NovaCpu::NotNova);
        assert_eq!(
            nova_cpu_info(Some(&Err("x".into())), 2).cpu,
            NovaCpu::Malformed
        );
    }

    #[test]
    fn values_nova_refuses_are_malformed() {
        let cases: Vec<(String, &str)> = vec![
            (
                meta(&[("hw:cpu_policy", "pinned")], None, 4),
                "unknown hw:cpu_policy \"pinned\"",
            ),
            (
                meta(&[], Some(&[("hw_cpu_policy", "Dedicated")]), 4),
                "unknown hw_cpu_policy",
            ),
            (
                meta(
                    &[("hw:cpu_policy", "mixed"), ("hw:cpu_dedicated_mask", "0-x")],
                    None,
                    4,
                ),
                "unusable dedicated vCPU mask",
            ),
            // Every vCPU, none, or one beyond the flavor's.
            (
                meta(
                    &[("hw:cpu_policy", "mixed"), ("hw:cpu_dedicated_mask", "0-3")],
                    None,
                    4,
                ),
                "unusable",
            ),
            (
                meta(
                    &[
                        ("hw:cpu_policy", "mixed"),
                        ("hw:cpu_dedicated_mask", "^0-3"),
                    ],
                    None,
                    4,
                ),
                "unusable",
            ),
            (
                meta(
                    &[("hw:cpu_policy", "mixed"), ("hw:cpu_dedicated_mask", "7")],
                    None,
                    4,
                ),
                "unusable",
            ),
            (
                meta(
                    &[
                        ("hw:cpu_policy", "dedicated"),
                        ("hw:emulator_threads_policy", "spread"),
                    ],
                    None,
                    4,
                ),
                "unknown hw:emulator_threads_policy",
            ),
        ];
        for (xml, want) in cases {
            let i = info(&xml);
            let p = i.problem.unwrap_or_default();
            assert!(p.contains(want), "{xml}: {p}");
        }
        // The policy itself is unusable in the first six; an unknown emulator policy leaves it.
        let i = info(&meta(&[("hw:cpu_policy", "pinned")], None, 4));
        assert_eq!(i.cpu, NovaCpu::Malformed);
        let i = info(&meta(
            &[
                ("hw:cpu_policy", "dedicated"),
                ("hw:emulator_threads_policy", "spread"),
            ],
            None,
            4,
        ));
        assert_eq!(i.cpu, NovaCpu::Policy(CpuPolicy::Dedicated, "flavor"));
        // An image property that is not text.
        let xml = meta(&[], None, 4).replace(
            "</nova:flavor>",
            r#"</nova:flavor><nova:image uuid="i"><nova:properties><nova:property name="hw_cpu_policy"><x/></nova:property></nova:properties></nova:image>"#,
        );
        let i = info(&xml);
        assert_eq!(i.cpu, NovaCpu::Malformed);
        assert!(i.problem.unwrap().contains("not text"));
        // A long value is cut in the reason.
        let long = "x".repeat(10_000);
        let i = info(&meta(&[("hw:cpu_policy", &long)], None, 4));
        assert!(i.problem.unwrap().len() <= 259);
    }
}
