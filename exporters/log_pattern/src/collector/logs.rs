//! The `logs` collector: rule match counters and the tailer's own metrics.
//!
//! On each scrape it asks the tailing thread for a snapshot; the thread first saves the state
//! file, then answers with the values of the last successful save, so what is served has been
//! made durable and can never be served lower later (SIGKILL included).

use futures::future::BoxFuture;

use common::{CollectError, Collector};

use std::sync::Arc;

use crate::reload::ReloadStats;

/// The collector's identity (flag, label, help, default).
pub const FLAG: common::cli::CollectorFlag = common::cli::CollectorFlag {
    name: "logs",
    help: "Rule match counters and tailer statistics from the followed log files",
    default_enabled: true,
};
use crate::service::Handle;

/// The collector; `handle` is `None` only when built for flag listing.
#[derive(Debug)]
pub struct LogsCollector {
    handle: Option<Handle>,
    reloads: Option<Arc<ReloadStats>>,
    rulesets: Option<crate::tenants::Shared>,
}

impl LogsCollector {
    pub fn new(
        handle: Option<Handle>,
        reloads: Option<Arc<ReloadStats>>,
        rulesets: Option<crate::tenants::Shared>,
    ) -> Self {
        Self {
            handle,
            reloads,
            rulesets,
        }
    }
}

impl Collector for LogsCollector {
    fn name(&self) -> &'static str {
        FLAG.name
    }

    fn collect<'a>(
        &'a self,
        sink: &'a mut common::Sink,
    ) -> BoxFuture<'a, Result<(), CollectError>> {
        Box::pin(async move {
            let handle = self
                .handle
                .as_ref()
                .ok_or_else(|| CollectError::new("the tailer is not running"))?;
            let snap = handle.snapshot().await.map_err(CollectError::new)?;
            crate::metrics::encode(&snap, sink);
            if let Some(r) = &self.reloads {
                r.encode(sink);
            }
            if let Some(sets) = &self.rulesets {
                common::sync::lock(sets).encode(sink);
            }
            Ok(())
        })
    }
}
