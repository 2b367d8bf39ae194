//! `storage_pool`: capacity, allocation, free space and state of every libvirt storage pool.
//!
//! Names follow inovex/prometheus-libvirt-exporter (`libvirt_storage_pool_*{storage_pool}`), so
//! its dashboards keep working. libvirt has no bulk call for pools: a scrape lists them
//! (`virConnectListAllStoragePools`, one call) and then asks each for its info
//! (`virStoragePoolGetInfo`, one call per pool, `--libvirt.concurrency` at once, each under
//! `--libvirt.timeout`); hence the collector is off by default. A pool that fails between the
//! list and its info (undefined or destroyed meanwhile, an error, no answer in time) loses its
//! series on this scrape only and is counted by reason; the other pools are exported.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::{CollectError, Collector, Sink};
use futures::future::BoxFuture;
use virt::connect::Connect;
use virt::storage_pool::StoragePool;

use crate::connection::Libvirt;
use crate::error::Error;

/// The collector's identity (flag, label, help, default).
pub const FLAG: common::cli::CollectorFlag = common::cli::CollectorFlag {
    name: "storage_pool",
    help: "Storage pools: capacity, allocation, available bytes and state (one libvirt call per pool per scrape)",
    default_enabled: false,
};

/// Pools exported per scrape; the rest are counted (`reason="limit"`), not exported.
pub const MAX_POOLS: usize = 1000;

/// `virStoragePoolState` codes whose sizes mean something (running, degraded): an inactive
/// pool reports zeros, which would read as a full or empty pool.
const SIZED_STATES: [u32; 2] = [2, 3];

/// Why a listed pool has no series on a scrape (the `reason` label).
pub const REASONS: [&str; 4] = ["not_found", "error", "timeout", "limit"];

/// One pool's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolInfo {
    pub name: String,
    /// `virStoragePoolState`: 0 inactive, 1 building, 2 running, 3 degraded, 4 inaccessible.
    pub state: u32,
    pub capacity: u64,
    pub allocation: u64,
    pub available: u64,
}

/// One scrape's pools, and the listed pools that gave no info, by reason.
#[derive(Debug, Default)]
pub struct Pools {
    pub pools: Vec<PoolInfo>,
    pub failed: BTreeMap<&'static str, u64>,
}

/// The `storage_pool` collector.
#[derive(Debug)]
pub struct StoragePoolCollector {
    libvirt: Arc<Libvirt>,
    concurrency: usize,
    /// Failures since start, by reason.
    failures: Mutex<BTreeMap<&'static str, u64>>,
}

/// Lists the pools (one call): name and handle, by name.
pub async fn list_pools(
    libvirt: &Libvirt,
    conn: &Arc<Connect>,
) -> Result<Vec<(String, StoragePool)>, Error> {
    libvirt
        .with_conn(conn, "storage_pools", |c| {
            let mut pools: Vec<(String, StoragePool)> = c
                .list_all_storage_pools(0)?
                .into_iter()
                .map(|p| (p.name().unwrap_or_default(), p))
                .collect();
            pools.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(pools)
        })
        .await
}

/// Asks each listed pool for its info (`concurrency` at once); a pool whose call fails is
/// left out and counted by reason.
pub async fn pool_infos(
    libvirt: &Libvirt,
    mut listed: Vec<(String, StoragePool)>,
    concurrency: usize,
) -> Pools {
    let mut out = Pools::default();
    if listed.len() > MAX_POOLS {
        out.failed
            .insert("limit", (listed.len() - MAX_POOLS) as u64);
        listed.truncate(MAX_POOLS);
    }
    let names: Vec<String> = listed.iter().map(|(n, _)| n.clone()).collect();
    let answers = libvirt
        .pool("storage_pool_info", listed, concurrency, |(_, p)| p.info())
        .await;
    for (name, answer) in names.into_iter().zip(answers) {
        let reason = match answer {
            Ok(Ok(i)) => {
                out.pools.push(PoolInfo {
                    name,
                    state: i.state,
                    capacity: i.capacity,
                    allocation: i.allocation,
                    available: i.available,
                });
                continue;
            }
            Ok(Err(e)) if e.code() == virt::error::ErrorNumber::NoStoragePool.into() => "not_found",
            Ok(Err(e)) => {
                tracing::debug!(pool = %name, error = %e, "cannot get storage pool info");
                libvirt.count_error("storage_pool_info");
                "error"
            }
            Err(Error::Timeout { .. }) => "timeout",
            Err(e) => {
                tracing::debug!(pool = %name, error = %e, "cannot get storage pool info");
                "error"
            }
        };
        *out.failed.entry(reason).or_default() += 1;
    }
    out
}

/// Writes the pool metrics; `failures`: since start, by reason.
pub fn encode_pools(pools: &[PoolInfo], failures: &BTreeMap<&'static str, u64>, sink: &mut Sink) {
    let mut state = sink.gauge(
        "storage_pool_state",
        "State of the storage pool (0 inactive, 1 building, 2 running, 3 degraded, 4 inaccessible)",
    );
    let mut capacity = sink.gauge(
        "storage_pool_capacity_bytes",
        "Size of the storage pool in logical bytes (running or degraded pools)",
    );
    let mut allocation = sink.gauge(
        "storage_pool_allocation_bytes",
        "Current allocation bytes of the storage pool (running or degraded pools)",
    );
    let mut available = sink.gauge(
        "storage_pool_available_bytes",
        "Remaining free space of the storage pool in bytes (running or degraded pools)",
    );
    for p in pools {
        let l = [("storage_pool", p.name.as_str())];
        state.push(&l, f64::from(p.state));
        if SIZED_STATES.contains(&p.state) {
            capacity.push(&l, p.capacity as f64);
            allocation.push(&l, p.allocation as f64);
            available.push(&l, p.available as f64);
        }
    }
    for f in [state, capacity, allocation, available] {
        sink.push(f);
    }
    let mut failed = sink.counter(
        "storage_pool_info_failures",
        "Listed storage pools left out of a scrape, by reason (not_found: gone between the list and its info; error; timeout: no answer within --libvirt.timeout; limit: beyond the first 1000)",
    );
    for reason in REASONS {
        let n = failures.get(reason).copied().unwrap_or(0);
        failed.push(&[("reason", reason)], n as f64);
    }
    sink.push(failed);
}

impl StoragePoolCollector {
    pub fn new(libvirt: Arc<Libvirt>, concurrency: usize) -> Self {
        Self {
            libvirt,
            concurrency: concurrency.max(1),
            failures: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds a scrape's failures to the totals and returns the totals.
    fn count(&self, failed: &BTreeMap<&'static str, u64>) -> BTreeMap<&'static str, u64> {
        let mut totals = common::sync::lock(&self.failures);
        for (reason, n) in failed {
            *totals.entry(reason).or_default() += n;
        }
        totals.clone()
    }
}

impl Collector for StoragePoolCollector {
    fn name(&self) -> &'static str {
        FLAG.name
    }
    fn collect<'a>(&'a self, sink: &'a mut Sink) -> BoxFuture<'a, Result<(), CollectError>> {
        Box::pin(async move {
            let conn = self.libvirt.connection().await.map_err(CollectError::new)?;
            let listed = list_pools(&self.libvirt, &conn)
                .await
                .map_err(CollectError::new)?;
            let pools = pool_infos(&self.libvirt, listed, self.concurrency).await;
            let totals = self.count(&pools.failed);
            encode_pools(&pools.pools, &totals, sink);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    fn libvirt(uri: &str) -> Libvirt {
        Libvirt::new(
            uri.into(),
            Duration::from_secs(10),
            Duration::from_secs(1),
            false,
        )
    }

    fn text(pools: &[PoolInfo], failures: &BTreeMap<&'static str, u64>) -> String {
        let mut sink = common::Sink::new("libvirt");
        encode_pools(pools, failures, &mut sink);
        let mut om = String::new();
        sink.encode(&mut om).unwrap();
        common::exposition::openmetrics_to_text(&om)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_test_drivers_default_pool() {
        // test:///default has one running pool, "default-pool", as libvirt's test driver
        // defines it.
        let lv = libvirt("test:///default");
        let conn = lv.connection().await.unwrap();
        let listed = list_pools(&lv, &conn).await.unwrap();
        let got = pool_infos(&lv, listed, 2).await;
        assert!(got.failed.is_empty(), "{:?}", got.failed);
        let p = got.pools.iter().find(|p| p.name == "default-pool").unwrap();
        assert_eq!(p.state, 2);
        assert!(p.capacity > 0 && p.capacity >= p.allocation, "{p:?}");
        assert_eq!(p.capacity, p.allocation + p.available, "{p:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pool_gone_between_list_and_info_is_counted_alone() {
        // A private node (a file URI): two pools defined, listed, then one is destroyed and
        // undefined before its info is asked for.
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("node.xml");
        std::fs::write(
            &node,
            "<node>\
               <pool type='dir'><name>keep</name><target><path>/keep</path></target></pool>\
               <pool type='dir'><name>gone</name><target><path>/gone</path></target></pool>\
             </node>",
        )
        .unwrap();
        let uri = format!("test://{}", node.display());
        // A file URI gives each connection its own copy of the node: the same (read-write)
        // connection lists and undefines.
        let conn = Arc::new(Connect::open(Some(&uri)).unwrap());
        let lv = libvirt(&uri);
        let listed = lv
            .with_conn(&conn, "storage_pools", |c| {
                let mut v: Vec<(String, StoragePool)> = c
                    .list_all_storage_pools(0)?
                    .into_iter()
                    .map(|p| (p.name().unwrap_or_default(), p))
                    .collect();
                v.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(v)
            })
            .await
            .unwrap();
        assert_eq!(
            listed.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["gone", "keep"]
        );
        let gone = conn.clone();
        tokio::task::spawn_blocking(move || {
            let p = gone.lookup_storage_pool_by_name("gone").unwrap();
            if p.is_active().unwrap() {
                p.destroy().unwrap();
            }
            p.undefine().unwrap();
        })
        .await
        .unwrap();
        let got = pool_infos(&lv, listed, 2).await;
        assert_eq!(
            got.pools
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["keep"]
        );
        assert_eq!(got.failed.get("not_found"), Some(&1), "{:?}", got.failed);

        let c = StoragePoolCollector::new(Arc::new(lv), 2);
        let totals = c.count(&got.failed);
        let t = text(&got.pools, &totals);
        assert!(
            t.contains(r#"libvirt_storage_pool_info_failures_total{reason="not_found"} 1"#),
            "{t}"
        );
        assert!(t.contains(r#"libvirt_storage_pool_state{storage_pool="keep"} 2"#));
        assert!(!t.contains(r#"storage_pool="gone""#), "{t}");
        // Counted since start: a second scrape with the same failure adds to it.
        let t = text(&got.pools, &c.count(&got.failed));
        assert!(
            t.contains(r#"libvirt_storage_pool_info_failures_total{reason="not_found"} 2"#),
            "{t}"
        );
    }

    #[test]
    fn an_inactive_pool_has_a_state_and_no_sizes() {
        let pools = [
            PoolInfo {
                name: "up".into(),
                state: 2,
                capacity: 100,
                allocation: 40,
                available: 60,
            },
            PoolInfo {
                name: "down".into(),
                state: 0,
                capacity: 0,
                allocation: 0,
                available: 0,
            },
        ];
        let t = text(&pools, &BTreeMap::new());
        assert!(t.contains(r#"libvirt_storage_pool_state{storage_pool="down"} 0"#));
        assert!(t.contains(r#"libvirt_storage_pool_available_bytes{storage_pool="up"} 60"#));
        assert!(
            !t.contains(r#"available_bytes{storage_pool="down"}"#),
            "{t}"
        );
        for reason in REASONS {
            assert!(
                t.contains(&format!(
                    r#"libvirt_storage_pool_info_failures_total{{reason="{reason}"}} 0"#
                )),
                "{t}"
            );
        }
    }
}
