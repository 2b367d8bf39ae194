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
    #[error(
        "{program} could not decode a reply ({line}): flows of the dump are missing (a flow \
         the OpenFlow version in use cannot express may need --ovs.openflow-version=OpenFlow15)"
    )]
    Undecoded { program: String, line: String },
    #[error("unexpected ovs-vsctl output: {0}")]
    Inventory(String),
}
