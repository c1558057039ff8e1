//! A copy of every finished Parquet part in the object store (a fleet's
//! bucket), so the analytics of all nodes can be read under one S3 prefix
//! while each node keeps its outbox and parts in its own scratch
//! directory. The part's local file stays the source of truth for the
//! node (its `sunk` set and crash recovery); the copy is put after the
//! local rename, with the same name, and a part missing from the store
//! (a failed put, a crash between the two) is put again when the sinks
//! open. Part names carry the node and segment, and a re-put writes the
//! same bytes, so readers of the prefix see every row once.
//!
//! The sinks run on blocking threads (the serving runtime's
//! `spawn_blocking`, or plain threads in the tests), so the copy blocks on
//! the store's async calls through whichever runtime the thread belongs to.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use object_store::path::Path as Key;

use super::{io, parquet_files, SinkError, DATASETS};
use crate::store::OutputStore;

/// Where parts are copied: `<prefix>/<dataset>/date=<d>/part-<id>.parquet`
/// in `store`.
#[derive(Clone, Debug)]
pub struct PartMirror {
    pub store: Arc<OutputStore>,
    pub prefix: String,
}

impl PartMirror {
    fn key(&self, dataset: &str, date_dir: &str, file: &str) -> Key {
        let prefix = self.prefix.trim_matches('/');
        Key::from(format!("{prefix}/{dataset}/{date_dir}/{file}"))
    }

    /// Copies one local part (`<root>/<dataset>/<date_dir>/<file>`).
    pub(super) fn put(&self, dataset: &str, local: &Path) -> Result<(), SinkError> {
        let (Some(file), Some(date_dir)) = (
            local.file_name().map(|f| f.to_string_lossy().into_owned()),
            local
                .parent()
                .and_then(|p| p.file_name())
                .map(|d| d.to_string_lossy().into_owned()),
        ) else {
            return Ok(());
        };
        let bytes = std::fs::read(local).map_err(io(local))?;
        let key = self.key(dataset, &date_dir, &file);
        let put = match tokio::runtime::Handle::try_current() {
            // A blocking-pool thread of the serving runtime (the sinks run
            // under spawn_blocking): its handle may block on the future.
            Ok(h) => h.block_on(self.store.put_atomic(&key, bytes)).map(|_| ()),
            Err(_) => self.store.put_atomic_blocking(&key, bytes).map(|_| ()),
        };
        put.map_err(|source| SinkError::Mirror {
            key: key.to_string(),
            source,
        })
    }

    /// Puts every local part under `root` the store lacks; returns how
    /// many.
    pub(super) fn catch_up(&self, root: &Path) -> Result<usize, SinkError> {
        let listed = |dataset: &str| -> Result<HashSet<String>, SinkError> {
            let prefix = Key::from(format!("{}/{dataset}", self.prefix.trim_matches('/')));
            let listed = match tokio::runtime::Handle::try_current() {
                Ok(h) => h.block_on(self.store.list(&prefix)),
                Err(_) => self.store.list_blocking(&prefix),
            };
            Ok(listed
                .map_err(|source| SinkError::Mirror {
                    key: prefix.to_string(),
                    source,
                })?
                .into_iter()
                .map(|k| k.to_string())
                .collect())
        };
        let mut put = 0;
        for dataset in DATASETS {
            let have = listed(dataset)?;
            for p in parquet_files(&root.join(dataset)) {
                let date_dir = p
                    .parent()
                    .and_then(|d| d.file_name())
                    .map(|d| d.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let file = p
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if !have.contains(&self.key(dataset, &date_dir, &file).to_string()) {
                    self.put(dataset, &p)?;
                    put += 1;
                }
            }
        }
        Ok(put)
    }
}
