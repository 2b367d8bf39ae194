//! Test harness: a private libvirtd (test driver only, or QEMU under TCG), the exporter binary,
//! loopback HTTP and promtool. Every process is started in the test's own temp dir and stopped
//! by PID from a `Drop` guard, also when the test fails.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e_tests::{free_port, local_get, stop_pid, wait_for, ChildGuard};

/// How long a stopped daemon or exporter gets after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(10);

/// A libvirtd serving only the test driver over a unix socket in `dir`.
pub struct Libvirtd {
    pub dir: PathBuf,
    pub guard: ChildGuard,
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
            guard: ChildGuard::new(child).terminate_on_drop(GRACE),
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
    pub guard: ChildGuard,
}

impl ExporterProc {
    pub fn start(args: &[String]) -> Self {
        Self::start_logging(args, None)
    }

    /// [`ExporterProc::start`], its log (stderr) written to `log` when given.
    pub fn start_logging(args: &[String], log: Option<&Path>) -> Self {
        let port = free_port();
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::null(),
        };
        let child = Command::new(env!("CARGO_BIN_EXE_libvirt_exporter"))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let p = Self {
            port,
            guard: ChildGuard::new(child).terminate_on_drop(GRACE),
        };
        wait_for("exporter to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        p
    }

    /// GETs /metrics: (status, body).
    pub fn scrape(&self) -> (u16, String) {
        local_get(self.port, "/metrics").unwrap()
    }
}

/// One scrape of the `domain` and `host` collectors in process (the library, no HTTP) on
/// `uri`, with `args` after it (`--path.procfs=` unless they set it), as the text format.
pub async fn scrape_in_process(uri: &str, args: &[&str]) -> String {
    let mut all = vec![
        "libvirt_exporter".to_string(),
        format!("--libvirt.uri={uri}"),
    ];
    if !args.iter().any(|a| a.starts_with("--path.procfs")) {
        all.push("--path.procfs=".to_string());
    }
    all.extend(args.iter().map(|s| s.to_string()));
    let flags = <libvirt_exporter::Flags as clap::Parser>::parse_from(all);
    let mut om = String::new();
    for c in libvirt_exporter::collectors(&flags)
        .into_iter()
        .filter(|c| ["domain", "host"].contains(&c.name()))
    {
        let mut reg = common::Sink::new("libvirt");
        c.collect(&mut reg).await.expect("collector succeeds");
        reg.encode(&mut om).unwrap();
    }
    common::exposition::openmetrics_to_text(&om)
}

/// A libvirtd with the QEMU driver, for real guests under TCG, isolated in a private mount
/// namespace: its /etc/libvirt (a qemu.conf running QEMU as root without security driver,
/// namespaces or virtlogd), its state dirs and an /etc/passwd with the `libvirt-qemu` user the
/// driver insists on are bind mounts of files in `dir`; the host's files are not touched.
pub struct QemuLibvirtd {
    pub dir: PathBuf,
    pub guard: ChildGuard,
}

impl QemuLibvirtd {
    pub fn start(dir: &Path) -> Self {
        Self::start_as(dir, None)
    }

    /// [`QemuLibvirtd::start`] with its own host UUID (`host_uuid` in libvirtd.conf): two
    /// daemons on one machine then count as two hosts, so a guest can migrate between them.
    pub fn start_as(dir: &Path, host_uuid: Option<&str>) -> Self {
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
        let host = host_uuid
            .map(|u| format!("host_uuid = \"{u}\"\n"))
            .unwrap_or_default();
        std::fs::write(
            dir.join("libvirtd.conf"),
            format!(
                "unix_sock_dir = \"{}\"\nauth_unix_ro = \"none\"\nauth_unix_rw = \"none\"\n{host}",
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
            guard: ChildGuard::new(child).terminate_on_drop(GRACE),
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
        // Guests outlive libvirtd: stop them first, by PID (SIGTERM, SIGKILL after the grace).
        let pids: Vec<u32> = std::fs::read_dir(self.dir.join("run/qemu"))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .filter_map(|s| s.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        for pid in pids {
            stop_pid(pid, GRACE);
        }
        self.guard.stop(GRACE);
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
