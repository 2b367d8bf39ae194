//! Turning lines into counters: [`Rules`], the rule engine behind the [`LineSink`] seam
//! ([`crate::sink`]).
//!
//! [`Rules`] evaluates LogQL-style rules ([`crate::logql`]): selectors are resolved once per
//! source (a bit per rule), all literal line filters of all rules are found in one scan
//! ([`crate::prefilter::Scanner`]), and only rules whose anchor occurs in the line (or that have
//! none) are examined further, so a line costs one scan whatever the number of rules; a rule's
//! regexes run only on those candidates. A rule's anchor is its first `|=` literal or, for a
//! rule without one, the literals one of which every match of its `|~` regex contains
//! ([`crate::prefilter::required`]). A rule whose regex can match without any literal is
//! examined on every line. Counter values are exported and restored as
//! [`SeriesValue`]s so they are saved atomically with the file offsets.
//!
//! Cardinality is bounded per rule: past `max_series` label combinations, counts go to a single
//! `{rule="…",overflow="true"}` series. A rule's series for every source its selector matches
//! start at 0 as soon as the source is seen (within the budget), so `increase()` sees the first
//! match.
//!
//! Rules of a tenant ([`crate::tenants`]) carry a [`crate::config::Binding`]: its namespaces are
//! ANDed into the rule's selector when a source is resolved (the source's `namespace` label
//! comes from the pod log path, not from the rule), and its series budget is shared by all the
//! tenant's rules, past which new label sets go to the rule's overflow series and the tenant's
//! overflow counter grows. Rules are identified by tenant and name.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::alloc::Sparse;

use crate::config::{Rule, RuleType, DEFAULT_BUCKETS};
use crate::format::Stream;
use crate::logql::{cut, pipeline, Filter, FilterOp, Matcher, Stage, ERROR_LABEL};
use crate::prefilter::{self, Literals, Scanner};
use crate::sink::{
    BuildError, Labels, Line, LineSink, Num, NumKind, RuleInfo, SeriesValue, SourceId,
    TENANT_OVERFLOW, UNWRAP_ERRORS,
};

type SetId = usize;

struct CompiledRule {
    name: String,
    tenant: String,
    /// Namespaces of the tenant's binding; `None`: every source (the platform's rules).
    scope: Option<Vec<String>>,
    /// Index into [`Rules::budgets`] (tenant rules).
    budget: Option<usize>,
    metric: Option<String>,
    keep: Option<Vec<String>>,
    info: RuleInfo,
    /// Selector matchers on source labels (resolved per source).
    matchers: Vec<Matcher>,
    /// Matchers on `stream` (tested per line).
    stream: Vec<Matcher>,
    /// Automaton patterns that must occur (`|=`) / must not occur (`!=`).
    required: Vec<usize>,
    forbidden: Vec<usize>,
    /// `|~` (true) and `!~` (false) regexes.
    regexes: Vec<(bool, regex::bytes::Regex)>,
    /// Other line filters (`|>`, `!>`, `!= ""`), tested after the regexes.
    others: Vec<Filter>,
    /// The stages after the line filters ([`crate::logql::pipeline`]), and the extracted labels
    /// the series carry.
    stages: Vec<Stage>,
    extract: Vec<String>,
    /// `| unwrap` rules (the field is a stage): what to do with its number, and the series'
    /// numbers.
    num: Option<Num>,
    nums: HashMap<SetId, Num>,
    overflow_num: Option<Num>,
    unwrap_errors: u64,
    /// Index into [`Rules::classes`].
    class: usize,
    max_series: usize,
    counts: HashMap<SetId, u64>,
    overflow: u64,
}

/// A tenant's series budget, shared by its rules.
#[derive(Debug, Clone)]
struct Budget {
    tenant: String,
    limit: usize,
    used: usize,
    /// Lines counted into an overflow series of the tenant's rules.
    overflowed: u64,
}

impl Budget {
    fn has_room(budget: Option<&Budget>) -> bool {
        budget.is_none_or(|b| b.used < b.limit)
    }

    fn take(budget: Option<&mut Budget>) {
        if let Some(b) = budget {
            b.used += 1;
        }
    }

    fn overflow(budget: Option<&mut Budget>, n: u64) {
        if let Some(b) = budget {
            b.overflowed += n;
        }
    }
}

impl CompiledRule {
    /// Whether a new series fits in the rule's and its tenant's budgets.
    fn room(&self, budget: Option<&Budget>) -> bool {
        self.counts.len() < self.max_series && Budget::has_room(budget)
    }

    fn add(&mut self, set: SetId, n: u64, budget: Option<&mut Budget>) {
        if let Some(v) = self.counts.get_mut(&set) {
            *v += n;
        } else if self.room(budget.as_deref()) {
            self.counts.insert(set, n);
            Budget::take(budget);
        } else {
            self.overflow += n;
            Budget::overflow(budget, n);
        }
    }

    /// Adds one observation of `x` to series `set` (or the overflow series: past the budget,
    /// or `None`, a label set never interned).
    fn observe(&mut self, set: Option<SetId>, x: f64, budget: Option<&mut Budget>) {
        let Some(proto) = &self.num else {
            return;
        };
        let room = self.room(budget.as_deref());
        let Some(set) = set else {
            self.overflow += 1;
            Budget::overflow(budget, 1);
            self.overflow_num
                .get_or_insert_with(|| proto.clone())
                .observe(x);
            return;
        };
        if let Some(c) = self.counts.get_mut(&set) {
            *c += 1;
        } else if room {
            self.counts.insert(set, 1);
            Budget::take(budget);
        } else {
            self.overflow += 1;
            Budget::overflow(budget, 1);
            self.overflow_num
                .get_or_insert_with(|| proto.clone())
                .observe(x);
            return;
        }
        self.nums
            .entry(set)
            .or_insert_with(|| proto.clone())
            .observe(x);
    }

    /// The numbers of series `set` (zero when none observed yet).
    fn num_of(&self, set: Option<SetId>) -> Option<Num> {
        let proto = self.num.as_ref()?;
        let got = match set {
            Some(s) => self.nums.get(&s),
            None => self.overflow_num.as_ref(),
        };
        Some(got.unwrap_or(proto).clone())
    }

    /// Creates the series at 0 if the budget allows (not for rules with extracted labels, whose
    /// values cannot be known in advance).
    fn zero(&mut self, set: SetId, budget: Option<&mut Budget>) {
        let gauge = self.num.as_ref().is_some_and(|n| n.kind == NumKind::Gauge);
        if self.extract.is_empty()
            && !gauge
            && !self.counts.contains_key(&set)
            && self.room(budget.as_deref())
        {
            self.counts.insert(set, 0);
            Budget::take(budget);
        }
    }

    /// Whether the rule may see a source with these labels at all (its tenant's namespaces).
    fn in_scope(&self, labels: &Labels) -> bool {
        self.scope.as_ref().is_none_or(|scope| {
            let ns = labels
                .iter()
                .find(|(k, _)| k == "namespace")
                .map_or("", |(_, v)| v.as_str());
            scope.iter().any(|s| s == ns)
        })
    }
}

/// A registered source: which rules select it and its label set per projection class.
struct SourceEntry {
    /// False once forgotten (its slot is free for the next new source).
    live: bool,
    labels: Labels,
    /// Bit per rule.
    selected: Vec<u64>,
    any: bool,
    /// Label set id per projection class.
    projected: Vec<SetId>,
}

fn bit(bits: &[u64], i: usize) -> bool {
    bits.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

fn intern(sets: &mut Vec<Labels>, index: &mut HashMap<Labels, SetId>, labels: Labels) -> SetId {
    if let Some(&id) = index.get(&labels) {
        return id;
    }
    let id = sets.len();
    sets.push(labels.clone());
    index.insert(labels, id);
    id
}

/// Runs a rule's stages on a line that passed its line filters, with the source's labels
/// (and `stream`) as the stream labels; returns the series labels (`base` plus the rule's
/// extracted labels: an extracted label named like a source label is `<name>_extracted`, as
/// Loki names it, while a `| label_format` onto a source label's name replaces that label, as
/// in Loki) and the unwrapped field: `None` when the stages drop the line, `Some(None)`
/// for the number when the field is absent (the line is not one the rule measures),
/// `Some(Some(None))` when it is not a number or the line carries `__error__`.
fn extracted_series(
    rule: &CompiledRule,
    source: &Labels,
    stream: Stream,
    base: &Labels,
    message: &[u8],
) -> Option<(Labels, Option<Option<f64>>)> {
    let processed = if stream == Stream::None || source.iter().any(|(k, _)| k == "stream") {
        pipeline::run(&rule.stages, source, message)?
    } else {
        let mut full = source.clone();
        full.push(("stream".to_string(), stream.as_str().to_string()));
        pipeline::run(&rule.stages, &full, message)?
    };
    let mut labels = base.clone();
    for name in &rule.extract {
        let stream_value = source
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str());
        let key = match stream_value {
            // `| label_format name=...` replaced the stream label itself (no `_extracted`).
            Some(v)
                if processed.get(&format!("{name}_extracted")).is_none()
                    && processed.get(name) != Some(v) =>
            {
                let value = cut(processed.get(name).unwrap_or("")).to_string();
                match labels.iter_mut().find(|(k, _)| k == name) {
                    Some(l) => l.1 = value,
                    None => labels.push((name.clone(), value)),
                }
                continue;
            }
            Some(_) => format!("{name}_extracted"),
            None => name.clone(),
        };
        let value = cut(processed.get(&key).unwrap_or("")).to_string();
        labels.push((key, value));
    }
    let number = processed
        .value
        .map(|x| x.filter(|x| x.is_finite() && processed.get(ERROR_LABEL).is_none()));
    Some((labels, number))
}

/// The needles of the most selective `|~` regex of a rule (empty: none has a required set).
fn regex_needles(regexes: &[(bool, regex::bytes::Regex)]) -> Vec<prefilter::Needle> {
    regexes
        .iter()
        .filter(|(want, _)| *want)
        .map(|(_, re)| prefilter::required(re))
        .fold(None, prefilter::better)
        .unwrap_or_default()
}

/// The rule engine (see the module doc).
pub struct Rules {
    rules: Vec<CompiledRule>,
    /// Series budgets of the tenants with rules in force.
    budgets: Vec<Budget>,
    /// The literals, case-sensitive ones first: pattern ids index `anchored` and `hit`.
    scanner: Scanner,
    /// Per pattern: rules it anchors.
    anchored: Vec<Vec<usize>>,
    /// Rules without an anchor: candidates on every line.
    unanchored: Vec<usize>,
    /// Generation stamp per rule: already examined for the current line (a rule anchored on
    /// several needles is examined once).
    seen: Vec<u32>,
    /// Distinct `keep_labels` lists; `None` keeps every source label.
    classes: Vec<Option<Vec<String>>>,
    sets: Vec<Labels>,
    set_index: HashMap<Labels, SetId>,
    sources: Vec<SourceEntry>,
    source_index: HashMap<Labels, SourceId>,
    /// Slots of forgotten sources and freed label sets, reused first.
    free_sources: Vec<SourceId>,
    free_sets: Vec<SetId>,
    /// Series labels (without extracted labels) no live source projects, since when.
    orphaned: HashMap<Labels, Instant>,
    /// Generation stamp per pattern: hit in the current line when equal to `generation`.
    hit: Vec<u32>,
    generation: u32,
    hits: Vec<usize>,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field("rules", &self.rules.len())
            .field("sources", &self.sources.len())
            .finish()
    }
}

impl Rules {
    /// Compiles `rules` (already validated by [`crate::config::validate`]).
    pub fn new(rules: &[Rule]) -> Result<Self, BuildError> {
        let mut r = Self {
            rules: Vec::new(),
            budgets: Vec::new(),
            scanner: Scanner::default(),
            anchored: Vec::new(),
            unanchored: Vec::new(),
            seen: Vec::new(),
            classes: Vec::new(),
            sets: Vec::new(),
            set_index: HashMap::new(),
            sources: Vec::new(),
            source_index: HashMap::new(),
            free_sources: Vec::new(),
            free_sets: Vec::new(),
            orphaned: HashMap::new(),
            hit: Vec::new(),
            generation: 0,
            hits: Vec::new(),
        };
        r.install(rules)?;
        Ok(r)
    }

    /// Replaces the rules. Values of rules that keep their name, metric and kept labels
    /// continue; new rules start at 0 on every known source. On error nothing changes.
    pub fn install(&mut self, rules: &[Rule]) -> Result<(), BuildError> {
        let mut patterns = Literals::default();
        let mut folded = Literals::default();
        // Per rule: its anchor needles as (folded, index in `patterns` or `folded`).
        let mut anchors: Vec<Vec<(bool, usize)>> = Vec::with_capacity(rules.len());
        let mut classes: Vec<Option<Vec<String>>> = Vec::new();
        let mut compiled = Vec::with_capacity(rules.len());
        let mut budgets: Vec<Budget> = Vec::new();
        for rule in rules {
            let budget = rule.binding.as_ref().map(|b| {
                match budgets.iter().position(|x| x.tenant == b.tenant) {
                    Some(i) => i,
                    None => {
                        budgets.push(Budget {
                            tenant: b.tenant.clone(),
                            limit: b.max_series,
                            used: 0,
                            overflowed: 0,
                        });
                        budgets.len() - 1
                    }
                }
            });
            let expr = rule.expression();
            let (stream, matchers): (Vec<_>, Vec<_>) =
                expr.matchers.into_iter().partition(|m| m.name == "stream");
            let mut c = CompiledRule {
                name: rule.name.clone(),
                tenant: rule.tenant().to_string(),
                scope: rule.binding.as_ref().map(|b| b.namespaces.clone()),
                budget,
                metric: rule.metric.clone(),
                keep: rule.keep_labels.clone(),
                info: RuleInfo {
                    tenant: rule.tenant().to_string(),
                    rule: rule.name.clone(),
                    alert: rule.alert,
                    severity: rule.severity.as_str(),
                },
                matchers,
                stream,
                required: Vec::new(),
                forbidden: Vec::new(),
                regexes: Vec::new(),
                others: Vec::new(),
                stages: expr.stages,
                extract: rule.labels.clone(),
                num: expr.unwrap.as_ref().map(|_| {
                    let kind = match rule.kind {
                        RuleType::Counter => NumKind::Sum,
                        RuleType::Gauge => NumKind::Gauge,
                        RuleType::Histogram => NumKind::Histogram,
                    };
                    let bounds = rule.buckets.clone().unwrap_or(DEFAULT_BUCKETS.to_vec());
                    Num::new(kind, &bounds)
                }),
                nums: HashMap::new(),
                overflow_num: None,
                unwrap_errors: 0,
                class: 0,
                max_series: rule.max_series,
                counts: HashMap::new(),
                overflow: 0,
            };
            for f in expr.filters {
                match (f.op, f.regex.clone()) {
                    // `|= ""` holds for every line, `!= ""` for none (Loki's meaning).
                    (FilterOp::Contains, _) if f.value.is_empty() => {}
                    (FilterOp::Contains, _) => c.required.push(patterns.id(f.value.as_bytes())),
                    (FilterOp::NotContains, _) if !f.value.is_empty() => {
                        c.forbidden.push(patterns.id(f.value.as_bytes()))
                    }
                    (FilterOp::Matches, Some(re)) => c.regexes.push((true, re)),
                    (FilterOp::NotMatches, Some(re)) => c.regexes.push((false, re)),
                    _ => c.others.push(f),
                }
            }
            anchors.push(match c.required.first() {
                Some(&p) => vec![(false, p)],
                None => regex_needles(&c.regexes)
                    .into_iter()
                    .map(|n| match n.fold {
                        true => (true, folded.id(&n.bytes)),
                        false => (false, patterns.id(&n.bytes)),
                    })
                    .collect(),
            });
            c.class = match classes.iter().position(|k| *k == rule.keep_labels) {
                Some(i) => i,
                None => {
                    classes.push(rule.keep_labels.clone());
                    classes.len() - 1
                }
            };
            compiled.push(c);
        }
        let base = patterns.len();
        let total = base + folded.len();
        let scanner = Scanner::new(&patterns, &folded).map_err(BuildError)?;
        let mut anchored = vec![Vec::new(); total];
        let mut unanchored = Vec::new();
        for (i, anchor) in anchors.iter().enumerate() {
            if anchor.is_empty() {
                unanchored.push(i);
            }
            for &(fold, p) in anchor {
                anchored[if fold { base + p } else { p }].push(i);
            }
        }
        let old = self.values();
        self.seen = vec![0; compiled.len()];
        self.rules = compiled;
        self.budgets = budgets;
        self.scanner = scanner;
        self.anchored = anchored;
        self.unanchored = unanchored;
        self.classes = classes;
        self.hit = vec![0; total];
        self.generation = 0;
        self.restore(&old);
        for id in 0..self.sources.len() {
            if self.sources[id].live {
                self.resolve(id);
            }
        }
        Ok(())
    }

    fn intern_set(&mut self, labels: Labels) -> SetId {
        if self.set_index.contains_key(&labels) {
            return intern(&mut self.sets, &mut self.set_index, labels);
        }
        match self.free_sets.pop() {
            Some(id) => {
                self.sets[id] = labels.clone();
                self.set_index.insert(labels, id);
                id
            }
            None => intern(&mut self.sets, &mut self.set_index, labels),
        }
    }

    /// Gives back the memory of maps and lists that pod churn left mostly empty: the free
    /// slots at the end of the source and label set lists go (slots are reused lowest
    /// first, so the live ones gather at the front).
    fn shrink_maps(&mut self) {
        while self.sources.last().is_some_and(|e| !e.live) {
            self.sources.pop();
        }
        let free: HashSet<SetId> = self.free_sets.iter().copied().collect();
        while self
            .sets
            .len()
            .checked_sub(1)
            .is_some_and(|i| free.contains(&i))
        {
            self.sets.pop();
        }
        let (n_sources, n_sets) = (self.sources.len(), self.sets.len());
        self.free_sources.retain(|&id| id < n_sources);
        self.free_sets.retain(|&id| id < n_sets);
        self.sources.shrink_if_sparse();
        self.sets.shrink_if_sparse();
        self.free_sources.shrink_if_sparse();
        self.free_sets.shrink_if_sparse();
        self.source_index.shrink_if_sparse();
        self.set_index.shrink_if_sparse();
        self.orphaned.shrink_if_sparse();
        for r in &mut self.rules {
            r.counts.shrink_if_sparse();
            r.nums.shrink_if_sparse();
        }
    }

    /// Forgets the sources not in `live` (their files are all gone), so that the list of
    /// sources follows the pods there are, not every pod ever seen. Returns the label sets
    /// they projected.
    fn forget_sources(&mut self, live: &[SourceId]) -> HashSet<SetId> {
        let live: HashSet<SourceId> = live.iter().copied().collect();
        let mut projected = HashSet::new();
        for (id, e) in self.sources.iter_mut().enumerate() {
            if e.live && !live.contains(&id) {
                self.source_index.remove(&e.labels);
                projected.extend(e.projected.iter().copied());
                *e = SourceEntry {
                    live: false,
                    labels: Labels::new(),
                    selected: Vec::new(),
                    any: false,
                    projected: Vec::new(),
                };
                self.free_sources.push(id);
            }
        }
        // Popped lowest first.
        self.free_sources.sort_unstable_by(|a, b| b.cmp(a));
        projected
    }

    /// The labels of series `set` of rule `r` without the rule's extracted labels (appended
    /// last): the projected labels of the sources that count into it.
    fn base_labels<'a>(&'a self, r: &CompiledRule, set: SetId) -> &'a [(String, String)] {
        let labels = self.sets.get(set).map_or(&[][..], Vec::as_slice);
        &labels[..labels.len().saturating_sub(r.extract.len())]
    }

    /// Frees label sets no rule counts into and no live source projects.
    fn free_unused_sets(&mut self, candidates: HashSet<SetId>) {
        let used: HashSet<SetId> = self
            .rules
            .iter()
            .flat_map(|r| r.counts.keys().copied())
            .chain(
                self.sources
                    .iter()
                    .filter(|e| e.live)
                    .flat_map(|e| e.projected.iter().copied()),
            )
            .collect();
        for set in candidates {
            if !used.contains(&set) {
                if let Some(labels) = self.sets.get_mut(set) {
                    self.set_index.remove(labels);
                    *labels = Labels::new();
                    self.free_sets.push(set);
                }
            }
        }
        // Popped lowest first.
        self.free_sets.sort_unstable_by(|a, b| b.cmp(a));
    }

    /// Resolves the selectors and projections of source `id` and zero-initialises its series.
    fn resolve(&mut self, id: SourceId) {
        let labels = self.sources[id].labels.clone();
        let get = |name: &str| {
            labels
                .iter()
                .find(|(k, _)| k == name)
                .map_or("", |(_, v)| v.as_str())
        };
        let mut selected = vec![0u64; self.rules.len().div_ceil(64)];
        for (i, r) in self.rules.iter().enumerate() {
            if r.in_scope(&labels) && r.matchers.iter().all(|m| m.matches(get(&m.name))) {
                selected[i / 64] |= 1 << (i % 64);
            }
        }
        let projected: Vec<SetId> = self
            .classes
            .clone()
            .iter()
            .map(|keep| {
                let l: Labels = match keep {
                    None => labels.clone(),
                    Some(k) => labels
                        .iter()
                        .filter(|(n, _)| k.contains(n))
                        .cloned()
                        .collect(),
                };
                self.intern_set(l)
            })
            .collect();
        for (i, r) in self.rules.iter_mut().enumerate() {
            if bit(&selected, i) {
                let budget = r.budget.and_then(|b| self.budgets.get_mut(b));
                r.zero(projected[r.class], budget);
            }
        }
        let e = &mut self.sources[id];
        e.any = selected.iter().any(|w| *w != 0);
        e.selected = selected;
        e.projected = projected;
    }
}

impl LineSink for Rules {
    fn source(&mut self, labels: &Labels) -> SourceId {
        if let Some(&id) = self.source_index.get(labels) {
            // A source seen again (a new file of the pod) gets back its zero series if they
            // were dropped while it had no file (`retain_sources`).
            self.resolve(id);
            return id;
        }
        let entry = SourceEntry {
            live: true,
            labels: labels.clone(),
            selected: Vec::new(),
            any: false,
            projected: Vec::new(),
        };
        let id = match self.free_sources.pop() {
            Some(id) => {
                self.sources[id] = entry;
                id
            }
            None => {
                self.sources.push(entry);
                self.sources.len() - 1
            }
        };
        self.source_index.insert(labels.clone(), id);
        self.resolve(id);
        id
    }

    fn on_line(&mut self, source: SourceId, line: &Line<'_>) {
        let Some(src) = self.sources.get(source) else {
            return;
        };
        if !src.any {
            return;
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.hit.iter_mut().for_each(|h| *h = 0);
            self.seen.iter_mut().for_each(|h| *h = 0);
            self.generation = 1;
        }
        let generation = self.generation;
        self.hits.clear();
        let (hit, hits) = (&mut self.hit, &mut self.hits);
        self.scanner.scan(line.message, |p| {
            if hit[p] != generation {
                hit[p] = generation;
                hits.push(p);
            }
        });
        let hit = &self.hit;
        let stream = line.stream.as_str();
        let candidates = self
            .hits
            .iter()
            .flat_map(|&p| self.anchored[p].iter())
            .chain(self.unanchored.iter());
        for &i in candidates {
            if !bit(&src.selected, i) || self.seen[i] == generation {
                continue;
            }
            self.seen[i] = generation;
            let r = &mut self.rules[i];
            let budget = r.budget.and_then(|b| self.budgets.get_mut(b));
            let ok = r.required.iter().all(|&p| hit[p] == generation)
                && r.forbidden.iter().all(|&p| hit[p] != generation)
                && r.stream.iter().all(|m| m.matches(stream))
                && r.regexes
                    .iter()
                    .all(|(want, re)| re.is_match(line.message) == *want)
                && r.others.iter().all(|f| f.test(line.message));
            if !ok {
                continue;
            }
            let set = src.projected[r.class];
            if r.stages.is_empty() {
                r.add(set, 1, budget);
            } else if let Some((labels, number)) =
                extracted_series(r, &src.labels, line.stream, &self.sets[set], line.message)
            {
                // A label set is interned only while the rule has budget left, so values past
                // it cost no memory.
                let set = match self.set_index.get(&labels) {
                    Some(&id) => Some(id),
                    None if r.room(budget.as_deref()) => {
                        Some(intern(&mut self.sets, &mut self.set_index, labels))
                    }
                    None => None,
                };
                match (&r.num, number) {
                    (None, _) => match set {
                        Some(set) => r.add(set, 1, budget),
                        None => {
                            r.overflow += 1;
                            Budget::overflow(budget, 1);
                        }
                    },
                    (Some(_), Some(Some(x))) => r.observe(set, x, budget),
                    (Some(_), Some(None)) => r.unwrap_errors += 1,
                    (Some(_), None) => {}
                }
            }
        }
    }

    fn values(&self) -> Vec<SeriesValue> {
        let mut out = Vec::new();
        for rule in &self.rules {
            let mut series: Vec<_> = rule
                .counts
                .iter()
                .map(|(&set, &value)| SeriesValue {
                    tenant: rule.tenant.clone(),
                    rule: rule.name.clone(),
                    labels: self.sets.get(set).cloned().unwrap_or_default(),
                    overflow: false,
                    value,
                    metric: rule.metric.clone(),
                    num: rule.num_of(Some(set)),
                })
                .collect();
            series.sort_by(|a, b| a.labels.cmp(&b.labels));
            out.extend(series);
            if rule.overflow > 0 {
                out.push(SeriesValue {
                    tenant: rule.tenant.clone(),
                    rule: rule.name.clone(),
                    labels: Vec::new(),
                    overflow: true,
                    value: rule.overflow,
                    metric: rule.metric.clone(),
                    num: rule.num_of(None),
                });
            }
            if rule.num.is_some() {
                out.push(SeriesValue {
                    tenant: rule.tenant.clone(),
                    rule: rule.name.clone(),
                    labels: Vec::new(),
                    overflow: false,
                    value: rule.unwrap_errors,
                    metric: Some(UNWRAP_ERRORS.to_string()),
                    num: None,
                });
            }
        }
        for b in &self.budgets {
            out.push(SeriesValue {
                tenant: b.tenant.clone(),
                rule: String::new(),
                labels: Vec::new(),
                overflow: false,
                value: b.overflowed,
                metric: Some(TENANT_OVERFLOW.to_string()),
                num: None,
            });
        }
        out
    }

    /// Values whose rule is gone, counts into another metric or has labels the rule no longer
    /// keeps are dropped (that rule's series start again at 0).
    fn restore(&mut self, values: &[SeriesValue]) {
        for v in values {
            if v.metric.as_deref() == Some(TENANT_OVERFLOW) {
                if let Some(b) = self.budgets.iter_mut().find(|b| b.tenant == v.tenant) {
                    b.overflowed += v.value;
                }
                continue;
            }
            if v.metric.as_deref() == Some(UNWRAP_ERRORS) {
                if let Some(r) = self
                    .rules
                    .iter_mut()
                    .find(|r| r.name == v.rule && r.tenant == v.tenant && r.num.is_some())
                {
                    r.unwrap_errors += v.value;
                }
                continue;
            }
            let Some(i) = self
                .rules
                .iter()
                .position(|r| r.name == v.rule && r.tenant == v.tenant && r.metric == v.metric)
            else {
                continue;
            };
            if self.rules[i].num.is_some() != v.num.is_some() {
                continue;
            }
            if v.overflow {
                let r = &mut self.rules[i];
                if let (Some(proto), Some(saved)) = (&r.num, &v.num) {
                    let mut n = r.overflow_num.take().unwrap_or_else(|| proto.clone());
                    if !n.merge(saved) {
                        r.overflow_num = Some(n);
                        continue;
                    }
                    r.overflow_num = Some(n);
                }
                // Carried over, not new overflow: the tenant's counter has its own saved value.
                r.overflow += v.value;
                continue;
            }
            let r = &self.rules[i];
            let allowed = |k: &str| {
                let extracted = r
                    .extract
                    .iter()
                    .any(|e| k == e || k.strip_suffix("_extracted") == Some(e.as_str()));
                extracted
                    || r.keep
                        .as_ref()
                        .is_none_or(|keep| keep.iter().any(|x| x == k))
            };
            // A tenant whose namespaces shrank loses the series of the namespaces it lost.
            let lost_namespace =
                v.labels.iter().any(|(k, _)| k == "namespace") && !r.in_scope(&v.labels);
            if !v.labels.iter().all(|(k, _)| allowed(k)) || lost_namespace {
                continue;
            }
            let set = self.intern_set(v.labels.clone());
            let r = &mut self.rules[i];
            let mut budget = r.budget.and_then(|b| self.budgets.get_mut(b));
            if let (Some(proto), Some(saved)) = (&r.num, &v.num) {
                let known = r.counts.contains_key(&set);
                if !known && !r.room(budget.as_deref()) {
                    // Past the budget now: into the overflow series.
                    let mut n = r.overflow_num.take().unwrap_or_else(|| proto.clone());
                    if n.merge(saved) {
                        r.overflow += v.value;
                    }
                    r.overflow_num = Some(n);
                    continue;
                }
                let mut n = r.nums.remove(&set).unwrap_or_else(|| proto.clone());
                let ok = n.merge(saved);
                r.nums.insert(set, n);
                if !ok {
                    continue;
                }
            }
            // Restored values past a budget go to the overflow series, but are not new
            // overflow for the tenant's counter.
            if r.counts.contains_key(&set) || r.room(budget.as_deref()) {
                r.add(set, v.value, budget.take());
            } else {
                r.overflow += v.value;
            }
        }
    }

    fn retain_sources(&mut self, live: &[SourceId]) {
        let forgotten = self.forget_sources(live);
        let mut dropped = false;
        for (i, r) in self.rules.iter_mut().enumerate() {
            if !r.counts.values().any(|&v| v == 0) {
                continue;
            }
            let keep: HashSet<SetId> = live
                .iter()
                .filter_map(|&id| self.sources.get(id))
                .filter(|e| bit(&e.selected, i))
                .filter_map(|e| e.projected.get(r.class).copied())
                .collect();
            let before = r.counts.len();
            r.counts.retain(|set, v| *v > 0 || keep.contains(set));
            let gone = before - r.counts.len();
            if gone > 0 {
                dropped = true;
                let counts = &r.counts;
                r.nums.retain(|set, _| counts.contains_key(set));
                if let Some(b) = r.budget.and_then(|b| self.budgets.get_mut(b)) {
                    b.used = b.used.saturating_sub(gone);
                }
            }
        }
        // Room was made: live sources that found none get their zero series now.
        if dropped {
            for &id in live {
                if id < self.sources.len() {
                    self.resolve(id);
                }
            }
        }
        if !forgotten.is_empty() {
            self.free_unused_sets(forgotten);
        }
    }

    fn expire_series(&mut self, live: &[SourceId], retention: Duration, now: Instant) -> usize {
        let projected: HashSet<&Labels> = live
            .iter()
            .filter_map(|&id| self.sources.get(id))
            .filter(|e| e.live)
            .flat_map(|e| e.projected.iter().filter_map(|&set| self.sets.get(set)))
            .collect();
        let orphans: HashSet<Labels> = self
            .rules
            .iter()
            .flat_map(|r| r.counts.keys().map(move |&set| (r, set)))
            .map(|(r, set)| self.base_labels(r, set))
            .filter(|base| !projected.contains(&base.to_vec()))
            .map(<[(String, String)]>::to_vec)
            .collect();
        self.orphaned.retain(|base, _| orphans.contains(base));
        for base in orphans {
            self.orphaned.entry(base).or_insert(now);
        }
        let expired: HashSet<Labels> = self
            .orphaned
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) >= retention)
            .map(|(base, _)| base.clone())
            .collect();
        if expired.is_empty() {
            return 0;
        }
        let mut freed = HashSet::new();
        let mut n = 0;
        for i in 0..self.rules.len() {
            let gone: Vec<SetId> = self.rules[i]
                .counts
                .keys()
                .copied()
                .filter(|&set| expired.contains(self.base_labels(&self.rules[i], set)))
                .collect();
            let r = &mut self.rules[i];
            for set in &gone {
                r.counts.remove(set);
                r.nums.remove(set);
            }
            if let Some(b) = r.budget.and_then(|b| self.budgets.get_mut(b)) {
                b.used = b.used.saturating_sub(gone.len());
            }
            n += gone.len();
            freed.extend(gone);
        }
        self.orphaned.retain(|base, _| !expired.contains(base));
        self.free_unused_sets(freed);
        self.shrink_maps();
        n
    }

    fn rule_info(&self) -> Vec<RuleInfo> {
        self.rules.iter().map(|r| r.info.clone()).collect()
    }

    fn reload(&mut self, rules: &[Rule]) -> Result<(), BuildError> {
        self.install(rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logql::{parse, Expr};

    fn rule(name: &str, contains: &str, max_series: usize) -> Rule {
        Rule {
            max_series,
            ..Rule::new(name, Expr::contains(contains))
        }
    }

    fn lrule(name: &str, expr: &str) -> Rule {
        Rule::new(name, parse(expr).unwrap())
    }

    fn line(msg: &str) -> Line<'_> {
        Line {
            message: msg.as_bytes(),
            stream: Stream::Stdout,
            timestamp: None,
        }
    }

    fn labels(pod: &str) -> Labels {
        vec![("pod".into(), pod.into())]
    }

    fn pod(ns: &str, pod: &str, container: &str) -> Labels {
        vec![
            ("namespace".into(), ns.into()),
            ("pod".into(), pod.into()),
            ("container".into(), container.into()),
        ]
    }

    fn get(v: &[SeriesValue], rule: &str, l: &[(String, String)], overflow: bool) -> Option<u64> {
        v.iter()
            .find(|s| s.rule == rule && s.labels == l && s.overflow == overflow)
            .map(|s| s.value)
    }

    #[test]
    fn zero_series_of_gone_sources_are_dropped() {
        let mut r = Rules::new(&[rule("err", "ERROR", 2)]).unwrap();
        let a = r.source(&labels("a"));
        r.source(&labels("b"));
        r.on_line(a, &line("ERROR"));
        // Both files gone: the series that counted stays, the zero one goes.
        r.retain_sources(&[]);
        let v = r.values();
        assert_eq!(get(&v, "err", &labels("a"), false), Some(1));
        assert_eq!(get(&v, "err", &labels("b"), false), None);
        // Its place is free for a new pod, which is zero-initialised...
        let c = r.source(&labels("c"));
        assert_eq!(get(&r.values(), "err", &labels("c"), false), Some(0));
        // ...and a live source keeps its zero series.
        r.retain_sources(&[c]);
        assert_eq!(get(&r.values(), "err", &labels("c"), false), Some(0));
        // The budget is full again: b, seen again (forgotten meanwhile: a new id), has no
        // series, c counting in its own.
        let b = r.source(&labels("b"));
        r.on_line(c, &line("ERROR"));
        r.on_line(b, &line("ERROR"));
        let v = r.values();
        assert_eq!(get(&v, "err", &labels("c"), false), Some(1));
        assert_eq!(get(&v, "err", &[], true), Some(1));
    }

    /// Pod churn: the sources of released files are forgotten (their slots reused), series
    /// that counted stay for the retention after their last source went, then go with their
    /// label sets; a source seen again within the retention keeps its series.
    #[test]
    fn gone_sources_are_forgotten_and_their_series_expire() {
        let mut r = Rules::new(&[rule("err", "ERROR", 100)]).unwrap();
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        for i in 0..50 {
            let a = r.source(&labels(&format!("p{i}")));
            r.on_line(a, &line("ERROR"));
            r.on_line(a, &line("ERROR"));
            // Its file released.
            r.retain_sources(&[]);
        }
        assert_eq!(r.sources.len(), 1, "one slot, reused by each pod");
        assert_eq!(r.values().len(), 50, "series that counted stay");
        assert_eq!(r.expire_series(&[], minute, t0), 0);
        let back = r.source(&labels("p7"));
        r.on_line(back, &line("ERROR"));
        assert_eq!(r.expire_series(&[back], minute, t0 + minute / 2), 0);
        assert_eq!(r.expire_series(&[back], minute, t0 + minute), 49);
        let v = r.values();
        assert_eq!(v.len(), 1);
        assert_eq!(get(&v, "err", &labels("p7"), false), Some(3));
        assert_eq!(r.sets.len() - r.free_sets.len(), 1, "label sets freed");
        // New pods reuse the freed slots.
        for i in 0..40 {
            let a = r.source(&labels(&format!("q{i}")));
            r.on_line(a, &line("ERROR"));
        }
        assert_eq!(
            r.sets.len(),
            41,
            "p7's slot and the freed ones before it reused"
        );
        // p7's file goes too: its series is kept for the retention, from when it was seen gone.
        r.retain_sources(&[]);
        let t1 = t0 + 2 * minute;
        assert_eq!(r.expire_series(&[], minute, t1), 0);
        assert_eq!(r.expire_series(&[], minute, t1 + minute), 41);
        assert!(r.values().is_empty());
        // A pod with the same labels after its series expired starts at 0, as a new series.
        let again = r.source(&labels("p7"));
        assert_eq!(get(&r.values(), "err", &labels("p7"), false), Some(0));
        r.on_line(again, &line("ERROR"));
        assert_eq!(get(&r.values(), "err", &labels("p7"), false), Some(1));
    }

    #[test]
    fn counts_and_budget() {
        let mut r =
            Rules::new(&[rule("err", "ERROR", 2), rule("oom", "Out of memory", 10)]).unwrap();
        let a = r.source(&labels("a"));
        assert_eq!(r.source(&labels("a")), a);
        let b = r.source(&labels("b"));
        let c = r.source(&labels("c"));
        r.on_line(a, &line("x ERROR y"));
        r.on_line(a, &line("no match"));
        r.on_line(b, &line("ERROR Out of memory"));
        r.on_line(c, &line("ERROR"));
        r.on_line(c, &line("ERROR"));
        let v = r.values();
        assert_eq!(get(&v, "err", &labels("a"), false), Some(1));
        assert_eq!(get(&v, "err", &labels("b"), false), Some(1));
        assert_eq!(get(&v, "err", &labels("c"), false), None);
        assert_eq!(get(&v, "err", &[], true), Some(2));
        assert_eq!(get(&v, "oom", &labels("b"), false), Some(1));
        // Zero-initialised: the source was seen, the rule selects it, nothing matched yet.
        assert_eq!(get(&v, "oom", &labels("a"), false), Some(0));
        assert_eq!(get(&v, "oom", &labels("c"), false), Some(0));

        // Restoring into a fresh engine yields the same values; unknown rules are dropped.
        let mut r2 = Rules::new(&[rule("err", "ERROR", 2)]).unwrap();
        r2.restore(&v);
        let v2 = r2.values();
        assert_eq!(
            v2,
            v.iter()
                .filter(|s| s.rule == "err")
                .cloned()
                .collect::<Vec<_>>()
        );
    }

    /// Each selector and filter construct, on the sources and lines it must and must not count.
    #[test]
    fn selectors_and_filters() {
        let rules = [
            lrule("ns", r#"{namespace="nova"}"#),
            lrule("pod_re", r#"{pod=~"nova-api-.*"} |= "ERROR""#),
            lrule("not_sidecar", r#"{container!="sidecar"} |= "ERROR""#),
            lrule("not_re", r#"{pod!~"nova-.*"} |= "ERROR""#),
            lrule("stderr", r#"{stream="stderr"} |= "ERROR""#),
            lrule("neg", r#"{} |= "ERROR" != "retry""#),
            lrule("re", r#"{} |~ "time(d)? ?out""#),
            lrule("not_re_line", r#"{} |= "ERROR" !~ "(?i)debug""#),
            lrule("two_lits", r#"{} |= "ERROR" |= "rpc""#),
            lrule("all", "{}"),
        ];
        let mut r = Rules::new(&rules).unwrap();
        let api = r.source(&pod("nova", "nova-api-1", "api"));
        let side = r.source(&pod("nova", "nova-api-1", "sidecar"));
        let other = r.source(&pod("kube", "dns", "coredns"));
        let plain = r.source(&Vec::new());
        let lines: &[(SourceId, &str, Stream)] = &[
            (api, "ERROR rpc timed out", Stream::Stdout),
            (api, "ERROR will retry", Stream::Stderr),
            (side, "ERROR in DEBUG mode", Stream::Stdout),
            (other, "ERROR timeout", Stream::Stderr),
            (plain, "all fine", Stream::None),
            (plain, "rpc ERROR", Stream::None),
        ];
        for &(src, msg, stream) in lines {
            r.on_line(
                src,
                &Line {
                    message: msg.as_bytes(),
                    stream,
                    timestamp: None,
                },
            );
        }
        let v = r.values();
        let total =
            |rule: &str| -> u64 { v.iter().filter(|s| s.rule == rule).map(|s| s.value).sum() };
        assert_eq!(total("ns"), 3, "every line of the nova sources");
        assert_eq!(total("pod_re"), 3);
        assert_eq!(
            total("not_sidecar"),
            4,
            "absent container label is not \"sidecar\""
        );
        assert_eq!(total("not_re"), 2);
        assert_eq!(total("stderr"), 2);
        assert_eq!(total("neg"), 4);
        assert_eq!(total("re"), 2);
        assert_eq!(total("not_re_line"), 4);
        assert_eq!(total("two_lits"), 2);
        assert_eq!(total("all"), 6);
        // Selected sources get zero series; others get none.
        assert_eq!(get(&v, "ns", &pod("kube", "dns", "coredns"), false), None);
        assert_eq!(
            get(&v, "stderr", &pod("nova", "nova-api-1", "sidecar"), false),
            Some(0)
        );
    }

    #[test]
    fn keep_labels_metric_and_info() {
        let mut keep = lrule("errs", r#"{namespace="nova"} |= "ERROR""#);
        keep.keep_labels = Some(vec!["namespace".into(), "container".into()]);
        keep.max_series = 2;
        keep.alert = true;
        keep.severity = crate::config::Severity::Critical;
        let mut own = lrule("timeouts", r#"{} |= "timeout""#);
        own.metric = Some("rpc_timeouts".into());
        let mut r = Rules::new(&[keep, own]).unwrap();
        for p in ["nova-api-1", "nova-api-2"] {
            let s = r.source(&pod("nova", p, "api"));
            r.on_line(s, &line("ERROR timeout"));
        }
        let s = r.source(&pod("nova", "nova-api-1", "sidecar"));
        r.on_line(s, &line("ERROR"));
        let s = r.source(&pod("nova", "nova-api-1", "third"));
        r.on_line(s, &line("ERROR"));
        r.on_line(s, &line("ERROR"));
        let v = r.values();
        let nc = |c: &str| -> Labels {
            vec![
                ("namespace".into(), "nova".into()),
                ("container".into(), c.into()),
            ]
        };
        assert_eq!(get(&v, "errs", &nc("api"), false), Some(2), "pods merged");
        assert_eq!(get(&v, "errs", &nc("sidecar"), false), Some(1));
        assert_eq!(
            get(&v, "errs", &[], true),
            Some(2),
            "third container past the budget"
        );
        assert_eq!(v.iter().filter(|s| s.rule == "errs").count(), 3);
        let t: Vec<_> = v.iter().filter(|s| s.rule == "timeouts").collect();
        assert!(t
            .iter()
            .all(|s| s.metric.as_deref() == Some("rpc_timeouts")));
        assert_eq!(t.iter().map(|s| s.value).sum::<u64>(), 2);
        assert_eq!(
            r.rule_info(),
            [
                RuleInfo {
                    tenant: String::new(),
                    rule: "errs".into(),
                    alert: true,
                    severity: "critical"
                },
                RuleInfo {
                    tenant: String::new(),
                    rule: "timeouts".into(),
                    alert: false,
                    severity: "warning"
                },
            ]
        );
        // Saved values whose labels the rule no longer keeps, or of another metric, are dropped.
        let mut changed = lrule("errs", r#"{} |= "ERROR""#);
        changed.keep_labels = Some(vec!["namespace".into()]);
        let mut r2 = Rules::new(&[changed, lrule("timeouts", r#"{} |= "timeout""#)]).unwrap();
        r2.restore(&v);
        let v2 = r2.values();
        assert_eq!(
            v2.iter()
                .filter(|s| !s.overflow)
                .map(|s| s.value)
                .sum::<u64>(),
            0
        );
        assert_eq!(get(&v2, "errs", &[], true), Some(2));
    }

    #[test]
    fn extracted_labels_filters_and_budget() {
        let mut oom = lrule(
            "kernel_oom_killer",
            r#"{} |= "Killed process" | regexp `Killed process \d+ \((?P<process>[^)]+)\)`"#,
        );
        oom.labels = vec!["process".into()];
        oom.max_series = 2;
        let mut slow = lrule("slow", r#"{} | logfmt | level="error" | latency_ms > 100"#);
        slow.labels = vec!["level".into(), "pod".into()];
        let mut r = Rules::new(&[oom, slow]).unwrap();
        let k = r.source(&Vec::new());
        assert!(
            r.values().iter().all(|v| v.rule != "kernel_oom_killer"),
            "no zero series for extracted labels"
        );
        for p in ["qemu-kvm", "java", "qemu-kvm", "python3", "mysqld"] {
            r.on_line(
                k,
                &line(&format!("Out of memory: Killed process 9 ({p}) total-vm")),
            );
        }
        let v = r.values();
        let proc_ = |p: &str| -> Labels { vec![("process".into(), p.into())] };
        assert_eq!(
            get(&v, "kernel_oom_killer", &proc_("qemu-kvm"), false),
            Some(2)
        );
        assert_eq!(get(&v, "kernel_oom_killer", &proc_("java"), false), Some(1));
        assert_eq!(
            get(&v, "kernel_oom_killer", &[], true),
            Some(2),
            "bounded label"
        );
        // Values past the budget are not even interned: memory stays bounded too.
        let before = r.sets.len();
        for i in 0..10_000 {
            r.on_line(
                k,
                &line(&format!("Out of memory: Killed process 9 (p{i}) total-vm")),
            );
        }
        assert_eq!(r.sets.len(), before);
        assert_eq!(
            get(&r.values(), "kernel_oom_killer", &[], true),
            Some(10_002)
        );

        let s = r.source(&labels("web"));
        for l in [
            "level=error latency_ms=250 pod=inner",
            "level=error latency_ms=50",
            "level=info latency_ms=900",
            "level=error latency_ms=oops",
            "not logfmt at all",
        ] {
            r.on_line(s, &line(l));
        }
        let v = r.values();
        let want: Labels = vec![
            ("pod".into(), "web".into()),
            ("level".into(), "error".into()),
            ("pod_extracted".into(), "inner".into()),
        ];
        assert_eq!(get(&v, "slow", &want, false), Some(1));
        // `latency_ms=oops` is kept with `__error__="LabelFilterErr"`, as Loki keeps it (its
        // series has no pod_extracted); the others fail a filter.
        let oops: Labels = vec![
            ("pod".into(), "web".into()),
            ("level".into(), "error".into()),
            ("pod_extracted".into(), String::new()),
        ];
        assert_eq!(get(&v, "slow", &oops, false), Some(1));
        assert_eq!(
            v.iter()
                .filter(|x| x.rule == "slow")
                .map(|x| x.value)
                .sum::<u64>(),
            2
        );
        // Extracted labels survive a restore.
        let mut r2 = Rules::new(&[{
            let mut s = lrule("slow", r#"{} | logfmt | level="error""#);
            s.labels = vec!["level".into(), "pod".into()];
            s
        }])
        .unwrap();
        r2.restore(&v);
        assert_eq!(get(&r2.values(), "slow", &want, false), Some(1));
    }

    fn num_rule(name: &str, kind: RuleType, metric: &str) -> Rule {
        let mut r = lrule(name, r#"{} | logfmt | unwrap ms"#);
        r.kind = kind;
        r.metric = Some(metric.into());
        r.labels = vec!["route".into()];
        r.max_series = 2;
        if kind == RuleType::Histogram {
            r.buckets = Some(vec![10.0, 100.0]);
        }
        r
    }

    #[test]
    fn unwrap_metric_types_budget_and_restore() {
        let rules = [
            num_rule("sum", RuleType::Counter, "ms_sum"),
            num_rule("last", RuleType::Gauge, "ms_last"),
            num_rule("hist", RuleType::Histogram, "ms_hist"),
        ];
        let mut r = Rules::new(&rules).unwrap();
        let s = r.source(&Vec::new());
        for l in [
            "route=a ms=5",
            "route=a ms=50",
            "route=b ms=500",
            "route=c ms=7",
            "route=a ms=oops",
            "route=a",
        ] {
            r.on_line(s, &line(l));
        }
        let v = r.values();
        let route = |x: &str| -> Labels { vec![("route".into(), x.into())] };
        let num = |rule: &str, l: &[(String, String)], overflow: bool| {
            v.iter()
                .find(|s| {
                    s.rule == rule && s.labels == l && s.overflow == overflow && s.num.is_some()
                })
                .and_then(|s| s.num.clone().map(|n| (s.value, n)))
                .unwrap()
        };
        let (count, n) = num("sum", &route("a"), false);
        assert_eq!((count, n.sum), (2, 55.0));
        assert_eq!(num("last", &route("a"), false).1.last, 50.0);
        let (count, n) = num("hist", &route("a"), false);
        assert_eq!((count, n.buckets.clone(), n.sum), (2, vec![1, 1, 0], 55.0));
        assert_eq!(num("hist", &route("b"), false).1.buckets, [0, 0, 1]);
        let (count, n) = num("hist", &[], true);
        assert_eq!(
            (count, n.buckets.clone()),
            (1, vec![1, 0, 0]),
            "route=c past the budget"
        );
        let errors = |v: &[SeriesValue], rule: &str| {
            v.iter()
                .find(|s| s.rule == rule && s.metric.as_deref() == Some(UNWRAP_ERRORS))
                .map(|s| s.value)
        };
        assert_eq!(
            errors(&v, "sum"),
            Some(1),
            "ms=oops; a missing field is not an error"
        );

        // Saved and restored (through JSON, as in the state file), the values continue.
        let json = serde_json::to_string(&v).unwrap();
        let saved: Vec<SeriesValue> = serde_json::from_str(&json).unwrap();
        let mut r2 = Rules::new(&rules).unwrap();
        r2.restore(&saved);
        let s = r2.source(&Vec::new());
        r2.on_line(s, &line("route=a ms=1"));
        let v2 = r2.values();
        let n = v2
            .iter()
            .find(|x| x.rule == "hist" && x.labels == route("a"))
            .unwrap();
        assert_eq!(
            (n.value, n.num.as_ref().unwrap().buckets.clone()),
            (3, vec![2, 1, 0])
        );
        assert_eq!(errors(&v2, "sum"), Some(1));
        let g = v2
            .iter()
            .find(|x| x.rule == "last" && x.labels == route("a"))
            .unwrap();
        assert_eq!(g.num.as_ref().unwrap().last, 1.0);

        // Changed buckets: the saved histogram does not fit and starts again.
        let mut changed = num_rule("hist", RuleType::Histogram, "ms_hist");
        changed.buckets = Some(vec![1.0]);
        let mut r3 = Rules::new(&[changed]).unwrap();
        r3.restore(&saved);
        assert!(r3
            .values()
            .iter()
            .all(|x| x.value == 0 || x.metric.as_deref() == Some(UNWRAP_ERRORS)));
    }

    #[test]
    fn install_keeps_unchanged_rules() {
        let mut r = Rules::new(&[rule("a", "A", 10), rule("b", "B", 10)]).unwrap();
        let s = r.source(&labels("p"));
        r.on_line(s, &line("A B"));
        r.install(&[rule("a", "A", 10), lrule("c", r#"{} |= "C""#)])
            .unwrap();
        let v = r.values();
        assert_eq!(
            get(&v, "a", &labels("p"), false),
            Some(1),
            "unchanged rule continues"
        );
        assert_eq!(
            get(&v, "b", &labels("p"), false),
            None,
            "removed rule is gone"
        );
        assert_eq!(
            get(&v, "c", &labels("p"), false),
            Some(0),
            "new rule starts at 0 on known sources"
        );
        r.on_line(s, &line("A C"));
        let v = r.values();
        assert_eq!(get(&v, "a", &labels("p"), false), Some(2));
        assert_eq!(get(&v, "c", &labels("p"), false), Some(1));
    }

    fn bound(name: &str, expr: &str, tenant: &str, namespaces: &[&str], max_series: usize) -> Rule {
        Rule {
            binding: Some(std::sync::Arc::new(crate::config::Binding {
                tenant: tenant.into(),
                namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
                max_series,
            })),
            ..lrule(name, expr)
        }
    }

    fn tenant_get(v: &[SeriesValue], tenant: &str, rule: &str, ns: &str) -> u64 {
        v.iter()
            .filter(|s| {
                s.tenant == tenant
                    && s.rule == rule
                    && s.labels.iter().any(|(k, x)| k == "namespace" && x == ns)
            })
            .map(|s| s.value)
            .sum()
    }

    /// A tenant's rule sees only its namespaces whatever its selector says; the same rule name
    /// in two tenants is two rules; the tenant's series budget is shared by its rules.
    #[test]
    fn tenant_scope_and_series_budget() {
        let rules = [
            lrule("err", r#"{} |= "ERROR""#),
            bound(
                "err",
                r#"{namespace=~".+"} |= "ERROR""#,
                "a",
                &["a", "a2"],
                100,
            ),
            bound("err", r#"{namespace=~"a|b"} |= "ERROR""#, "b", &["b"], 100),
            bound("x", r#"{} |= "ERROR""#, "c", &["c"], 2),
            bound("y", r#"{} |= "ERROR""#, "c", &["c"], 2),
        ];
        let mut r = Rules::new(&rules).unwrap();
        let srcs: Vec<_> = [
            ("a", "p"),
            ("a2", "p"),
            ("b", "p"),
            ("c", "p1"),
            ("c", "p2"),
        ]
        .iter()
        .map(|(ns, p)| r.source(&pod(ns, p, "app")))
        .collect();
        let glob = r.source(&labels("kern"));
        for &s in srcs.iter().chain([&glob]) {
            r.on_line(s, &line("ERROR"));
        }
        let v = r.values();
        assert_eq!(
            tenant_get(&v, "", "err", "a") + tenant_get(&v, "", "err", "c"),
            3
        );
        assert_eq!(tenant_get(&v, "a", "err", "a"), 1);
        assert_eq!(tenant_get(&v, "a", "err", "a2"), 1);
        assert_eq!(tenant_get(&v, "a", "err", "b"), 0, "not a's namespace");
        assert_eq!(
            tenant_get(&v, "b", "err", "a"),
            0,
            "a namespace matcher cannot widen"
        );
        assert_eq!(tenant_get(&v, "b", "err", "b"), 1);
        assert!(
            v.iter()
                .all(|s| s.tenant.is_empty() || s.labels != labels("kern")),
            "a source without a namespace is no tenant's"
        );
        // Tenant c: 2 sources x 2 rules = 4 series wanted, budget 2: the first pod's series
        // (zero-initialised when it was seen) fit, the second pod's line of each rule overflows.
        let c: Vec<_> = v
            .iter()
            .filter(|s| s.tenant == "c" && s.metric.is_none())
            .collect();
        assert_eq!(c.iter().filter(|s| !s.overflow).count(), 2, "{c:?}");
        assert_eq!(get(&v, "x", &[], true), Some(1));
        assert_eq!(get(&v, "y", &[], true), Some(1));
        let overflowed = |v: &[SeriesValue]| {
            v.iter()
                .find(|s| s.tenant == "c" && s.metric.as_deref() == Some(TENANT_OVERFLOW))
                .map(|s| s.value)
        };
        assert_eq!(overflowed(&v), Some(2));
        // Reinstalled with a narrower grant: a's series of the lost namespace are dropped,
        // the rest (and c's overflow counter) continue.
        let mut narrower = rules.to_vec();
        narrower[1] = bound("err", r#"{namespace=~".+"} |= "ERROR""#, "a", &["a"], 100);
        r.install(&narrower).unwrap();
        let v = r.values();
        assert_eq!(tenant_get(&v, "a", "err", "a"), 1);
        assert!(!v.iter().any(
            |s| s.tenant == "a" && s.labels.iter().any(|(k, x)| k == "namespace" && x == "a2")
        ));
        assert_eq!(overflowed(&v), Some(2));
        r.on_line(srcs[4], &line("ERROR"));
        assert_eq!(
            overflowed(&r.values()),
            Some(4),
            "both rules of c overflow again"
        );
    }

    /// Many rules sharing one automaton count exactly what each one alone would count.
    #[test]
    fn many_rules_match_like_one() {
        let rules: Vec<Rule> = (0..300)
            .map(|i| lrule(&format!("r{i}"), &format!(r#"{{}} |= "code={i} ""#)))
            .collect();
        let mut r = Rules::new(&rules).unwrap();
        let s = r.source(&labels("p"));
        for i in 0..300 {
            r.on_line(s, &line(&format!("x code={i} y code={} z", (i * 7) % 300)));
        }
        let v = r.values();
        for i in 0..300 {
            let want = 1 + u64::from((0..300).any(|j| (j * 7) % 300 == i && j != i));
            assert_eq!(
                get(&v, &format!("r{i}"), &labels("p"), false),
                Some(want),
                "r{i}"
            );
        }
    }

    #[test]
    fn regex_rules_are_anchored_on_their_literals() {
        let mut r = Rules::new(&[
            lrule("attempt", r#"{} |~ "attempt=6$""#),
            lrule("timeout", r#"{} |~ "(?i)timed out""#),
            lrule("refused", r#"{} |~ "(connection|socket) refused""#),
            lrule("any", r#"{} |~ "a*""#),
            lrule("either", r#"{} |= "alpha" or "beta""#),
        ])
        .unwrap();
        assert_eq!(r.unanchored, vec![3], "only `a*` runs on every line");
        assert_eq!(r.scanner.folded_len(), 1);
        let a = r.source(&labels("a"));
        for l in [
            "attempt=6",
            "attempt=61",
            "x TIMED OUT",
            "Timed Out",
            "timed  out",
            "connection refused, socket refused",
            "alpha beta",
            "nothing",
        ] {
            r.on_line(a, &line(l));
        }
        let v = r.values();
        let count = |rule| get(&v, rule, &labels("a"), false);
        assert_eq!(count("attempt"), Some(1));
        assert_eq!(count("timeout"), Some(2));
        assert_eq!(
            count("refused"),
            Some(1),
            "two needles hit, one line counted"
        );
        assert_eq!(count("any"), Some(8));
        assert_eq!(count("either"), Some(1));
    }

    #[test]
    fn prefiltered_verdict_is_the_unfiltered_verdict() {
        use crate::prefilter::tests::{random_line, random_regex};
        let mut rng = e2e_tests::Rng::new(0x5eed_0021);
        let mut anchored = 0;
        for round in 0..60 {
            let mut rules = Vec::new();
            while rules.len() < 12 {
                let re = random_regex(&mut rng, 0);
                let expr = match rng.below(6) {
                    0 => format!("{{}} |= \"ab\" |~ `{re}`"),
                    1 => format!("{{}} |~ `{re}` !~ `{}`", random_regex(&mut rng, 0)),
                    2 => format!("{{}} |~ `{re}` |~ `{}`", random_regex(&mut rng, 0)),
                    _ => format!("{{}} |~ `{re}`"),
                };
                if let Ok(e) = parse(&expr) {
                    rules.push(Rule::new(&format!("r{}", rules.len()), e));
                }
            }
            let mut r = Rules::new(&rules).unwrap();
            anchored += rules.len() - r.unanchored.len();
            let src = r.source(&labels("p"));
            let lines: Vec<Vec<u8>> = (0..300).map(|_| random_line(&mut rng)).collect();
            for l in &lines {
                r.on_line(
                    src,
                    &Line {
                        message: l,
                        stream: Stream::Stdout,
                        timestamp: None,
                    },
                );
            }
            let v = r.values();
            for rule in &rules {
                let filters = &rule.expression().filters;
                let want = lines
                    .iter()
                    .filter(|l| filters.iter().all(|f| f.test(l)))
                    .count() as u64;
                let got = get(&v, &rule.name, &labels("p"), false);
                assert_eq!(got, Some(want), "round {round}: {}", rule.expression().text);
            }
        }
        assert!(anchored > 200, "only {anchored} rules were anchored");
    }
}
