//! Tenant rule sets: one rule file per team in `--config.dir`, each bound to its namespaces.
//!
//! On a shared cluster the platform team runs the exporter and owns `--config.file` (full scope,
//! sources, and a `tenants:` map of grants and budgets), while each application team owns one
//! file `<tenant>.yml` of the directory (typically a ConfigMap synced there by a sidecar). The
//! file name is the tenant; the tenant sees the namespace of the same name unless the platform
//! grants it a list of namespaces. The binding is never read from the tenant's file: it is
//! attached to each of its rules ([`Binding`]) and the rule engine ANDs it into the rule's
//! selector, testing the source's `namespace` label, which comes from the kubelet's pod log path
//! (or from the platform's own source definitions; tenants cannot define sources). A tenant's
//! `namespace` matchers can therefore only narrow what it sees.
//!
//! Each file is validated on its own ([`check_file`], the same code `check-rules` runs), when it
//! appears or changes: a broken file is rejected and logged with its `FILE:LINE:COLUMN`, its last
//! good version stays in force, and the other tenants are not touched; a removed file removes its
//! rules. Budgets: past the tenant's `max_rules` the file's further rules are left out (in file
//! order, so the outcome is deterministic) and reported; past its `max_series` new label sets go
//! to the rule's overflow series (see [`crate::rules`]). Rules of different files sharing a
//! metric must agree on its type: the file that would break an agreement already in force is
//! rejected (files are examined in name order).
//!
//! [`RuleSets`] holds the per-file status and the rules in force; [`spawn_watcher`] rescans the
//! directory on inotify events (which also see the `..data` symlink swap of ConfigMap volumes)
//! after a short quiet period, and every `--config.dir.rescan-interval` as a fallback.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Sink;

use crate::config::{self, Binding, Config, Rule};

/// Budgets and bounds that apply unless the platform file overrides them per tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Rules per tenant; further rules of the file are left out.
    pub max_rules: usize,
    /// Series per tenant, all its rules together.
    pub max_series: usize,
    /// Rule set files considered (in name order); further files are ignored and logged.
    pub max_files: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_rules: 50,
            max_series: 2000,
            max_files: 256,
        }
    }
}

/// A file's rules as bound to its tenant.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub tenant: String,
    /// Every rule of the file, as parsed (kept to bind again when the platform file changes).
    parsed: Vec<Rule>,
    /// The rules in force: bound, within the rule budget.
    pub rules: Vec<Rule>,
    /// Names of the rules left out by the rule budget.
    pub over_budget: Vec<String>,
    pub binding: Arc<Binding>,
    pub max_rules: usize,
}

/// Largest rule set file: a tenant cannot make the shared literal automaton (rebuilt with
/// every tenant's rules) arbitrarily large. A ConfigMap holds at most 1 MiB anyway.
pub const MAX_FILE_BYTES: usize = 256 * 1024;

/// Reads a rule set file: a regular file of at most [`MAX_FILE_BYTES`], checked before it is
/// read (a larger file is never read into memory, at start or at a rescan).
pub fn read_rule_set(path: &Path) -> Result<Vec<u8>, common::ConfigError> {
    config::read_capped(path, MAX_FILE_BYTES as u64, "rule set")
}

/// The labels of a pod log source, which identify a line.
const SOURCE_LABELS: &[&str] = &["namespace", "pod", "container"];

/// The tenant a rule set file belongs to: its name without `.yml`, a namespace-style name.
pub fn tenant_of(path: &Path) -> Result<String, String> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let stem = name.strip_suffix(".yml").unwrap_or(name);
    if config::is_dns_label(stem) {
        Ok(stem.to_string())
    } else {
        Err(format!(
            "{}: the file name must be <tenant>.yml with a namespace-style tenant name (a-z, 0-9, '-', at most 63)",
            path.display()
        ))
    }
}

/// Binds parsed rules to `tenant` under the platform's grants, applies the rule budget and
/// checks the metrics they share with `others` (the rules in force of the platform and the
/// other tenants).
fn bind(
    path: &Path,
    tenant: &str,
    parsed: Vec<Rule>,
    platform: &Config,
    limits: &Limits,
    others: &[&Rule],
) -> Result<Loaded, String> {
    let grant = platform.tenants.get(tenant).cloned().unwrap_or_default();
    let binding = Arc::new(Binding {
        tenant: tenant.to_string(),
        namespaces: grant
            .namespaces
            .clone()
            .unwrap_or_else(|| vec![tenant.to_string()]),
        max_series: grant.max_series.unwrap_or(limits.max_series),
    });
    // A label extracted from the line must not pose as the trusted source labels (with
    // `keep_labels: []` nothing would rename it).
    for r in &parsed {
        if let Some(l) = r
            .labels
            .iter()
            .find(|l| SOURCE_LABELS.contains(&l.as_str()))
        {
            return Err(format!(
                "{}: rule {:?}: labels: {l:?} is a source label; a tenant's rule cannot extract it (name the group otherwise)",
                path.display(),
                r.name
            ));
        }
    }
    let max_rules = grant.max_rules.unwrap_or(limits.max_rules);
    let over_budget: Vec<String> = parsed
        .iter()
        .skip(max_rules)
        .map(|r| r.name.clone())
        .collect();
    let rules: Vec<Rule> = parsed
        .iter()
        .take(max_rules)
        .map(|r| Rule {
            binding: Some(Arc::clone(&binding)),
            ..r.clone()
        })
        .collect();
    for r in &rules {
        if let Some(o) = others.iter().find(|o| {
            o.metric_name() == r.metric_name() && config::metric_shape(o) != config::metric_shape(r)
        }) {
            let owner = match o.tenant() {
                "" => "the platform".to_string(),
                t => format!("tenant {t}"),
            };
            return Err(format!(
                "{}: rule {:?}: metric {:?} is already in use by {owner} (rule {:?}) with another type, unwrap or buckets; name another metric",
                path.display(),
                r.name,
                r.metric_name(),
                o.name
            ));
        }
    }
    Ok(Loaded {
        tenant: tenant.to_string(),
        parsed,
        rules,
        over_budget,
        binding,
        max_rules,
    })
}

/// Validates one rule set file's text: tenant name, syntax (`FILE:LINE:COLUMN: message`),
/// rules, binding, budget and shared metrics. The exporter and `check-rules` both run this.
pub fn check_file(
    path: &Path,
    text: &str,
    platform: &Config,
    limits: &Limits,
    others: &[&Rule],
) -> Result<Loaded, String> {
    let tenant = tenant_of(path)?;
    if text.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{}: {} bytes, more than a rule set may hold ({MAX_FILE_BYTES})",
            path.display(),
            text.len()
        ));
    }
    let parsed = config::parse_rule_set(path, text).map_err(|e| e.to_string())?;
    bind(path, &tenant, parsed, platform, limits, others)
}

/// The rule set files of `dir`: `*.yml` (symlinks followed), hidden entries (such as the
/// `..data` links of ConfigMap volumes) and `skip` (the platform file) left out, by name.
pub fn list_dir(dir: &Path, skip: Option<&Path>) -> std::io::Result<Vec<PathBuf>> {
    let skip = skip.and_then(|p| std::fs::canonicalize(p).ok());
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with('.') || !name.ends_with(".yml") {
            continue;
        }
        // Symlinks are followed: a dangling one (mid-swap) is skipped until the next scan.
        if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            continue;
        }
        if skip.is_some() && std::fs::canonicalize(&path).ok() == skip {
            continue;
        }
        out.push(path);
    }
    out.sort();
    Ok(out)
}

/// What is known of one file of the directory.
#[derive(Debug)]
struct FileStatus {
    tenant: String,
    /// Hash of the content last examined.
    seen: Option<u64>,
    valid: bool,
    /// The last good version, in force.
    active: Option<Loaded>,
    last_success: f64,
    successes: u64,
    failures: u64,
}

/// FNV-1a of a file's content (to notice changes).
fn hash(bytes: &[u8]) -> u64 {
    crate::state::Fingerprint::of(bytes).hash ^ (bytes.len() as u64).rotate_left(32)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The platform's config and every tenant's rule set: what is in force and each file's status.
#[derive(Debug)]
pub struct RuleSets {
    dir: Option<PathBuf>,
    platform_path: Option<PathBuf>,
    platform: Config,
    limits: Limits,
    /// By file name.
    files: BTreeMap<String, FileStatus>,
    /// Examine every file again at the next scan (the platform file changed).
    revalidate: bool,
    /// Files past `max_files` at the last scan (logged when it changes).
    ignored: usize,
    /// The directory could not be read at the last scan (logged when it changes).
    unreadable: bool,
}

impl RuleSets {
    pub fn new(
        dir: Option<PathBuf>,
        platform_path: Option<PathBuf>,
        platform: Config,
        limits: Limits,
    ) -> Self {
        Self {
            dir,
            platform_path,
            platform,
            limits,
            files: BTreeMap::new(),
            revalidate: false,
            ignored: 0,
            unreadable: false,
        }
    }

    /// Whether a rule set directory is configured.
    pub fn has_dir(&self) -> bool {
        self.dir.is_some()
    }

    /// Replaces the platform config (a reload): every file is bound again at the next scan.
    pub fn set_platform(&mut self, platform: Config) {
        self.platform = platform;
        self.revalidate = true;
    }

    /// The rules in force: the platform's, then each tenant's by file name.
    pub fn rules(&self) -> Vec<Rule> {
        let mut out = self.platform.rules.clone();
        for f in self.files.values() {
            if let Some(a) = &f.active {
                out.extend(a.rules.iter().cloned());
            }
        }
        out
    }

    /// Rules in force except those of file `name`.
    fn others(&self, name: &str) -> Vec<&Rule> {
        let mut out: Vec<&Rule> = self.platform.rules.iter().collect();
        for (n, f) in &self.files {
            if n != name {
                out.extend(f.active.iter().flat_map(|a| a.rules.iter()));
            }
        }
        out
    }

    /// Reads the directory and examines new and changed files; returns whether the rules in
    /// force changed.
    pub fn scan(&mut self) -> bool {
        let Some(dir) = self.dir.clone() else {
            return std::mem::take(&mut self.revalidate);
        };
        let listing = match list_dir(&dir, self.platform_path.as_deref()) {
            Ok(l) => {
                if std::mem::take(&mut self.unreadable) {
                    tracing::info!(dir = %dir.display(), "rule set directory readable again");
                }
                l
            }
            Err(e) => {
                // Never drop rules because the directory is momentarily unreadable.
                if !std::mem::replace(&mut self.unreadable, true) {
                    tracing::error!(dir = %dir.display(), error = %e, "cannot read the rule set directory; the rule sets in force stay");
                }
                if !std::mem::take(&mut self.revalidate) {
                    return false;
                }
                // The platform changed: bind what is in force again under its grants.
                let names: Vec<String> = self.files.keys().cloned().collect();
                for name in names {
                    let rebound = self.rebind(&name, &dir.join(&name));
                    if let Some(f) = self.files.get_mut(&name) {
                        f.active = rebound;
                    }
                }
                return true;
            }
        };
        let revalidate = std::mem::take(&mut self.revalidate);
        let mut changed = revalidate;
        let ignored = listing.len().saturating_sub(self.limits.max_files);
        if ignored != self.ignored {
            if ignored > 0 {
                tracing::error!(
                    dir = %dir.display(),
                    ignored,
                    max_files = self.limits.max_files,
                    "more rule set files than --config.dir.max-files; the last ones by name are ignored"
                );
            }
            self.ignored = ignored;
        }
        let listing: Vec<PathBuf> = listing.into_iter().take(self.limits.max_files).collect();
        let names: Vec<String> = listing
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect();
        let gone: Vec<String> = self
            .files
            .keys()
            .filter(|n| !names.contains(n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(f) = self.files.remove(&name) {
                tracing::info!(file = %name, tenant = %f.tenant, "rule set file removed; its rules are gone");
                changed |= f.active.is_some();
            }
        }
        for (path, name) in listing.iter().zip(names) {
            changed |= self.examine(path, &name, revalidate);
        }
        changed
    }

    /// Examines one file if it is new or changed (or `force`); returns whether its rules in
    /// force changed.
    fn examine(&mut self, path: &Path, name: &str, force: bool) -> bool {
        let text = match read_rule_set(path) {
            Ok(t) => Ok(t),
            // Gone between the listing and the read (a swap): the next scan sees the outcome.
            Err(common::ConfigError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return false
            }
            Err(e) => Err(e.to_string()),
        };
        // A sidecar that writes in place truncates first: an empty file is one being
        // written, not a rule set without rules (which would reset its counters).
        if text.as_ref().is_ok_and(Vec::is_empty) {
            if !force {
                return false;
            }
            let rebound = self.rebind(name, path);
            return match self.files.get_mut(name) {
                Some(f) if f.active.is_some() => {
                    f.active = rebound;
                    true
                }
                _ => false,
            };
        }
        let h = match &text {
            Ok(t) => hash(t),
            Err(e) => !hash(e.as_bytes()),
        };
        let tenant = tenant_of(path).unwrap_or_default();
        let status = self
            .files
            .entry(name.to_string())
            .or_insert_with(|| FileStatus {
                tenant: tenant.clone(),
                seen: None,
                valid: false,
                active: None,
                last_success: 0.0,
                successes: 0,
                failures: 0,
            });
        if status.seen == Some(h) && !force {
            return false;
        }
        status.seen = Some(h);
        let result = text
            .and_then(|t| {
                String::from_utf8(t).map_err(|_| format!("{}: not UTF-8 text", path.display()))
            })
            .and_then(|text| {
                let others = self.others(name);
                check_file(path, &text, &self.platform, &self.limits, &others)
            });
        let rebound = match (&result, force) {
            (Err(_), true) => self.rebind(name, path),
            _ => None,
        };
        let Some(status) = self.files.get_mut(name) else {
            return false;
        };
        match result {
            Ok(loaded) => {
                if !loaded.over_budget.is_empty() {
                    tracing::warn!(
                        file = %path.display(),
                        tenant = %loaded.tenant,
                        max_rules = loaded.max_rules,
                        left_out = %loaded.over_budget.join(","),
                        "rule set over its rule budget; the rules past it are left out"
                    );
                }
                tracing::info!(file = %path.display(), tenant = %loaded.tenant, rules = loaded.rules.len(), namespaces = %loaded.binding.namespaces.join(","), "rule set loaded");
                status.valid = true;
                status.successes += 1;
                status.last_success = unix_now();
                status.active = Some(loaded);
                true
            }
            Err(e) => {
                status.valid = false;
                status.failures += 1;
                let had = status.active.is_some();
                if force {
                    status.active = rebound;
                }
                if status.active.is_some() {
                    tracing::error!(tenant = %status.tenant, error = %e, "rule set rejected; its last good version stays in force");
                } else {
                    tracing::error!(tenant = %status.tenant, error = %e, "rule set rejected; the tenant has no rules in force");
                }
                force && (had || status.active.is_some())
            }
        }
    }

    /// The last good version of file `name`, bound again under the platform's present grants
    /// (`None` if there is none or it no longer fits).
    fn rebind(&self, name: &str, path: &Path) -> Option<Loaded> {
        let a = self.files.get(name)?.active.as_ref()?;
        let others = self.others(name);
        bind(
            path,
            &a.tenant,
            a.parsed.clone(),
            &self.platform,
            &self.limits,
            &others,
        )
        .ok()
    }

    /// Writes the per-file and per-tenant status metrics (the sink has the prefix); each
    /// family is written even without a series.
    pub fn encode(&self, sink: &mut Sink) {
        if self.dir.is_none() {
            return;
        }
        let mut valid = sink.gauge(
            "ruleset_valid",
            "Whether the present content of a --config.dir rule set file is in force (0: rejected; its last good version, if any, stays)",
        );
        let mut last = sink.gauge(
            "ruleset_last_reload_success_timestamp_seconds",
            "When a rule set file was last loaded successfully (0: never)",
        );
        let mut reloads = sink.counter(
            "ruleset_reloads",
            "Rule set file versions examined by this process, by result",
        );
        let [mut rules, mut over, mut rules_limit, mut series_limit] = [
            ("ruleset_rules", "Rules of a tenant in force"),
            (
                "ruleset_rules_over_budget",
                "Rules of a tenant's file left out because they are past its rule budget",
            ),
            ("ruleset_rules_limit", "A tenant's rule budget"),
            (
                "ruleset_series_limit",
                "A tenant's series budget (all its rules together)",
            ),
        ]
        .map(|(name, help)| sink.gauge(name, help));
        for (name, f) in &self.files {
            let fl = [("tenant", f.tenant.as_str()), ("file", name.as_str())];
            valid.push(&fl, u64::from(f.valid));
            last.push(&fl, f.last_success);
            for (result, n) in [("failure", f.failures), ("success", f.successes)] {
                reloads.push(&[fl[0], fl[1], ("result", result)], n);
            }
            if f.tenant.is_empty() {
                continue;
            }
            let t = [("tenant", f.tenant.as_str())];
            let a = f.active.as_ref();
            rules.push(&t, a.map_or(0, |a| a.rules.len() as u64));
            over.push(&t, a.map_or(0, |a| a.over_budget.len() as u64));
            let grant = self.platform.tenants.get(&f.tenant);
            let max_rules = grant.and_then(|g| g.max_rules);
            rules_limit.push(&t, max_rules.unwrap_or(self.limits.max_rules) as u64);
            let max_series = grant.and_then(|g| g.max_series);
            series_limit.push(&t, max_series.unwrap_or(self.limits.max_series) as u64);
        }
        for f in [valid, last, reloads, rules, over, rules_limit, series_limit] {
            sink.push(f.written_when_empty());
        }
    }
}

/// Watches `dir` and asks `reloader` to rescan it after each burst of changes (once quiet for
/// `quiet`) and every `interval`.
pub fn spawn_watcher(
    reloader: Arc<crate::reload::Reloader>,
    dir: PathBuf,
    interval: Duration,
    quiet: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("ruleset-watch".into())
        .spawn(move || watch_loop(&dir, &tx));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the rule set watcher; relying on rescans");
    }
    tokio::spawn(async move {
        let mut events = true;
        loop {
            let woke = if events {
                tokio::select! {
                    got = rx.recv() => got.is_some(),
                    () = tokio::time::sleep(interval) => false,
                }
            } else {
                tokio::time::sleep(interval).await;
                false
            };
            if woke {
                // Let a burst (a sidecar writing, a symlink swap) settle, but not forever.
                let until = tokio::time::Instant::now() + quiet * 10;
                while tokio::time::Instant::now() < until {
                    match tokio::time::timeout(quiet, rx.recv()).await {
                        Ok(Some(())) => {}
                        _ => break,
                    }
                }
            } else if events && rx.is_closed() && rx.is_empty() {
                events = false;
            }
            reloader.rescan_dir().await;
        }
    });
}

/// Blocks on inotify for `dir`, sending a wake-up per batch of events; the watch is placed
/// again when the directory is replaced or removed.
fn watch_loop(dir: &Path, tx: &tokio::sync::mpsc::UnboundedSender<()>) {
    use inotify::{EventMask, Inotify, WatchMask};
    let mut inotify = match Inotify::init() {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "no inotify for the rule set directory; relying on rescans");
            return;
        }
    };
    let mask = WatchMask::CREATE
        | WatchMask::CLOSE_WRITE
        | WatchMask::MODIFY
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::DELETE
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let wd = loop {
            match inotify.watches().add(dir, mask) {
                Ok(wd) => break wd,
                Err(_) if tx.is_closed() => return,
                Err(_) => std::thread::sleep(Duration::from_secs(1)),
            }
        };
        if tx.send(()).is_err() {
            return;
        }
        loop {
            let events = match inotify.read_events_blocking(&mut buf) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(error = %e, "inotify read failed for the rule set directory; relying on rescans");
                    return;
                }
            };
            // Only the present watch counts: removing a watch queues an IGNORED of its own.
            let mut replaced = false;
            for ev in events {
                replaced |= ev.wd == wd
                    && ev.mask.intersects(
                        EventMask::IGNORED | EventMask::DELETE_SELF | EventMask::MOVE_SELF,
                    );
            }
            if tx.send(()).is_err() {
                return;
            }
            if replaced {
                let _ = inotify.watches().remove(wd.clone());
                break;
            }
        }
    }
}

/// Shared handle on the rule sets (the watcher, reloads and the collector use it).
pub type Shared = Arc<Mutex<RuleSets>>;

/// Outcome of `check-rules` for one file.
#[derive(Debug)]
pub struct Verdict {
    pub path: PathBuf,
    pub result: Result<Loaded, String>,
}

impl Verdict {
    /// Valid and within its rule budget.
    pub fn ok(&self) -> bool {
        self.result.as_ref().is_ok_and(|l| l.over_budget.is_empty())
    }

    /// One line: `ok   FILE: ...` or `FAIL FILE...: reason`.
    pub fn line(&self) -> String {
        match &self.result {
            Ok(l) if l.over_budget.is_empty() => format!(
                "ok   {}: tenant {}, {} rules, namespaces {}",
                self.path.display(),
                l.tenant,
                l.rules.len(),
                l.binding.namespaces.join(",")
            ),
            Ok(l) => format!(
                "FAIL {}: tenant {} has {} rules, over its budget of {}; left out: {}",
                self.path.display(),
                l.tenant,
                l.rules.len() + l.over_budget.len(),
                l.max_rules,
                l.over_budget.join(", ")
            ),
            Err(e) => format!("FAIL {e}"),
        }
    }
}

/// `check-rules`: the verdict of every rule set file named or found in a named directory, in
/// the order the exporter examines them (so metrics shared between files are judged the same
/// way). Errors: a path that cannot be read, or no rule set file at all.
pub fn check_paths(
    paths: &[PathBuf],
    platform_path: Option<&Path>,
    platform: &Config,
    limits: &Limits,
) -> Result<Vec<Verdict>, String> {
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if meta.is_dir() {
            files.extend(list_dir(p, platform_path).map_err(|e| format!("{}: {e}", p.display()))?);
        } else {
            files.push(p.clone());
        }
    }
    if files.is_empty() {
        return Err("no *.yml rule set file found".into());
    }
    let mut verdicts: Vec<Verdict> = Vec::new();
    for path in files {
        // A file that cannot be read, is too large or is not UTF-8 is that file's verdict;
        // the others are judged all the same.
        let text = read_rule_set(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                String::from_utf8(b).map_err(|e| {
                    format!(
                        "{}: not UTF-8 text (invalid byte at offset {})",
                        path.display(),
                        e.utf8_error().valid_up_to()
                    )
                })
            });
        let mut others: Vec<&Rule> = platform.rules.iter().collect();
        others.extend(
            verdicts
                .iter()
                .filter_map(|v| v.result.as_ref().ok())
                .flat_map(|l| l.rules.iter()),
        );
        let result = text.and_then(|t| check_file(&path, &t, platform, limits, &others));
        verdicts.push(Verdict { path, result });
    }
    Ok(verdicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(text: &str) -> Config {
        config::parse(Path::new("platform.yml"), text).unwrap()
    }

    fn check(name: &str, text: &str, p: &Config, limits: &Limits) -> Result<Loaded, String> {
        check_file(
            Path::new(name),
            text,
            p,
            limits,
            &p.rules.iter().collect::<Vec<_>>(),
        )
    }

    #[test]
    fn binding_grants_budget_and_errors() {
        let p = platform(
            "rules:\n- {name: lat, expr: '{} | logfmt | unwrap ms', metric: shared_ms, type: histogram}\ntenants:\n  payments:\n    namespaces: [pay-prod, pay-stage]\n    max_rules: 1\n",
        );
        let limits = Limits::default();
        let l = check(
            "team-a.yml",
            "rules:\n- {name: e, expr: '{} |= \"E\"'}\n",
            &p,
            &limits,
        )
        .unwrap();
        assert_eq!(l.binding.namespaces, ["team-a"], "default: own namespace");
        assert_eq!(l.binding.max_series, limits.max_series);
        assert!(l.rules.iter().all(|r| r.tenant() == "team-a"));
        let l = check(
            "payments.yml",
            "rules:\n- {name: a, expr: '{} |= \"A\"'}\n- {name: b, expr: '{} |= \"B\"'}\n",
            &p,
            &limits,
        )
        .unwrap();
        assert_eq!(l.binding.namespaces, ["pay-prod", "pay-stage"], "granted");
        assert_eq!(l.rules.len(), 1);
        assert_eq!(l.over_budget, ["b"], "rules past the budget, in file order");
        let cases = [
            (
                "Team_A.yml",
                "rules: []\n",
                "file name must be <tenant>.yml",
            ),
            (
                "t.yml",
                "sources:\n- path: /x.log\n",
                "t.yml:1:1: unknown field `sources`",
            ),
            ("t.yml", "tenants: {}\n", "unknown field `tenants`"),
            (
                "t.yml",
                "rules:\n  - name: x\n    expr: '{} | distinct x'\n",
                "t.yml:3:17: ",
            ),
            (
                "t.yml",
                "rules:\n- {name: x, expr: '{} | json | unwrap ms', metric: shared_ms}\n",
                "already in use by the platform",
            ),
            (
                "t.yml",
                &format!("# {}\nrules: []\n", "x".repeat(MAX_FILE_BYTES)),
                "more than a rule set may hold",
            ),
            (
                "t.yml",
                "rules:\n- {name: x, expr: '{} | json', labels: [namespace], keep_labels: []}\n",
                "\"namespace\" is a source label",
            ),
        ];
        for (name, text, want) in cases {
            let err = check(name, text, &p, &limits).unwrap_err();
            assert!(err.contains(want), "{name} {text:?}: {err}");
        }
        let bad = [
            "tenants:\n  Bad_Name: {}\n",
            "tenants:\n  a:\n    namespaces: ['x y']\n",
            "tenants:\n  a: {max_series: 0}\n",
        ];
        for text in bad {
            assert!(config::parse(Path::new("p.yml"), text).is_err(), "{text}");
        }
    }

    #[test]
    fn directory_scan_keeps_last_good_and_removes() {
        let d = tempfile::tempdir().unwrap();
        let p = Config::default();
        let mut sets = RuleSets::new(Some(d.path().to_path_buf()), None, p, Limits::default());
        std::fs::write(
            d.path().join("a.yml"),
            "rules:\n- {name: x, expr: '{} |= \"X\"'}\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("b.yml"),
            "rules:\n- {name: x, expr: '{} |= \"Y\"'}\n",
        )
        .unwrap();
        std::fs::write(d.path().join(".hidden.yml"), "garbage: [").unwrap();
        std::fs::write(d.path().join("notes.txt"), "garbage: [").unwrap();
        assert!(sets.scan());
        assert!(!sets.scan(), "nothing changed");
        let names = |s: &RuleSets| -> Vec<String> {
            s.rules()
                .iter()
                .map(|r| format!("{}/{}", r.tenant(), r.name))
                .collect()
        };
        assert_eq!(names(&sets), ["a/x", "b/x"]);
        std::fs::write(
            d.path().join("a.yml"),
            "rules:\n- {name: x, expr: '{} |= '}\n",
        )
        .unwrap();
        assert!(!sets.scan(), "broken: the last good version stays");
        assert!(!sets.files["a.yml"].valid);
        assert_eq!(names(&sets), ["a/x", "b/x"]);
        std::fs::write(d.path().join("a.yml"), "").unwrap();
        assert!(!sets.scan(), "an empty file is one being written");
        std::fs::remove_file(d.path().join("b.yml")).unwrap();
        assert!(sets.scan());
        assert_eq!(names(&sets), ["a/x"]);
        // A platform reload narrowing the grant binds the last good version again.
        let mut p = Config::default();
        p.tenants.insert(
            "a".into(),
            config::TenantGrant {
                namespaces: Some(vec!["a-prod".into()]),
                ..Default::default()
            },
        );
        sets.set_platform(p);
        assert!(sets.scan());
        let rules = sets.rules();
        assert_eq!(
            rules[0].binding.as_ref().unwrap().namespaces,
            ["a-prod"],
            "{rules:?}"
        );
        // The directory gone: its rule sets stay, and a platform reload still binds them.
        let moved = d.path().with_extension("moved");
        std::fs::rename(d.path(), &moved).unwrap();
        assert!(!sets.scan());
        assert_eq!(names(&sets), ["a/x"]);
        sets.set_platform(Config::default());
        assert!(sets.scan());
        assert_eq!(sets.rules()[0].binding.as_ref().unwrap().namespaces, ["a"]);
        std::fs::rename(&moved, d.path()).unwrap();
    }

    /// Hostile rule set files: nesting that would take the YAML parser minutes, a file far
    /// over the size cap (never read), a FIFO (never opened for a blocking read), invalid
    /// UTF-8. Each is rejected on its own with the file's name; the other files load.
    #[test]
    fn hostile_files_are_rejected_before_parsing_or_reading() {
        let d = tempfile::tempdir().unwrap();
        let nested = format!("rules: {}", "[".repeat(MAX_FILE_BYTES - 16));
        std::fs::write(d.path().join("deep.yml"), &nested).unwrap();
        let huge = d.path().join("huge.yml");
        std::fs::File::create(&huge)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        std::fs::write(d.path().join("latin.yml"), b"rules: []\n# caf\xe9\n").unwrap();
        std::fs::write(
            d.path().join("good.yml"),
            format!(
                "rules:\n- {{name: x, expr: '{{}} |= \"{}\"'}}\n",
                "[".repeat(100)
            ),
        )
        .unwrap();
        let err = check("deep.yml", &nested, &Config::default(), &Limits::default()).unwrap_err();
        assert!(
            err.starts_with("deep.yml:1:72: brackets nested more than 64 levels deep"),
            "{err}"
        );
        let err = read_rule_set(&huge).unwrap_err().to_string();
        assert!(
            err.contains("huge.yml: ")
                && err.ends_with("above the limit of 262144 bytes for a rule set"),
            "{err}"
        );
        let fifo = d.path().join("fifo.yml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = read_rule_set(&fifo).unwrap_err().to_string();
        assert!(
            err.contains("fifo.yml: a FIFO, not a regular file"),
            "{err}"
        );
        std::fs::remove_file(&fifo).unwrap();
        // The directory scan: each bad file rejected on its own, the good one in force.
        let mut sets = RuleSets::new(
            Some(d.path().to_path_buf()),
            None,
            Config::default(),
            Limits::default(),
        );
        assert!(sets.scan());
        assert_eq!(sets.rules().len(), 1);
        for bad in ["deep.yml", "huge.yml", "latin.yml"] {
            assert!(!sets.files[bad].valid, "{bad}");
        }
        assert!(sets.files["good.yml"].valid);
        assert!(!sets.scan(), "unchanged files are not examined again");
        // check-rules: a verdict for every file, the non-UTF-8 one included.
        let verdicts = check_paths(
            &[d.path().to_path_buf()],
            None,
            &Config::default(),
            &Limits::default(),
        )
        .unwrap();
        let lines: Vec<String> = verdicts.iter().map(Verdict::line).collect();
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert!(
            lines[0].starts_with("FAIL ") && lines[0].contains("deep.yml:1:72"),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("ok   ") && lines[1].contains("good.yml"),
            "{lines:?}"
        );
        assert!(
            lines[2].contains("huge.yml: ") && lines[2].contains("above the limit"),
            "{lines:?}"
        );
        assert!(
            lines[3].contains("latin.yml: not UTF-8 text (invalid byte at offset 15)"),
            "{lines:?}"
        );
    }
}
