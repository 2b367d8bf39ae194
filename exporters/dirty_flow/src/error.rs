//! The crate's one error type: everything that can go wrong between running `ovs-ofctl` /
//! `ovs-vsctl` and turning their output into metrics.
//!
//! Parse errors of single flow lines are not here: they are counted and logged per line (see
//! [`crate::parse::ParseError`]) and never fail a scrape.

use std::time::Duration;

/// Why reading one bridge or the database failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} timed out after {timeout:?} and was killed")]
    Timeout { program: String, timeout: Duration },
    #[error("{program} exited with {status}: {stderr}")]
    Exit {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("reading the output of {program}: {source}")]
    Read {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} could not decode a reply ({said}): flows of the dump are missing ({hint})")]
    Undecoded {
        program: String,
        /// The `***decode error: ...***` line and the tail of stderr.
        said: String,
        hint: String,
    },
    #[error("{program} printed more than {limit} bytes and was killed (the limit of its output)")]
    TooLarge { program: String, limit: u64 },
    #[error(
        "{program} exited 0 without a reply header (`NXST_FLOW reply`/`OFPST_FLOW reply`): \
         not a dump-flows reply; stderr: {stderr:?}"
    )]
    NoReply { program: String, stderr: String },
    #[error(
        "{program}: {errors} unparseable lines against {flows} flows: not a dump-flows reply \
         (a dump fails when its unparseable lines outnumber its flows)"
    )]
    Unparseable {
        program: String,
        errors: u64,
        flows: u64,
    },
    #[error("unexpected ovs-vsctl output: {0}")]
    Inventory(String),
}
