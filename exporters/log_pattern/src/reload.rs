//! Reloading the rule file on SIGHUP and `POST /-/reload`, as Prometheus does.
//!
//! The file is read and validated completely before anything changes; a broken file is logged,
//! counted in `config_reloads_total{result="failure"}` and `config_last_reload_successful` drops
//! to 0, while the old rules keep counting. A good file is handed to the tailing thread, which
//! swaps the rules between two lines: rules that keep their name, metric and kept labels continue
//! their counters, new rules start at 0. Only `rules` are reloaded; a change of `sources` or
//! `start_at` needs a restart (logged). Reloads are serialised so two requests cannot interleave.
//! The tenants' rule sets of `--config.dir` ([`crate::tenants`]) are installed through the same
//! path: a reload of the platform file binds them again (its grants may have changed), and the
//! directory watcher calls [`Reloader::rescan_dir`], under the same lock.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::Sink;

use crate::config;
use crate::service::Handle;
use crate::tenants;

/// Reload outcomes of this process.
#[derive(Debug)]
pub struct ReloadStats {
    success: AtomicU64,
    failure: AtomicU64,
    last_ok: AtomicBool,
}

impl Default for ReloadStats {
    fn default() -> Self {
        Self {
            success: AtomicU64::new(0),
            failure: AtomicU64::new(0),
            last_ok: AtomicBool::new(true),
        }
    }
}

impl ReloadStats {
    /// Writes `config_reloads_total{result}` and `config_last_reload_successful`.
    pub fn encode(&self, sink: &mut Sink) {
        let mut reloads = sink.counter(
            "config_reloads",
            "Rule file reloads (SIGHUP, POST /-/reload) by this process, by result",
        );
        for (result, n) in [
            ("failure", self.failure.load(Ordering::Relaxed)),
            ("success", self.success.load(Ordering::Relaxed)),
        ] {
            reloads.push(&[("result", result)], n);
        }
        sink.push(reloads);
        sink.gauge_value(
            "config_last_reload_successful",
            "Whether the last rule file reload succeeded (1 before any reload)",
            i64::from(self.last_ok.load(Ordering::Relaxed)),
        );
    }
}

/// Performs reloads.
#[derive(Debug)]
pub struct Reloader {
    path: Option<PathBuf>,
    handle: Handle,
    /// Sources and start_at of the running config, to warn when a reload would change them.
    started_with: String,
    pub stats: Arc<ReloadStats>,
    /// The platform config and the tenants' rule sets.
    pub sets: tenants::Shared,
    /// Whether there is a `--config.dir`.
    has_dir: bool,
    lock: tokio::sync::Mutex<()>,
}

fn fixed_part(c: &config::Config) -> String {
    format!("{:?} {:?}", c.sources, c.start_at)
}

impl Reloader {
    pub fn new(
        path: Option<PathBuf>,
        handle: Handle,
        running: &config::Config,
        sets: tenants::Shared,
    ) -> Self {
        let has_dir = common::sync::lock(&sets).has_dir();
        Self {
            has_dir,
            path,
            handle,
            started_with: fixed_part(running),
            stats: Arc::new(ReloadStats::default()),
            sets,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Examines the rule set directory and installs what changed (the watcher calls this).
    pub async fn rescan_dir(&self) {
        let _guard = self.lock.lock().await;
        let sets = Arc::clone(&self.sets);
        let rules = tokio::task::spawn_blocking(move || {
            let mut s = common::sync::lock(&sets);
            s.scan().then(|| s.rules())
        })
        .await;
        match rules {
            Ok(Some(rules)) => {
                let n = rules.len();
                match self.handle.reload(rules).await {
                    Ok(()) => tracing::debug!(rules = n, "rule sets installed"),
                    Err(e) => tracing::error!(error = %e, "cannot install the rule sets"),
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "rule set scan failed"),
        }
    }

    /// Reloads the rule file; returns the number of rules now in force.
    pub async fn reload(&self) -> Result<usize, String> {
        let _guard = self.lock.lock().await;
        let result = self.try_reload().await;
        let ok = result.is_ok();
        match &result {
            Ok(n) => tracing::info!(rules = n, "rule file reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "rule file reload failed; the previous rules stay")
            }
        }
        let counter = if ok {
            &self.stats.success
        } else {
            &self.stats.failure
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.stats.last_ok.store(ok, Ordering::Relaxed);
        result
    }

    async fn try_reload(&self) -> Result<usize, String> {
        let cfg = match &self.path {
            Some(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || config::load(&path))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?
            }
            // Without a platform file a reload still rescans the rule set directory.
            None if self.has_dir => config::Config::default(),
            None => return Err("no --config.file to reload".into()),
        };
        if fixed_part(&cfg) != self.started_with {
            tracing::warn!("sources and start_at are not reloaded; restart to apply them");
        }
        let sets = Arc::clone(&self.sets);
        let rules = tokio::task::spawn_blocking(move || {
            let mut s = common::sync::lock(&sets);
            s.set_platform(cfg);
            s.scan();
            s.rules()
        })
        .await
        .map_err(|e| e.to_string())?;
        let n = rules.len();
        self.handle.reload(rules).await.map_err(|e| e.to_string())?;
        Ok(n)
    }
}

/// `POST /-/reload`: 200 with the rule count, or 500 with the reason (as Prometheus answers).
pub fn routes(reloader: Arc<Reloader>) -> axum::Router {
    axum::Router::new().route(
        "/-/reload",
        axum::routing::post(move || {
            let reloader = Arc::clone(&reloader);
            async move {
                match reloader.reload().await {
                    Ok(n) => (axum::http::StatusCode::OK, format!("reloaded {n} rules\n")),
                    Err(e) => (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        format!("failed to reload the rule file: {e}\n"),
                    ),
                }
            }
        }),
    )
}

/// Reloads on every SIGHUP until the process ends.
pub fn spawn_sighup(reloader: Arc<Reloader>) -> std::io::Result<()> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the rule file");
            let _ = reloader.reload().await;
        }
    });
    Ok(())
}
