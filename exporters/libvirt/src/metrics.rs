//! Label sets for the per-domain families of [`crate::collector::domain`], and the hasher its
//! per-scrape maps use. Metrics themselves are written through [`common::Sink`] (see
//! [`common::collector`]).
#![forbid(unsafe_code)]

use std::borrow::Cow;

/// A label set. Names are mostly literals, borrowed rather than allocated for each series.
pub type Labels = Vec<(Cow<'static, str>, String)>;

pub use common::text::FxBuild;

/// Builds a label set from pairs.
pub fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (Cow::Borrowed(*k), (*v).to_string()))
        .collect()
}
