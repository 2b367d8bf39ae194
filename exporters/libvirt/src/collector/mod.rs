//! The collectors: `domain` (domains, nova metadata, pinning and its faults), `host`, `job`
//! (domain jobs such as migrations while they run) and `storage_pool`.
//!
//! All share one [`crate::connection::Libvirt`]; each builds fresh metrics from what it gathered
//! on this scrape.
#![forbid(unsafe_code)]

pub mod domain;
pub mod host;
pub mod job;
pub mod storage_pool;
