//! Test harness: a private libvirtd (test driver only, or QEMU under TCG), the exporter binary,
//! loopback HTTP and promtool. Every process is started in the test's own temp dir and stopped
//! by PID from a `Drop` guard, also when the test fails.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (by PID) and reaped on drop.
pub struct Guard {
    pub child: Option<Child>,
    pub name: &'static str,
}

impl Guard {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends `sig` to the process and waits for it to exit.
    pub fn kill_with(&mut self, sig: i32) {
        if let Some(mut c) = self.child.take() {
            // SAFETY-free: the `kill` binary takes the PID we started.
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill_with(15);
    }
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for `cond`, polling.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// A libvirtd serving only the test driver over a unix socket in `dir`.
pub struct Libvirtd {
    pub dir: PathBuf,
    pub guard: Guard,
}

impl Libvirtd {
    pub fn socket_ro(dir: &Path) -> PathBuf {
        dir.join("sock/libvirt-sock-ro")
    }

    /// Starts libvirtd with the test driver only (an empty driver dir keeps QEMU's module out).
    pub fn start_test_driver(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("sock")).unwrap();
        std::fs::create_dir_all(dir.join("drivers")).unwrap();
        let conf = dir.join("libvirtd.conf");
        std::fs::write(
            &conf,
            format!(
                "unix_sock_dir = \"{}\"\nauth_unix_ro = \"none\"\nauth_unix_rw = \"none\"\n",
                dir.join("sock").display()
            ),
        )
        .unwrap();
        let _ = std::fs::remove_file(Self::socket_ro(dir));
        let log = std::fs::File::create(dir.join("libvirtd.log")).unwrap();
        let child = Command::new("libvirtd")
            .arg("-f")
            .arg(&conf)
            .arg("-p")
            .arg(dir.join("libvirtd.pid"))
            .env("LIBVIRT_DRIVER_DIR", dir.join("drivers"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("libvirtd (package libvirt-daemon) must be installed");
        let d = Self {
            dir: dir.to_path_buf(),
            guard: Guard {
                child: Some(child),
                name: "libvirtd",
            },
        };
        let sock = Self::socket_ro(dir);
        wait_for("libvirtd socket", Duration::from_secs(20), || sock.exists());
        d
    }

    /// The URI of node XML `node` served by this daemon.
    pub fn test_uri(&self, node: &Path) -> String {
        format!(
            "test+unix://{}?socket={}",
            node.display(),
            Self::socket_ro(&self.dir).display()
        )
    }
}

/// The exporter binary, listening on a free loopback port.
pub struct ExporterProc {
    pub port: u16,
    pub guard: Guard,
}

impl ExporterProc {
    pub fn start(args: &[String]) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_libvirt_exporter"))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let p = Self {
            port,
            guard: Guard {
                child: Some(child),
                name: "libvirt_exporter",
            },
        };
        wait_for("exporter to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        p
    }

    /// GETs /metrics: (status, body).
    pub fn scrape(&self) -> (u16, String) {
        http_get(self.port, "/metrics")
    }
}

/// A minimal HTTP/1.0 GET on loopback (no client library needed for plain text).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of the first sample whose line starts with `prefix`.
pub fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Runs `promtool check metrics` on `text`; returns its complaints (empty = clean).
pub fn promtool_check(text: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (package prometheus) must be installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success() && s.trim().is_empty() {
        s = format!("promtool exited with {}", out.status);
    }
    s
}

/// A libvirtd with the QEMU driver, for real guests under TCG, isolated in a private mount
/// namespace: its /etc/libvirt (a qemu.conf running QEMU as root without security driver,
/// namespaces or virtlogd), its state dirs and an /etc/passwd with the `libvirt-qemu` user the
/// driver insists on are bind mounts of files in `dir`; the host's files are not touched.
pub struct QemuLibvirtd {
    pub dir: PathBuf,
    pub guard: Guard,
}

impl QemuLibvirtd {
    pub fn start(dir: &Path) -> Self {
        for d in ["etc", "lib", "cache", "log", "run", "sock", "drivers"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let so = [
            "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so",
            "/usr/lib64/libvirt/connection-driver/libvirt_driver_qemu.so",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("libvirt_driver_qemu.so (package libvirt-daemon-driver-qemu) must be installed");
        std::fs::copy(so, dir.join("drivers/libvirt_driver_qemu.so")).unwrap();
        for f in ["libvirt.conf", "libvirt-admin.conf"] {
            let _ = std::fs::copy(Path::new("/etc/libvirt").join(f), dir.join("etc").join(f));
        }
        std::fs::write(
            dir.join("etc/qemu.conf"),
            "user = \"root\"\ngroup = \"root\"\nsecurity_driver = \"none\"\nnamespaces = []\nstdio_handler = \"file\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("libvirtd.conf"),
            format!(
                "unix_sock_dir = \"{}\"\nauth_unix_ro = \"none\"\nauth_unix_rw = \"none\"\n",
                dir.join("sock").display()
            ),
        )
        .unwrap();
        let mut passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        passwd.push_str(
            "libvirt-qemu:x:64055:64055:Libvirt Qemu:/var/lib/libvirt:/usr/sbin/nologin\n",
        );
        std::fs::write(dir.join("passwd"), passwd).unwrap();
        let mut group = std::fs::read_to_string("/etc/group").unwrap();
        group.push_str("libvirt-qemu:x:64055:\n");
        if !group.lines().any(|l| l.starts_with("kvm:")) {
            group.push_str("kvm:x:64056:\n");
        }
        std::fs::write(dir.join("group"), group).unwrap();
        let d = dir.display();
        let script = format!(
            "set -e\n\
             for t in /var/lib/libvirt /var/cache/libvirt /var/log/libvirt /run/libvirt; do mkdir -p $t; done\n\
             mount --bind {d}/etc /etc/libvirt\n\
             mount --bind {d}/passwd /etc/passwd\n\
             mount --bind {d}/group /etc/group\n\
             mount --bind {d}/lib /var/lib/libvirt\n\
             mount --bind {d}/cache /var/cache/libvirt\n\
             mount --bind {d}/log /var/log/libvirt\n\
             mount --bind {d}/run /run/libvirt\n\
             exec libvirtd -f {d}/libvirtd.conf -p {d}/libvirtd.pid\n"
        );
        std::fs::write(dir.join("start.sh"), script).unwrap();
        let log = std::fs::File::create(dir.join("libvirtd.log")).unwrap();
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh"])
            .arg(dir.join("start.sh"))
            .env("LIBVIRT_DRIVER_DIR", dir.join("drivers"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let q = Self {
            dir: dir.to_path_buf(),
            guard: Guard {
                child: Some(child),
                name: "libvirtd (qemu)",
            },
        };
        let sock = dir.join("sock/libvirt-sock-ro");
        wait_for("libvirtd (qemu) socket", Duration::from_secs(30), || {
            sock.exists()
        });
        q
    }

    pub fn uri(&self, ro: bool) -> String {
        let sock = if ro {
            "libvirt-sock-ro"
        } else {
            "libvirt-sock"
        };
        format!(
            "qemu+unix:///system?socket={}",
            self.dir.join("sock").join(sock).display()
        )
    }

    /// Runs virsh on the read-write socket.
    pub fn virsh(&self, args: &[&str]) -> String {
        let out = Command::new("virsh")
            .arg("-c")
            .arg(self.uri(false))
            .args(args)
            .output()
            .expect("virsh (package libvirt-clients) must be installed");
        assert!(
            out.status.success(),
            "virsh {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// PID of a running guest's QEMU, from libvirt's pid file.
    pub fn qemu_pid(&self, name: &str) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("run/qemu").join(format!("{name}.pid")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }
}

impl Drop for QemuLibvirtd {
    fn drop(&mut self) {
        // Guests outlive libvirtd: stop them first (by libvirt, then by PID as a fallback).
        let pids: Vec<u32> = std::fs::read_dir(self.dir.join("run/qemu"))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .filter_map(|s| s.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        for pid in &pids {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        self.guard.kill_with(15);
        for pid in &pids {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The CPUs this process may run on.
pub fn own_cpus() -> Vec<u32> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string();
    libvirt_exporter::cpuset::parse_cpuset(&list)
        .unwrap()
        .iter()
        .collect()
}
