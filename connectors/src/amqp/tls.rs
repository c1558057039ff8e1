//! TLS to the broker: the CA a process's `amqps://` connections trust
//! (`[amqp] ca_file`, `vidflow submit --ca`).

/// A TLS setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("[amqp] ca_file = {ca} requires TLS, but the broker URL {url} is not amqps://")]
    Plaintext { url: String, ca: String },
    #[error("reading the CA file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NotPem { path: String },
}

/// The CA bundle (PEM) this process's `amqps://` connections trust: one
/// process talks to one broker, so it is set once at start-up rather than
/// threaded through every connection site.
static TRUSTED_CA: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The CA set by [`trust_ca`], if any.
pub(super) fn trusted_ca() -> Option<&'static String> {
    TRUSTED_CA.get()
}

/// Trusts the CA(s) in the PEM file at `path` for `amqps://` connections
/// made by [`connect`] from now on (the first call wins).
pub fn trust_ca(path: &std::path::Path) -> Result<(), TlsError> {
    let pem = std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(TlsError::NotPem {
            path: path.display().to_string(),
        });
    }
    let _ = TRUSTED_CA.set(pem);
    Ok(())
}

/// `url` with its password replaced, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}
