//! Where finished videos go: an [`object_store`] (the local filesystem by
//! default), keyed `tenant/yyyy-mm-dd/job_id.mp4`.
//!
//! # Atomicity
//!
//! [`OutputStore::put_atomic`] is one `put` with [`PutMode::Overwrite`]:
//!
//! * On [`LocalFileSystem`] (object_store 0.14, `local.rs`, `put_opts`), the
//!   bytes are written to a fresh staging file next to the target
//!   (`<target>#<n>`, opened with `create_new`), then published with
//!   `rename(staging, target)`, which is atomic on POSIX within one directory:
//!   a reader sees either no file / the previous file, or the complete new
//!   one, never a partial file. On error the staging file is removed; a crash
//!   mid-write can leave a `<target>#<n>` file behind, never a partial target.
//!   [`OutputStore::local`] also turns on `fsync` (file and parent directory),
//!   so a returned [`StoredObject`] is durable.
//! * On S3 ([`OutputStore::s3`], `[store] kind = "s3"`) a single PUT is
//!   atomic by the service's semantics: the object appears whole or not at all.
//!
//! So no temp-file-and-rename of our own is needed.
//!
//! # Blocking use
//!
//! The dataflow calls the store from executor threads (plain OS threads, not
//! async tasks). The `*_blocking` methods run the async ones to completion on
//! a current-thread tokio runtime that the store creates on first use and
//! shares between callers (tokio lets several threads `block_on` one
//! current-thread runtime; each future runs on its caller's thread). They
//! return [`OutputError::Runtime`] instead of panicking when called from
//! inside an async runtime: use the async methods there.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use chrono::{Datelike, NaiveDate};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use sha2::{Digest, Sha256};

use crate::error::OutputError;

mod config;
pub use config::{StoreConfig, StoreKind};

/// Longest accepted tenant or job id.
pub const MAX_ID_LEN: usize = 64;

/// What [`OutputStore::put_atomic`] stored: the key, the size in bytes and
/// the lowercase hex SHA-256 of the bytes (what goes into the job's result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub key: Path,
    pub size: u64,
    pub sha256_hex: String,
}

/// The output key of a job: `tenant/yyyy-mm-dd/job_id.mp4`.
///
/// `tenant` and `job_id` must match `[A-Za-z0-9_-]{1,64}` (so no value can
/// add a path segment, climb out with `..`, or be empty), and the date's year
/// must be in 0..=9999. Errors are [`OutputError::Invalid`] naming `tenant`,
/// `job_id` or `date`.
pub fn output_key(tenant: &str, date: NaiveDate, job_id: &str) -> Result<Path, OutputError> {
    check_id("tenant", tenant)?;
    check_id("job_id", job_id)?;
    if !(0..=9999).contains(&date.year()) {
        return Err(OutputError::invalid("date", date, "a year in 0..=9999"));
    }
    let day = format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day());
    let file = format!("{job_id}.mp4");
    Ok(Path::from_iter([tenant, day.as_str(), file.as_str()]))
}

fn check_id(field: &'static str, value: &str) -> Result<(), OutputError> {
    let ok = (1..=MAX_ID_LEN).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(OutputError::invalid(
            field,
            format!("{value:?}"),
            format!("1 to {MAX_ID_LEN} characters from [A-Za-z0-9_-]"),
        ))
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for b in digest {
        use std::fmt::Write;
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// The output store: any [`ObjectStore`] (local filesystem by default).
#[derive(Debug)]
pub struct OutputStore {
    store: Arc<dyn ObjectStore>,
    /// Root directory when the store is a [`LocalFileSystem`] made by
    /// [`OutputStore::local`].
    local_root: Option<PathBuf>,
    runtime: OnceLock<tokio::runtime::Runtime>,
}

impl Drop for OutputStore {
    /// The blocking helpers' runtime may be dropped from async code (the
    /// last owner of the store is a task): shut it down without waiting,
    /// which tokio allows there (a plain drop panics).
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl OutputStore {
    /// Wraps any object store (S3, GCS, in-memory, ...).
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        OutputStore {
            store,
            local_root: None,
            runtime: OnceLock::new(),
        }
    }

    /// A store rooted at directory `root` on the local filesystem (created if
    /// missing), with fsync on.
    pub fn local(root: impl Into<PathBuf>) -> Result<Self, OutputError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|source| {
            OutputError::Store(object_store::Error::Generic {
                store: "LocalFileSystem",
                source: format!(
                    "cannot create output directory {}: {source}",
                    root.display()
                )
                .into(),
            })
        })?;
        let root = root.canonicalize().unwrap_or(root);
        // Cleanup: deleting a store's last object under a prefix (a finished
        // job's checkpoints) leaves no empty directories behind.
        let fs = LocalFileSystem::new_with_prefix(&root)?
            .with_fsync(true)
            .with_automatic_cleanup(true);
        Ok(OutputStore {
            store: Arc::new(fs),
            local_root: Some(root),
            runtime: OnceLock::new(),
        })
    }

    /// The underlying object store.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The file `key` is (or would be) stored in, for a store made by
    /// [`OutputStore::local`]; `None` for other stores.
    pub fn local_path(&self, key: &Path) -> Option<PathBuf> {
        self.local_root.as_ref().map(|root| {
            key.parts()
                .fold(root.clone(), |p, part| p.join(part.as_ref()))
        })
    }

    /// Stores `bytes` under `key` atomically (see the module docs: a reader
    /// never sees a partial object), replacing any previous object, and
    /// returns its size and SHA-256.
    pub async fn put_atomic(
        &self,
        key: &Path,
        bytes: Vec<u8>,
    ) -> Result<StoredObject, OutputError> {
        let stored = StoredObject {
            key: key.clone(),
            size: bytes.len() as u64,
            sha256_hex: sha256_hex(&bytes),
        };
        let opts = PutOptions {
            mode: PutMode::Overwrite,
            ..PutOptions::default()
        };
        self.store
            .put_opts(key, PutPayload::from(bytes), opts)
            .await?;
        Ok(stored)
    }

    /// The bytes stored under `key` ([`OutputError::is_not_found`] when absent).
    pub async fn get(&self, key: &Path) -> Result<Vec<u8>, OutputError> {
        let bytes = self.store.get(key).await?.bytes().await?;
        Ok(Vec::from(bytes))
    }

    /// The bytes under `key`, refusing (without reading them) an object
    /// over `limit` bytes: its size is checked from the metadata first,
    /// and the body is read no further than the limit in case it grew.
    pub async fn get_capped(&self, key: &Path, limit: u64) -> Result<Vec<u8>, OutputError> {
        use futures_util::StreamExt;
        let too_large = || OutputError::TooLarge {
            key: key.to_string(),
            limit,
        };
        let r = self.store.get(key).await?;
        if r.meta.size > limit {
            return Err(too_large());
        }
        let mut out = Vec::with_capacity(r.meta.size as usize);
        let mut body = r.into_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            if out.len() as u64 + chunk.len() as u64 > limit {
                return Err(too_large());
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// [`OutputStore::get_capped`] for non-async threads.
    pub fn get_capped_blocking(&self, key: &Path, limit: u64) -> Result<Vec<u8>, OutputError> {
        self.block_on(self.get_capped(key, limit))
    }

    /// Keys of every object under `prefix` (through the store, so it works
    /// the same on a local directory and on S3).
    pub async fn list(&self, prefix: &Path) -> Result<Vec<Path>, OutputError> {
        use futures_util::TryStreamExt;
        let metas: Vec<object_store::ObjectMeta> =
            self.store.list(Some(prefix)).try_collect().await?;
        Ok(metas.into_iter().map(|m| m.location).collect())
    }

    /// Deletes the object under `key`; an absent one is not an error.
    pub async fn delete(&self, key: &Path) -> Result<(), OutputError> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// [`OutputStore::list`] for non-async threads.
    pub fn list_blocking(&self, prefix: &Path) -> Result<Vec<Path>, OutputError> {
        self.block_on(self.list(prefix))
    }

    /// [`OutputStore::delete`] for non-async threads.
    pub fn delete_blocking(&self, key: &Path) -> Result<(), OutputError> {
        self.block_on(self.delete(key))
    }

    /// Whether an object is stored under `key`.
    pub async fn exists(&self, key: &Path) -> Result<bool, OutputError> {
        match self.store.head(key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// [`OutputStore::put_atomic`] for non-async threads (see the module docs).
    pub fn put_atomic_blocking(
        &self,
        key: &Path,
        bytes: Vec<u8>,
    ) -> Result<StoredObject, OutputError> {
        self.block_on(self.put_atomic(key, bytes))
    }

    /// [`OutputStore::get`] for non-async threads.
    pub fn get_blocking(&self, key: &Path) -> Result<Vec<u8>, OutputError> {
        self.block_on(self.get(key))
    }

    /// [`OutputStore::exists`] for non-async threads.
    pub fn exists_blocking(&self, key: &Path) -> Result<bool, OutputError> {
        self.block_on(self.exists(key))
    }

    fn block_on<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, OutputError>>,
    ) -> Result<T, OutputError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(OutputError::Runtime(std::io::Error::other(
                "blocking output-store call from inside an async runtime: use the async method",
            )));
        }
        let runtime = match self.runtime.get() {
            Some(rt) => rt,
            None => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(OutputError::Runtime)?;
                // Another thread may have won the race; either runtime works.
                let _ = self.runtime.set(rt);
                self.runtime.get().expect("runtime was just set")
            }
        };
        runtime.block_on(fut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, 7).unwrap()
    }

    #[test]
    fn key_layout() {
        let key = output_key("acme_co", day(), "01J-abc_9").unwrap();
        assert_eq!(key.as_ref(), "acme_co/2026-03-07/01J-abc_9.mp4");
        assert_eq!(key.parts().count(), 3);
        let long = "a".repeat(64);
        assert!(output_key(&long, day(), &long).is_ok());
    }

    #[test]
    fn key_fields_cannot_escape() {
        let bad = [
            "../x", "..", ".", "", "a/b", "a\\b", "a.b", "é", "日本", "a b", "a\0", "a%2Fb", "~",
        ];
        let long = "a".repeat(65);
        for value in bad.iter().copied().chain([long.as_str()]) {
            let e = output_key(value, day(), "job").unwrap_err();
            assert_eq!(e.field(), Some("tenant"), "{value:?}: {e}");
            let e = output_key("t", day(), value).unwrap_err();
            assert_eq!(e.field(), Some("job_id"), "{value:?}: {e}");
        }
        let e = output_key("t", NaiveDate::from_ymd_opt(10000, 1, 1).unwrap(), "j").unwrap_err();
        assert_eq!(e.field(), Some("date"));
    }

    #[test]
    fn sha256_of_empty() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
