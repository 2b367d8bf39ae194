//! `log_pattern_exporter replay --config.file R FILE...`: read files once, print the metrics.
//!
//! Users test rules with it, and it is what the benchmark runs: the same line reader, formats
//! and rule engine as the daemon, without discovery, inotify or state. Files are read from their
//! first byte (`.gz` files too); files in the pod layout get their namespace/pod/container
//! labels. The output is the classic Prometheus text format (what `curl /metrics` shows).

use std::path::{Path, PathBuf};

use crate::discovery::pod_labels;
use crate::metrics::Snapshot;
use crate::rules::Rules;
use crate::tail::{Engine, Options};
use crate::{config, Error, INFO};

/// Reads `files` with the rules of `config_file`; returns the exposition text.
pub fn replay(
    config_file: &Path,
    files: &[PathBuf],
    max_line_bytes: usize,
) -> Result<String, Error> {
    let cfg = config::load(config_file)?;
    let opts = Options {
        max_line_bytes,
        read_budget: u64::MAX,
        lag: false,
        ..Options::default()
    };
    let mut engine = Engine::new(opts, Box::new(Rules::new(&cfg.rules)?));
    for f in files {
        std::fs::metadata(f).map_err(|source| Error::Replay {
            path: f.clone(),
            source,
        })?;
        let labels = pod_labels(f).unwrap_or_default();
        engine.replay_file(f, &labels);
    }
    let st = engine.state();
    let snap = Snapshot {
        counters: st.counters,
        matches: st.matches,
        rules: st.rules,
        ..Snapshot::default()
    };
    let mut sink = common::Sink::new(INFO.prefix);
    crate::metrics::encode(&snap, &mut sink);
    let mut out = String::new();
    sink.encode(&mut out).map_err(|_| Error::Encode)?;
    out.push_str("# EOF\n");
    // The classic text format, as curl and promtool read it.
    Ok(common::exposition::openmetrics_to_text(&out))
}
