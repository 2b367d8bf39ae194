//! Finding the files to follow and their labels, by walking directories.
//!
//! Two kinds of source: the Kubernetes pod tree `<root>/<namespace>_<pod>_<uid>/<container>/<N>.log`
//! (labels `namespace`, `pod`, `container`) and path globs from the config, whose `{name}`
//! components become labels. A scan lists every matching file and every directory it read: the
//! caller puts an inotify watch on each of those directories, so a new pod, container or file is
//! seen at once: an event scans only its directory ([`Source::scan_dir`]: its files, and new
//! subdirectories whole), and the full scan is repeated periodically (and on inotify
//! overflow) as a safety net.
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

/// The part of the tree a partial scan listed completely: a followed file there that the scan
/// did not list is gone; one elsewhere is not judged.
#[derive(Debug, Default)]
pub struct Scope {
    /// Directories whose own files were all listed.
    pub dirs: HashSet<PathBuf>,
    /// Directories whose whole subtree was listed: new ones, and removed ones (nothing under them).
    pub trees: HashSet<PathBuf>,
}

impl Scope {
    /// Whether the scan listed every file that could be at `path`.
    pub fn covers(&self, path: &Path) -> bool {
        path.parent().is_some_and(|d| self.dirs.contains(d))
            || path.ancestors().skip(1).any(|a| self.trees.contains(a))
    }
}

/// What one scan saw.
#[derive(Debug, Default)]
pub struct ScanResult {
    pub files: Vec<Found>,
    /// What a partial scan ([`Source::scan_dir`]) listed completely.
    pub scope: Scope,
    /// Every directory read (to be watched).
    pub dirs: Vec<PathBuf>,
    /// Directories that could not be read, with the error kind.
    pub errors: Vec<(PathBuf, std::io::ErrorKind)>,
    /// Input: paths followed already, which the scan does not open.
    pub followed: HashSet<PathBuf>,
    /// Input: most files the scan opens (the free descriptors of the tailer's budget).
    pub open_budget: usize,
    /// The paths in `files`.
    listed: HashSet<PathBuf>,
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

    /// Whether this scan listed the file `path`.
    pub fn listed(&self, path: &Path) -> bool {
        self.listed.contains(path)
    }

    /// Adds a found file, opened now unless followed already or past the budget. A file that
    /// cannot be opened here is listed all the same: the tailer opens it and counts the error.
    fn push(&mut self, path: PathBuf, labels: Labels) {
        // A partial scan may list a directory twice (again once it is watched).
        if !self.listed.insert(path.clone()) {
            return;
        }
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
    list_dir(dir, out).unwrap_or_default()
}

/// The entries of `dir` (name, is a directory), `None` if it cannot be read (an error other
/// than its absence is recorded).
fn list_dir(dir: &Path, out: &mut ScanResult) -> Option<Vec<(String, bool)>> {
    Some(match std::fs::read_dir(dir) {
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
            return None;
        }
    })
}

/// Lists the logs of the container directory `cdir` of pod `pod` in namespace `ns`.
fn push_container_logs(
    cdir: &Path,
    ns: &str,
    pod: &str,
    entries: Vec<(String, bool)>,
    out: &mut ScanResult,
) {
    let container = cdir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for (file, is_dir) in entries {
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

/// Lists a pod directory's containers and their logs; with `skip`, containers already watched
/// are left out (a partial scan of the pod directory itself).
fn scan_pod_dir(
    pod_dir: &Path,
    ns: &str,
    pod: &str,
    skip: Option<&dyn Fn(&Path) -> bool>,
    out: &mut ScanResult,
) {
    for (container, is_dir) in read_dir_names(pod_dir, out) {
        let cdir = pod_dir.join(&container);
        if !is_dir || skip.is_some_and(|f| f(&cdir)) {
            continue;
        }
        let entries = read_dir_names(&cdir, out);
        push_container_logs(&cdir, ns, pod, entries, out);
        if skip.is_some() {
            out.scope.trees.insert(cdir);
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
                    scan_pod_dir(&root.join(&pod_name), ns, pod, None, out);
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

impl Source {
    /// A partial scan, after an inotify event in `dir`: lists the files of `dir` itself, and
    /// the whole subtree of each subdirectory that `watched` does not hold (created since the
    /// last scan). A removed `dir` is listed as empty. What was listed completely goes to
    /// [`ScanResult::scope`]; a `dir` outside this source adds nothing.
    pub fn scan_dir(&self, dir: &Path, watched: &dyn Fn(&Path) -> bool, out: &mut ScanResult) {
        let (root, depth) = match self {
            Source::Pods { root } => (root, 3),
            Source::Glob { pattern, .. } => (&pattern.root, pattern.components.len()),
        };
        let Ok(rel) = dir.strip_prefix(root) else {
            return;
        };
        let parts: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
        if parts.len() >= depth || parts.len() != rel.iter().count() {
            return;
        }
        if !dir.is_dir() {
            if !dir.exists() {
                out.scope.trees.insert(dir.to_path_buf());
            }
            return;
        }
        match self {
            Source::Pods { root } => match parts.as_slice() {
                [] => {
                    for (pod_name, is_dir) in read_dir_names(root, out) {
                        let pod_dir = root.join(&pod_name);
                        let Some((ns, pod)) = parse_pod_dir(&pod_name).filter(|_| is_dir) else {
                            continue;
                        };
                        if !watched(&pod_dir) {
                            scan_pod_dir(&pod_dir, ns, pod, None, out);
                            out.scope.trees.insert(pod_dir);
                        }
                    }
                }
                [pod_name] => {
                    if let Some((ns, pod)) = parse_pod_dir(pod_name) {
                        scan_pod_dir(dir, ns, pod, Some(watched), out);
                    }
                }
                [pod_name, _] => {
                    if let (Some((ns, pod)), Some(entries)) =
                        (parse_pod_dir(pod_name), list_dir(dir, out))
                    {
                        push_container_logs(dir, ns, pod, entries, out);
                        out.scope.dirs.insert(dir.to_path_buf());
                    }
                }
                _ => {}
            },
            Source::Glob { pattern, labels } => {
                let mut captured = Vec::new();
                for (c, name) in pattern.components.iter().zip(&parts) {
                    if !capture(c, name, &mut captured) {
                        return;
                    }
                }
                let rest = &pattern.components[parts.len()..];
                let Some((first, tail)) = rest.split_first() else {
                    return;
                };
                let Some(entries) = list_dir(dir, out) else {
                    return;
                };
                for (name, is_dir) in entries {
                    let n = captured.len();
                    let path = dir.join(&name);
                    if is_dir != tail.is_empty() && capture(first, &name, &mut captured) {
                        if tail.is_empty() {
                            let mut l = captured.clone();
                            l.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
                            out.push(path, l);
                        } else if !watched(&path) {
                            scan_glob(&path, tail, &mut captured, labels, out);
                            out.scope.trees.insert(path);
                        }
                    }
                    captured.truncate(n);
                }
                if tail.is_empty() {
                    out.scope.dirs.insert(dir.to_path_buf());
                }
            }
        }
    }
}

impl Source {
    /// Whether a scan of this source would list `path`: a directory on the way to its files
    /// (`is_dir`), or one of its files.
    pub fn wants(&self, path: &Path, is_dir: bool) -> bool {
        match self {
            Source::Pods { root } => {
                let Some(parts) = path.strip_prefix(root).ok().and_then(|rel| {
                    rel.iter()
                        .map(|c| c.to_str())
                        .collect::<Option<Vec<&str>>>()
                }) else {
                    return false;
                };
                match (parts.as_slice(), is_dir) {
                    ([pod] | [pod, _], true) => parse_pod_dir(pod).is_some(),
                    ([pod, _, file], false) => {
                        parse_pod_dir(pod).is_some() && is_pod_log_name(file)
                    }
                    _ => false,
                }
            }
            Source::Glob { pattern, .. } if !is_dir => pattern.matches(path),
            Source::Glob { pattern, .. } => {
                let Ok(rel) = path.strip_prefix(&pattern.root) else {
                    return false;
                };
                let n = rel.iter().count();
                (1..pattern.components.len()).contains(&n)
                    && rel.iter().zip(&pattern.components).all(|(name, c)| {
                        name.to_str()
                            .is_some_and(|name| capture(c, name, &mut Vec::new()))
                    })
            }
        }
    }
}

/// Whether `name` matches component `c`; its captures are appended to `captured`.
fn capture(c: &Component, name: &str, captured: &mut Vec<(String, String)>) -> bool {
    match c {
        Component::Literal(l) => l == name,
        Component::Pattern { re, captures } => match re.captures(name) {
            Some(m) => {
                for (i, label) in captures.iter().enumerate() {
                    let v = m.get(i + 1).map_or("", |m| m.as_str());
                    captured.push((label.clone(), v.to_string()));
                }
                true
            }
            None => false,
        },
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
        if capture(first, &name, captured) {
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

    /// A partial scan lists the changed directory's files and the whole subtree of its new
    /// subdirectories (not those watched already), and says what it listed completely.
    #[test]
    fn scan_dir_lists_the_changed_directory_and_new_subtrees() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("pods");
        for f in ["ns_a_u/app/0.log", "ns_b_u/app/0.log", "ns_b_u/side/1.log"] {
            std::fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
            std::fs::write(root.join(f), "x\n").unwrap();
        }
        let pods = Source::Pods { root: root.clone() };
        let old: HashSet<PathBuf> = [root.clone(), root.join("ns_a_u"), root.join("ns_a_u/app")]
            .into_iter()
            .collect();
        let watched = |p: &Path| old.contains(p);
        let names = |out: &ScanResult| {
            let mut v: Vec<String> = out
                .files
                .iter()
                .map(|f| f.path.strip_prefix(&root).unwrap().display().to_string())
                .collect();
            v.sort();
            v
        };
        // The root changed: the new pod is listed whole, the watched one not.
        let mut out = ScanResult::default();
        pods.scan_dir(&root, &watched, &mut out);
        assert_eq!(names(&out), ["ns_b_u/app/0.log", "ns_b_u/side/1.log"]);
        assert!(out.scope.covers(&root.join("ns_b_u/app/9.log")));
        assert!(!out.scope.covers(&root.join("ns_a_u/app/0.log")));
        assert!(out.dirs.contains(&root.join("ns_b_u/side")));
        // A container directory changed: its own files.
        let mut out = ScanResult::default();
        pods.scan_dir(&root.join("ns_a_u/app"), &watched, &mut out);
        assert_eq!(names(&out), ["ns_a_u/app/0.log"]);
        assert_eq!(out.files[0].labels[1].1, "a");
        assert!(out.scope.covers(&root.join("ns_a_u/app/1.log")));
        assert!(!out.scope.covers(&root.join("ns_b_u/app/0.log")));
        // A removed directory: nothing under it any more.
        std::fs::remove_dir_all(root.join("ns_a_u")).unwrap();
        let mut out = ScanResult::default();
        pods.scan_dir(&root.join("ns_a_u"), &watched, &mut out);
        assert!(out.files.is_empty());
        assert!(out.scope.covers(&root.join("ns_a_u/app/0.log")));
        // Outside the source, or a file's level: nothing.
        let mut out = ScanResult::default();
        pods.scan_dir(d.path(), &watched, &mut out);
        pods.scan_dir(&root.join("ns_b_u/app/0.log"), &watched, &mut out);
        assert!(out.files.is_empty() && out.scope.dirs.is_empty() && out.scope.trees.is_empty());

        // A glob: captures of the path above the changed directory are kept.
        let app = d.path().join("app");
        for s in ["api", "worker"] {
            std::fs::create_dir_all(app.join(s)).unwrap();
            std::fs::write(app.join(s).join("error.log"), "x\n").unwrap();
        }
        let glob = Source::Glob {
            pattern: GlobPattern::parse(&format!("{}/{{service}}/error.log", app.display()))
                .unwrap(),
            labels: BTreeMap::new(),
        };
        let mut out = ScanResult::default();
        glob.scan_dir(&app.join("api"), &|_: &Path| true, &mut out);
        assert_eq!(out.files.len(), 1);
        assert_eq!(out.files[0].labels, vec![("service".into(), "api".into())]);
        let mut out = ScanResult::default();
        glob.scan_dir(&app, &|p: &Path| p.ends_with("api"), &mut out);
        assert_eq!(out.files.len(), 1);
        assert_eq!(
            out.files[0].labels,
            vec![("service".into(), "worker".into())]
        );
    }

    /// What a source would list, for entries an event named (gone since, so by name only).
    #[test]
    fn wants_only_what_a_scan_would_list() {
        let pods = Source::Pods { root: "/p".into() };
        let glob = Source::Glob {
            pattern: GlobPattern::parse("/a/{service}/logs/*.log").unwrap(),
            labels: BTreeMap::new(),
        };
        for (source, path, is_dir, want) in [
            (&pods, "/p/ns_a_u", true, true),
            (&pods, "/p/ns_a_u/app", true, true),
            (&pods, "/p/ns_a_u/app/0.log", false, true),
            (&pods, "/p/ns_a_u/app/0.log.20240101", false, false),
            (&pods, "/p/junk", true, false),
            (&pods, "/p/ns_a_u/app/x", true, false),
            (&pods, "/p/ns_a_u", false, false),
            (&pods, "/q/ns_a_u", true, false),
            (&glob, "/a/api", true, true),
            (&glob, "/a/api/logs", true, true),
            (&glob, "/a/api/other", true, false),
            (&glob, "/a/api/logs/e.log", false, true),
            (&glob, "/a/api/logs/e.txt", false, false),
            (&glob, "/a/api/logs/sub", true, false),
        ] {
            assert_eq!(source.wants(Path::new(path), is_dir), want, "{path}");
        }
    }
}
