//! Broken and hostile input to the web server and its web config, fed to a real server on
//! loopback: devices and FIFOs where certificates or the web config belong (at start and
//! swapped in while running), bcrypt costs out of range, deep nesting, idle connections beyond
//! `--web.max-connections`, and a seeded mutation test of the web config loader.
//!
//! Cases that could hang or abort a process run in a child process (this test binary started
//! again with `HOSTILE_INPUT_CHILD` set, see [`child_exporter`]), so that an abort shows as a
//! dead child, and SIGTERM is sent to a real process.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use e2e_tests::Rng;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    BoundServer, CancellationToken, CollectError, Collector, Scraper, ServerOptions, WebConfig,
};
use futures::future::BoxFuture;

mod support;
use support::{make_pki, Pki};

/// How long a request may take to be answered (or refused) while the input is broken: the
/// hangs these tests guard against were unbounded.
const PROMPT: Duration = Duration::from_secs(2);

struct Up;

impl Collector for Up {
    fn name(&self) -> &'static str {
        "up"
    }
    fn collect<'a>(
        &'a self,
        _sink: &'a mut common::Sink,
    ) -> BoxFuture<'a, Result<(), CollectError>> {
        Box::pin(async { Ok(()) })
    }
}

#[derive(clap::Parser, Debug)]
struct ChildFlags {
    #[command(flatten)]
    web: common::cli::WebArgs,
}

/// The exporter process of the child-process tests; returns at once in a normal test run.
#[test]
fn child_exporter() {
    let Some(cfg) = std::env::var_os("HOSTILE_INPUT_CHILD") else {
        return;
    };
    use clap::Parser;
    let flags = ChildFlags::parse_from([
        "child".into(),
        "--web.listen-address=127.0.0.1:0".into(),
        format!("--web.config.file={}", cfg.to_string_lossy()),
    ]);
    let info = common::ExporterInfo {
        name: "hostile_input_child",
        prefix: "child",
        description: "test child",
        default_listen: "127.0.0.1:0",
    };
    let exporter = common::Exporter::new(info, flags.web, vec![Arc::new(Up)], vec!["up"]);
    let code = common::block_on_main(async move {
        let running = exporter.bind().await?;
        println!("LISTENING {}", running.local_addrs()[0].port());
        running.run_until_signal().await?;
        Ok(())
    });
    std::process::exit(if code == std::process::ExitCode::SUCCESS {
        0
    } else {
        1
    });
}

/// A child exporter, killed (by its PID) if a test fails before stopping it.
struct Child {
    proc: std::process::Child,
    port: Option<u16>,
    stderr: PathBuf,
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.proc.try_wait().ok().flatten().is_none() {
            let _ = self.proc.kill();
            let _ = self.proc.wait();
        }
    }
}

impl Child {
    /// Starts the exporter on `web_config`; waits for it to listen or to exit.
    fn start(web_config: &Path, dir: &Path) -> Self {
        let stderr = dir.join("child.stderr");
        let mut proc = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_exporter",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("HOSTILE_INPUT_CHILD", web_config)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let out = proc.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                // libtest may have printed "test child_exporter ... " on the same line.
                if let Some((_, port)) = line.split_once("LISTENING ") {
                    let _ = tx.send(port.trim().parse::<u16>().ok());
                }
            }
            let _ = tx.send(None);
        });
        let port = rx.recv_timeout(Duration::from_secs(60)).ok().flatten();
        Self { proc, port, stderr }
    }

    fn alive(&mut self) -> bool {
        self.proc.try_wait().unwrap().is_none()
    }

    /// Waits up to `limit` for the process to exit; its exit code.
    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.proc.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.proc.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

fn write_pem_files(pki: &Pki) {
    replace_file(&pki.dir.path().join("server.crt"), &pki.server_pem);
    replace_file(&pki.dir.path().join("server.key"), &pki.server_key);
}

/// Replaces `path` the way config management and Kubernetes do: a new file renamed over it.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Puts a FIFO (with no writer) at `path`, renamed over whatever was there.
fn replace_with_fifo(path: &Path) {
    let tmp = path.with_extension("fifo-tmp");
    let _ = std::fs::remove_file(&tmp);
    assert!(Command::new("mkfifo").arg(&tmp).status().unwrap().success());
    std::fs::rename(&tmp, path).unwrap();
}

/// Puts a symlink to `/dev/zero` at `path`, renamed over whatever was there.
fn replace_with_dev_zero(path: &Path) {
    let tmp = path.with_extension("zero-tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink("/dev/zero", &tmp).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn make_fifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

/// Runs `f` on a thread; fails the test if it has not returned within 30 s (a hang).
fn within_30s<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{what}: no answer after 30 s"))
}

fn load_err(path: &Path) -> String {
    let p = path.to_path_buf();
    within_30s(&format!("loading {}", path.display()), move || {
        WebConfig::load(&p).map(|_| ()).unwrap_err().to_string()
    })
}

const TLS_CONFIG: &str = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";

#[test]
fn devices_fifos_and_huge_files_in_the_web_config_are_startup_errors_naming_the_file() {
    let pki = make_pki();
    let d = pki.dir.path();
    let cfg = d.join("web.yml");
    let fifo = d.join("fifo.pem");
    make_fifo(&fifo);

    std::fs::write(
        &cfg,
        "tls_server_config:\n  cert_file: /dev/zero\n  key_file: server.key\n",
    )
    .unwrap();
    let err = load_err(&cfg);
    assert!(
        err.contains("cert_file /dev/zero: a character device, not a regular file"),
        "{err}"
    );

    std::fs::write(
        &cfg,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: fifo.pem\n",
    )
    .unwrap();
    let err = load_err(&cfg);
    assert!(
        err.contains(&format!(
            "key_file {}: a FIFO, not a regular file",
            fifo.display()
        )),
        "{err}"
    );

    std::fs::write(
        &cfg,
        "tls_server_config:\n  cert_file: fifo.pem\n  key_file: server.key\n",
    )
    .unwrap();
    let err = load_err(&cfg);
    assert!(err.contains("cert_file") && err.contains("a FIFO"), "{err}");

    std::fs::write(
        &cfg,
        format!("{TLS_CONFIG}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: /dev/zero\n"),
    )
    .unwrap();
    let err = load_err(&cfg);
    assert!(
        err.contains("client_ca_file /dev/zero: a character device"),
        "{err}"
    );

    // A certificate file larger than the cap (a runaway file, not a device).
    let big = d.join("big.crt");
    std::fs::write(
        &big,
        vec![b'A'; (common::web_config::MAX_PEM_BYTES + 1) as usize],
    )
    .unwrap();
    std::fs::write(
        &cfg,
        "tls_server_config:\n  cert_file: big.crt\n  key_file: server.key\n",
    )
    .unwrap();
    let err = load_err(&cfg);
    assert!(
        err.contains("big.crt") && err.contains("above the limit of 1048576 bytes"),
        "{err}"
    );

    // The web config itself.
    let err = load_err(Path::new("/dev/zero"));
    assert_eq!(
        err,
        "/dev/zero: cannot read: a character device, not a regular file"
    );
    let err = load_err(&fifo);
    assert!(
        err.ends_with("fifo.pem: cannot read: a FIFO, not a regular file"),
        "{err}"
    );
    std::fs::write(&cfg, format!("# {}\n", "x".repeat(300 << 10))).unwrap();
    let err = load_err(&cfg);
    assert!(
        err.contains("web.yml: cannot read:") && err.contains("above the limit of 262144 bytes"),
        "{err}"
    );

    // Through the exporter, as main sees it.
    std::fs::write(
        &cfg,
        "tls_server_config:\n  cert_file: /dev/zero\n  key_file: server.key\n",
    )
    .unwrap();
    let mut child = Child::start(&cfg, d);
    assert_eq!(
        child.port, None,
        "the exporter listened with /dev/zero as its certificate"
    );
    assert_eq!(child.wait_exit(Duration::from_secs(30)), Some(1));
    let stderr = std::fs::read_to_string(&child.stderr).unwrap();
    assert!(
        stderr.contains("cert_file /dev/zero: a character device"),
        "{stderr}"
    );
}

fn https_client(pki: &Pki) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

/// GET `url` (with `auth` as user and password), timed; the status or the error.
async fn get(
    client: &reqwest::Client,
    url: &str,
    auth: Option<(&str, &str)>,
) -> (Result<u16, String>, Duration) {
    let started = Instant::now();
    let mut req = client.get(url);
    if let Some((u, p)) = auth {
        req = req.basic_auth(u, Some(p));
    }
    let r = req
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"));
    (r, started.elapsed())
}

#[tokio::test]
async fn tls_files_swapped_for_a_device_or_a_fifo_at_run_time_fail_closed_and_recover() {
    let pki = make_pki();
    let d = pki.dir.path().to_path_buf();
    let cfg = d.join("web.yml");
    std::fs::write(&cfg, TLS_CONFIG).unwrap();
    let mut child = Child::start(&cfg, &d);
    let port = child.port.expect("the exporter did not start");
    let url = format!("https://localhost:{port}/-/healthy");
    let client = https_client(&pki);
    let (r, _) = get(&client, &url, None).await;
    assert_eq!(r, Ok(200));

    // The web config changed to name unusable files: new connections are refused at once
    // (fail closed, as for any broken web config), and the process lives.
    let fifo = d.join("fifo.pem");
    make_fifo(&fifo);
    let broken = [
        "tls_server_config:\n  cert_file: /dev/zero\n  key_file: server.key\n".to_string(),
        "tls_server_config:\n  cert_file: server.crt\n  key_file: fifo.pem\n".to_string(),
        format!("{TLS_CONFIG}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: /dev/zero\n"),
    ];
    for text in &broken {
        replace_file(&cfg, text);
        let (r, took) = get(&client, &url, None).await;
        assert!(r.is_err(), "{text}: {r:?}");
        assert!(took < PROMPT, "{text}: refused only after {took:?}");
        assert!(child.alive(), "{text}: the exporter died");
    }
    replace_file(&cfg, TLS_CONFIG);
    let (r, took) = get(&client, &url, None).await;
    assert_eq!(r, Ok(200), "restoring the web config recovers");
    assert!(took < PROMPT, "{took:?}");

    // The certificate files themselves replaced: the last good certificate stays in use.
    replace_with_fifo(&d.join("server.crt"));
    let (r, took) = get(&client, &url, None).await;
    assert_eq!(r, Ok(200));
    assert!(took < PROMPT, "{took:?}");
    replace_with_dev_zero(&d.join("server.key"));
    let (r, took) = get(&client, &url, None).await;
    assert_eq!(r, Ok(200));
    assert!(took < PROMPT, "{took:?}");
    write_pem_files(&pki);
    let (r, _) = get(&client, &url, None).await;
    assert_eq!(r, Ok(200));

    // SIGTERM stops it while a FIFO is in place.
    replace_file(&cfg, &broken[1]);
    let (r, _) = get(&client, &url, None).await;
    assert!(r.is_err());
    child.sigterm();
    assert_eq!(
        child.wait_exit(Duration::from_secs(20)),
        Some(0),
        "SIGTERM did not stop it"
    );
}

#[tokio::test]
async fn a_web_config_swapped_for_a_fifo_a_device_or_a_bomb_fails_closed_and_health_answers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = d.join("web.yml");
    let good = format!(
        "basic_auth_users:\n  prom: '{}'\n",
        bcrypt::hash("pw", 4).unwrap()
    );
    std::fs::write(&cfg, &good).unwrap();
    let mut child = Child::start(&cfg, d);
    let port = child.port.expect("the exporter did not start");
    let url = format!("http://127.0.0.1:{port}/-/healthy");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let auth = Some(("prom", "pw"));
    assert_eq!(get(&client, &url, auth).await.0, Ok(200));

    let cost31 = "$2y$31$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";
    type Swap<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Swap)> = vec![
        ("a FIFO", Box::new(|| replace_with_fifo(&cfg))),
        ("/dev/zero", Box::new(|| replace_with_dev_zero(&cfg))),
        (
            "a file over the size cap",
            Box::new(|| replace_file(&cfg, &format!("{good}# {}\n", "x".repeat(300 << 10)))),
        ),
        (
            "nested brackets",
            Box::new(|| replace_file(&cfg, &format!("basic_auth_users: {}", "[".repeat(200_000)))),
        ),
        (
            "a cost-31 hash",
            Box::new(|| replace_file(&cfg, &format!("basic_auth_users:\n  prom: '{cost31}'\n"))),
        ),
    ];
    for (what, swap) in &cases {
        swap();
        // Twice: the first request reads the changed file, the second meets the verdict.
        for _ in 0..2 {
            let (r, took) = get(&client, &url, auth).await;
            assert_eq!(r, Ok(500), "{what}: the broken config must fail closed");
            assert!(took < PROMPT, "{what}: answered after {took:?}");
        }
        assert!(child.alive(), "{what}: the exporter died");
        replace_file(&cfg, &good);
        let (r, took) = get(&client, &url, auth).await;
        assert_eq!(r, Ok(200), "{what}: restoring the file recovers");
        assert!(took < PROMPT, "{what}: answered after {took:?}");
    }
    replace_with_fifo(&cfg);
    assert_eq!(get(&client, &url, auth).await.0, Ok(500));
    child.sigterm();
    assert_eq!(
        child.wait_exit(Duration::from_secs(20)),
        Some(0),
        "SIGTERM did not stop it"
    );
}

fn options(web: Option<WebConfig>) -> ServerOptions {
    ServerOptions {
        name: "test_exporter",
        description: "test",
        listen: vec!["127.0.0.1:0".into()],
        telemetry_path: "/metrics".into(),
        web,
        max_requests: 0,
        max_connections: 0,
        header_read_timeout: common::server::HEADER_READ_TIMEOUT,
        default_timeout: Duration::from_secs(2),
        timeout_offset: Duration::from_millis(500),
        ready: Arc::new(AtomicBool::new(true)),
        ready_after_collection: false,
        extra_routes: axum::Router::new(),
    }
}

async fn serve(opts: ServerOptions) -> (std::net::SocketAddr, CancellationToken) {
    let scraper = Scraper::new("test", vec![Arc::new(Up)], &["up"]);
    let server = BoundServer::bind(scraper, opts).await.unwrap();
    let addr = server.local_addrs()[0];
    let stop = CancellationToken::new();
    tokio::spawn(server.serve(stop.clone(), Duration::from_secs(1)));
    (addr, stop)
}

/// Polls `cond` every 20 ms for up to `limit`; whether it became true.
async fn eventually(limit: Duration, cond: impl Fn() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

#[tokio::test]
async fn a_bcrypt_comparison_stops_when_its_client_leaves() {
    // One request with an unknown user used to keep a core busy for the whole comparison
    // (2^cost rounds) after its client had gone. The highest cost allowed (crafted, so that
    // the test need not compute it) takes seconds per comparison in a debug build.
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("web.yml");
    let cost = common::web_config::MAX_BCRYPT_COST;
    std::fs::write(
        &cfg,
        format!("basic_auth_users:\n  prom: '$2y${cost}$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi'\n"),
    )
    .unwrap();
    let web = WebConfig::load(&cfg).unwrap();
    let auth = web.current().unwrap().auth.clone().unwrap();
    let (addr, stop) = serve(options(Some(web))).await;
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    // "nobody:guess"
    conn.write_all(
        b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nAuthorization: Basic bm9ib2R5Omd1ZXNz\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || auth.running_comparisons() == 1).await,
        "the comparison never started"
    );
    drop(conn);
    assert!(
        eventually(Duration::from_secs(20), || auth.running_comparisons() == 0).await,
        "the comparison still runs after its client left"
    );
    assert_eq!(
        auth.abandoned_comparisons(),
        1,
        "it ended by running to completion, not by stopping"
    );
    stop.cancel();
}

#[tokio::test]
async fn idle_connections_beyond_max_connections_are_closed_and_the_open_ones_keep_working() {
    // 1,100 idle TCP connections used to exhaust the 1,024 descriptors of a systemd service
    // and take /metrics and /-/healthy offline. Here the cap is 20 and the idle timeout 2 s.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut opts = options(None);
    opts.max_connections = 20;
    opts.header_read_timeout = Duration::from_secs(2);
    let (addr, stop) = serve(opts).await;

    async fn request(conn: &mut tokio::net::TcpStream) -> String {
        conn.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(PROMPT, conn.read(&mut buf))
            .await
            .expect("no answer")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    // One keep-alive client (a Prometheus) and 19 idle connections fill the cap.
    let mut scraper = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(request(&mut scraper).await.starts_with("HTTP/1.1 200"));
    let mut idle = Vec::new();
    for _ in 0..19 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // 100 more: each is closed at once, with a 503.
    let mut refused = Vec::new();
    for _ in 0..100 {
        refused.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    for conn in &mut refused {
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(PROMPT, conn.read(&mut buf))
            .await
            .expect("a connection beyond the cap was held open")
            .unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || text.starts_with("HTTP/1.1 503"), "{text}");
    }
    // The connection already open is still served.
    assert!(request(&mut scraper).await.starts_with("HTTP/1.1 200"));
    // Once the idle ones time out, new connections are served again.
    for conn in &mut idle {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(20), conn.read(&mut buf))
            .await
            .expect("an idle connection outlived the idle timeout");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
    let mut fresh = None;
    for _ in 0..100 {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let answer = request(&mut conn).await;
        if answer.starts_with("HTTP/1.1 200") {
            fresh = Some(answer);
            break;
        }
        // The keep-alive scraper may still hold a slot until its own idle timeout.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        fresh.is_some(),
        "no new connection served after the idle ones timed out"
    );
    stop.cancel();
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    // hyper's header read timeout closes idle HTTP/1 connections only: idle HTTP/2 connections
    // (TLS clients keep them pooled) held their --web.max-connections slot for good.
    let pki = make_pki();
    let cfg = pki.dir.path().join("web.yml");
    std::fs::write(&cfg, TLS_CONFIG).unwrap();
    let mut opts = options(Some(WebConfig::load(&cfg).unwrap()));
    opts.max_connections = 1;
    opts.header_read_timeout = Duration::from_secs(3);
    let (addr, stop) = serve(opts).await;
    let url = format!("https://localhost:{}/-/healthy", addr.port());
    let pooled = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(Duration::from_secs(10))
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = pooled.get(&url).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, reqwest::Version::HTTP_2)
    );
    let idle_since = Instant::now();
    // The pooled connection holds the only slot while it is in use or recently used.
    let other = https_client(&pki);
    let (first, _) = get(&other, &url, None).await;
    if idle_since.elapsed() < Duration::from_secs(3) {
        assert!(first.is_err(), "{first:?}");
    }
    // Once it has been idle for the timeout it is closed, and the slot is free.
    let mut last = first;
    while last != Ok(200) && idle_since.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = get(&other, &url, None).await.0;
    }
    assert_eq!(last, Ok(200), "the idle HTTP/2 connection kept its slot");
    stop.cancel();
}

#[test]
fn max_connections_is_a_shared_flag_with_a_default_under_the_descriptor_limit() {
    use clap::Parser;
    let f = ChildFlags::parse_from(["x"]);
    assert_eq!(f.web.max_connections, 512);
    const { assert!(common::server::DEFAULT_MAX_CONNECTIONS < 1024) };
    let f = ChildFlags::parse_from(["x", "--web.max-connections=7"]);
    assert_eq!(f.web.max_connections, 7);
}

#[test]
fn web_config_errors_name_the_field_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("web.yml");
    let cases = [
        (
            "basic_auth_users:\n  - prom\n",
            "web.yml:2:3: basic_auth_users: invalid type: sequence, expected a map",
        ),
        (
            "tls_server_config:\n  cert_file: [a]\n",
            "web.yml:2:14: tls_server_config.cert_file: invalid type: sequence",
        ),
        (
            "http_server_config:\n  http2: maybe\n",
            "web.yml:2:10: http_server_config.http2: invalid type: string",
        ),
        (
            "tls_server_config:\n  cipher_suites: TLS_AES_128_GCM_SHA256\n",
            "web.yml:2:18: tls_server_config.cipher_suites: invalid type: string",
        ),
        (
            "tls_server_config:\n  cert_fil: x\n",
            "web.yml:2:3: tls_server_config: unknown field `cert_fil`",
        ),
    ];
    for (text, want) in cases {
        std::fs::write(&cfg, text).unwrap();
        let err = load_err(&cfg);
        assert!(err.contains(want), "{text:?}:\n got  {err}\n want {want}");
    }
}

/// YAML syntax and values a mutation splices in.
const TOKENS: &[&str] = &[
    ":",
    ": ",
    "- ",
    "-",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\n",
    "\n  ",
    "  ",
    "'",
    "\"",
    "#",
    "&a ",
    "*a",
    "!!binary ",
    "!!str ",
    "? ",
    "|\n",
    ">\n",
    "~",
    "null",
    "true",
    "0x1f",
    "1e999",
    "\t",
    "\u{0}",
    "\u{feff}",
    "é",
    "<<: *a\n",
    "---\n",
    "...\n",
    "%YAML 1.2\n",
    "cert_file: ",
    "key_file: ",
    "client_ca_file: ",
    "/dev/zero",
    "/dev/stdin",
    "/proc/self/mem",
    "server.crt",
    "server.key",
    "tls_server_config:\n",
    "basic_auth_users:\n",
    "http_server_config:\n",
    "headers:\n",
    "$2y$31$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi",
    "$2y$03$",
    "min_version: ",
    "TLS13",
    "client_auth_type: ",
    "RequireAndVerifyClientCert",
    "cipher_suites: ",
    "http2: ",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], input: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(2) {
        let at = rng.below(input.len() + 1);
        match rng.below(6) {
            0 => {
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                input.splice(at..at, t.iter().copied());
            }
            1 if !input.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(input.len());
                input.drain(at.min(end)..end);
            }
            2 if at < input.len() => input[at] = rng.next_u64() as u8,
            3 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len());
                let end = (from + rng.below(64)).min(other.len());
                input.splice(at..at, other[from..end].iter().copied());
            }
            4 if !input.is_empty() => {
                // Repeat a piece: nesting and long lines.
                let end = (at + 1 + rng.below(8)).min(input.len());
                let piece = input[at.min(end)..end].to_vec();
                let times = 1 + rng.below(200);
                for _ in 0..times {
                    input.splice(at..at, piece.iter().copied());
                }
            }
            _ => {
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                input.extend_from_slice(t);
            }
        }
    }
}

#[test]
fn the_web_config_loader_survives_mutations_of_exporter_toolkits_own_test_configs() {
    // Seeds: exporter-toolkit's web/testdata configs (see the fixture directory's README).
    let seed_dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/exporter-toolkit-web-configs");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&seed_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(seeds.len() >= 30, "{} seeds", seeds.len());
    seeds.sort();
    // The files the seeds name, so that valid ones load (and build a TLS config).
    let pki = make_pki();
    let d = pki.dir.path();
    for name in ["client_selfsigned.pem", "client2_selfsigned.pem"] {
        std::fs::write(d.join(name), &pki.ca_pem).unwrap();
    }
    let cfg = d.join("web.yml");
    let mut rng = Rng::new(0x05ee_d0fe_4700_7c17);
    let (mut loaded, mut refused, mut seeds_loaded) = (0, 0, 0);
    for round in 0..1500 {
        let mut input = seeds[round % seeds.len()].clone();
        if round >= seeds.len() {
            mutate(&mut rng, &seeds, &mut input);
        }
        std::fs::write(&cfg, &input).unwrap();
        let path = cfg.clone();
        let outcome = std::panic::catch_unwind(move || WebConfig::load(&path).map(|_| ()));
        match outcome {
            Ok(Ok(())) if round < seeds.len() => seeds_loaded += 1,
            Ok(Ok(())) => loaded += 1,
            Ok(Err(err)) => {
                refused += 1;
                let msg = err.to_string();
                assert!(
                    msg.contains("web.yml"),
                    "an error that does not name the file: {msg}"
                );
            }
            Err(_) => panic!(
                "round {round}: the loader panicked on {:?}",
                String::from_utf8_lossy(&input)
            ),
        }
    }
    // Both outcomes occur: the mutations neither break everything nor nothing.
    assert!(
        seeds_loaded >= 3 && loaded > 0 && refused > 100,
        "seeds loaded {seeds_loaded}, mutants loaded {loaded}, refused {refused}"
    );
}
