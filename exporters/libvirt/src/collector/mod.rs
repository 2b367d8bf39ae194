//! The collectors: `domain` (domains, nova metadata, pinning and its faults) and `host`.
//!
//! Both share one [`crate::connection::Libvirt`]; each builds fresh metrics from what it gathered
//! on this scrape.
#![forbid(unsafe_code)]

pub mod domain;
pub mod host;
