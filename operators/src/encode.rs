//! Prompt encoding: the prompt (and, with CFG, the negative prompt) through
//! the text encoder with a cache, the text conditioning, and the initial
//! latents, or those of the job's newest valid checkpoint.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use vidflow_gpu::model::Model;
use vidflow_gpu::pipeline::PromptEmbeds;
use vidflow_job::event::{JobEvent, Stage};
use vidflow_job::result::Failure;

use crate::{AdmittedJob, EncodedJob, Msg, StageCtx, StageError};

/// Prompt embeddings keyed by (text encoder = model id, prompt bytes). A
/// platform sees the same prompts (and the empty negative prompt) again and
/// again; T5-XXL (UMT5-XXL for Wan) is the costliest per-job step before
/// denoising.
pub struct TextCache {
    map: HashMap<(String, Vec<u8>), PromptEmbeds>,
    order: VecDeque<(String, Vec<u8>)>,
    capacity: usize,
    pub hits: u64,
    pub misses: u64,
}

impl TextCache {
    pub fn new(capacity: usize) -> Self {
        TextCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity,
            hits: 0,
            misses: 0,
        }
    }

    pub fn get_or_encode(
        &mut self,
        model_id: &str,
        p: &Model,
        prompt: &[u8],
    ) -> vidflow_gpu::Result<PromptEmbeds> {
        let key = (model_id.to_string(), prompt.to_vec());
        if let Some(e) = self.map.get(&key) {
            self.hits += 1;
            return Ok(e.clone());
        }
        self.misses += 1;
        let e = p.encode_prompt(prompt)?;
        if self.map.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
        self.order.push_back(key.clone());
        self.map.insert(key, e.clone());
        Ok(e)
    }
}

pub fn encode(ctx: &StageCtx, cache: &mut TextCache, job: AdmittedJob) -> Msg<EncodedJob> {
    let t0 = Instant::now();
    let AdmittedJob { mut meta, req } = job;
    let (step, total) = meta.progress(0, req.steps);
    ctx.events.emit(
        &meta.tenant,
        JobEvent::Progress {
            job_id: meta.job_id.clone(),
            stage: Stage::Encode,
            step,
            total,
            eta_s: None,
            batch: 0,
        },
    );
    let encoded = (|| -> Result<_, StageError> {
        let p = ctx.model(&meta.model_id)?;
        let pos = cache.get_or_encode(&meta.model_id, p, &req.prompt)?;
        let neg = if req.guidance_scale > 1.0 {
            Some(cache.get_or_encode(&meta.model_id, p, &req.negative_prompt)?)
        } else {
            None
        };
        let text = p.text_condition(&pos, neg.as_ref(), req.guidance_scale)?;
        let state = p.prepare(&req)?;
        Ok((text, state))
    })();
    let (text, mut state) = match encoded {
        Ok(x) => x,
        Err(e) => return Err(Failure::new(meta, Stage::Encode, e)),
    };
    if let Some(ck) = &ctx.checkpoints {
        if let Some(r) = ck.resume(&meta.tenant, &meta.job_id, &req, &mut state) {
            for (key, why) in &r.rejected {
                tracing::warn!(job_id = %meta.job_id, checkpoint = %key, reason = %why, "checkpoint failed its checks; trying an older one");
            }
            if r.step > 0 {
                tracing::info!(job_id = %meta.job_id, from_step = r.step, "resumed from checkpoint");
                meta.resumed_from = Some(r.step);
            }
        }
    }
    meta.timings
        .push((Stage::Encode, t0.elapsed().as_secs_f64()));
    Ok(EncodedJob {
        meta,
        req,
        state,
        text: Arc::new(text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    fn admitted(id: &str, extra: &str) -> AdmittedJob {
        let (ctx, _) = testkit::ctx();
        let v = testkit::validated(id, extra);
        crate::admit::prepare(&ctx, &testkit::memory_store(), v, testkit::date()).unwrap()
    }

    #[test]
    fn encoding_prepares_latents_and_caches_prompts_per_model() {
        let (ctx, events) = testkit::ctx();
        let mut cache = TextCache::new(8);
        let j = encode(&ctx, &mut cache, admitted("e1", r#""kind": "t2v""#)).unwrap();
        assert_eq!(j.state.step, 0);
        assert_eq!(j.state.schedule.steps(), 2);
        assert_eq!(j.meta.timings[0].0, Stage::Encode);
        assert_eq!(j.meta.resumed_from, None);
        assert!(matches!(
            events.try_recv().unwrap(),
            JobEvent::Progress {
                stage: Stage::Encode,
                step: 0,
                total: 2,
                ..
            }
        ));
        assert_eq!((cache.hits, cache.misses), (0, 1));
        // CFG encodes the negative prompt too; the positive one is cached.
        let j2 = encode(
            &ctx,
            &mut cache,
            admitted("e2", r#""kind": "t2v", "guidance": 3.0"#),
        )
        .unwrap();
        assert_eq!((cache.hits, cache.misses), (1, 2));
        assert_eq!(j2.state.grid.frames, j.state.grid.frames);
    }

    #[test]
    fn the_cache_evicts_the_oldest_prompt_at_capacity() {
        let (ctx, _) = testkit::ctx();
        let p = ctx.model("ltx-tiny").unwrap().clone();
        let mut c = TextCache::new(2);
        for prompt in [&b"a"[..], b"b", b"c", b"a"] {
            c.get_or_encode("ltx-tiny", &p, prompt).unwrap();
        }
        // "a" was evicted by "c", so the fourth lookup missed too.
        assert_eq!((c.hits, c.misses), (0, 4));
    }

    #[test]
    fn an_unknown_model_fails_the_encode_stage() {
        let (ctx, _) = testkit::ctx();
        let mut j = admitted("e3", r#""kind": "t2v""#);
        j.meta.model_id = "ltx-13b".into();
        let f = encode(&ctx, &mut TextCache::new(1), j).err().unwrap();
        assert_eq!(f.stage, Stage::Encode);
        assert_eq!(f.error, "model `ltx-13b` is not loaded in this worker");
    }
}
