//! API keys. Each tenant has one or more keys; only their SHA-256 is
//! stored (in `configs/vidflow.toml` or a key file), so a leaked config
//! does not leak keys. A plain hash (no salt, no slow KDF) is enough
//! because keys are 256 random bits made by `vidflow key new`, not
//! passwords: there is nothing to guess.
//!
//! A key may carry an expiry; [`revoke_key`] removes one from its file;
//! a running service follows the file through a [`KeyRing`], which
//! re-reads it when it changes, so neither takes a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One stored key: the tenant it authenticates and the hex SHA-256 of the
/// key text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub tenant: String,
    pub sha256: String,
    /// When the key stops working: `yyyy-mm-dd` (00:00 UTC that day) or
    /// `yyyy-mm-ddThh:mm:ssZ`. None: it works until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// The key file: `[[key]]` tables of [`KeyEntry`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    #[serde(default)]
    pub key: Vec<KeyEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("key file {path}: entry {index}: {msg}")]
    Entry {
        path: String,
        index: usize,
        msg: String,
    },
}

/// The hex SHA-256 a key is stored as.
pub fn hash_key(key: &str) -> String {
    let d = Sha256::digest(key.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random key (`vf_` + 64 hex digits = 256 bits).
pub fn new_key() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the OS random source failed");
    let hex: String = b.iter().map(|b| format!("{b:02x}")).collect();
    format!("vf_{hex}")
}

/// Key hashes → tenant (and expiry), for lookups on every request.
#[derive(Clone, Debug, Default)]
pub struct KeyStore {
    by_hash: HashMap<String, Stored>,
}

#[derive(Clone, Debug)]
struct Stored {
    tenant: String,
    /// Unix ms from which the key no longer works.
    expires_ms: Option<u64>,
}

/// `yyyy-mm-dd` or `yyyy-mm-ddThh:mm:ssZ` (UTC) as Unix ms.
pub fn parse_expiry(s: &str) -> Option<u64> {
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z')?)),
        None => (s, None),
    };
    let mut d = date.splitn(3, '-').map(|x| x.parse::<u32>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let date = chrono::NaiveDate::from_ymd_opt(y as i32, m, day)?;
    let (hh, mm, ss) = match time {
        None => (0, 0, 0),
        Some(t) => {
            let mut p = t.splitn(3, ':').map(|x| x.parse::<u32>().ok());
            (p.next()??, p.next()??, p.next()??)
        }
    };
    let ms = date.and_hms_opt(hh, mm, ss)?.and_utc().timestamp_millis();
    u64::try_from(ms).ok()
}

fn now_ms() -> u64 {
    vidflow_job::event::now_ms()
}

impl KeyStore {
    /// Builds the store from entries; `source` names where they came from
    /// for errors.
    pub fn from_entries(entries: &[KeyEntry], source: &str) -> Result<KeyStore, AuthError> {
        let mut by_hash = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            let bad = |msg: &str| AuthError::Entry {
                path: source.to_string(),
                index: i + 1,
                msg: msg.to_string(),
            };
            if !vidflow_job::id::is_tenant_name(&e.tenant) {
                return Err(bad(
                    "tenant must be 1 to 64 characters of A-Z a-z 0-9 _ - and not a reserved name",
                ));
            }
            let h = e.sha256.to_ascii_lowercase();
            if h.len() != 64 || !h.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad("sha256 must be 64 hex digits (see `vidflow key new`)"));
            }
            let expires_ms = match &e.expires {
                None => None,
                Some(x) => Some(parse_expiry(x).ok_or_else(|| {
                    bad("expires must be yyyy-mm-dd or yyyy-mm-ddThh:mm:ssZ (UTC)")
                })?),
            };
            by_hash.insert(
                h,
                Stored {
                    tenant: e.tenant.clone(),
                    expires_ms,
                },
            );
        }
        Ok(KeyStore { by_hash })
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> Result<KeyStore, AuthError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: p.clone(),
            source,
        })?;
        let f: KeyFile = toml::from_str(&text).map_err(|source| AuthError::Parse {
            path: p.clone(),
            source,
        })?;
        Self::from_entries(&f.key, &p)
    }

    /// Adds the entries of another store.
    pub fn extend(&mut self, other: KeyStore) {
        self.by_hash.extend(other.by_hash);
    }

    /// The tenant a key belongs to, if the key exists and has not expired.
    pub fn tenant(&self, key: &str) -> Option<&str> {
        self.tenant_at(key, now_ms())
    }

    /// [`KeyStore::tenant`] at Unix time `now_ms`.
    pub fn tenant_at(&self, key: &str, now_ms: u64) -> Option<&str> {
        self.by_hash
            .get(&hash_key(key))
            .filter(|s| s.expires_ms.is_none_or(|e| now_ms < e))
            .map(|s| s.tenant.as_str())
    }

    /// Every tenant with a key that works now.
    pub fn tenants(&self) -> std::collections::BTreeSet<String> {
        let now = now_ms();
        self.by_hash
            .values()
            .filter(|s| s.expires_ms.is_none_or(|e| now < e))
            .map(|s| s.tenant.clone())
            .collect()
    }

    /// Whether `tenant` has a key that works now.
    pub fn has_tenant(&self, tenant: &str) -> bool {
        let now = now_ms();
        self.by_hash
            .values()
            .any(|s| s.tenant == tenant && s.expires_ms.is_none_or(|e| now < e))
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// Appends a new key entry for `tenant` to the key file at `path` (created
/// if missing) and returns the key, which is shown once and never stored.
pub fn add_key(path: &Path, tenant: &str) -> Result<String, AuthError> {
    add_key_expiring(path, tenant, None)
}

/// [`add_key`] with an expiry (see [`KeyEntry::expires`]).
pub fn add_key_expiring(
    path: &Path,
    tenant: &str,
    expires: Option<&str>,
) -> Result<String, AuthError> {
    let p = path.display().to_string();
    if !vidflow_job::id::is_tenant_name(tenant) {
        return Err(AuthError::Entry {
            path: p,
            index: 0,
            msg: format!(
                "invalid tenant {tenant:?}: 1 to 64 characters of A-Z a-z 0-9 _ -, not one of {}",
                vidflow_job::id::RESERVED_TENANTS.join(", ")
            ),
        });
    }
    if let Some(x) = expires {
        if parse_expiry(x).is_none() {
            return Err(AuthError::Entry {
                path: p,
                index: 0,
                msg: format!("expires {x:?}: expected yyyy-mm-dd or yyyy-mm-ddThh:mm:ssZ (UTC)"),
            });
        }
    }
    if path.exists() {
        // Refuse to append to a file we could not read back.
        KeyStore::load(path)?;
    }
    let key = new_key();
    let mut entry = format!(
        "\n[[key]]\ntenant = \"{tenant}\"\nsha256 = \"{}\"\n",
        hash_key(&key)
    );
    if let Some(x) = expires {
        entry.push_str(&format!("expires = \"{x}\"\n"));
    }
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(entry.as_bytes()).and_then(|_| f.sync_all()))
        .map_err(|source| AuthError::Read { path: p, source })?;
    Ok(key)
}

/// Removes the key `key_or_hash` (the key itself, or its hex SHA-256)
/// from the key file at `path`, rewriting it atomically (temp file +
/// rename, so a reader sees the old file or the new one). Returns how many
/// entries went (0: no such key). A running service's [`KeyRing`] drops
/// the key at its next look at the file.
pub fn revoke_key(path: &Path, key_or_hash: &str) -> Result<usize, AuthError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
        path: p.clone(),
        source,
    })?;
    let mut f: KeyFile = toml::from_str(&text).map_err(|source| AuthError::Parse {
        path: p.clone(),
        source,
    })?;
    let target = if key_or_hash.starts_with("vf_") {
        hash_key(key_or_hash)
    } else {
        key_or_hash.to_ascii_lowercase()
    };
    let before = f.key.len();
    f.key.retain(|e| e.sha256.to_ascii_lowercase() != target);
    let removed = before - f.key.len();
    if removed == 0 {
        return Ok(0);
    }
    // Written by hand (the toml crate is built without its serializer);
    // a JSON string is a valid TOML basic string.
    let q = |v: &str| serde_json::to_string(v).unwrap_or_default();
    let mut body = String::new();
    for e in &f.key {
        body.push_str(&format!(
            "[[key]]\ntenant = {}\nsha256 = {}\n",
            q(&e.tenant),
            q(&e.sha256)
        ));
        if let Some(x) = &e.expires {
            body.push_str(&format!("expires = {}\n", q(x)));
        }
        body.push('\n');
    }
    let tmp = path.with_extension("toml.tmp");
    use std::io::Write;
    std::fs::File::create(&tmp)
        .and_then(|mut w| w.write_all(body.as_bytes()).and_then(|_| w.sync_all()))
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|source| AuthError::Read { path: p, source })?;
    Ok(removed)
}

/// The keys a running service accepts: inline entries plus a key file
/// that is re-read when its contents change ([`KeyRing::watch`]), so keys
/// are added, expire and are revoked without a restart. A file that fails
/// to load keeps the previous keys (and says why in the log): a bad edit
/// must not lock every tenant out.
pub struct KeyRing {
    inline: Vec<KeyEntry>,
    file: Option<PathBuf>,
    /// Keys a fleet shares (the database's `api_keys`), set by
    /// [`KeyRing::set_shared`].
    shared: Mutex<Vec<KeyEntry>>,
    current: RwLock<Arc<KeyStore>>,
    /// The key file's bytes at the last load (outer None: never loaded).
    seen: Mutex<Option<Option<Vec<u8>>>>,
}

impl KeyRing {
    pub fn load(inline: Vec<KeyEntry>, file: Option<PathBuf>) -> Result<KeyRing, AuthError> {
        let ring = KeyRing {
            inline,
            file,
            shared: Mutex::new(Vec::new()),
            current: RwLock::new(Arc::new(KeyStore::default())),
            seen: Mutex::new(None),
        };
        ring.reload()?;
        Ok(ring)
    }

    /// The keys as of the last (re)load.
    pub fn current(&self) -> Arc<KeyStore> {
        self.current
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Re-reads the key file if its contents changed; true when the keys
    /// were replaced.
    pub fn reload(&self) -> Result<bool, AuthError> {
        let bytes = match &self.file {
            None => None,
            Some(f) => Some(std::fs::read(f).map_err(|source| AuthError::Read {
                path: f.display().to_string(),
                source,
            })?),
        };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.as_ref() == Some(&bytes) {
            return Ok(false);
        }
        self.rebuild(bytes.as_deref())?;
        *seen = Some(bytes);
        Ok(true)
    }

    /// Replaces the shared keys (the fleet's database); true when they
    /// changed. An entry that does not check out refuses the whole set
    /// and keeps the previous keys.
    pub fn set_shared(&self, entries: Vec<KeyEntry>) -> Result<bool, AuthError> {
        KeyStore::from_entries(&entries, "api_keys")?;
        {
            let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            if *shared == entries {
                return Ok(false);
            }
            *shared = entries;
        }
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = seen.clone().flatten();
        self.rebuild(bytes.as_deref())?;
        Ok(true)
    }

    /// inline + key file (`bytes`) + shared keys → the current store.
    fn rebuild(&self, bytes: Option<&[u8]>) -> Result<(), AuthError> {
        let mut store = KeyStore::from_entries(&self.inline, "[auth] key")?;
        if let (Some(f), Some(b)) = (&self.file, bytes) {
            let p = f.display().to_string();
            let text = String::from_utf8_lossy(b);
            let kf: KeyFile = toml::from_str(&text).map_err(|source| AuthError::Parse {
                path: p.clone(),
                source,
            })?;
            store.extend(KeyStore::from_entries(&kf.key, &p)?);
        }
        let shared = self
            .shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        store.extend(KeyStore::from_entries(&shared, "api_keys")?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(store);
        Ok(())
    }

    /// Re-reads the key file every `every` until `stop` is set.
    pub async fn watch(self: Arc<Self>, every: Duration, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(every).await;
            match self.reload() {
                Ok(true) => tracing::info!(
                    keys = self.current().len(),
                    "API keys reloaded from the key file"
                ),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "key file unreadable: keeping the previous keys")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_expire_and_are_revoked_through_the_ring() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let ka = add_key(&path, "acme").unwrap();
        let old = add_key_expiring(&path, "acme", Some("2020-01-01")).unwrap();
        let soon = add_key_expiring(&path, "globex", Some("2999-01-01T00:00:00Z")).unwrap();
        let ring = KeyRing::load(vec![], Some(path.clone())).unwrap();
        let keys = ring.current();
        assert_eq!(keys.tenant(&ka), Some("acme"));
        assert_eq!(keys.tenant(&old), None, "expired");
        assert_eq!(keys.tenant(&soon), Some("globex"));
        let y2999 = parse_expiry("2999-01-01").unwrap();
        assert_eq!(keys.tenant_at(&soon, y2999), None);
        assert_eq!(keys.tenant_at(&soon, y2999 - 1), Some("globex"));
        assert!(!ring.reload().unwrap(), "unchanged file: no reload");
        assert_eq!(revoke_key(&path, &ka).unwrap(), 1);
        assert_eq!(revoke_key(&path, &ka).unwrap(), 0);
        assert!(ring.reload().unwrap());
        assert_eq!(ring.current().tenant(&ka), None, "revoked");
        assert_eq!(ring.current().tenant(&soon), Some("globex"));
        // A broken edit keeps the previous keys.
        std::fs::write(&path, "[[key]]\ntenant = 5\n").unwrap();
        assert!(ring.reload().is_err());
        assert_eq!(ring.current().tenant(&soon), Some("globex"));
        assert!(parse_expiry("2027-13-01").is_none() && parse_expiry("soon").is_none());
        assert!(add_key_expiring(&path, "acme", Some("tomorrow")).is_err());
    }

    #[test]
    fn keys_round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let ka = add_key(&path, "acme").unwrap();
        let kb = add_key(&path, "globex").unwrap();
        assert_ne!(ka, kb);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&ka), "the key itself must not be stored");
        let store = KeyStore::load(&path).unwrap();
        assert_eq!(store.tenant(&ka), Some("acme"));
        assert_eq!(store.tenant(&kb), Some("globex"));
        assert_eq!(store.tenant("vf_nope"), None);
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn bad_entries_name_the_file_and_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        std::fs::write(&path, "[[key]]\ntenant = \"a/b\"\nsha256 = \"00\"\n").unwrap();
        let e = KeyStore::load(&path).unwrap_err().to_string();
        assert!(e.contains("keys.toml") && e.contains("entry 1"), "{e}");
        std::fs::write(&path, "[[key]]\ntenant = \"a\"\nsha256 = \"zz\"\n").unwrap();
        let e = KeyStore::load(&path).unwrap_err().to_string();
        assert!(e.contains("sha256"), "{e}");
        std::fs::write(&path, "[[key]]\ntenant = 5\n").unwrap();
        assert!(KeyStore::load(&path).is_err());
    }
}
