//! The scrape framework against a real server listening on loopback: collector outcomes,
//! single flight, the concurrency limit, content negotiation, gzip, TLS and basic auth.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    BoundServer, CancellationToken, CollectError, Collector, Scraper, ServerOptions, WebConfig,
};
use futures::future::BoxFuture;

mod support;
use support::{make_pki, Pki};

/// A collector whose behaviour a test chooses.
struct TestCollector {
    name: &'static str,
    behaviour: Behaviour,
    calls: Arc<AtomicUsize>,
}

#[derive(Clone, Copy)]
enum Behaviour {
    Ok,
    /// Writes a metric, then fails.
    Fail,
    Panic,
    Sleep(Duration),
}

impl Collector for TestCollector {
    fn name(&self) -> &'static str {
        self.name
    }
    fn collect<'a>(
        &'a self,
        sink: &'a mut common::Sink,
    ) -> BoxFuture<'a, Result<(), CollectError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            sink.gauge_value(&format!("{}_value", self.name), "A test value", 42i64);
            match self.behaviour {
                Behaviour::Ok => Ok(()),
                Behaviour::Fail => Err(CollectError::new("backend unreachable")),
                Behaviour::Panic => panic!("collector bug"),
                Behaviour::Sleep(d) => {
                    tokio::time::sleep(d).await;
                    Ok(())
                }
            }
        })
    }
}

struct Harness {
    base: String,
    scraper: Arc<Scraper>,
    calls: Vec<(&'static str, Arc<AtomicUsize>)>,
    stop: CancellationToken,
    client: reqwest::Client,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Harness {
    fn calls(&self, name: &str) -> usize {
        self.calls
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| c.load(Ordering::SeqCst))
            .unwrap_or(0)
    }
}

fn options(web: Option<WebConfig>, max_requests: usize) -> ServerOptions {
    ServerOptions {
        name: "test_exporter",
        description: "test",
        listen: vec!["127.0.0.1:0".into()],
        telemetry_path: "/metrics".into(),
        web,
        max_requests,
        max_connections: 0,
        header_read_timeout: common::server::HEADER_READ_TIMEOUT,
        default_timeout: Duration::from_secs(2),
        timeout_offset: Duration::from_millis(500),
        ready: Arc::new(AtomicBool::new(true)),
        ready_after_collection: false,
        extra_routes: axum::Router::new(),
    }
}

async fn start(
    specs: &[(&'static str, Behaviour)],
    web: Option<WebConfig>,
    max_requests: usize,
    client: reqwest::Client,
    scheme: &str,
) -> Harness {
    let mut calls = Vec::new();
    let mut collectors: Vec<Arc<dyn Collector>> = Vec::new();
    for (name, behaviour) in specs {
        let c = Arc::new(AtomicUsize::new(0));
        calls.push((*name, Arc::clone(&c)));
        collectors.push(Arc::new(TestCollector {
            name,
            behaviour: *behaviour,
            calls: c,
        }));
    }
    let names: Vec<&'static str> = specs.iter().map(|(n, _)| *n).collect();
    let scraper = Scraper::new("test", collectors, &names);
    let server = BoundServer::bind(Arc::clone(&scraper), options(web, max_requests))
        .await
        .unwrap();
    let addr = server.local_addrs()[0];
    let stop = CancellationToken::new();
    tokio::spawn(server.serve(stop.clone(), Duration::from_secs(1)));
    let host = if scheme == "https" {
        "localhost".to_string()
    } else {
        "127.0.0.1".to_string()
    };
    Harness {
        base: format!("{scheme}://{host}:{}", addr.port()),
        scraper,
        calls,
        stop,
        client,
    }
}

fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn collector_outcomes_are_reflected_and_isolated() {
    let h = start(
        &[
            ("good", Behaviour::Ok),
            ("broken", Behaviour::Fail),
            ("buggy", Behaviour::Panic),
            ("stuck", Behaviour::Sleep(Duration::from_secs(30))),
        ],
        None,
        0,
        plain_client(),
        "http",
    )
    .await;
    let started = Instant::now();
    let resp = h
        .client
        .get(format!("{}/metrics", h.base))
        .header("X-Prometheus-Scrape-Timeout-Seconds", "1.5")
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    let ok = |c: &str| {
        sample(
            &body,
            &format!("test_scrape_collector_success{{collector=\"{c}\"}}"),
        )
    };
    assert_eq!(ok("good"), Some(1.0), "{body}");
    assert_eq!(ok("broken"), Some(0.0), "{body}");
    assert_eq!(ok("buggy"), Some(0.0), "{body}");
    assert_eq!(ok("stuck"), Some(0.0), "{body}");
    // The good collector's data is there; a failing collector keeps what it registered.
    assert_eq!(sample(&body, "test_good_value"), Some(42.0));
    assert_eq!(sample(&body, "test_broken_value"), Some(42.0));
    // Panicked and timed-out collectors contribute nothing.
    assert_eq!(sample(&body, "test_buggy_value"), None);
    assert_eq!(sample(&body, "test_stuck_value"), None);
    // The header's 1.5 s minus the 0.5 s offset bounded the stuck collector.
    assert!(elapsed < Duration::from_secs(10), "scrape took {elapsed:?}");
    let stuck_duration = sample(
        &body,
        "test_scrape_collector_duration_seconds{collector=\"stuck\"}",
    )
    .unwrap();
    assert!((0.9..5.0).contains(&stuck_duration), "{stuck_duration}");
    // Framework metrics are there too.
    assert!(body.contains("test_build_info{"), "{body}");
    assert!(body.contains("process_resident_memory_bytes "), "{body}");
    // The server still serves after a panic.
    let again = h
        .client
        .get(format!("{}/metrics?collect[]=good", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
}

#[tokio::test]
async fn collect_params_narrow_and_unknown_is_400() {
    let h = start(
        &[("alpha", Behaviour::Ok), ("beta", Behaviour::Ok)],
        None,
        0,
        plain_client(),
        "http",
    )
    .await;
    let body = h
        .client
        .get(format!("{}/metrics?collect[]=beta", h.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("test_beta_value 42"), "{body}");
    assert!(!body.contains("test_alpha_value"), "{body}");
    assert_eq!(h.calls("alpha"), 0);
    let resp = h
        .client
        .get(format!("{}/metrics?collect[]=nope", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("unknown collector"));
}

#[tokio::test]
async fn concurrent_scrapes_share_one_collection() {
    let h = start(
        &[("slow", Behaviour::Sleep(Duration::from_millis(800)))],
        None,
        0,
        plain_client(),
        "http",
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let c = h.client.clone();
        let url = format!("{}/metrics", h.base);
        tasks.push(tokio::spawn(async move {
            let r = c.get(url).send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }));
        // All ten arrive well inside the 800 ms collection.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("test_slow_value 42"));
    }
    assert_eq!(
        h.calls("slow"),
        1,
        "ten concurrent scrapes must run the collector once"
    );
    assert_eq!(h.scraper.runs(), 1);
    // A later scrape collects afresh.
    h.client
        .get(format!("{}/metrics", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(h.calls("slow"), 2);
}

#[tokio::test]
async fn max_requests_answers_503_beyond_the_limit() {
    let h = start(
        &[("slow", Behaviour::Sleep(Duration::from_millis(1500)))],
        None,
        2,
        plain_client(),
        "http",
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let c = h.client.clone();
        let url = format!("{}/metrics", h.base);
        tasks.push(tokio::spawn(async move {
            c.get(url).send().await.unwrap().status()
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ok = 0;
    let mut busy = 0;
    for t in tasks {
        match t.await.unwrap().as_u16() {
            200 => ok += 1,
            503 => busy += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, busy), (2, 3));
    // Permits are released afterwards.
    let s = h
        .client
        .get(format!("{}/metrics", h.base))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s, 200);
}

#[tokio::test]
async fn content_negotiation_and_gzip() {
    let h = start(&[("good", Behaviour::Ok)], None, 0, plain_client(), "http").await;
    let url = format!("{}/metrics", h.base);
    // Default: classic text format.
    let r = h.client.get(&url).send().await.unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    assert!(!text.contains("# EOF"));
    assert!(
        text.contains("# TYPE process_cpu_seconds_total counter"),
        "{text}"
    );
    assert!(text.contains("# TYPE test_build_info gauge"), "{text}");
    // What Prometheus sends: OpenMetrics.
    let r = h
        .client
        .get(&url)
        .header(
            "Accept",
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        )
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text; version=1.0.0"));
    let om = r.text().await.unwrap();
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains("# TYPE process_cpu_seconds counter"), "{om}");
    // gzip when accepted.
    let r = h
        .client
        .get(&url)
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let raw = r.bytes().await.unwrap();
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_string(&mut plain)
        .unwrap();
    assert!(plain.contains("test_good_value 42"), "{plain}");
    // Not gzipped otherwise.
    let r = h.client.get(&url).send().await.unwrap();
    assert!(r.headers().get("content-encoding").is_none());
}

/// A collector that fails while its switch says so.
struct Switchable {
    fail: Arc<AtomicBool>,
}

impl Collector for Switchable {
    fn name(&self) -> &'static str {
        "switchable"
    }
    fn collect<'a>(
        &'a self,
        _sink: &'a mut common::Sink,
    ) -> BoxFuture<'a, Result<(), CollectError>> {
        Box::pin(async move {
            if self.fail.load(Ordering::SeqCst) {
                Err(CollectError::new("backend not up yet"))
            } else {
                Ok(())
            }
        })
    }
}

#[tokio::test]
async fn ready_after_first_collection_waits_for_every_collector_to_succeed_once() {
    let fail = Arc::new(AtomicBool::new(true));
    let collectors: Vec<Arc<dyn Collector>> = vec![
        Arc::new(Switchable {
            fail: Arc::clone(&fail),
        }),
        Arc::new(TestCollector {
            name: "good",
            behaviour: Behaviour::Ok,
            calls: Arc::new(AtomicUsize::new(0)),
        }),
    ];
    let scraper = Scraper::new("test", collectors, &["switchable", "good"]);
    let mut opts = options(None, 0);
    opts.ready_after_collection = true;
    let (url, stop) = serve_with(Arc::clone(&scraper), opts).await;
    let ready_url = url.replace("/metrics", "/-/ready");
    let status = |u: String| async move {
        plain_client()
            .get(u)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    // No scrape yet: /-/ready runs a collection itself, which fails.
    assert_eq!(status(ready_url.clone()).await, 503);
    assert_eq!(scraper.runs(), 1);
    // A collection of some collectors only does not count.
    fail.store(false, Ordering::SeqCst);
    assert_eq!(status(format!("{url}?collect[]=good")).await, 200);
    assert!(!scraper.has_succeeded());
    // Once every collector succeeded, ready for good, without collecting again.
    assert_eq!(status(ready_url.clone()).await, 200);
    let runs = scraper.runs();
    fail.store(true, Ordering::SeqCst);
    assert_eq!(status(ready_url.clone()).await, 200);
    assert_eq!(scraper.runs(), runs);
    stop.cancel();
}

#[tokio::test]
async fn landing_health_and_readiness() {
    let h = start(&[("good", Behaviour::Ok)], None, 0, plain_client(), "http").await;
    let landing = h.client.get(format!("{}/", h.base)).send().await.unwrap();
    assert_eq!(landing.status(), 200);
    let html = landing.text().await.unwrap();
    assert!(
        html.contains("href=\"/metrics\"") && html.contains("test_exporter"),
        "{html}"
    );
    let healthy = h
        .client
        .get(format!("{}/-/healthy", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(healthy.status(), 200);
    let ready = h
        .client
        .get(format!("{}/-/ready", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let missing = h
        .client
        .get(format!("{}/nope", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

fn tls_client(pki: &Pki, with_identity: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(Duration::from_secs(20))
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap());
    if with_identity {
        let pem = format!("{}{}", pki.client_pem, pki.client_key);
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

#[tokio::test]
async fn tls_with_a_generated_certificate() {
    let pki = make_pki();
    let cfg = pki.dir.path().join("web.yml");
    // Relative paths resolve against the web config's directory, as in exporter-toolkit.
    std::fs::write(
        &cfg,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
    )
    .unwrap();
    let web = WebConfig::load(&cfg).unwrap();
    let h = start(
        &[("good", Behaviour::Ok)],
        Some(web),
        0,
        tls_client(&pki, false),
        "https",
    )
    .await;
    let r = h
        .client
        .get(format!("{}/metrics", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "HTTP/2 by ALPN");
    assert!(r.text().await.unwrap().contains("test_good_value 42"));
    // Plain HTTP to the TLS port fails.
    let plain = plain_client()
        .get(h.base.replace("https://localhost", "http://127.0.0.1") + "/metrics")
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
}

#[tokio::test]
async fn tls_client_certificates_are_required_and_verified() {
    let pki = make_pki();
    let cfg = pki.dir.path().join("web.yml");
    std::fs::write(
        &cfg,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_ca_file: ca.crt\n  client_auth_type: RequireAndVerifyClientCert\n",
    )
    .unwrap();
    let web = WebConfig::load(&cfg).unwrap();
    let h = start(
        &[("good", Behaviour::Ok)],
        Some(web),
        0,
        tls_client(&pki, true),
        "https",
    )
    .await;
    let ok = h
        .client
        .get(format!("{}/metrics", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let anonymous = tls_client(&pki, false)
        .get(format!("{}/metrics", h.base))
        .send()
        .await;
    assert!(
        anonymous.is_err(),
        "a client without certificate must be refused"
    );
}

#[tokio::test]
async fn basic_auth_accepts_and_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let cfg = dir.path().join("web.yml");
    std::fs::write(&cfg, format!("basic_auth_users:\n  prometheus: '{hash}'\n")).unwrap();
    let web = WebConfig::load(&cfg).unwrap();
    let h = start(
        &[("good", Behaviour::Ok)],
        Some(web),
        0,
        plain_client(),
        "http",
    )
    .await;
    let url = format!("{}/metrics", h.base);
    let none = h.client.get(&url).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(none.headers()["www-authenticate"], "Basic");
    let wrong = h
        .client
        .get(&url)
        .basic_auth("prometheus", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let unknown = h
        .client
        .get(&url)
        .basic_auth("root", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 401);
    let right = h
        .client
        .get(&url)
        .basic_auth("prometheus", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    assert!(right.text().await.unwrap().contains("test_good_value 42"));
    // Every path is protected, like exporter-toolkit does.
    let landing = h.client.get(format!("{}/", h.base)).send().await.unwrap();
    assert_eq!(landing.status(), 401);
}

#[test]
fn bad_web_config_files_are_startup_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("web.yml");
    std::fs::write(
        &cfg,
        "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
    )
    .unwrap();
    let err = WebConfig::load(&cfg).unwrap_err().to_string();
    assert!(err.contains("missing.crt"), "{err}");
    std::fs::write(&cfg, "basic_auth_users:\n  u: x\nunknown_key: 1\n").unwrap();
    let err = WebConfig::load(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("web.yml:3:1") && err.contains("unknown field"),
        "{err}"
    );
    let err = WebConfig::load(&dir.path().join("absent.yml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("absent.yml") && err.contains("cannot read"),
        "{err}"
    );
}

#[tokio::test]
async fn shutdown_stops_serving_and_runs_hooks() {
    use clap::Parser;
    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        web: common::cli::WebArgs,
    }
    let flags = Flags::parse_from(["x", "--web.listen-address=127.0.0.1:0"]);
    let info = common::ExporterInfo {
        name: "test_exporter",
        prefix: "test",
        description: "test",
        default_listen: "127.0.0.1:0",
    };
    let flushed = Arc::new(AtomicBool::new(false));
    let f = Arc::clone(&flushed);
    let running = common::Exporter::new(info, flags.web, Vec::new(), Vec::new())
        .on_shutdown(move || {
            Box::pin(async move {
                f.store(true, Ordering::SeqCst);
            })
        })
        .bind()
        .await
        .unwrap();
    let addr = running.local_addrs()[0];
    let token = running.shutdown_token();
    let task = tokio::spawn(running.run());
    let url = format!("http://{addr}/-/healthy");
    assert_eq!(plain_client().get(&url).send().await.unwrap().status(), 200);
    token.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("server stops")
        .unwrap();
    assert!(flushed.load(Ordering::SeqCst), "shutdown hook ran");
    assert!(
        plain_client().get(&url).send().await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = start(&[("good", Behaviour::Ok)], None, 0, plain_client(), "http").await;
    let addr = h.base.trim_start_matches("http://").to_string();
    // Slowloris: a request line and headers trickled a byte a second, never ended. Each byte
    // is progress, so only a deadline on the whole header closes the connection.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let closed_after = loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "a connection trickling its headers is still open after 60 s"
        );
        if slow.write_all(b"x").await.is_err() {
            break started.elapsed();
        }
        match tokio::time::timeout(Duration::from_secs(1), slow.read(&mut buf)).await {
            // Closed (possibly after an error status): the server gave up on it.
            Ok(Ok(0) | Err(_)) => break started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => {}
        }
        // Meanwhile scrapes are served.
        if started.elapsed() < Duration::from_secs(3) {
            let r = h
                .client
                .get(format!("{}/metrics", h.base))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    assert!(
        closed_after >= Duration::from_secs(5),
        "closed too early: {closed_after:?}"
    );
}

/// A server with one good collector behind `web`.
async fn start_good(web: Option<WebConfig>, client: reqwest::Client, scheme: &str) -> Harness {
    start(&[("good", Behaviour::Ok)], web, 0, client, scheme).await
}

/// Serves `scraper` on loopback; returns the metrics URL and the token that stops the server.
async fn serve_with(scraper: Arc<Scraper>, opts: ServerOptions) -> (String, CancellationToken) {
    let server = BoundServer::bind(scraper, opts).await.unwrap();
    let url = format!("http://{}/metrics", server.local_addrs()[0]);
    let stop = CancellationToken::new();
    tokio::spawn(server.serve(stop.clone(), Duration::from_secs(1)));
    (url, stop)
}

/// Replaces `path` the way config management and Kubernetes do: a new file renamed over it.
fn replace_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn a_changed_web_config_is_reread_so_a_revoked_password_stops_working() {
    // exporter-toolkit reads the web config on every request: an operator who rotates a leaked
    // password expects the old one to stop working without a restart.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("web.yml");
    let users = |password: &str| {
        format!(
            "basic_auth_users:\n  prometheus: '{}'\n",
            bcrypt::hash(password, 4).unwrap()
        )
    };
    std::fs::write(&cfg, users("old")).unwrap();
    let web = WebConfig::load(&cfg).unwrap();
    let h = start_good(Some(web), plain_client(), "http").await;
    let url = format!("{}/metrics", h.base);
    let status = |user: &'static str, password: &'static str| {
        let req = h.client.get(&url).basic_auth(user, Some(password));
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("prometheus", "old").await, 200);

    replace_file(&cfg, &users("new"));
    assert_eq!(
        status("prometheus", "old").await,
        401,
        "the revoked password (cached before) must be refused"
    );
    assert_eq!(status("prometheus", "new").await, 200);

    // A response header added later shows up too.
    replace_file(
        &cfg,
        &format!(
            "{}http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
            users("new")
        ),
    );
    let r = h
        .client
        .get(&url)
        .basic_auth("prometheus", Some("new"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-frame-options"], "deny");

    // A broken file fails closed, as exporter-toolkit does (500), until it is fixed.
    replace_file(&cfg, "basic_auth_users: [\n");
    assert_eq!(status("prometheus", "new").await, 500);
    replace_file(&cfg, &users("new"));
    assert_eq!(status("prometheus", "new").await, 200);
}

#[test]
fn web_config_headers_are_limited_to_the_ones_exporter_toolkit_allows() {
    // A header such as Content-Length or Content-Encoding set on every response would corrupt
    // the scrape (a truncated or undecodable body); exporter-toolkit refuses all but these.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("web.yml");
    let load = |headers: &str| {
        std::fs::write(&cfg, format!("http_server_config:\n  headers:\n{headers}")).unwrap();
        WebConfig::load(&cfg).map(|_| ()).map_err(|e| e.to_string())
    };
    assert_eq!(
        load("    Strict-Transport-Security: max-age=31536000\n    X-Content-Type-Options: nosniff\n    X-Frame-Options: sameorigin\n    X-XSS-Protection: '1; mode=block'\n    Content-Security-Policy: default-src 'self'\n"),
        Ok(())
    );
    for bad in [
        "    Content-Length: '5'\n",
        "    Content-Encoding: gzip\n",
        "    Content-Type: text/html\n",
        "    X-Frame-Options: allow-from x\n",
        "    X-Content-Type-Options: sniff\n",
    ] {
        let err = load(bad).expect_err(bad);
        assert!(err.contains("http_server_config.headers"), "{err}");
    }
}

#[test]
fn bcrypt_hashes_are_checked_without_computing_them_at_load() {
    // Validating a hash by verifying a password against it costs 2^cost rounds per user at
    // startup (and, with reloads, per change). The highest cost accepted loads at once, and
    // cost 31 is refused at once, with the reason.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("web.yml");
    let load_within_20s = |cost: u32| {
        let hash = bcrypt::hash("x", 4)
            .unwrap()
            .replacen("$04$", &format!("${cost:02}$"), 1);
        std::fs::write(&cfg, format!("basic_auth_users:\n  prometheus: '{hash}'\n")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = cfg.clone();
        std::thread::spawn(move || {
            let _ = tx.send(
                WebConfig::load(&path)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            );
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("loading did not finish")
    };
    assert_eq!(
        load_within_20s(common::web_config::MAX_BCRYPT_COST),
        Ok(()),
        "a hash of the highest cost accepted must load without being computed"
    );
    let err = load_within_20s(31).unwrap_err();
    assert!(
        err.contains("has cost 31, above this exporter's limit of 14"),
        "{err}"
    );
    // Every bcrypt variant htpasswd and Go write is accepted.
    for prefix in ["$2a$", "$2b$", "$2y$"] {
        let h = bcrypt::hash("x", 4).unwrap().replacen("$2b$", prefix, 1);
        std::fs::write(&cfg, format!("basic_auth_users:\n  u: '{h}'\n")).unwrap();
        assert!(WebConfig::load(&cfg).is_ok(), "{h}");
    }
}

/// A collector that does its work on tokio's blocking pool, as the libvirt collectors do.
struct BlockingCollector;

impl Collector for BlockingCollector {
    fn name(&self) -> &'static str {
        "blocking"
    }
    fn collect<'a>(
        &'a self,
        sink: &'a mut common::Sink,
    ) -> BoxFuture<'a, Result<(), CollectError>> {
        Box::pin(async move {
            let v = tokio::task::spawn_blocking(|| 7i64)
                .await
                .map_err(CollectError::new)?;
            sink.gauge_value("blocking_value", "A value from the blocking pool", v);
            Ok(())
        })
    }
}

#[tokio::test]
async fn wrong_passwords_cannot_starve_the_blocking_pool_collectors_need() {
    // bcrypt is slow on purpose. Unauthenticated clients sending wrong passwords must not occupy
    // every blocking thread (libvirt calls run there) or every core: like exporter-toolkit, one
    // bcrypt comparison at a time, and known-good credentials never wait for one.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("web.yml");
    // A cost at which one comparison takes about 2 s on this machine and build.
    let started = Instant::now();
    bcrypt::hash("probe", 8).unwrap();
    let per_cost8 = started.elapsed().as_secs_f64().max(1e-4);
    let cost = (8.0 + (2.0 / per_cost8).log2()).round().clamp(8.0, 16.0) as u32;
    let hash = bcrypt::hash("s3cret", cost).unwrap();
    std::fs::write(&cfg, format!("basic_auth_users:\n  prometheus: '{hash}'\n")).unwrap();
    let web = WebConfig::load(&cfg).unwrap();
    // The server runs on its own runtime with a small blocking pool, so that the pool's limit
    // is reached with a few requests instead of 512.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let stop = CancellationToken::new();
    let stop2 = stop.clone();
    let server_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let scraper = Scraper::new("test", vec![Arc::new(BlockingCollector)], &["blocking"]);
            let server = BoundServer::bind(scraper, options(Some(web), 0))
                .await
                .unwrap();
            addr_tx.send(server.local_addrs()[0]).unwrap();
            server.serve(stop2, Duration::from_secs(1)).await;
        });
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let url = format!("http://{addr}/metrics");
    let client = plain_client();
    // Prometheus's credentials are verified once and cached.
    let first = client
        .get(&url)
        .basic_auth("prometheus", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    // A steady flood of wrong passwords, each a full bcrypt comparison.
    let flooding = Arc::new(AtomicBool::new(true));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut flood = Vec::new();
    for i in 0..4 {
        let (client, url) = (client.clone(), url.clone());
        let (flooding, refused) = (Arc::clone(&flooding), Arc::clone(&refused));
        flood.push(tokio::spawn(async move {
            while flooding.load(Ordering::SeqCst) {
                let r = client
                    .get(&url)
                    .basic_auth("prometheus", Some(format!("guess{i}")))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 401);
                refused.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Prometheus's scrape during the flood: its collector gets a blocking thread in time.
    let body = client
        .get(&url)
        .basic_auth("prometheus", Some("s3cret"))
        .header("X-Prometheus-Scrape-Timeout-Seconds", "2")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    flooding.store(false, Ordering::SeqCst);
    assert_eq!(
        sample(
            &body,
            "test_scrape_collector_success{collector=\"blocking\"}"
        ),
        Some(1.0),
        "the collector starved behind bcrypt: {body}"
    );
    for t in flood {
        t.await.unwrap();
    }
    assert!(refused.load(Ordering::SeqCst) >= 4);
    stop.cancel();
    server_thread.join().unwrap();
}

#[tokio::test]
async fn a_scrape_does_not_wait_for_a_collection_with_a_later_deadline() {
    // Single flight joins scrapes to the collection in progress. One started with a far
    // deadline (a curl with a large X-Prometheus-Scrape-Timeout-Seconds, up to a day) while a
    // backend hangs must not hold Prometheus's scrapes past their own deadline: they would
    // fail whole instead of reporting the stuck collector with success 0.
    let h = start(
        &[("stuck", Behaviour::Sleep(Duration::from_secs(60)))],
        None,
        0,
        plain_client(),
        "http",
    )
    .await;
    let url = format!("{}/metrics", h.base);
    let long = {
        let req = h
            .client
            .get(&url)
            .header("X-Prometheus-Scrape-Timeout-Seconds", "3600");
        tokio::spawn(async move { req.send().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = h
        .client
        .get(&url)
        .header("X-Prometheus-Scrape-Timeout-Seconds", "1.5")
        .send()
        .await
        .expect("the short scrape is answered within its own deadline");
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert_eq!(
        sample(&body, "test_scrape_collector_success{collector=\"stuck\"}"),
        Some(0.0),
        "{body}"
    );
    long.abort();
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_a_startup_error() {
    // Otherwise the exporter starts and every handshake fails: a silent outage.
    let pki = make_pki();
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(pki.dir.path().join("other.key"), other.serialize_pem()).unwrap();
    let cfg = pki.dir.path().join("web.yml");
    std::fs::write(
        &cfg,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n",
    )
    .unwrap();
    let err = WebConfig::load(&cfg).unwrap_err().to_string();
    assert!(err.contains("cert_file/key_file"), "{err}");
}

#[tokio::test]
async fn connections_that_send_nothing_or_half_an_http2_preface_are_closed() {
    // Before hyper sees a request it reads up to 24 bytes to tell HTTP/2's preface from
    // HTTP/1, with no deadline: a connection that sends nothing (or "PRI * HTTP/2.0") was held
    // forever, and enough of them exhaust the descriptors every scrape needs.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = start(&[("good", Behaviour::Ok)], None, 0, plain_client(), "http").await;
    let addr = h.base.trim_start_matches("http://").to_string();
    let silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let started = Instant::now();
    for (what, mut conn) in [("silent", silent), ("half preface", half)] {
        let mut buf = [0u8; 256];
        let left = Duration::from_secs(60).saturating_sub(started.elapsed());
        loop {
            match tokio::time::timeout(left, conn.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(_)) => continue, // an error status before closing is fine
                Err(_) => panic!("the {what} connection is still open after 60 s"),
            }
        }
    }
    // The server still serves.
    let r = h
        .client
        .get(format!("{}/metrics", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn http2_false_in_the_web_config_turns_http2_off() {
    // exporter-toolkit's `http_server_config.http2: false` (a workaround for HTTP/2 bugs in
    // some proxies and clients) was logged and ignored.
    let pki = make_pki();
    let cfg = pki.dir.path().join("web.yml");
    std::fs::write(
        &cfg,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nhttp_server_config:\n  http2: false\n",
    )
    .unwrap();
    let web = WebConfig::load(&cfg).unwrap();
    let h = start_good(Some(web), tls_client(&pki, false), "https").await;
    let r = h
        .client
        .get(format!("{}/metrics", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
}

#[tokio::test]
async fn a_telemetry_path_the_router_cannot_take_is_a_startup_error_not_a_panic() {
    // axum reads `{...}` in a route as a parameter and panics on a malformed one.
    for path in [
        "/metrics{",
        "/{x}",
        "/a}b",
        "/{*rest}",
        "/:x",
        "/*x",
        "/a/:b",
    ] {
        let scraper = Scraper::new("test", Vec::new(), &[]);
        let mut opts = options(None, 0);
        opts.telemetry_path = path.to_string();
        let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
            BoundServer::bind(scraper, opts),
        ))
        .await;
        match outcome {
            Ok(Err(err)) => assert!(err.to_string().contains("telemetry-path"), "{err}"),
            Ok(Ok(_)) => panic!("{path:?} accepted"),
            Err(_) => panic!("{path:?} panicked"),
        }
    }
}

#[tokio::test]
async fn a_scrape_running_at_shutdown_is_answered() {
    let h = start(
        &[("slow", Behaviour::Sleep(Duration::from_millis(1200)))],
        None,
        0,
        plain_client(),
        "http",
    )
    .await;
    let req = h.client.get(format!("{}/metrics", h.base));
    let scrape = tokio::spawn(async move {
        let r = req.send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.stop.cancel();
    let (status, body) = scrape.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        sample(&body, "test_scrape_collector_success{collector=\"slow\"}"),
        Some(1.0),
        "{body}"
    );
    // And nothing new is accepted.
    assert!(h
        .client
        .get(format!("{}/-/healthy", h.base))
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn tls_settings_changed_in_the_web_config_apply_to_new_connections() {
    let pki = make_pki();
    let cfg = pki.dir.path().join("web.yml");
    let plain_tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
    std::fs::write(&cfg, plain_tls).unwrap();
    let web = WebConfig::load(&cfg).unwrap();
    let h = start_good(Some(web), tls_client(&pki, false), "https").await;
    let url = format!("{}/metrics", h.base);
    // A fresh client per request: a pooled connection would keep its old handshake.
    let status = |identity: bool| {
        let req = tls_client(&pki, identity).get(&url);
        async move { req.send().await.map(|r| r.status().as_u16()).ok() }
    };
    assert_eq!(status(false).await, Some(200));
    replace_file(
        &cfg,
        &format!(
            "{plain_tls}  client_ca_file: ca.crt\n  client_auth_type: RequireAndVerifyClientCert\n"
        ),
    );
    assert_eq!(
        status(false).await,
        None,
        "a client certificate is now required"
    );
    assert_eq!(status(true).await, Some(200));
    // TLS cannot be switched off by a reload: connections are refused until it is restored.
    replace_file(&cfg, "basic_auth_users: {}\n");
    assert_eq!(status(true).await, None);
    replace_file(&cfg, plain_tls);
    assert_eq!(status(false).await, Some(200));
}

#[test]
fn a_web_config_error_does_not_print_what_may_be_a_password() {
    // A plaintext password where a map of bcrypt hashes belongs is a likely mistake; the YAML
    // error quoted the value, into the startup error and, on a reload, the log.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("web.yml");
    for text in [
        "basic_auth_users: \"prometheus:hunter2\"\n",
        "basic_auth_users:\n  prometheus: [hunter2]\n",
        "basic_auth_users:\n  - prometheus: hunter2\n",
    ] {
        std::fs::write(&cfg, text).unwrap();
        let err = WebConfig::load(&cfg).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("web.yml:"), "{err}");
    }
}

#[test]
fn an_empty_web_config_means_no_tls_and_no_auth_as_in_exporter_toolkit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("web.yml");
    for text in ["", "# nothing yet\n", "---\n"] {
        std::fs::write(&cfg, text).unwrap();
        let web = WebConfig::load(&cfg).map_err(|e| e.to_string());
        assert!(
            web.as_ref().is_ok_and(|w| !w.tls_enabled()),
            "{text:?}: {web:?}"
        );
    }
}

#[tokio::test]
async fn a_huge_max_requests_is_no_panic() {
    // tokio's semaphore panics above usize::MAX >> 3 permits; `--web.max-requests` takes any
    // usize.
    let scraper = Scraper::new("test", Vec::new(), &[]);
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
        BoundServer::bind(scraper, options(None, usize::MAX)),
    ))
    .await;
    assert!(outcome.is_ok_and(|r| r.is_ok()));
}

#[tokio::test]
async fn configured_headers_are_sent_on_refusals_too() {
    // exporter-toolkit sets them before checking credentials; a 401 page without
    // X-Frame-Options or Strict-Transport-Security is the one a scanner reports.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("web.yml");
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    std::fs::write(
        &cfg,
        format!("basic_auth_users:\n  prometheus: '{hash}'\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n"),
    )
    .unwrap();
    let web = WebConfig::load(&cfg).unwrap();
    let h = start_good(Some(web), plain_client(), "http").await;
    let r = h
        .client
        .get(format!("{}/metrics", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-frame-options"], "deny");
}

#[tokio::test]
async fn cipher_suites_and_curve_preferences_as_exporter_toolkit_spells_them() {
    // Hardened exporter-toolkit files list TLS 1.2 suites and curves by Go's names; they were
    // refused at startup, so such a file could not be used as it is.
    let pki = make_pki();
    let cfg = pki.dir.path().join("web.yml");
    let tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
    std::fs::write(
        &cfg,
        format!("{tls}  max_version: TLS12\n  cipher_suites:\n    - TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384\n    - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384\n  curve_preferences: [X25519, CurveP256]\n"),
    )
    .unwrap();
    let web = WebConfig::load(&cfg).unwrap();
    let h = start_good(Some(web), tls_client(&pki, false), "https").await;
    let r = h
        .client
        .get(format!("{}/metrics", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // What rustls cannot offer (CBC, RSA key exchange, P-521) is still a startup error.
    for bad in [
        "  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n",
        "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256]\n",
        "  curve_preferences: [CurveP521]\n",
    ] {
        std::fs::write(&cfg, format!("{tls}{bad}")).unwrap();
        let err = WebConfig::load(&cfg).unwrap_err().to_string();
        assert!(err.contains("not supported"), "{bad}: {err}");
    }
}

/// A collector with about 8 MB of series: more than the loopback socket buffers hold.
struct BigCollector;

impl Collector for BigCollector {
    fn name(&self) -> &'static str {
        "big"
    }
    fn collect<'a>(
        &'a self,
        sink: &'a mut common::Sink,
    ) -> BoxFuture<'a, Result<(), CollectError>> {
        Box::pin(async move {
            let mut fam = sink.gauge("series", "Many series");
            let pad = "x".repeat(60);
            for i in 0..100_000 {
                fam.push(&[("i", format!("{i}{pad}"))], 1.0);
            }
            sink.push(fam);
            Ok(())
        })
    }
}

/// A client that asks for the metrics, then reads nothing (with a tiny receive buffer).
async fn non_reading_client(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    stream
}

/// The address of a metrics URL from [`serve_with`].
fn addr_of(url: &str) -> std::net::SocketAddr {
    url.trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_response_not_yet_read_counts_against_max_requests() {
    // Go's promhttp holds its in-flight slot while it writes the body. Releasing the permit
    // when the body was handed to hyper let clients that never read (each response a copy of a
    // scrape, megabytes on a busy node) pile up without bound in memory.
    let scraper = Scraper::new("test", vec![Arc::new(BigCollector)], &["big"]);
    let (url, stop) = serve_with(scraper, options(None, 1)).await;
    let addr = addr_of(&url);
    let idle_reader = non_reading_client(addr).await;
    // Let the scrape run and the socket buffers fill.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = plain_client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert_eq!(status, 503, "the unread response must still hold its slot");
    drop(idle_reader);
    // Once that client is gone, its slot is free again.
    let mut status = 0;
    for _ in 0..50 {
        let r = plain_client()
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap();
        status = r.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_a_stall() {
    // Holding the permit while writing (as Go does) means a client that never reads would hold
    // it forever: with --web.max-requests of them, every scrape gets 503. A write that makes no
    // progress for WRITE_STALL_TIMEOUT ends the connection.
    let scraper = Scraper::new("test", vec![Arc::new(BigCollector)], &["big"]);
    let (url, stop) = serve_with(scraper, options(None, 1)).await;
    let stalled = non_reading_client(addr_of(&url)).await;
    let started = Instant::now();
    let mut last = 0;
    while started.elapsed() < Duration::from_secs(90) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        last = plain_client()
            .get(&url)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if last == 200 {
            break;
        }
    }
    stop.cancel();
    drop(stalled);
    assert_eq!(
        last, 200,
        "a client that stopped reading holds the only slot for good"
    );
}
