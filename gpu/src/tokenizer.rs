//! Prompt tokenisation for the T5 text encoder.
//!
//! Real checkpoints ship a `tokenizer/` folder; we read its `tokenizer.json`
//! (the format `T5TokenizerFast` saves) with the `tokenizers` crate. The
//! built-in tiny model uses a ByT5-style byte tokenizer instead.
//!
//! Both follow what the diffusers LTX pipeline asks of the HF tokenizer
//! (`padding="max_length", truncation=True, add_special_tokens=True`): the
//! `</s>` end token is appended, the sequence is truncated to `max_len` with
//! `</s>` kept as the last token, then padded with the pad id (0) to `max_len`.

use std::path::Path;

use tokenizers::{PostProcessor, TruncationDirection};

use crate::error::{GpuError, Result};

/// Pad, end-of-sequence and unknown ids of the byte tokenizer (as ByT5).
const BYTE_PAD: u32 = 0;
const BYTE_EOS: u32 = 1;
const BYTE_OFFSET: u32 = 3;
/// Vocabulary size of the byte tokenizer: 3 specials + 256 bytes.
pub const BYTE_VOCAB: usize = 259;

pub enum PromptTokenizer {
    /// A Hugging Face `tokenizer.json` (T5TokenizerFast).
    Hf(tokenizers::Tokenizer),
    /// ByT5-style bytes: id = byte + 3 (0 pad, 1 eos, 2 unk), vocab 259.
    Bytes,
}

/// One tokenised prompt, padded to `max_len`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    /// 1 for real tokens (including `</s>`), 0 for padding.
    pub mask: Vec<u8>,
}

impl Tokens {
    /// Number of real (unpadded) tokens.
    pub fn len_unpadded(&self) -> usize {
        self.mask.iter().filter(|&&m| m != 0).count()
    }
}

fn tok_err(source: &Path, msg: impl Into<String>) -> GpuError {
    GpuError::Tokenizer {
        source_desc: source.display().to_string(),
        msg: msg.into(),
    }
}

impl PromptTokenizer {
    /// Loads a checkpoint's `tokenizer/` folder: its `tokenizer.json`, or a
    /// `tokenizer_config.json` naming `ByT5Tokenizer` (byte-level).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            let tok = tokenizers::Tokenizer::from_file(&json)
                .map_err(|e| tok_err(&json, format!("cannot load tokenizer.json: {e}")))?;
            return Ok(PromptTokenizer::Hf(tok));
        }
        // ByT5 needs no vocabulary file: its `tokenizer_config.json` naming the
        // class is the whole tokenizer (the built-in tiny model uses it).
        let cfg = dir.join("tokenizer_config.json");
        if let Ok(text) = std::fs::read_to_string(&cfg) {
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| tok_err(&cfg, format!("not valid JSON: {e}")))?;
            if v.get("tokenizer_class").and_then(|c| c.as_str()) == Some("ByT5Tokenizer") {
                return Ok(PromptTokenizer::Bytes);
            }
        }
        if dir.join("spiece.model").is_file() {
            return Err(tok_err(
                dir,
                format!(
                    "only a SentencePiece `spiece.model` was found; vidflow needs the fast \
                     tokenizer file `tokenizer.json` in this folder. Create it with: \
                     python -c \"from transformers import T5TokenizerFast; \
                     T5TokenizerFast.from_pretrained('{d}').save_pretrained('{d}')\"",
                    d = dir.display()
                ),
            ));
        }
        if !dir.is_dir() {
            return Err(tok_err(dir, "tokenizer folder not found"));
        }
        Err(tok_err(
            dir,
            "no `tokenizer.json` in this tokenizer folder (expected the file T5TokenizerFast saves)",
        ))
    }

    /// The ByT5-style byte tokenizer of the built-in tiny model.
    pub fn byte_level() -> Self {
        PromptTokenizer::Bytes
    }

    /// Vocabulary size (including added tokens for HF tokenizers).
    pub fn vocab_size(&self) -> usize {
        match self {
            PromptTokenizer::Hf(t) => t.get_vocab_size(true),
            PromptTokenizer::Bytes => BYTE_VOCAB,
        }
    }

    /// Tokenises a prompt given as raw bytes (which must be UTF-8): appends
    /// `</s>`, truncates to `max_len` keeping `</s>` last, pads with 0.
    pub fn encode(&self, prompt: &[u8], max_len: usize) -> Result<Tokens> {
        let text = std::str::from_utf8(prompt).map_err(|e| {
            GpuError::invalid(
                "prompt",
                format!("not valid UTF-8 at byte offset {}", e.valid_up_to()),
            )
        })?;
        if max_len == 0 {
            return Err(GpuError::invalid("max_len", "must be at least 1"));
        }
        let (mut ids, pad) = match self {
            PromptTokenizer::Bytes => {
                let n = text.len().min(max_len - 1);
                let mut ids: Vec<u32> = text.as_bytes()[..n]
                    .iter()
                    .map(|&b| b as u32 + BYTE_OFFSET)
                    .collect();
                ids.push(BYTE_EOS);
                (ids, BYTE_PAD)
            }
            PromptTokenizer::Hf(tok) => (hf_encode(tok, text, max_len)?, 0),
        };
        let n = ids.len();
        let mut mask = vec![1u8; n];
        ids.resize(max_len, pad);
        mask.resize(max_len, 0);
        Ok(Tokens { ids, mask })
    }
}

/// Encodes with the tokenizer's own special-token rules (T5TokenizerFast's
/// post-processor appends `</s>`), truncating the content so the added tokens
/// still fit, as transformers' `truncation=True` does. At most `max_len` ids.
fn hf_encode(tok: &tokenizers::Tokenizer, text: &str, max_len: usize) -> Result<Vec<u32>> {
    let err = |e: tokenizers::Error| GpuError::invalid("prompt", format!("tokenizer failed: {e}"));
    let mut enc = tok.encode(text, false).map_err(err)?;
    let ids = match tok.get_post_processor() {
        Some(pp) => {
            let added = pp.added_tokens(false);
            let room = max_len.saturating_sub(added);
            if enc.len() > room {
                enc.truncate(room, 0, TruncationDirection::Right);
            }
            tok.post_process(enc, None, true)
                .map_err(err)?
                .get_ids()
                .to_vec()
        }
        None => {
            // No post-processor: append `</s>` ourselves, as T5TokenizerFast's
            // template would.
            let eos = tok.token_to_id("</s>");
            let room = max_len - usize::from(eos.is_some());
            let mut ids = enc.get_ids().to_vec();
            ids.truncate(room);
            ids.extend(eos);
            ids
        }
    };
    if ids.len() > max_len {
        // Only when `max_len` is smaller than the added tokens themselves:
        // keep the tail so the end token stays last.
        return Ok(ids[ids.len() - max_len..].to_vec());
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::Whitespace;
    use tokenizers::processors::template::TemplateProcessing;

    #[test]
    fn byte_level_round_trip_and_padding() {
        let t = PromptTokenizer::byte_level();
        let toks = t.encode("hé!".as_bytes(), 8).unwrap();
        // 'h' = 104, 'é' = C3 A9, '!' = 33.
        assert_eq!(toks.ids, vec![107, 0xC3 + 3, 0xA9 + 3, 36, 1, 0, 0, 0]);
        assert_eq!(toks.mask, vec![1, 1, 1, 1, 1, 0, 0, 0]);
        assert_eq!(toks.len_unpadded(), 5);
        let back: Vec<u8> = toks
            .ids
            .iter()
            .filter(|&&i| i >= 3)
            .map(|&i| (i - 3) as u8)
            .collect();
        assert_eq!(back, "hé!".as_bytes());
        assert!(toks.ids.iter().all(|&i| (i as usize) < t.vocab_size()));
    }

    #[test]
    fn byte_level_truncation_keeps_eos() {
        let t = PromptTokenizer::byte_level();
        let toks = t.encode(b"abcdef", 4).unwrap();
        assert_eq!(toks.ids, vec![100, 101, 102, 1]);
        assert_eq!(toks.mask, vec![1, 1, 1, 1]);
        let toks = t.encode(b"abc", 1).unwrap();
        assert_eq!(toks.ids, vec![1]);
        let toks = t.encode(b"", 3).unwrap();
        assert_eq!(toks.ids, vec![1, 0, 0]);
        assert_eq!(toks.mask, vec![1, 0, 0]);
        assert!(matches!(
            t.encode(b"abc", 0),
            Err(GpuError::InvalidInput { field, .. }) if field == "max_len"
        ));
    }

    #[test]
    fn non_utf8_is_error_with_offset() {
        let t = PromptTokenizer::byte_level();
        match t.encode(b"ab\xffcd", 8) {
            Err(GpuError::InvalidInput { field, msg }) => {
                assert_eq!(field, "prompt");
                assert!(msg.contains("byte offset 2"), "{msg}");
            }
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn spiece_only_dir_names_tokenizer_json() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("spiece.model"), b"not really").unwrap();
        let e = PromptTokenizer::from_dir(dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("tokenizer.json"), "{e}");
        assert!(e.contains("T5TokenizerFast"), "{e}");
    }

    #[test]
    fn empty_or_missing_dir_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = PromptTokenizer::from_dir(dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(&dir.path().display().to_string()), "{e}");
        let missing = dir.path().join("nope");
        let e = PromptTokenizer::from_dir(&missing)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn corrupt_tokenizer_json_is_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), b"{ not json").unwrap();
        let e = PromptTokenizer::from_dir(dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("tokenizer.json"), "{e}");
    }

    fn tiny_hf(with_post: bool) -> tempfile::TempDir {
        let vocab = ["<pad>", "</s>", "<unk>", "a", "red", "fox", "runs"];
        let model = WordLevel::builder()
            .vocab(
                vocab
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.to_string(), i as u32))
                    .collect(),
            )
            .unk_token("<unk>".to_string())
            .build()
            .unwrap();
        let mut tok = tokenizers::Tokenizer::new(model);
        tok.with_pre_tokenizer(Some(Whitespace {}));
        if with_post {
            let post = TemplateProcessing::builder()
                .try_single("$A </s>")
                .unwrap()
                .special_tokens(vec![("</s>", 1)])
                .build()
                .unwrap();
            tok.with_post_processor(Some(post));
        }
        let dir = tempfile::tempdir().unwrap();
        tok.save(dir.path().join("tokenizer.json"), false).unwrap();
        dir
    }

    #[test]
    fn hf_tokenizer_json_loads_and_encodes() {
        for with_post in [true, false] {
            let dir = tiny_hf(with_post);
            let t = PromptTokenizer::from_dir(dir.path()).unwrap();
            assert!(matches!(t, PromptTokenizer::Hf(_)));
            let toks = t.encode(b"a red fox jumps", 7).unwrap();
            assert_eq!(toks.ids, vec![3, 4, 5, 2, 1, 0, 0], "post={with_post}");
            assert_eq!(toks.mask, vec![1, 1, 1, 1, 1, 0, 0]);
            // Truncation keeps </s> last.
            let toks = t.encode(b"a red fox runs", 3).unwrap();
            assert_eq!(toks.ids, vec![3, 4, 1], "post={with_post}");
            assert_eq!(toks.mask, vec![1, 1, 1]);
            let toks = t.encode(b"a red", 1).unwrap();
            assert_eq!(toks.ids, vec![1]);
        }
    }
}
