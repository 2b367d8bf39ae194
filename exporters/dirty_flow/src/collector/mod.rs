//! The exporter's collectors; one module each, named as its `--collector.<name>` flag.

pub mod flows;
