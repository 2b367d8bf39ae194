//! Parsing `ovs-ofctl dump-flows` output: pure functions over text, no I/O.
//!
//! [`line`] splits a dump line into info, match and actions; [`actions`] tokenizes actions and
//! finds the ports they name; [`fields`] turns match items into value/mask constraints for
//! comparisons; [`find`] is the byte search they share. Fixture tests over real captured dumps
//! live in `tests/parser_fixtures.rs`.

pub mod actions;
pub mod fields;
pub mod find;
pub mod line;

pub use line::{parse_flow, parse_line, split_match, Flow, Header, Line, ParseError, Table};
