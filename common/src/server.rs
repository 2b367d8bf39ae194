//! The HTTP(S) server: routes, auth, the concurrency limit and graceful shutdown.
//!
//! One accept loop per `--web.listen-address`; each connection is served by hyper (HTTP/1.1,
//! and HTTP/2 when TLS's ALPN negotiates it, as Go's net/http does), behind TLS when the web
//! config asks for it. At most `--web.max-connections` connections are open at once (as
//! Prometheus's own flag of that name): beyond it a new connection is closed at once (after a
//! 503 on plain HTTP), so idle or slow clients cannot use up the process's file descriptors
//! and the connections already open keep being served. A client gets [`HEADER_READ_TIMEOUT`]
//! to send its request headers, which is also how long an idle keep-alive connection (HTTP/1,
//! or HTTP/2 with no request in progress) stays open, and a response it stops reading for
//! [`WRITE_STALL_TIMEOUT`] is dropped; a response holds its `--web.max-requests` permit until
//! it is sent. On shutdown the loops stop accepting and open connections get a grace period
//! to finish their scrape.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::exposition::{accepts_gzip, gzip, negotiate, openmetrics_to_text, Format};
use crate::scrape::{scrape_timeout, Scraper};
use crate::web_config::WebConfig;

/// How long a client has to send a request's headers (and an idle keep-alive connection may
/// wait for its next request): hyper's default, which it applies only when given a timer.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a write to a client may make no progress before the connection is dropped: a client
/// that stops reading would otherwise keep its response, and its `--web.max-requests` permit,
/// for good. Progress resets it, so a slow link is not cut.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The default of `--web.max-connections`: well under the 1024 file descriptors a process gets
/// by default, leaving room for the files and sockets the collectors open.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// Startup errors of the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid listen address {0:?}: {1}")]
    Address(String, String),
    #[error("cannot listen on {0}: {1}")]
    Bind(String, std::io::Error),
    #[error(
        "--web.telemetry-path {0:?} must start with '/', hold no '{{' or '}}' nor a segment starting with ':' or '*', and not be one of /, /-/healthy, /-/ready"
    )]
    TelemetryPath(String),
}

/// Everything the server needs besides the scraper.
#[derive(Clone)]
pub struct ServerOptions {
    pub name: &'static str,
    pub description: &'static str,
    pub listen: Vec<String>,
    pub telemetry_path: String,
    pub web: Option<WebConfig>,
    pub max_requests: usize,
    /// Open connections served at once (0: no limit); beyond it new ones are closed.
    pub max_connections: usize,
    /// How long a client has to send its request headers, and an idle keep-alive connection
    /// stays open ([`HEADER_READ_TIMEOUT`] in an exporter).
    pub header_read_timeout: Duration,
    pub default_timeout: Duration,
    pub timeout_offset: Duration,
    /// `/-/ready` answers 200 only while this is true.
    pub ready: Arc<AtomicBool>,
    /// `/-/ready` also waits for a collection in which every enabled collector succeeded
    /// ([`Scraper::has_succeeded`]); until then each `/-/ready` runs one (shared with scrapes).
    pub ready_after_collection: bool,
    /// Extra routes (for example `POST /-/reload`), behind the same auth.
    pub extra_routes: Router,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("name", &self.name)
            .field("listen", &self.listen)
            .field("telemetry_path", &self.telemetry_path)
            .finish()
    }
}

#[derive(Clone)]
struct AppState {
    scraper: Arc<Scraper>,
    opts: Arc<ServerOptions>,
    limit: Option<Arc<Semaphore>>,
}

/// Parses `host:port`, `:port` (every interface: `[::]` and `0.0.0.0`, as Go listens on both) or
/// `[v6]:port` into the addresses to bind.
pub fn parse_listen_address(s: &str) -> Result<Vec<SocketAddr>, ServerError> {
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|e: std::num::ParseIntError| {
            ServerError::Address(s.to_string(), e.to_string())
        })?;
        return Ok(vec![
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
            SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port)),
        ]);
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    // A host name such as localhost:9100.
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .map_err(|e| ServerError::Address(s.to_string(), e.to_string()))?
        .next()
        .map(|a| vec![a])
        .ok_or_else(|| ServerError::Address(s.to_string(), "no address".into()))
}

/// Binds `addrs` (from [`parse_listen_address`]). For `[::]` then `0.0.0.0`: on a dual-stack
/// host `[::]` takes IPv4 too and `0.0.0.0` is then in use, which is fine; without IPv6 only
/// `0.0.0.0` binds; with `bindv6only` both do. One of them must.
async fn bind_all(spec: &str, addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, ServerError> {
    let mut bound: Vec<TcpListener> = Vec::new();
    let mut first_err = None;
    for addr in addrs {
        let mut addr = *addr;
        // `:0`: the second family takes the port the first one got.
        if let Some(port) = bound
            .first()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
        {
            if addr.port() == 0 {
                addr.set_port(port);
            }
        }
        match TcpListener::bind(addr).await {
            Ok(l) => bound.push(l),
            Err(e) if !bound.is_empty() && e.kind() == std::io::ErrorKind::AddrInUse => {}
            Err(e) => {
                if addrs.len() > 1 {
                    tracing::debug!(address = %addr, error = %e, "cannot listen on this family");
                }
                first_err.get_or_insert(e);
            }
        }
    }
    match (bound.is_empty(), first_err) {
        (true, Some(e)) => Err(ServerError::Bind(spec.to_string(), e)),
        (true, None) => Err(ServerError::Address(spec.to_string(), "no address".into())),
        (false, _) => Ok(bound),
    }
}

/// A server whose sockets are bound (so tests can learn the ports) but not yet serving.
pub struct BoundServer {
    listeners: Vec<TcpListener>,
    app: Router,
    web: Option<WebConfig>,
    max_connections: usize,
    header_read_timeout: Duration,
}

impl std::fmt::Debug for BoundServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundServer")
            .field("addrs", &self.local_addrs())
            .finish()
    }
}

impl BoundServer {
    /// Binds every listen address.
    pub async fn bind(scraper: Arc<Scraper>, opts: ServerOptions) -> Result<Self, ServerError> {
        let path = opts.telemetry_path.clone();
        // Braces are route syntax to axum, which panics on a malformed one, and on a segment
        // starting with ':' or '*' (axum 0.7's syntax).
        if !path.starts_with('/')
            || path.contains(['{', '}'])
            || path.split('/').any(|seg| seg.starts_with([':', '*']))
            || ["/", "/-/healthy", "/-/ready"].contains(&path.as_str())
        {
            return Err(ServerError::TelemetryPath(path));
        }
        let mut listeners = Vec::new();
        for a in &opts.listen {
            let addrs = parse_listen_address(a)?;
            listeners.extend(bind_all(a, &addrs).await?);
        }
        let web = opts.web.clone();
        let max_connections = opts.max_connections;
        let header_read_timeout = opts.header_read_timeout;
        let app = router(scraper, opts);
        Ok(Self {
            listeners,
            app,
            web,
            max_connections,
            header_read_timeout,
        })
    }

    /// The bound addresses.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown` is cancelled, then drains connections for up to `grace`.
    pub async fn serve(self, shutdown: CancellationToken, grace: Duration) {
        let graceful = Arc::new(GracefulShutdown::new());
        let tls = self.web.clone().filter(WebConfig::tls_enabled);
        let header_read_timeout = self.header_read_timeout;
        let limit = ConnectionLimit::new(self.max_connections);
        let mut loops = Vec::new();
        for listener in self.listeners {
            let app = self.app.clone();
            let tls = tls.clone();
            let shutdown = shutdown.clone();
            let graceful = Arc::clone(&graceful);
            let limit = limit.clone();
            loops.push(tokio::spawn(async move {
                loop {
                    let (stream, peer) = tokio::select! {
                        r = listener.accept() => match r {
                            Ok(v) => v,
                            Err(err) => {
                                // EMFILE and friends: log, back off, keep serving.
                                tracing::warn!(error = %err, "accept failed");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            }
                        },
                        () = shutdown.cancelled() => break,
                    };
                    let Some(permit) = limit.admit(&stream, peer, tls.is_some()) else {
                        continue;
                    };
                    let stream = StallGuard::new(stream);
                    let app = app.clone();
                    let tls = tls.clone();
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        let _permit = permit;
                        serve_connection(stream, peer, app, tls, watcher, header_read_timeout)
                            .await;
                    });
                }
            }));
        }
        for l in loops {
            let _ = l.await;
        }
        if let Ok(g) = Arc::try_unwrap(graceful) {
            if tokio::time::timeout(grace, g.shutdown()).await.is_err() {
                tracing::warn!("connections still open after the shutdown grace period");
            }
        }
    }
}

/// Serves one accepted connection (TLS first when `tls` is set) until it ends.
async fn serve_connection(
    stream: StallGuard,
    peer: SocketAddr,
    app: Router,
    tls: Option<WebConfig>,
    watcher: hyper_util::server::graceful::Watcher,
    header_read_timeout: Duration,
) {
    let activity = Arc::new(Activity::default());
    let svc = Tracked {
        app,
        activity: Arc::clone(&activity),
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper applies no header read timeout: a client trickling its headers
    // would hold its connection forever.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let tls = match tls {
        None => None,
        Some(web) => match web.current().and_then(|s| s.tls.clone()) {
            Some(t) => Some(t),
            None => {
                tracing::debug!(%peer, "web config unusable; connection refused");
                return;
            }
        },
    };
    // The protocol is known before the first byte (HTTP/2 only by ALPN, as Go serves it), so
    // hyper never waits, without a deadline, for enough bytes to tell an HTTP/2 preface from
    // HTTP/1.
    let result = match tls {
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
            let handshake =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await;
            let s = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, error = %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            if s.get_ref().1.alpn_protocol() == Some(b"h2") {
                let conn = builder
                    .http2_only()
                    .serve_connection(TokioIo::new(s), svc)
                    .into_owned();
                // hyper's header read timeout covers HTTP/1 only.
                tokio::select! {
                    r = watcher.watch(conn) => r,
                    () = activity.idle_for(header_read_timeout) => {
                        tracing::debug!(%peer, "idle HTTP/2 connection closed");
                        Ok(())
                    }
                }
            } else {
                let conn = builder
                    .http1_only()
                    .serve_connection(TokioIo::new(s), svc)
                    .into_owned();
                watcher.watch(conn).await
            }
        }
        None => {
            let conn = builder
                .http1_only()
                .serve_connection(TokioIo::new(stream), svc)
                .into_owned();
            watcher.watch(conn).await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%peer, error = %err, "connection ended with an error");
    }
}

/// What a connection is doing: the requests in progress (until their response body is sent or
/// dropped) and when the last one ended, so that an HTTP/2 connection with nothing to do can be
/// closed after the idle timeout, as hyper closes an idle HTTP/1 keep-alive connection.
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    since: std::sync::Mutex<tokio::time::Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            since: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }
}

impl Activity {
    fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(self))
    }

    /// Returns once the connection has had no request in progress for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let since = *crate::sync::lock(&self.since);
            if self.in_flight.load(Ordering::SeqCst) == 0 && since.elapsed() >= limit {
                return;
            }
            let wait = limit.saturating_sub(since.elapsed());
            tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
        }
    }
}

/// One request in progress, until its response body is done.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        *crate::sync::lock(&self.0.since) = tokio::time::Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The router as hyper calls it, counting each request in [`Activity`] until its body is sent.
#[derive(Clone)]
struct Tracked {
    app: Router,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<hyper::body::Incoming>> for Tracked {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Response, Self::Error>>;

    fn call(&self, req: Request<hyper::body::Incoming>) -> Self::Future {
        use tower::ServiceExt;
        let guard = self.activity.enter();
        let app = self.app.clone();
        Box::pin(async move {
            let resp = app.oneshot(req.map(Body::new)).await?;
            Ok(resp.map(|inner| {
                Body::new(TrackedBody {
                    inner,
                    _guard: guard,
                })
            }))
        })
    }
}

/// A response body that ends its request's [`InFlight`] when it is done or dropped.
struct TrackedBody {
    inner: Body,
    _guard: InFlight,
}

impl hyper::body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// `--web.max-connections`: one permit per open connection, shared by every listener.
#[derive(Clone)]
struct ConnectionLimit {
    permits: Option<Arc<Semaphore>>,
    max: usize,
    /// Whether the limit was hit since it was last logged, so that a flood of connections
    /// is logged once per episode rather than once per connection.
    full: Arc<AtomicBool>,
}

impl ConnectionLimit {
    fn new(max: usize) -> Self {
        Self {
            // Semaphore::new panics above MAX_PERMITS; a limit that large is no limit anyway.
            permits: (max > 0 && max <= Semaphore::MAX_PERMITS)
                .then(|| Arc::new(Semaphore::new(max))),
            max,
            full: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A permit for a new connection, or `None` after closing it (with a 503 written without
    /// waiting on plain HTTP, so that a scraper sees why).
    fn admit(
        &self,
        stream: &tokio::net::TcpStream,
        peer: SocketAddr,
        tls: bool,
    ) -> Option<Option<tokio::sync::OwnedSemaphorePermit>> {
        let Some(permits) = &self.permits else {
            return Some(None);
        };
        match Arc::clone(permits).try_acquire_owned() {
            Ok(p) => {
                if self.full.swap(false, Ordering::Relaxed) {
                    tracing::info!(limit = self.max, "connections below the limit again");
                }
                Some(Some(p))
            }
            Err(_) => {
                if !self.full.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        limit = self.max,
                        "too many open connections (--web.max-connections); closing new ones until some end"
                    );
                }
                tracing::debug!(%peer, "connection refused: too many open connections");
                if !tls {
                    let _ = stream.try_write(
                        b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                    );
                }
                None
            }
        }
    }
}

fn router(scraper: Arc<Scraper>, opts: ServerOptions) -> Router {
    // Semaphore::new panics above MAX_PERMITS; a limit that large is no limit anyway.
    let limit = (opts.max_requests > 0 && opts.max_requests <= Semaphore::MAX_PERMITS)
        .then(|| Arc::new(Semaphore::new(opts.max_requests)));
    let path = opts.telemetry_path.clone();
    let extra = opts.extra_routes.clone();
    let opts = Arc::new(opts);
    let state = AppState {
        scraper,
        opts: Arc::clone(&opts),
        limit,
    };
    let app = Router::new()
        .route("/", get(landing))
        .route(&path, get(metrics))
        .route("/-/healthy", get(|| async { "Healthy\n" }))
        .route("/-/ready", get(ready))
        .with_state(state.clone())
        .merge(extra);
    app.layer(axum::middleware::from_fn_with_state(
        state,
        auth_and_headers,
    ))
}

async fn auth_and_headers(
    State(state): State<AppState>,
    req: Request<Body>,
    next: Next,
) -> Response {
    let settings = match &state.opts.web {
        None => None,
        Some(web) => match web.current() {
            Some(s) => Some(s),
            None => {
                return (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n")
                    .into_response()
            }
        },
    };
    let allowed = match settings.as_ref().and_then(|s| s.auth.clone()) {
        None => true,
        Some(auth) => {
            let header = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            auth.verify(header).await
        }
    };
    let mut resp = if allowed {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic")],
            "Unauthorized\n",
        )
            .into_response()
    };
    // On refusals too, as exporter-toolkit sets them before checking credentials.
    if let Some(s) = &settings {
        for (k, v) in &s.headers {
            resp.headers_mut().insert(k.clone(), v.clone());
        }
    }
    resp
}

async fn landing(State(state): State<AppState>) -> Html<String> {
    let o = &state.opts;
    let collectors = state.scraper.enabled().join(", ");
    Html(format!(
        "<!DOCTYPE html>\n<html><head><title>{name}</title></head><body>\n<h1>{name}</h1>\n<p>{desc}</p>\n<p>Version {ver} (revision {rev})</p>\n<p>Enabled collectors: {collectors}</p>\n<ul><li><a href=\"{path}\">Metrics</a></li><li><a href=\"/-/healthy\">Health</a></li><li><a href=\"/-/ready\">Readiness</a></li></ul>\n</body></html>\n",
        name = html_escape(o.name),
        desc = html_escape(o.description),
        ver = crate::process::VERSION,
        rev = crate::process::REVISION,
        path = html_escape(&o.telemetry_path),
    ))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn ready(State(state): State<AppState>) -> Response {
    if !state.opts.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "Not ready\n").into_response();
    }
    if state.opts.ready_after_collection && !state.scraper.has_succeeded() {
        let names = state.scraper.enabled().to_vec();
        state
            .scraper
            .scrape(names, state.opts.default_timeout)
            .await;
        if !state.scraper.has_succeeded() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "Not ready: no collection has succeeded yet\n",
            )
                .into_response();
        }
    }
    (StatusCode::OK, "Ready\n").into_response()
}

async fn metrics(
    State(state): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let permit = match &state.limit {
        Some(sem) => match Arc::clone(sem).try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                tracing::warn!(
                    limit = state.opts.max_requests,
                    "too many concurrent scrapes; answering 503"
                );
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "Limit of concurrent requests reached ({}), try again later.\n",
                        state.opts.max_requests
                    ),
                )
                    .into_response();
            }
        },
        None => None,
    };
    let wanted: Vec<String> = params
        .into_iter()
        .filter(|(k, _)| k == "collect[]")
        .map(|(_, v)| v)
        .collect();
    let names = match state.scraper.select(&wanted) {
        Ok(n) => n,
        Err(err) => return (StatusCode::BAD_REQUEST, format!("{err}\n")).into_response(),
    };
    let hv = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let timeout = scrape_timeout(
        hv("x-prometheus-scrape-timeout-seconds"),
        state.opts.default_timeout,
        state.opts.timeout_offset,
    );
    let body = state.scraper.scrape(names, timeout).await;
    let format = negotiate(hv("accept"));
    let started = std::time::Instant::now();
    let bytes = match format {
        Format::OpenMetrics => body.as_bytes().to_vec(),
        Format::Text => openmetrics_to_text(&body).into_bytes(),
    };
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        ?format,
        "body prepared"
    );
    let mut resp_headers = HeaderMap::new();
    resp_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    resp_headers.insert(
        header::VARY,
        HeaderValue::from_static("Accept, Accept-Encoding"),
    );
    if accepts_gzip(hv("accept-encoding")) {
        match gzip(&bytes) {
            Ok(z) => {
                resp_headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                return (resp_headers, PermitBody::body(z, permit)).into_response();
            }
            Err(err) => tracing::warn!(error = %err, "gzip failed; sending uncompressed"),
        }
    }
    (resp_headers, PermitBody::body(bytes, permit)).into_response()
}

/// A response body that holds its `--web.max-requests` permit until it is sent (or the client
/// is gone), as Go's promhttp holds its slot while writing: a client that does not read keeps
/// counting against the limit, so unread responses cannot pile up in memory. The body goes out
/// in chunks, so that hyper takes the last one (and the permit goes) only near the end.
struct PermitBody {
    data: bytes::Bytes,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl PermitBody {
    const CHUNK: usize = 64 * 1024;

    fn body(data: Vec<u8>, permit: Option<tokio::sync::OwnedSemaphorePermit>) -> Body {
        Body::new(Self {
            data: bytes::Bytes::from(data),
            permit,
        })
    }
}

impl hyper::body::Body for PermitBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if self.data.is_empty() {
            self.permit = None;
            return std::task::Poll::Ready(None);
        }
        let n = self.data.len().min(Self::CHUNK);
        let chunk = self.data.split_to(n);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.data.len() as u64)
    }
}

/// A connection whose writes fail with `TimedOut` once they have made no progress for
/// [`WRITE_STALL_TIMEOUT`]; hyper then drops the connection and the response with it.
struct StallGuard {
    io: tokio::net::TcpStream,
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl StallGuard {
    fn new(io: tokio::net::TcpStream) -> Self {
        Self { io, stalled: None }
    }

    /// Called when a write is pending: starts the stall clock, or fails once it ran out.
    fn check_stall(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Error> {
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL_TIMEOUT)));
        match std::future::Future::poll(sleep.as_mut(), cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client read nothing for the write stall timeout",
            )),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    fn after_write<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        r: std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        match r {
            std::task::Poll::Pending => self.check_stall(cx).map(Err),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl tokio::io::AsyncRead for StallGuard {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for StallGuard {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.io).poll_write(cx, buf);
        self.after_write(cx, r)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.after_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.io).poll_flush(cx);
        self.after_write(cx, r)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.io).poll_shutdown(cx);
        self.after_write(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_interface_means_ipv6_and_ipv4_as_in_go() {
        // `:9100` is what the deploy files pass. Go listens on IPv6 and IPv4 for it; IPv4 only
        // left the exporter unreachable on an IPv6 node network.
        let addrs = |s: &str| parse_listen_address(s).map_err(|e| e.to_string());
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            addrs(":9100"),
            Ok(vec![sa("[::]:9100"), sa("0.0.0.0:9100")])
        );
        assert_eq!(addrs("127.0.0.1:9100"), Ok(vec![sa("127.0.0.1:9100")]));
        assert_eq!(addrs("[::1]:9100"), Ok(vec![sa("[::1]:9100")]));
        assert_eq!(addrs("0.0.0.0:9100"), Ok(vec![sa("0.0.0.0:9100")]));
        assert!(addrs(":x").is_err());
        assert!(addrs("").is_err());
    }
}
