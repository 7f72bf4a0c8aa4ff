//! Where the API's and the dashboard's task reads come from: the store,
//! through a [`store::StoreReader`] of its own connections, never the core
//! loop. So lists and task pages survive a restart, and a page of 100 000
//! tasks costs the core nothing.
//!
//! A coordinator without a persistent store (`--no-store`) that serves HTTP
//! still writes its tasks to an **ephemeral** SQLite file in a temporary
//! directory (no fsync; deleted when the coordinator stops), so that the
//! reads take the same path in every mode. A crash still loses everything,
//! as memory mode promises.

use std::sync::Arc;

use store::{StoreError, StoreReader, Target};

use crate::http::ApiError;

/// The reader the HTTP API shares.
pub(crate) type Reader = Arc<dyn StoreReader>;

/// Opens a reader of the store `target` names (the writer must have opened
/// it first: it owns the schema). The one place a reader is opened, so that
/// whatever opens the store (SQLite, PostgreSQL) hands its target here.
pub(crate) fn open(target: &Target) -> Result<Reader, StoreError> {
    Ok(Arc::from(store::open_reader(target)?))
}

/// Runs `read` on a blocking thread (reads block on their connection).
pub(crate) async fn run<T: Send + 'static>(
    reader: &Reader,
    read: impl FnOnce(&dyn StoreReader) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let reader = Arc::clone(reader);
    let joined = tokio::task::spawn_blocking(move || read(reader.as_ref())).await;
    match joined {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::warn!("a store read failed: {e}");
            Err(ApiError::unavailable_because(format!("the store could not be read: {e}")))
        }
        Err(_) => Err(ApiError::unavailable()),
    }
}
