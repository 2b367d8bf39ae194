//! log_pattern_exporter: log-pattern counters from tailed container logs, every line exactly once.
//!
//! `main.rs` is thin; the flags, the collectors and the tailer live here so tests reach them.
//! Data path: [`discovery`] finds files (pod tree and path globs), [`service`] runs the tailing
//! thread (inotify, rescans, state saves), [`tail`] follows files across rotation and
//! truncation, [`tail::lines`] and [`format`] turn bytes into logical lines, [`rules`] counts
//! them, [`state`] makes offsets and counters durable together, [`metrics`] encodes them.
//! [`tenants`] adds the teams' rule sets of `--config.dir`, each bound to its namespaces.
#![forbid(unsafe_code)]

pub(crate) mod collector;
pub mod config;
pub(crate) mod discovery;
mod error;
pub mod format;
pub mod import;
pub mod logql;
pub mod metrics;
pub mod prefilter;
pub(crate) mod reload;
pub mod replay;
pub mod rules;
pub(crate) mod service;
pub mod sink;
pub(crate) mod state;
pub mod tail;
pub(crate) mod tenants;
pub mod timestamp;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::cli::{parse_duration, CollectorFlag, ConfigArgs, LogArgs, WebArgs};
use common::{Collector, Exporter, ExporterInfo};

use crate::collector::logs::LogsCollector;
use crate::discovery::{GlobPattern, Source};
use crate::rules::Rules;

pub use error::Error;

/// Identity of this exporter.
pub const INFO: ExporterInfo = ExporterInfo {
    name: "log_pattern_exporter",
    prefix: "log_pattern",
    description: "Counts log lines matching rules in tailed container logs, exactly once.",
    default_listen: ":9851",
};

/// The collectors this exporter has: name, help, enabled by default.
pub const COLLECTORS: &[CollectorFlag] = &[collector::logs::FLAG];

/// Command-line flags.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "log_pattern_exporter", version, about = INFO.description)]
pub struct Flags {
    #[command(flatten)]
    pub web: WebArgs,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Root of the Kubernetes pod log tree (`<root>/<ns>_<pod>_<uid>/<container>/<N>.log`).
    #[arg(
        long = "path.pods",
        default_value = "/var/log/pods",
        value_name = "DIR"
    )]
    pub path_pods: PathBuf,
    /// State file holding offsets and counter values (on a host path, so it outlives the pod).
    /// An empty value disables persistence: counters then reset on restart.
    #[arg(
        long = "state.file",
        default_value = "/var/lib/log_pattern_exporter/state.json",
        value_parser = path_or_empty,
        value_name = "FILE"
    )]
    pub state_file: PathBuf,
    /// Save the state at least this often (it is also saved at each scrape and on shutdown).
    #[arg(long = "state.save-interval", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub save_interval: Duration,
    /// Full rescan of the log directories, as a safety net beside inotify.
    #[arg(long = "discovery.rescan-interval", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub rescan_interval: Duration,
    /// Watch directories with inotify (false: rely on rescans and polling only).
    #[arg(long = "discovery.inotify", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub inotify: bool,
    /// Read followed files at least this often, inotify or not.
    #[arg(long = "tail.poll-interval", default_value = "250ms", value_parser = parse_duration, value_name = "DURATION")]
    pub poll_interval: Duration,
    /// Longest line kept, in bytes (joined partial lines included); longer ones are cut and counted.
    #[arg(long = "tail.max-line-bytes", default_value_t = 256 * 1024, value_name = "BYTES")]
    pub max_line_bytes: usize,
    /// A rotated file is released once read to its end and quiet for this long.
    #[arg(long = "tail.rotate-wait", default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub rotate_wait: Duration,
    /// Series of a pod (or glob source) whose files are all gone are dropped this long after
    /// the last one was released: long enough for Prometheus to scrape their last value.
    #[arg(long = "series.retention", default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub series_retention: Duration,
    /// Most log files held open at once.
    #[arg(long = "tail.max-open-files", default_value_t = 1024, value_name = "N")]
    pub max_open_files: usize,
    /// Directory of tenant rule sets: each `<tenant>.yml` holds the rules of one tenant, which
    /// see only the tenant's namespaces (see the README). Watched; no reload needed.
    #[arg(long = "config.dir", value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Full rescan of --config.dir, as a safety net beside inotify.
    #[arg(long = "config.dir.rescan-interval", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub config_dir_rescan_interval: Duration,
    /// Most rule set files considered (by name); further ones are ignored and logged.
    #[arg(long = "config.dir.max-files", default_value_t = 256, value_name = "N")]
    pub config_dir_max_files: usize,
    #[command(flatten)]
    pub tenant: TenantArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// A path flag that may be given empty (`--state.file=`), which clap's path parser refuses.
fn path_or_empty(s: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(s))
}

/// Default budgets of each tenant (the platform file may override them per tenant).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct TenantArgs {
    /// Rules per tenant; the rules of its file past this number are left out and reported.
    #[arg(long = "tenant.max-rules", default_value_t = 50, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_rules: u32,
    /// Series per tenant, all its rules together; new label sets past it go to the rule's
    /// overflow series.
    #[arg(long = "tenant.max-series", default_value_t = 2000, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_series: u32,
}

impl TenantArgs {
    pub fn limits(&self, max_files: usize) -> tenants::Limits {
        tenants::Limits {
            max_rules: self.max_rules as usize,
            max_series: self.max_series as usize,
            max_files,
        }
    }
}

/// Subcommands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Read FILEs once from their first byte, print the resulting metrics and exit.
    Replay {
        /// The rule file.
        #[arg(long = "config.file", value_name = "FILE")]
        config_file: PathBuf,
        /// Longest line kept, in bytes.
        #[arg(long = "tail.max-line-bytes", default_value_t = 256 * 1024, value_name = "BYTES")]
        max_line_bytes: usize,
        /// Log files (CRI, Docker json-file or plain; `.gz` accepted).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Validate tenant rule set files (a --config.dir, or single files) as the exporter would:
    /// one verdict per file; exit 0 if all are valid, 1 if one is not, 2 on a usage or I/O
    /// error.
    CheckRules {
        /// The platform's rule file, whose grants, budgets and metrics apply.
        #[arg(long = "config.file", value_name = "FILE")]
        config_file: Option<PathBuf>,
        #[command(flatten)]
        tenant: TenantArgs,
        /// Rule set files or directories of them.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Translate a Loki ruler rule file into this exporter's rules and Prometheus rules over its
    /// counters; rules that cannot be translated are reported and left out.
    ImportLokiRules {
        /// The Loki rule file (`groups:` of `record`/`alert` rules with LogQL `expr`).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Where to write the exporter's rule file.
        #[arg(long = "output.rules", value_name = "FILE")]
        rules_out: PathBuf,
        /// Where to write the Prometheus rule file.
        #[arg(long = "output.prometheus", value_name = "FILE")]
        prometheus_out: PathBuf,
        /// The exporter's config file: selector labels are checked against its sources' labels
        /// besides the pod log labels.
        #[arg(long = "config.file", value_name = "FILE")]
        config_file: Option<PathBuf>,
        /// A Loki stream label name and the source label it is here (`app=container`);
        /// repeatable. Selectors and groupings use the source's name.
        #[arg(long = "label-map", value_name = "FROM=TO")]
        label_map: Vec<String>,
    },
}

/// Builds every collector of this exporter (enabled or not), in the order of [`COLLECTORS`].
/// Without a running tailer the collector reports failure; [`run`] builds the live one.
pub fn collectors(_flags: &Flags) -> Vec<Arc<dyn Collector>> {
    vec![Arc::new(LogsCollector::new(None, None, None))]
}

/// `check-rules`: prints a verdict per file and returns the exit code (0 all valid, 1 some
/// invalid or over budget, 2 usage or I/O error).
pub fn check_rules(
    config_file: Option<&std::path::Path>,
    limits: &tenants::Limits,
    paths: &[PathBuf],
) -> u8 {
    let platform = match config_file {
        Some(p) => match config::load(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: platform file: {e}");
                return 2;
            }
        },
        None => config::Config::default(),
    };
    match tenants::check_paths(paths, config_file, &platform, limits) {
        Ok(verdicts) => {
            let bad = verdicts.iter().filter(|v| !v.ok()).count();
            for v in &verdicts {
                println!("{}", v.line());
            }
            println!("{} file(s), {bad} invalid", verdicts.len());
            u8::from(bad > 0)
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

/// The sources named by the flags and the config.
pub fn sources(flags: &Flags, cfg: &config::Config) -> Result<Vec<Source>, String> {
    let mut out = vec![Source::Pods {
        root: flags.path_pods.clone(),
    }];
    for s in &cfg.sources {
        out.push(Source::Glob {
            pattern: GlobPattern::parse(&s.path)?,
            labels: s.labels.clone(),
        });
    }
    Ok(out)
}

/// Descriptors kept free of followed files: listeners and scrape connections, the state file
/// save, inotify, the runtime, the rule files.
const RESERVED_DESCRIPTORS: u64 = 64;

/// The soft `Max open files` limit in the text of `/proc/self/limits`.
fn soft_nofile(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `--tail.max-open-files`, lowered below the process's descriptor limit (`RLIMIT_NOFILE`)
/// when that is smaller: a tailer holding every descriptor would leave none for scrapes and
/// state saves. Files past the budget are counted as `too_many_files`.
fn descriptor_budget(wanted: usize) -> usize {
    let Some(soft) = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .as_deref()
        .and_then(soft_nofile)
    else {
        return wanted;
    };
    let budget =
        usize::try_from(soft.saturating_sub(RESERVED_DESCRIPTORS).max(1)).unwrap_or(usize::MAX);
    if budget < wanted {
        tracing::warn!(
            wanted,
            budget,
            nofile = soft,
            "--tail.max-open-files lowered to the descriptor limit (raise LimitNOFILE / ulimit -n)"
        );
        return budget;
    }
    wanted
}

/// Runs the exporter until SIGTERM/SIGINT.
pub async fn run(
    flags: Flags,
    enabled: Vec<&'static str>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let cfg = match &flags.config.file {
        Some(p) => config::load(p)?,
        None => config::Config::default(),
    };
    let sources = sources(&flags, &cfg)?;
    let opts = service::ServiceOptions {
        sources,
        state_file: (!flags.state_file.as_os_str().is_empty()).then(|| flags.state_file.clone()),
        poll_interval: flags.poll_interval,
        rescan_interval: flags.rescan_interval,
        save_interval: flags.save_interval,
        inotify: flags.inotify,
        engine: tail::Options {
            max_line_bytes: flags.max_line_bytes,
            rotate_wait: flags.rotate_wait,
            max_open_files: descriptor_budget(flags.max_open_files),
            start_at: cfg.start_at,
            stamps: timestamp::Stamps::new(&cfg.sources)?,
            series_retention: flags.series_retention,
            ..tail::Options::default()
        },
    };
    // The tenants' rule sets are read before the tailer starts, so that their saved counters
    // are restored with the platform's.
    let mut sets = tenants::RuleSets::new(
        flags.config_dir.clone(),
        flags.config.file.clone(),
        cfg.clone(),
        flags.tenant.limits(flags.config_dir_max_files),
    );
    sets.scan();
    let rules = sets.rules();
    let sets: tenants::Shared = Arc::new(std::sync::Mutex::new(sets));
    let handle = service::start(opts, Box::new(Rules::new(&rules)?))?;
    let reloader = Arc::new(reload::Reloader::new(
        flags.config.file.clone(),
        handle.clone(),
        &cfg,
        Arc::clone(&sets),
    ));
    reload::spawn_sighup(Arc::clone(&reloader)).map_err(Error::Signal)?;
    if let Some(dir) = &flags.config_dir {
        tenants::spawn_watcher(
            Arc::clone(&reloader),
            dir.clone(),
            flags.config_dir_rescan_interval,
            Duration::from_millis(200),
        );
    }
    let collectors: Vec<Arc<dyn Collector>> = vec![Arc::new(LogsCollector::new(
        Some(handle.clone()),
        Some(Arc::clone(&reloader.stats)),
        Some(sets),
    ))];
    // Ready once a scrape is answered: the tailer answers the first one after the start's
    // discovery opened every file it found (up to `--tail.max-open-files`).
    Exporter::new(INFO, flags.web.clone(), collectors, enabled)
        .ready_after_first_collection()
        .routes(reload::routes(reloader))
        .on_shutdown(move || Box::pin(async move { handle.shutdown().await }))
        .run()
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_descriptor_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(soft_nofile(limits), Some(1024));
        assert_eq!(
            soft_nofile(
                "Max open files            unlimited            unlimited            files"
            ),
            None
        );
        assert_eq!(soft_nofile(""), None);
    }

    #[test]
    fn an_empty_state_file_disables_persistence() {
        let flags = <Flags as clap::Parser>::try_parse_from(["x", "--state.file="]).unwrap();
        assert!(flags.state_file.as_os_str().is_empty());
        let flags = <Flags as clap::Parser>::try_parse_from(["x", "--state.file", ""]).unwrap();
        assert!(flags.state_file.as_os_str().is_empty());
        let flags = <Flags as clap::Parser>::parse_from(["x"]);
        assert_eq!(
            flags.state_file,
            PathBuf::from("/var/lib/log_pattern_exporter/state.json")
        );
    }

    #[test]
    fn collector_list_matches_flags() {
        let flags = <Flags as clap::Parser>::parse_from(["log_pattern_exporter"]);
        let names: Vec<_> = collectors(&flags).iter().map(|c| c.name()).collect();
        let flag_names: Vec<_> = COLLECTORS.iter().map(|c| c.name).collect();
        assert_eq!(names, flag_names);
    }
}
