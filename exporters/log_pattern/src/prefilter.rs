//! The literals a regex line filter needs, so the rule engine's Aho-Corasick pass can skip the
//! regex on lines that cannot match.
//!
//! [`required`] returns a set of [`Needle`]s such that every string the regex matches contains
//! at least one of them (ASCII case-insensitively for a folded needle). The set comes from the
//! same `Hir` the `regex` crate compiles: the regex's own pattern text (the RE2 translation of
//! [`crate::logql::re2`]) parsed with the syntax options of `regex::bytes`. Two sources of
//! literals are combined and the most selective set wins:
//! - `regex-syntax`'s [`Extractor`] (prefixes and suffixes of the whole expression and of each
//!   sub-expression every match passes through), whose finite sequences are complete: every
//!   match starts (ends) with one of their literals;
//! - a walk of concatenations that joins adjacent fixed pieces, where a `(?i)` letter (a class
//!   of exactly one ASCII letter in both cases) becomes a folded byte, so `(?i)timed out` is one
//!   folded needle rather than the 2^7 spellings the extractor would have to list.
//!
//! Anything that could match without a literal (an empty alternative, `a*`, `.`, a class too
//! large to list, an unparsable pattern) gives `None`: that rule's regex runs on every line.
//!
//! [`Scanner`] finds which of all rules' literals occur in a line. An overlapping Aho-Corasick
//! search reports every occurrence but steps through the line byte by byte; a leftmost search
//! lets the automaton skip ahead with its vectorised prefilter. So the scanner searches
//! leftmost-longest and restarts one byte after each match's start: that visits every position
//! where some literal starts and reports the longest literal there; the others starting there
//! are prefixes of it, listed per literal when the scanner is built. `(?i)` needles have their
//! own ASCII case-insensitive search. Up to a few dozen literals are searched with Teddy
//! (`aho_corasick::packed`, the folded ones in a lowercased copy of the line) rather than the
//! automaton, whose prefilter for a handful of literals is a search for single bytes, and
//! those can be common in log lines.

use regex_syntax::hir::literal::{ExtractKind, Extractor, Seq};
use std::collections::HashMap;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use regex_syntax::hir::{Class, Hir, HirKind};

/// One literal of a required set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Needle {
    /// The bytes; ASCII-lowercased when `fold`.
    pub bytes: Vec<u8>,
    /// Matched ASCII case-insensitively.
    pub fold: bool,
}

/// More alternatives than this make a set not worth scanning for.
const MAX_NEEDLES: usize = 32;

/// Needles shorter than this hit too many lines to filter anything.
const MIN_LEN: usize = 2;

/// Distinct literals, numbered in the order first seen.
#[derive(Debug, Default)]
pub struct Literals {
    list: Vec<Vec<u8>>,
    ids: HashMap<Vec<u8>, usize>,
}

impl Literals {
    /// The number of `v`, added if new.
    pub fn id(&mut self, v: &[u8]) -> usize {
        if let Some(&id) = self.ids.get(v) {
            return id;
        }
        self.list.push(v.to_vec());
        self.ids.insert(v.to_vec(), self.list.len() - 1);
        self.list.len() - 1
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// Up to this many literals are searched with `aho_corasick::packed` (Teddy, a vectorised
/// multi-literal search, where the CPU has it; folded ones in an ASCII-lowercased copy of the
/// line); above it with an Aho-Corasick DFA (the crate's default there is a slower NFA).
/// Aho-Corasick's own prefilter for a handful of literals searches for single bytes, which can
/// be common in log lines.
const PACKED_MAX: usize = 64;

/// A leftmost-longest searcher.
#[derive(Debug)]
enum Search {
    Packed(aho_corasick::packed::Searcher),
    Automaton(AhoCorasick),
}

impl Search {
    /// The searcher, and whether it searches an ASCII-lowercased copy of the haystack.
    fn new(lits: &Literals, fold: bool) -> Result<(Self, bool), String> {
        use aho_corasick::packed;
        if lits.len() <= PACKED_MAX {
            let packed = packed::Config::new()
                .match_kind(packed::MatchKind::LeftmostLongest)
                .builder()
                .extend(lits.list.iter().map(|l| match fold {
                    true => l.to_ascii_lowercase(),
                    false => l.clone(),
                }))
                .build();
            if let Some(p) = packed {
                return Ok((Self::Packed(p), fold));
            }
        }
        AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .ascii_case_insensitive(fold)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&lits.list)
            .map(|a| (Self::Automaton(a), false))
            .map_err(|e| e.to_string())
    }

    /// The start and literal number of the leftmost-longest match.
    fn find(&self, hay: &[u8]) -> Option<(usize, usize)> {
        match self {
            Self::Packed(p) => p.find(hay).map(|m| (m.start(), m.pattern().as_usize())),
            Self::Automaton(a) => a.find(hay).map(|m| (m.start(), m.pattern().as_usize())),
        }
    }
}

/// One searcher over a [`Literals`] set.
#[derive(Debug)]
struct Automaton {
    search: Search,
    /// Per literal: the other literals that are prefixes of it (ASCII case-insensitively when
    /// folding).
    prefixes: Vec<Vec<usize>>,
    /// Added to the searcher's literal numbers.
    offset: usize,
    /// Searches an ASCII-lowercased copy of the haystack.
    lowercase: bool,
}

impl Automaton {
    fn new(lits: &Literals, fold: bool, offset: usize) -> Result<Option<Self>, String> {
        if lits.is_empty() {
            return Ok(None);
        }
        let (search, lowercase) = Search::new(lits, fold)?;
        let key = |b: &[u8]| {
            if fold {
                b.to_ascii_lowercase()
            } else {
                b.to_vec()
            }
        };
        let index: HashMap<Vec<u8>, Vec<usize>> =
            lits.list
                .iter()
                .enumerate()
                .fold(HashMap::new(), |mut m, (i, l)| {
                    m.entry(key(l)).or_default().push(i);
                    m
                });
        let prefixes = lits
            .list
            .iter()
            .enumerate()
            .map(|(i, l)| {
                (1..=l.len())
                    .filter_map(|n| index.get(&key(&l[..n])))
                    .flatten()
                    .copied()
                    .filter(|&j| j != i)
                    .collect()
            })
            .collect();
        Ok(Some(Self {
            search,
            prefixes,
            offset,
            lowercase,
        }))
    }

    fn scan(&self, hay: &[u8], found: &mut impl FnMut(usize)) {
        let mut pos = 0;
        while let Some((start, p)) = hay.get(pos..).and_then(|h| self.search.find(h)) {
            found(self.offset + p);
            for &q in &self.prefixes[p] {
                found(self.offset + q);
            }
            pos += start + 1;
        }
    }
}

/// Finds which literals occur in a line (see the module doc).
#[derive(Debug, Default)]
pub struct Scanner {
    exact: Option<Automaton>,
    folded: Option<Automaton>,
    /// The lowercased line, when `folded` needs it.
    lower: Vec<u8>,
}

impl Scanner {
    /// A scanner numbering `exact`'s literals first, then `folded`'s (matched ASCII
    /// case-insensitively).
    pub fn new(exact: &Literals, folded: &Literals) -> Result<Self, String> {
        Ok(Self {
            exact: Automaton::new(exact, false, 0)?,
            folded: Automaton::new(folded, true, exact.len())?,
            lower: Vec::new(),
        })
    }

    /// The number of case-insensitive literals.
    pub fn folded_len(&self) -> usize {
        self.folded.as_ref().map_or(0, |a| a.prefixes.len())
    }

    /// Calls `found` with the number of every literal that occurs in `hay` (at least once per
    /// literal, possibly more).
    pub fn scan(&mut self, hay: &[u8], mut found: impl FnMut(usize)) {
        if let Some(a) = &self.exact {
            a.scan(hay, &mut found);
        }
        if let Some(a) = &self.folded {
            if a.lowercase {
                self.lower.clear();
                self.lower.extend(hay.iter().map(u8::to_ascii_lowercase));
                a.scan(&self.lower, &mut found);
            } else {
                a.scan(hay, &mut found);
            }
        }
    }
}

/// The needles one of which occurs in every line `re` matches, or `None` when there is no such
/// set worth scanning for (the regex must then run on every line).
pub fn required(re: &regex::bytes::Regex) -> Option<Vec<Needle>> {
    let hir = regex_syntax::ParserBuilder::new()
        .utf8(false)
        .build()
        .parse(re.as_str())
        .ok()?;
    any_of(&hir).filter(|set| min_len(set) >= MIN_LEN)
}

fn min_len(set: &[Needle]) -> usize {
    set.iter().map(|n| n.bytes.len()).min().unwrap_or(0)
}

/// Higher is better: longer shortest needle, then fewer needles, then case-sensitive.
fn score(set: &[Needle]) -> (usize, std::cmp::Reverse<usize>, bool) {
    (
        min_len(set).min(16),
        std::cmp::Reverse(set.len()),
        set.iter().all(|n| !n.fold),
    )
}

/// The more selective of two required sets.
pub fn better(a: Option<Vec<Needle>>, b: Option<Vec<Needle>>) -> Option<Vec<Needle>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if score(&b) > score(&a) { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// A complete sequence from the extractor as needles; `None` when infinite, when it holds the
/// empty literal (every line would pass) or too many literals.
fn from_seq(seq: &Seq) -> Option<Vec<Needle>> {
    let lits = seq.literals()?;
    if lits.is_empty() || lits.len() > MAX_NEEDLES || lits.iter().any(|l| l.is_empty()) {
        return None;
    }
    let mut set: Vec<Needle> = lits
        .iter()
        .map(|l| Needle {
            bytes: l.as_bytes().to_vec(),
            fold: false,
        })
        .collect();
    set.sort();
    set.dedup();
    Some(set)
}

fn extracted(hir: &Hir) -> Option<Vec<Needle>> {
    let prefixes = from_seq(&Extractor::new().kind(ExtractKind::Prefix).extract(hir));
    let suffixes = from_seq(&Extractor::new().kind(ExtractKind::Suffix).extract(hir));
    better(prefixes, suffixes)
}

/// The best required set of `hir` (see the module doc).
fn any_of(hir: &Hir) -> Option<Vec<Needle>> {
    let structural = match hir.kind() {
        HirKind::Capture(c) => any_of(&c.sub),
        HirKind::Repetition(r) if r.min >= 1 => any_of(&r.sub),
        HirKind::Alternation(alts) => {
            let mut set = Vec::new();
            for alt in alts {
                set.extend(any_of(alt)?);
            }
            set.sort();
            set.dedup();
            (set.len() <= MAX_NEEDLES).then_some(set)
        }
        HirKind::Concat(parts) => concat(parts),
        _ => fixed(hir)
            .and_then(|(bytes, fold)| (!bytes.is_empty()).then_some(vec![Needle { bytes, fold }])),
    };
    better(structural, extracted(hir))
}

/// The best of a concatenation's parts: runs of adjacent fixed pieces joined into one needle,
/// and the required set of every other part.
fn concat(parts: &[Hir]) -> Option<Vec<Needle>> {
    let mut best = None;
    let mut run: Vec<u8> = Vec::new();
    let mut run_fold = false;
    let flush = |run: &mut Vec<u8>, fold: &mut bool, best: &mut Option<Vec<Needle>>| {
        if !run.is_empty() {
            if *fold {
                run.make_ascii_lowercase();
            }
            let needle = Needle {
                bytes: std::mem::take(run),
                fold: *fold,
            };
            *best = better(best.take(), Some(vec![needle]));
        }
        *fold = false;
    };
    for part in parts {
        match fixed(part) {
            Some((bytes, fold)) => {
                run.extend_from_slice(&bytes);
                run_fold |= fold;
            }
            None => {
                flush(&mut run, &mut run_fold, &mut best);
                best = better(best, any_of(part));
            }
        }
    }
    flush(&mut run, &mut run_fold, &mut best);
    best
}

/// The one string `hir` matches, up to ASCII case when the flag is set (a folded string is
/// ASCII-lowercased): literals, `(?i)` ASCII letters, zero-width assertions (the empty string)
/// and concatenations and groups of those.
fn fixed(hir: &Hir) -> Option<(Vec<u8>, bool)> {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Some((Vec::new(), false)),
        HirKind::Literal(lit) => Some((lit.0.to_vec(), false)),
        HirKind::Class(class) => folded_letter(class).map(|b| (vec![b], true)),
        HirKind::Capture(c) => fixed(&c.sub),
        HirKind::Concat(parts) => {
            let mut out = (Vec::new(), false);
            for part in parts {
                let (bytes, fold) = fixed(part)?;
                out.0.extend_from_slice(&bytes);
                out.1 |= fold;
            }
            if out.1 {
                out.0.make_ascii_lowercase();
            }
            Some(out)
        }
        _ => None,
    }
}

/// The lowercase letter of a class that holds exactly one ASCII letter in both cases.
fn folded_letter(class: &Class) -> Option<u8> {
    let pair: Vec<(u32, u32)> = match class {
        Class::Unicode(c) => c
            .ranges()
            .iter()
            .map(|r| (u32::from(r.start()), u32::from(r.end())))
            .collect(),
        Class::Bytes(c) => c
            .ranges()
            .iter()
            .map(|r| (u32::from(r.start()), u32::from(r.end())))
            .collect(),
    };
    match pair.as_slice() {
        [(a, a2), (b, b2)] if a == a2 && b == b2 => {
            let upper = u8::try_from(*a).ok()?;
            (upper.is_ascii_uppercase() && u32::from(upper.to_ascii_lowercase()) == *b)
                .then_some(upper.to_ascii_lowercase())
        }
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::logql::re2;
    use e2e_tests::Rng;

    fn needles(pattern: &str) -> Option<Vec<(String, bool)>> {
        let re = re2::compile_bytes(pattern).unwrap();
        required(&re).map(|set| {
            set.into_iter()
                .map(|n| (String::from_utf8_lossy(&n.bytes).into_owned(), n.fold))
                .collect()
        })
    }

    fn one(s: &str, fold: bool) -> Option<Vec<(String, bool)>> {
        Some(vec![(s.to_string(), fold)])
    }

    #[test]
    fn literals_every_match_contains() {
        assert_eq!(needles(r"attempt=6$"), one("attempt=6", false));
        assert_eq!(needles(r"^panic: "), one("panic: ", false));
        assert_eq!(needles(r"\d+ ERROR nova\.\w+"), one(" ERROR nova.", false));
        assert_eq!(needles(r"(?i)timed out"), one("timed out", true));
        assert_eq!(
            needles(r"(?i)Timed OUT after \d+s"),
            one("timed out after ", true)
        );
        assert_eq!(
            needles(r"(connection|socket) refused"),
            Some(vec![
                ("connection refused".into(), false),
                ("socket refused".into(), false)
            ])
        );
        assert_eq!(
            needles(r"(connection|socket)\w*refused"),
            one("refused", false),
            "the longer shortest needle wins"
        );
        assert_eq!(
            needles(r"(OutOfMemory|OOMKilled)"),
            Some(vec![
                ("OOMKilled".into(), false),
                ("OutOfMemory".into(), false)
            ])
        );
        let set = needles(r"x(?:abc){2,}y").unwrap();
        assert!(set.len() == 1 && set[0].0.contains("abcabc"), "{set:?}");
    }

    #[test]
    fn no_needles_where_a_match_needs_none() {
        for p in [
            r"a*",
            r"(foo|)",
            r"(foo)?b?",
            r".",
            r".+",
            r"^$",
            r"\w+",
            r"[a-z]{3,}",
            r"x|yz",
            r"(?i)k",
            r"",
        ] {
            assert_eq!(needles(p), None, "{p}");
        }
    }

    #[test]
    fn unicode_folding_is_not_ascii_folding() {
        // `(?i)k` also matches the Kelvin sign, which ASCII folding would miss: the class is
        // listed, not folded.
        let set = needles(r"(?i)kill").unwrap();
        assert!(
            set.iter().all(|(s, fold)| !s.contains('k') || !fold),
            "{set:?}"
        );
        let re = re2::compile_bytes(r"(?i)kill").unwrap();
        assert!(re.is_match("\u{212A}ILL".as_bytes()));
        assert!(holds(&required(&re), "\u{212A}ILL".as_bytes()));
    }

    /// Whether a needle of `set` (none: no filter) occurs in `line`.
    fn holds(set: &Option<Vec<Needle>>, line: &[u8]) -> bool {
        let Some(set) = set else {
            return true;
        };
        set.iter().any(|n| {
            if n.fold {
                line.to_ascii_lowercase()
                    .windows(n.bytes.len())
                    .any(|w| w == n.bytes.as_slice())
            } else {
                memchr::memmem::find(line, &n.bytes).is_some()
            }
        })
    }

    const ATOMS: &[&str] = &[
        "a", "b", "ab", "ba", "K", "k", "é", "\\.", ".", "\\d", "\\w", "\\s", "[ab]", "[^a]",
        "[a-c]", "\\b", "^", "$", "x", "ERR", "err", " ",
    ];

    /// A random Go regex over a small alphabet: groups, alternations (empty branches too),
    /// repetitions, classes, anchors and `(?i)` sections.
    pub(crate) fn random_regex(rng: &mut Rng, depth: usize) -> String {
        let n = 1 + rng.below(4);
        let mut out = String::new();
        for _ in 0..n {
            let mut atom = if depth < 3 && rng.below(4) == 0 {
                let alts = 1 + rng.below(3);
                let body: Vec<String> = (0..alts)
                    .map(|_| {
                        if rng.below(6) == 0 {
                            String::new()
                        } else {
                            random_regex(rng, depth + 1)
                        }
                    })
                    .collect();
                let flags = ["(", "(?:", "(?i:", "(?-i:"][rng.below(4)];
                format!("{flags}{})", body.join("|"))
            } else {
                ATOMS[rng.below(ATOMS.len())].to_string()
            };
            if !matches!(atom.as_str(), "^" | "$" | "\\b") {
                atom.push_str(["", "", "", "*", "+", "?", "{2}", "{0,2}", "{1,3}"][rng.below(9)]);
            }
            out.push_str(&atom);
        }
        if depth == 0 && rng.below(3) == 0 {
            out.insert_str(0, "(?i)");
        }
        out
    }

    pub(crate) fn random_line(rng: &mut Rng) -> Vec<u8> {
        const PIECES: &[&str] = &[
            "a", "b", "A", "B", "k", "K", "\u{212A}", "é", "É", ".", "1", " ", "x", "X", "err",
            "ERR", "Err", "ab", "BA",
        ];
        let n = rng.below(12);
        (0..n)
            .flat_map(|_| PIECES[rng.below(PIECES.len())].bytes())
            .collect()
    }

    #[test]
    fn every_match_contains_a_needle() {
        let mut rng = Rng::new(0x5eed_0020);
        let mut filtered = 0;
        for case in 0..3000 {
            let pattern = random_regex(&mut rng, 0);
            let Ok(re) = re2::compile_bytes(&pattern) else {
                continue;
            };
            let set = required(&re);
            filtered += usize::from(set.is_some());
            for _ in 0..40 {
                let line = random_line(&mut rng);
                if re.is_match(&line) {
                    assert!(
                        holds(&set, &line),
                        "case {case}: {pattern:?} matches {:?} without any of {set:?}",
                        String::from_utf8_lossy(&line),
                    );
                }
            }
        }
        // The generator must exercise the filter, not only the `None` path.
        assert!(filtered > 300, "only {filtered} regexes had needles");
    }

    fn scanned(scanner: &mut Scanner, hay: &str) -> Vec<usize> {
        let mut found = Vec::new();
        scanner.scan(hay.as_bytes(), |p| found.push(p));
        found.sort();
        found.dedup();
        found
    }

    #[test]
    fn scanner_finds_overlapping_and_nested_literals() {
        let mut exact = Literals::default();
        for l in ["error", "Reconciler error", "err", "rror code", "code"] {
            exact.id(l.as_bytes());
        }
        let mut folded = Literals::default();
        folded.id(b"timed out");
        folded.id(b"timed");
        let mut s = Scanner::new(&exact, &folded).unwrap();
        assert_eq!(
            scanned(&mut s, "Reconciler error code"),
            vec![0, 1, 2, 3, 4]
        );
        assert_eq!(scanned(&mut s, "ERROR code; TIMED OUT"), vec![4, 5, 6]);
        assert_eq!(scanned(&mut s, "nothing"), Vec::<usize>::new());
    }

    #[test]
    fn scanner_reports_what_a_naive_search_finds() {
        let mut rng = Rng::new(0x5eed_0022);
        let mut large = (0, 0);
        for case in 0..400 {
            let (mut exact, mut folded) = (Literals::default(), Literals::default());
            // Many literals in some cases, to exercise the automaton above PACKED_MAX.
            let n = if case % 10 == 0 {
                400
            } else {
                1 + rng.below(8)
            };
            for _ in 0..n {
                let l = random_line(&mut rng);
                if l.is_empty() {
                    continue;
                }
                if rng.below(3) == 0 {
                    folded.id(&l.to_ascii_lowercase());
                } else {
                    exact.id(&l[..l.len().min(1 + rng.below(4))]);
                }
            }
            large.0 += usize::from(exact.len() > PACKED_MAX);
            large.1 += usize::from(folded.len() > PACKED_MAX);
            let mut scanner = Scanner::new(&exact, &folded).unwrap();
            for _ in 0..30 {
                let line = random_line(&mut rng);
                let lower = line.to_ascii_lowercase();
                let mut want: Vec<usize> = exact
                    .list
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| memchr::memmem::find(&line, l).is_some())
                    .map(|(i, _)| i)
                    .collect();
                want.extend(
                    folded
                        .list
                        .iter()
                        .enumerate()
                        .filter(|(_, l)| memchr::memmem::find(&lower, l).is_some())
                        .map(|(i, _)| exact.len() + i),
                );
                let mut got = Vec::new();
                scanner.scan(&line, |p| got.push(p));
                got.sort();
                got.dedup();
                assert_eq!(
                    got,
                    want,
                    "case {case}: {:?}",
                    String::from_utf8_lossy(&line)
                );
            }
        }
        assert!(
            large.0 > 0 && large.1 > 0,
            "the automata were not exercised: {large:?}"
        );
    }
}
