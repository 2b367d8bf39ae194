//! The scrape framework shared by the suite's exporters.
//!
//! An exporter's `main` parses its flags (with the shared [`cli`] groups flattened in), builds
//! its collectors and hands them to [`Exporter`], which serves `/metrics` (with single-flight
//! collection, per-collector timeouts and success metrics, content negotiation and gzip), the
//! landing page, `/-/healthy` and `/-/ready`, honours the exporter-toolkit web config, and shuts
//! down gracefully on SIGTERM or SIGINT, running the exporter's flush hooks.

pub mod alloc;
pub mod cli;
pub mod collector;
pub mod config;
pub mod exposition;
pub mod logging;
pub mod process;
pub mod scrape;
pub mod server;
pub mod sync;
pub mod text;
pub mod web_config;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

pub use collector::{CollectError, Collector, Sink};
pub use config::ConfigError;
pub use scrape::Scraper;
pub use server::{BoundServer, ServerError, ServerOptions};
pub use tokio_util::sync::CancellationToken;
pub use web_config::WebConfig;

/// Startup errors of an exporter (bad flags, bad web config, a port in use).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
}

/// What identifies an exporter.
#[derive(Debug, Clone, Copy)]
pub struct ExporterInfo {
    /// Binary name, shown on the landing page.
    pub name: &'static str,
    /// Metric prefix, without the trailing underscore.
    pub prefix: &'static str,
    /// One sentence for the landing page.
    pub description: &'static str,
    /// Default `--web.listen-address`.
    pub default_listen: &'static str,
}

type ShutdownHook = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// Builder and runner of one exporter process.
pub struct Exporter {
    info: ExporterInfo,
    web: cli::WebArgs,
    collectors: Vec<Arc<dyn Collector>>,
    enabled: Vec<&'static str>,
    ready: Arc<AtomicBool>,
    ready_after_collection: bool,
    routes: axum::Router,
    hooks: Vec<ShutdownHook>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("info", &self.info)
            .field("enabled", &self.enabled)
            .finish()
    }
}

impl Exporter {
    /// `enabled` comes from [`cli::parse`].
    pub fn new(
        info: ExporterInfo,
        web: cli::WebArgs,
        collectors: Vec<Arc<dyn Collector>>,
        enabled: Vec<&'static str>,
    ) -> Self {
        Self {
            info,
            web,
            collectors,
            enabled,
            ready: Arc::new(AtomicBool::new(true)),
            ready_after_collection: false,
            routes: axum::Router::new(),
            hooks: Vec::new(),
            shutdown: CancellationToken::new(),
        }
    }

    /// The flag that `/-/ready` reports; starts true. An exporter that must do something before
    /// it can serve a useful scrape (load saved state) stores false before [`Exporter::bind`]
    /// and true once done.
    pub fn ready_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.ready)
    }

    /// Makes `/-/ready` answer 503 until a collection of every enabled collector has succeeded;
    /// until then each `/-/ready` request runs one (sharing a scrape's if one is running), so
    /// readiness does not wait for Prometheus's first scrape.
    pub fn ready_after_first_collection(mut self) -> Self {
        self.ready_after_collection = true;
        self
    }

    /// Cancelled when the process is asked to stop; background tasks watch it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Adds routes (served behind the same auth and TLS).
    pub fn routes(mut self, routes: axum::Router) -> Self {
        self.routes = self.routes.merge(routes);
        self
    }

    /// Runs `hook` after the server stopped accepting scrapes, before the process exits.
    pub fn on_shutdown<F>(mut self, hook: F) -> Self
    where
        F: FnOnce() -> BoxFuture<'static, ()> + Send + 'static,
    {
        self.hooks.push(Box::new(hook));
        self
    }

    /// Binds the listeners (so a port conflict is a startup error) and returns a server ready to
    /// run. Tests use this with `127.0.0.1:0`.
    pub async fn bind(self) -> Result<RunningExporter, Error> {
        let web = match &self.web.config_file {
            Some(p) => Some(WebConfig::load(p)?),
            None => None,
        };
        let scraper = Scraper::new(self.info.prefix, self.collectors, &self.enabled);
        let listen = if self.web.listen_address.is_empty() {
            vec![self.info.default_listen.to_string()]
        } else {
            self.web.listen_address.clone()
        };
        let opts = ServerOptions {
            name: self.info.name,
            description: self.info.description,
            listen,
            telemetry_path: self.web.telemetry_path.clone(),
            web,
            max_requests: self.web.max_requests,
            max_connections: self.web.max_connections,
            header_read_timeout: server::HEADER_READ_TIMEOUT,
            default_timeout: self.web.scrape_timeout,
            timeout_offset: self.web.scrape_timeout_offset,
            ready: self.ready,
            ready_after_collection: self.ready_after_collection,
            extra_routes: self.routes,
        };
        let tls = opts.web.as_ref().is_some_and(WebConfig::tls_enabled);
        let server = BoundServer::bind(Arc::clone(&scraper), opts).await?;
        for addr in server.local_addrs() {
            tracing::info!(address = %addr, tls, collectors = ?scraper.enabled(), "listening");
        }
        Ok(RunningExporter {
            server,
            scraper,
            hooks: self.hooks,
            shutdown: self.shutdown,
        })
    }

    /// Binds, serves until SIGTERM/SIGINT, then runs the shutdown hooks.
    pub async fn run(self) -> Result<(), Error> {
        self.bind().await?.run_until_signal().await
    }
}

/// A bound exporter.
pub struct RunningExporter {
    server: BoundServer,
    scraper: Arc<Scraper>,
    hooks: Vec<ShutdownHook>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for RunningExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningExporter")
            .field("server", &self.server)
            .finish()
    }
}

impl RunningExporter {
    /// Bound addresses.
    pub fn local_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.server.local_addrs()
    }

    /// The scraper (tests read its run count).
    pub fn scraper(&self) -> Arc<Scraper> {
        Arc::clone(&self.scraper)
    }

    /// The token that stops the server.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the token is cancelled, then runs the hooks.
    pub async fn run(self) {
        self.server
            .serve(self.shutdown.clone(), Duration::from_secs(5))
            .await;
        for hook in self.hooks {
            hook().await;
        }
        tracing::info!("stopped");
    }

    /// Serves until SIGTERM or SIGINT.
    pub async fn run_until_signal(self) -> Result<(), Error> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
        let mut int = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
        let token = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
                _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
                () = token.cancelled() => {}
            }
            token.cancel();
        });
        self.run().await;
        Ok(())
    }
}

/// How long, once `main`'s future is done, the runtime waits for blocking calls still running (a
/// read of a hung file, a stuck libvirt call) before it is dropped without them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Runs an exporter's async `main` on a small multi-threaded runtime and turns a startup error
/// into a message (with its whole cause chain) and exit code 1. A blocking call that is stuck
/// when `main` returns does not keep the process from exiting (see [`SHUTDOWN_GRACE`]).
pub fn block_on_main<F>(fut: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>>,
{
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(fut);
    rt.shutdown_timeout(SHUTDOWN_GRACE);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            let mut msg = err.to_string();
            let mut src = err.source();
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            tracing::error!(error = %msg, "startup failed");
            eprintln!("error: {msg}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stuck_blocking_call_does_not_keep_main_from_returning() {
        // Dropping a runtime waits for its blocking threads: a SIGTERM'd exporter with one
        // call stuck (a hung libvirtd, a FIFO read) would never exit.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let code = block_on_main(async {
                tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_secs(3600)));
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(())
            });
            let _ = tx.send(code);
        });
        let code = rx.recv_timeout(Duration::from_secs(60));
        assert_eq!(code, Ok(std::process::ExitCode::SUCCESS));
    }
}
