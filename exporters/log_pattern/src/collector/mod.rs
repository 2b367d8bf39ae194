//! Collectors of this exporter. There is one, `logs`: unlike the scrape-time exporters, its
//! values come from the long-lived tailing thread, which saves its state at each scrape and
//! answers with the values of that durable save.

pub mod logs;
