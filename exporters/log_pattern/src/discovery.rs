//! Finding the files to follow and their labels, by walking directories.
//!
//! Two kinds of source: the Kubernetes pod tree `<root>/<namespace>_<pod>_<uid>/<container>/<N>.log`
//! (labels `namespace`, `pod`, `container`) and path globs from the config, whose `{name}`
//! components become labels. A scan lists every matching file and every directory it read: the
//! caller puts an inotify watch on each of those directories, so a new pod, container or file is
//! seen at once, and repeats the scan periodically (and on inotify overflow) as a safety net.
//! A file not followed yet is opened the moment a scan lists it ([`ScanResult::followed`],
//! [`ScanResult::open_budget`]), so that a removal of its directory right after cannot take
//! unread lines with it: the descriptor keeps the content readable.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use regex::Regex;

use crate::sink::Labels;

/// A file a scan found.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: PathBuf,
    pub labels: Labels,
    /// The file, opened when the scan listed it (not for followed paths, nor past the budget).
    pub file: Option<Arc<File>>,
}

impl Found {
    /// A file found, not opened.
    pub fn new(path: PathBuf, labels: Labels) -> Self {
        Self {
            path,
            labels,
            file: None,
        }
    }
}

/// What one scan saw.
#[derive(Debug, Default)]
pub struct ScanResult {
    pub files: Vec<Found>,
    /// Every directory read (to be watched).
    pub dirs: Vec<PathBuf>,
    /// Directories that could not be read, with the error kind.
    pub errors: Vec<(PathBuf, std::io::ErrorKind)>,
    /// Input: paths followed already, which the scan does not open.
    pub followed: HashSet<PathBuf>,
    /// Input: most files the scan opens (the free descriptors of the tailer's budget).
    pub open_budget: usize,
}

impl ScanResult {
    /// An empty result whose scans open the files not in `followed`, at most `open_budget`.
    pub fn opening(followed: HashSet<PathBuf>, open_budget: usize) -> Self {
        Self {
            followed,
            open_budget,
            ..Self::default()
        }
    }

    /// Adds a found file, opened now unless followed already or past the budget. A file that
    /// cannot be opened here is listed all the same: the tailer opens it and counts the error.
    fn push(&mut self, path: PathBuf, labels: Labels) {
        let mut found = Found::new(path, labels);
        if self.open_budget > 0 && !self.followed.contains(&found.path) {
            // O_NONBLOCK: opening a FIFO named like a log must not block the scan; it has no
            // effect on reading a regular file.
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&found.path)
                .ok()
                .filter(|f| f.metadata().is_ok_and(|m| m.is_file()));
            if let Some(f) = file {
                self.open_budget -= 1;
                found.file = Some(Arc::new(f));
            }
        }
        self.files.push(found);
    }
}

/// One component of a glob: a literal or a regex over one path component.
#[derive(Debug, Clone)]
enum Component {
    Literal(String),
    Pattern { re: Regex, captures: Vec<String> },
}

/// A parsed source path pattern.
#[derive(Debug, Clone)]
pub struct GlobPattern {
    /// Leading literal directories.
    root: PathBuf,
    components: Vec<Component>,
}

impl GlobPattern {
    /// Parses `/var/log/app/{service}/*.log`.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        if !pattern.starts_with('/') {
            return Err("the path must be absolute".into());
        }
        let mut root = PathBuf::from("/");
        let mut components = Vec::new();
        for part in pattern.split('/').filter(|p| !p.is_empty()) {
            if part == ".." || part == "." {
                return Err("the path may not hold . or ..".into());
            }
            if !part.contains(['*', '{', '}', '?', '[']) {
                if components.is_empty() {
                    root.push(part);
                } else {
                    components.push(Component::Literal(part.to_string()));
                }
                continue;
            }
            let mut re = String::from("^");
            let mut captures = Vec::new();
            let mut rest = part;
            while let Some(c) = rest.chars().next() {
                match c {
                    '*' => {
                        re.push_str("[^/]*");
                        rest = &rest[1..];
                    }
                    '{' => {
                        let end = rest
                            .find('}')
                            .ok_or_else(|| format!("unclosed '{{' in {part:?}"))?;
                        let name = &rest[1..end];
                        if name.is_empty() {
                            return Err(format!("empty capture name in {part:?}"));
                        }
                        if captures.iter().any(|c| c == name) {
                            return Err(format!("capture {name:?} appears twice"));
                        }
                        re.push_str("([^/]+)");
                        captures.push(name.to_string());
                        rest = &rest[end + 1..];
                    }
                    '}' | '?' | '[' => {
                        return Err(format!(
                            "unsupported character {c:?} in {part:?}: use * and {{name}}"
                        ))
                    }
                    _ => {
                        re.push_str(&regex::escape(&c.to_string()));
                        rest = &rest[c.len_utf8()..];
                    }
                }
            }
            re.push('$');
            let re = Regex::new(&re).map_err(|e| e.to_string())?;
            components.push(Component::Pattern { re, captures });
        }
        if components.is_empty() {
            // A single literal file: its parent is the root.
            let name = root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or("the path names no file")?;
            root.pop();
            components.push(Component::Literal(name));
        }
        let mut names = std::collections::HashSet::new();
        for c in &components {
            if let Component::Pattern { captures, .. } = c {
                for n in captures {
                    if !names.insert(n.clone()) {
                        return Err(format!("capture {n:?} appears twice"));
                    }
                }
            }
        }
        Ok(Self { root, components })
    }

    /// Whether `path` is one of the files this pattern names.
    pub fn matches(&self, path: &Path) -> bool {
        let Ok(rest) = path.strip_prefix(&self.root) else {
            return false;
        };
        let mut parts = rest.components();
        self.components.iter().all(|c| {
            let Some(std::path::Component::Normal(name)) = parts.next() else {
                return false;
            };
            match (c, name.to_str()) {
                (Component::Literal(l), _) => name == l.as_str(),
                (Component::Pattern { re, .. }, Some(n)) => re.is_match(n),
                (Component::Pattern { .. }, None) => false,
            }
        }) && parts.next().is_none()
    }

    /// Names of the captures, in path order.
    pub fn capture_names(&self) -> impl Iterator<Item = &str> {
        self.components.iter().flat_map(|c| match c {
            Component::Pattern { captures, .. } => captures.iter().map(String::as_str).collect(),
            Component::Literal(_) => Vec::new(),
        })
    }
}

/// A place to look for log files.
#[derive(Debug, Clone)]
pub enum Source {
    /// The kubelet pod log tree.
    Pods { root: PathBuf },
    /// A path glob with static labels.
    Glob {
        pattern: GlobPattern,
        labels: BTreeMap<String, String>,
    },
}

/// Parses a pod directory name `<namespace>_<pod>_<uid>`. Namespaces and pod names are DNS
/// labels/subdomains, which cannot hold `_`.
pub fn parse_pod_dir(name: &str) -> Option<(&str, &str)> {
    let mut it = name.splitn(3, '_');
    let (ns, pod, uid) = (it.next()?, it.next()?, it.next()?);
    if ns.is_empty() || pod.is_empty() || uid.is_empty() {
        return None;
    }
    Some((ns, pod))
}

/// Whether a file name is an active kubelet log (`<N>.log`), not a rotated one.
pub fn is_pod_log_name(name: &str) -> bool {
    name.strip_suffix(".log")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Labels of a path in the pod layout `…/<ns>_<pod>_<uid>/<container>/<file>`, if it is one.
pub fn pod_labels(path: &Path) -> Option<Labels> {
    let container = path.parent()?;
    let pod_dir = container.parent()?;
    let (ns, pod) = parse_pod_dir(pod_dir.file_name()?.to_str()?)?;
    Some(vec![
        ("namespace".into(), ns.into()),
        ("pod".into(), pod.into()),
        ("container".into(), container.file_name()?.to_str()?.into()),
    ])
}

fn read_dir_names(dir: &Path, out: &mut ScanResult) -> Vec<(String, bool)> {
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            out.dirs.push(dir.to_path_buf());
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    // The entry type costs no stat; follow symlinks (kubelet's
                    // /var/log/containers are links into the tree).
                    let ft = e.file_type().ok()?;
                    let is_dir = if ft.is_symlink() {
                        std::fs::metadata(e.path()).map(|m| m.is_dir()).ok()?
                    } else {
                        ft.is_dir()
                    };
                    Some((name, is_dir))
                })
                .collect()
        }
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                out.errors.push((dir.to_path_buf(), e.kind()));
            }
            Vec::new()
        }
    }
}

impl Source {
    /// Lists the files of this source.
    pub fn scan(&self, out: &mut ScanResult) {
        match self {
            Source::Pods { root } => {
                for (pod_name, is_dir) in read_dir_names(root, out) {
                    let Some((ns, pod)) = parse_pod_dir(&pod_name).filter(|_| is_dir) else {
                        continue;
                    };
                    let pod_dir = root.join(&pod_name);
                    for (container, is_dir) in read_dir_names(&pod_dir, out) {
                        if !is_dir {
                            continue;
                        }
                        let cdir = pod_dir.join(&container);
                        for (file, is_dir) in read_dir_names(&cdir, out) {
                            if is_dir || !is_pod_log_name(&file) {
                                continue;
                            }
                            out.push(
                                cdir.join(file),
                                vec![
                                    ("namespace".into(), ns.into()),
                                    ("pod".into(), pod.into()),
                                    ("container".into(), container.clone()),
                                ],
                            );
                        }
                    }
                }
            }
            Source::Glob { pattern, labels } => {
                let mut captured = Vec::new();
                scan_glob(
                    &pattern.root,
                    &pattern.components,
                    &mut captured,
                    labels,
                    out,
                );
            }
        }
    }
}

fn scan_glob(
    dir: &Path,
    rest: &[Component],
    captured: &mut Vec<(String, String)>,
    statics: &BTreeMap<String, String>,
    out: &mut ScanResult,
) {
    let Some((first, tail)) = rest.split_first() else {
        return;
    };
    let last = tail.is_empty();
    for (name, is_dir) in read_dir_names(dir, out) {
        if is_dir == last {
            continue;
        }
        let n = captured.len();
        let ok = match first {
            Component::Literal(l) => *l == name,
            Component::Pattern { re, captures } => match re.captures(&name) {
                Some(c) => {
                    for (i, label) in captures.iter().enumerate() {
                        let v = c.get(i + 1).map_or("", |m| m.as_str());
                        captured.push((label.clone(), v.to_string()));
                    }
                    true
                }
                None => false,
            },
        };
        if ok {
            let path = dir.join(&name);
            if last {
                let mut labels = captured.clone();
                labels.extend(statics.iter().map(|(k, v)| (k.clone(), v.clone())));
                out.push(path, labels);
            } else {
                scan_glob(&path, tail, captured, statics, out);
            }
        }
        captured.truncate(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names() {
        assert_eq!(
            parse_pod_dir(
                "kube-system_coredns-5d78c9869d-abcde_0f1e2d3c-1111-2222-3333-444455556666"
            ),
            Some(("kube-system", "coredns-5d78c9869d-abcde"))
        );
        assert_eq!(parse_pod_dir("nouid_pod"), None);
        assert_eq!(parse_pod_dir("_pod_uid"), None);
        assert!(is_pod_log_name("0.log"));
        assert!(is_pod_log_name("12.log"));
        assert!(!is_pod_log_name("0.log.20240101-000000"));
        assert!(!is_pod_log_name("0.log.20240101-000000.gz"));
        assert!(!is_pod_log_name(".log"));
        assert_eq!(
            pod_labels(Path::new("/var/log/pods/ns_p_u/c/0.log")).unwrap()[2].1,
            "c"
        );
    }

    #[test]
    fn scans_pods_and_globs() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("pods");
        for p in ["ns1_a_u1/app", "ns1_a_u1/side", "ns2_b_u2/app", "junk/app"] {
            std::fs::create_dir_all(root.join(p)).unwrap();
        }
        for f in [
            "ns1_a_u1/app/0.log",
            "ns1_a_u1/app/0.log.2024",
            "ns1_a_u1/side/1.log",
            "ns2_b_u2/app/0.log",
            "junk/app/0.log",
        ] {
            std::fs::write(root.join(f), "x\n").unwrap();
        }
        let mut out = ScanResult::default();
        Source::Pods { root: root.clone() }.scan(&mut out);
        let mut got: Vec<_> = out
            .files
            .iter()
            .map(|f| {
                (
                    f.path.strip_prefix(&root).unwrap().to_owned(),
                    f.labels[1].1.clone(),
                    f.labels[2].1.clone(),
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (
                    "ns1_a_u1/app/0.log".into(),
                    "a".to_string(),
                    "app".to_string()
                ),
                ("ns1_a_u1/side/1.log".into(), "a".into(), "side".into()),
                ("ns2_b_u2/app/0.log".into(), "b".into(), "app".into()),
            ]
        );
        // root, 2 pod dirs, 3 container dirs
        assert_eq!(out.dirs.len(), 6);

        let app = d.path().join("app");
        for s in ["api", "worker"] {
            std::fs::create_dir_all(app.join(s)).unwrap();
            std::fs::write(app.join(s).join("error.log"), "x\n").unwrap();
            std::fs::write(app.join(s).join("access.log"), "x\n").unwrap();
        }
        let pattern =
            GlobPattern::parse(&format!("{}/{{service}}/error.log", app.display())).unwrap();
        assert_eq!(pattern.capture_names().collect::<Vec<_>>(), vec!["service"]);
        let mut out = ScanResult::default();
        Source::Glob {
            pattern,
            labels: [("job".to_string(), "app".to_string())].into(),
        }
        .scan(&mut out);
        out.files.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(out.files.len(), 2);
        assert_eq!(
            out.files[0].labels,
            vec![
                ("service".to_string(), "api".to_string()),
                ("job".into(), "app".into())
            ]
        );
        let pattern = GlobPattern::parse(&format!("{}/*/*.log", app.display())).unwrap();
        let mut out = ScanResult::default();
        Source::Glob {
            pattern,
            labels: BTreeMap::new(),
        }
        .scan(&mut out);
        assert_eq!(out.files.len(), 4);
        assert!(GlobPattern::parse("/a/{x}/{x}.log").is_err());
        assert!(GlobPattern::parse("/a/[ab].log").is_err());
        assert!(GlobPattern::parse("/a/{x.log").is_err());
    }
}
