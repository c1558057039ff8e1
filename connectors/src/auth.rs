//! API keys. Each tenant has one or more keys; only their SHA-256 is
//! stored (in `configs/vidflow.toml` or a key file), so a leaked config
//! does not leak keys. A plain hash (no salt, no slow KDF) is enough
//! because keys are 256 random bits made by `vidflow key new`, not
//! passwords: there is nothing to guess.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One stored key: the tenant it authenticates and the hex SHA-256 of the
/// key text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub tenant: String,
    pub sha256: String,
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

/// Key hashes → tenant, for lookups on every request.
#[derive(Clone, Debug, Default)]
pub struct KeyStore {
    by_hash: HashMap<String, String>,
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
            by_hash.insert(h, e.tenant.clone());
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

    /// The tenant a key belongs to.
    pub fn tenant(&self, key: &str) -> Option<&str> {
        self.by_hash.get(&hash_key(key)).map(String::as_str)
    }

    /// Every tenant with a key.
    pub fn tenants(&self) -> std::collections::BTreeSet<String> {
        self.by_hash.values().cloned().collect()
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
    if path.exists() {
        // Refuse to append to a file we could not read back.
        KeyStore::load(path)?;
    }
    let key = new_key();
    let entry = format!(
        "\n[[key]]\ntenant = \"{tenant}\"\nsha256 = \"{}\"\n",
        hash_key(&key)
    );
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(entry.as_bytes()).and_then(|_| f.sync_all()))
        .map_err(|source| AuthError::Read { path: p, source })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

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
