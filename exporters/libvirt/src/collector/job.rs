//! `job`: progress of a domain's job (a migration, a save, a dump, a snapshot) while it runs,
//! and why a paused domain is paused.
//!
//! Names follow inovex/prometheus-libvirt-exporter (`libvirt_domain_job_info_*{domain}`), so
//! its dashboards keep working. libvirt has no bulk call for jobs, and asking every domain on
//! every scrape (as inovex does) is a call per domain per scrape for the few that have one. So
//! `virDomainGetJobStats` is asked only of the domains that may have a job:
//! - paused domains whose state reason is a job's (migration, save, dump, snapshot, post-copy),
//!   from one `virConnectGetAllDomainStats` call (state group, paused domains only);
//! - domains with a libvirt event since the last scrape (with `--libvirt.events`: lifecycle
//!   events, completed jobs, and each iteration of a live migration, which is how a live
//!   migration of a running domain is found);
//! - domains that had a job on the last scrape, until libvirt says the job is over.
//!
//! A job's series exist only while it runs. A field libvirt does not fill for a job (a dump has
//! no `data_*`; nothing estimates `time_remaining` for most jobs) is left out and counted by
//! field; a call that fails or times out is counted by reason and costs that domain's series on
//! this scrape only (the domain is asked again on the next, unless the driver has no job stats
//! at all).
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use common::text::TextFamily;
use common::{CollectError, Collector, Sink};
use futures::future::BoxFuture;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::sys;

use crate::connection::Libvirt;
use crate::error::Error;
use crate::ffi::{self, TypedValue};

/// The collector's identity (flag, label, help, default).
pub const FLAG: common::cli::CollectorFlag = common::cli::CollectorFlag {
    name: "job",
    help: "Domain jobs (migration, save, dump) while they run, and paused domains' reasons: one call per scrape, one per domain with a job",
    default_enabled: true,
};

/// `virDomainPausedReason` names.
pub const PAUSED_REASONS: [&str; 15] = [
    "unknown",
    "user",
    "migration",
    "save",
    "dump",
    "ioerror",
    "watchdog",
    "from_snapshot",
    "shutting_down",
    "snapshot",
    "crashed",
    "starting_up",
    "postcopy",
    "postcopy_failed",
    "api_error",
];

/// Paused reasons under which a job usually runs (migration, save, dump, snapshot, postcopy).
const JOB_REASONS: [i64; 5] = [2, 3, 4, 9, 12];

/// `virDomainJobOperation` names (the `operation` label).
pub const OPERATIONS: [&str; 11] = [
    "unknown",
    "start",
    "save",
    "restore",
    "migration_in",
    "migration_out",
    "snapshot",
    "snapshot_revert",
    "dump",
    "backup",
    "snapshot_delete",
];

/// The progress fields exported: libvirt's typed parameter, the metric (after
/// `domain_job_info_`), help, and the factor to base units.
pub const FIELDS: [(&str, &str, &str, f64); 11] = [
    (
        "time_elapsed",
        "time_elapsed_seconds",
        "Time elapsed since the start of the domain job",
        1e-3,
    ),
    (
        "time_remaining",
        "time_remaining_seconds",
        "Time remaining until the end of the domain job, as libvirt estimates it",
        1e-3,
    ),
    (
        "data_total",
        "data_total_bytes",
        "Data total of the domain job",
        1.0,
    ),
    (
        "data_processed",
        "data_processed_bytes",
        "Data processed of the domain job",
        1.0,
    ),
    (
        "data_remaining",
        "data_remaining_bytes",
        "Data remaining of the domain job",
        1.0,
    ),
    (
        "memory_total",
        "memory_total_bytes",
        "Memory total of the domain job",
        1.0,
    ),
    (
        "memory_processed",
        "memory_processed_bytes",
        "Memory processed of the domain job",
        1.0,
    ),
    (
        "memory_remaining",
        "memory_remaining_bytes",
        "Memory remaining of the domain job",
        1.0,
    ),
    (
        "disk_total",
        "file_total_bytes",
        "File (disk) total of the domain job",
        1.0,
    ),
    (
        "disk_processed",
        "file_processed_bytes",
        "File (disk) processed of the domain job",
        1.0,
    ),
    (
        "disk_remaining",
        "file_remaining_bytes",
        "File (disk) remaining of the domain job",
        1.0,
    ),
];

/// Why a domain that may have a job has no job series on a scrape (the `reason` label).
pub const FAILURE_REASONS: [&str; 3] = ["error", "timeout", "unsupported"];

/// A paused domain and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paused {
    pub name: String,
    pub reason: i64,
}

/// A running job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub domain: String,
    /// `virDomainJobType`: 1 bounded, 2 unbounded, 3 completed (its last phase still running).
    pub kind: i32,
    /// `virDomainJobOperation`, 0 when libvirt does not say.
    pub operation: i64,
    /// The fields libvirt filled, by its name.
    pub fields: HashMap<String, f64>,
}

/// One scrape's jobs and paused domains, with its failures by reason.
#[derive(Debug, Default)]
pub struct Jobs {
    pub jobs: Vec<Job>,
    pub paused: Vec<Paused>,
    pub failed: BTreeMap<&'static str, u64>,
}

/// Where a domain to ask comes from: the paused list (a handle) or an event or the last scrape
/// (a UUID to look up).
enum Target {
    Handle(Domain),
    Uuid(String),
}

/// What asking one domain gave.
enum Answer {
    Job(String, i32, Vec<(String, TypedValue)>),
    /// No job (type none), or the domain is gone.
    Nothing,
    Failed(&'static str),
}

/// Counts kept since start.
#[derive(Debug, Default)]
struct Totals {
    failures: BTreeMap<&'static str, u64>,
    unfilled: BTreeMap<&'static str, u64>,
}

/// The `job` collector.
#[derive(Debug)]
pub struct JobCollector {
    libvirt: Arc<Libvirt>,
    concurrency: usize,
    /// Domains (UUIDs) with a job on the last scrape, or whose call failed or timed out.
    following: Mutex<HashSet<String>>,
    totals: Mutex<Totals>,
}

/// The paused domains, with name, UUID, reason and handle (one call).
async fn paused_domains(
    libvirt: &Libvirt,
    conn: &Arc<Connect>,
) -> Result<Vec<(Paused, String, Domain)>, Error> {
    libvirt
        .with_conn(conn, "paused_domains", |c| {
            let records = ffi::all_domain_stats(
                c,
                sys::VIR_DOMAIN_STATS_STATE,
                sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_PAUSED,
            )?;
            Ok(records
                .into_iter()
                .map(|r| {
                    let reason = r
                        .params
                        .iter()
                        .find(|(k, _)| k == "state.reason")
                        .and_then(|(_, v)| v.as_f64())
                        .map(|v| v as i64)
                        .unwrap_or(0);
                    let p = Paused {
                        name: r.domain.name().unwrap_or_default(),
                        reason,
                    };
                    (p, r.domain.uuid_string().unwrap_or_default(), r.domain)
                })
                .collect())
        })
        .await
}

/// Asks one domain for its job (blocking).
fn ask(conn: &Connect, target: Target) -> Answer {
    let dom = match target {
        Target::Handle(d) => d,
        Target::Uuid(u) => match conn.lookup_domain_by_uuid_string(&u) {
            Ok(d) => d,
            // Gone since its event: nothing to ask.
            Err(e) if e.code() == virt::error::ErrorNumber::NoDomain.into() => {
                return Answer::Nothing
            }
            Err(_) => return Answer::Failed("error"),
        },
    };
    match ffi::job_stats(&dom) {
        Ok((0, _)) => Answer::Nothing,
        Ok((kind, fields)) => Answer::Job(dom.name().unwrap_or_default(), kind, fields),
        // Gone, or not running (a stop event of a persistent domain): no job.
        Err(e)
            if e.code() == virt::error::ErrorNumber::NoDomain.into()
                || e.code() == virt::error::ErrorNumber::OperationInvalid.into() =>
        {
            Answer::Nothing
        }
        Err(e) if e.code() == virt::error::ErrorNumber::NoSupport.into() => {
            Answer::Failed("unsupported")
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot get a domain's job stats");
            Answer::Failed("error")
        }
    }
}

impl JobCollector {
    pub fn new(libvirt: Arc<Libvirt>, concurrency: usize) -> Self {
        Self {
            libvirt,
            concurrency: concurrency.max(1),
            following: Mutex::new(HashSet::new()),
            totals: Mutex::new(Totals::default()),
        }
    }

    /// One scrape: the paused domains, then the job of each domain that may have one.
    pub async fn gather(&self, conn: &Arc<Connect>) -> Result<Jobs, Error> {
        let paused = paused_domains(&self.libvirt, conn).await?;
        let mut ask_uuids: HashSet<String> = self.libvirt.take_job_hints(conn);
        ask_uuids.extend(common::sync::lock(&self.following).iter().cloned());
        let mut out = Jobs::default();
        let mut targets = Vec::new();
        for (p, uuid, dom) in paused {
            if JOB_REASONS.contains(&p.reason) {
                ask_uuids.remove(&uuid);
                targets.push((uuid, Target::Handle(dom)));
            }
            out.paused.push(p);
        }
        let mut rest: Vec<String> = ask_uuids.into_iter().collect();
        rest.sort();
        targets.extend(rest.into_iter().map(|u| (u.clone(), Target::Uuid(u))));
        let uuids: Vec<String> = targets.iter().map(|(u, _)| u.clone()).collect();
        let c = Arc::clone(conn);
        let answers = self
            .libvirt
            .pool("job_stats", targets, self.concurrency, move |(_, t)| {
                ask(&c, t)
            })
            .await;
        let mut following = HashSet::new();
        for (uuid, answer) in uuids.into_iter().zip(answers) {
            match answer {
                Ok(Answer::Job(domain, kind, params)) => {
                    following.insert(uuid);
                    out.jobs.push(job_of(domain, kind, params));
                }
                Ok(Answer::Nothing) => {}
                Ok(Answer::Failed(reason)) => {
                    // Asked again on the next scrape, unless the driver cannot answer at all.
                    if reason != "unsupported" {
                        following.insert(uuid);
                    }
                    *out.failed.entry(reason).or_default() += 1;
                }
                Err(e) => {
                    following.insert(uuid);
                    let reason = match e {
                        Error::Timeout { .. } => "timeout",
                        _ => "error",
                    };
                    *out.failed.entry(reason).or_default() += 1;
                }
            }
        }
        *common::sync::lock(&self.following) = following;
        out.jobs.sort_by(|a, b| a.domain.cmp(&b.domain));
        out.paused.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Adds a scrape's failures and unfilled fields to the totals; returns the totals.
    fn count(&self, jobs: &Jobs) -> (BTreeMap<&'static str, u64>, BTreeMap<&'static str, u64>) {
        let mut t = common::sync::lock(&self.totals);
        for (reason, n) in &jobs.failed {
            *t.failures.entry(reason).or_default() += n;
        }
        for job in &jobs.jobs {
            for (field, ..) in FIELDS {
                if !job.fields.contains_key(field) {
                    *t.unfilled.entry(field).or_default() += 1;
                }
            }
        }
        (t.failures.clone(), t.unfilled.clone())
    }
}

/// A job from libvirt's fields.
fn job_of(domain: String, kind: i32, params: Vec<(String, TypedValue)>) -> Job {
    let mut operation = 0;
    let mut fields = HashMap::new();
    for (k, v) in params {
        if k == "operation" {
            operation = v.as_f64().map(|v| v as i64).unwrap_or(0);
        } else if let Some(v) = v.as_f64() {
            fields.insert(k, v);
        }
    }
    Job {
        domain,
        kind,
        operation,
        fields,
    }
}

/// A name from a table by code, `unknown` outside it.
fn name_of(table: &[&'static str], code: i64) -> &'static str {
    usize::try_from(code)
        .ok()
        .and_then(|i| table.get(i))
        .copied()
        .unwrap_or("unknown")
}

/// Writes the job and paused-reason metrics; `failures` and `unfilled` since start.
pub fn encode_jobs(
    jobs: &Jobs,
    failures: &BTreeMap<&'static str, u64>,
    unfilled: &BTreeMap<&'static str, u64>,
    sink: &mut Sink,
) {
    let mut kind = sink.gauge(
        "domain_job_info_type",
        "Code of the running domain job's type (1 bounded, 2 unbounded, 3 completed: its last phase still running), with its operation; only while a job runs",
    );
    let mut fields: Vec<TextFamily> = FIELDS
        .iter()
        .map(|(_, metric, help, _)| sink.gauge(&format!("domain_job_info_{metric}"), help))
        .collect();
    for j in &jobs.jobs {
        let op = name_of(&OPERATIONS, j.operation);
        kind.push(
            &[("domain", j.domain.as_str()), ("operation", op)],
            f64::from(j.kind),
        );
        for ((field, _, _, factor), g) in FIELDS.iter().zip(&mut fields) {
            if let Some(v) = j.fields.get(*field) {
                g.push(&[("domain", &j.domain)], v * factor);
            }
        }
    }
    sink.push(kind);
    for g in fields {
        sink.push(g);
    }
    let mut paused = sink.gauge(
        "domain_paused_reason_info",
        "Why a paused domain is paused (libvirt's state reason); only for paused domains",
    );
    for p in &jobs.paused {
        paused.push(
            &[
                ("domain", p.name.as_str()),
                ("reason", name_of(&PAUSED_REASONS, p.reason)),
            ],
            1.0,
        );
    }
    sink.push(paused);
    let mut failed = sink.counter(
        "domain_job_info_failures",
        "Domains that may have a job whose job stats libvirt did not give, by reason (error, timeout: no answer within --libvirt.timeout, unsupported: the driver has no job stats)",
    );
    for reason in FAILURE_REASONS {
        let n = failures.get(reason).copied().unwrap_or(0);
        failed.push(&[("reason", reason)], n as f64);
    }
    sink.push(failed);
    let mut missing = sink.counter(
        "domain_job_info_unfilled_fields",
        "Progress fields libvirt did not fill for a running job (its series left out), per job and scrape, by libvirt's field name",
    );
    for (field, ..) in FIELDS {
        let n = unfilled.get(field).copied().unwrap_or(0);
        missing.push(&[("field", field)], n as f64);
    }
    sink.push(missing);
}

impl Collector for JobCollector {
    fn name(&self) -> &'static str {
        FLAG.name
    }
    fn collect<'a>(&'a self, sink: &'a mut Sink) -> BoxFuture<'a, Result<(), CollectError>> {
        Box::pin(async move {
            let conn = self.libvirt.connection().await.map_err(CollectError::new)?;
            let jobs = self.gather(&conn).await.map_err(CollectError::new)?;
            let (failures, unfilled) = self.count(&jobs);
            encode_jobs(&jobs, &failures, &unfilled, sink);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn text(jobs: &Jobs, c: &JobCollector) -> String {
        let (f, u) = c.count(jobs);
        let mut sink = common::Sink::new("libvirt");
        encode_jobs(jobs, &f, &u, &mut sink);
        let mut om = String::new();
        sink.encode(&mut om).unwrap();
        common::exposition::openmetrics_to_text(&om)
    }

    fn collector() -> JobCollector {
        JobCollector::new(
            Arc::new(Libvirt::new(
                "test:///default".into(),
                std::time::Duration::from_secs(5),
                std::time::Duration::from_secs(1),
                false,
            )),
            2,
        )
    }

    #[test]
    fn a_job_exports_the_fields_libvirt_filled_and_counts_the_others() {
        // The fields of a memory-only dump as libvirt 9 gives them (tests/tcg.rs drives one).
        let params = vec![
            ("operation".to_string(), TypedValue::Int(8)),
            ("time_elapsed".to_string(), TypedValue::UInt(2988)),
            ("memory_total".to_string(), TypedValue::UInt(67371008)),
            ("memory_processed".to_string(), TypedValue::UInt(2093056)),
            ("memory_remaining".to_string(), TypedValue::UInt(65277952)),
        ];
        let jobs = Jobs {
            jobs: vec![job_of("vm".into(), 2, params)],
            paused: vec![Paused {
                name: "vm".into(),
                reason: 4,
            }],
            failed: BTreeMap::from([("timeout", 1)]),
        };
        let c = collector();
        let t = text(&jobs, &c);
        for want in [
            r#"libvirt_domain_job_info_type{domain="vm",operation="dump"} 2"#,
            r#"libvirt_domain_job_info_time_elapsed_seconds{domain="vm"} 2.988"#,
            r#"libvirt_domain_job_info_memory_remaining_bytes{domain="vm"} 65277952"#,
            r#"libvirt_domain_paused_reason_info{domain="vm",reason="dump"} 1"#,
            r#"libvirt_domain_job_info_failures_total{reason="timeout"} 1"#,
            r#"libvirt_domain_job_info_failures_total{reason="error"} 0"#,
            r#"libvirt_domain_job_info_unfilled_fields_total{field="data_total"} 1"#,
            r#"libvirt_domain_job_info_unfilled_fields_total{field="time_remaining"} 1"#,
            r#"libvirt_domain_job_info_unfilled_fields_total{field="memory_total"} 0"#,
        ] {
            assert!(t.contains(want), "{want}\n{t}");
        }
        assert!(
            !t.contains("libvirt_domain_job_info_data_total_bytes{"),
            "{t}"
        );
        // Counted since start.
        let t = text(&jobs, &c);
        assert!(
            t.contains(r#"libvirt_domain_job_info_unfilled_fields_total{field="data_total"} 2"#)
        );
    }

    #[test]
    fn no_job_no_job_series() {
        let c = collector();
        let t = text(&Jobs::default(), &c);
        assert!(!t.contains("libvirt_domain_job_info_type{"), "{t}");
        assert!(!t.contains("libvirt_domain_paused_reason_info{"), "{t}");
        assert!(t.contains(r#"libvirt_domain_job_info_failures_total{reason="error"} 0"#));
    }

    #[test]
    fn codes_outside_the_tables_read_unknown() {
        assert_eq!(name_of(&OPERATIONS, 5), "migration_out");
        assert_eq!(name_of(&OPERATIONS, 99), "unknown");
        assert_eq!(name_of(&PAUSED_REASONS, -1), "unknown");
        assert_eq!(name_of(&PAUSED_REASONS, 13), "postcopy_failed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn paused_domains_are_listed_with_their_reason_and_events_ask_once() {
        // test:///default, shared in process while `admin` stays open: its domain "test",
        // suspended by a client, is paused by the user (no job asked for: not a job's
        // reason). With events, the suspend's lifecycle event makes the collector ask that
        // domain once; the test driver has no job stats, which is counted, that domain only.
        let admin = tokio::task::spawn_blocking(|| Connect::open(Some("test:///default")).unwrap())
            .await
            .unwrap();
        let lv = Arc::new(Libvirt::new(
            "test:///default".into(),
            std::time::Duration::from_secs(5),
            std::time::Duration::from_secs(1),
            true,
        ));
        let c = JobCollector::new(Arc::clone(&lv), 2);
        let conn = lv.connection().await.unwrap();
        let first = c.gather(&conn).await.unwrap();
        assert!(
            first.paused.is_empty() && first.jobs.is_empty(),
            "{first:?}"
        );
        assert!(first.failed.is_empty(), "{:?}", first.failed);
        let admin = Arc::new(admin);
        let a = Arc::clone(&admin);
        tokio::task::spawn_blocking(move || {
            a.lookup_domain_by_name("test").unwrap().suspend().unwrap()
        })
        .await
        .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let second = c.gather(&conn).await.unwrap();
        assert_eq!(
            second.paused,
            [Paused {
                name: "test".into(),
                reason: 1
            }]
        );
        assert_eq!(
            second.failed.get("unsupported"),
            Some(&1),
            "{:?}",
            second.failed
        );
        // No new event, and a driver without job stats is not asked again.
        let third = c.gather(&conn).await.unwrap();
        assert!(third.failed.is_empty(), "{:?}", third.failed);
        assert_eq!(third.paused.len(), 1);
        let a = Arc::clone(&admin);
        tokio::task::spawn_blocking(move || {
            a.lookup_domain_by_name("test").unwrap().resume().unwrap()
        })
        .await
        .unwrap();
    }
}
