//! LoRA adapters through the embedded graph on the built-in tiny Wan: jobs
//! naming different adapters (by object key or registry id) share step
//! batches and each gets the MP4 bytes it gets alone; an adapter that does
//! not fit the model fails the job at admission naming the layer; one under
//! another tenant's prefix is refused before anything is read.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use vidflow_dataflow::{run_jobs, Engine, EngineConfig, EventSink, JobResult};
use vidflow_operators::config::{Architecture, LoraEntry, ModelEntry, BUILTIN_WAN_TINY};
use vidflow_operators::{AdmissionConfig, JobSpec, ModelProfile};

fn admission(registry: &Path) -> AdmissionConfig {
    let mut a = AdmissionConfig::builtin_tiny();
    let e = ModelEntry::new("wan-tiny", BUILTIN_WAN_TINY, Architecture::Wan, true);
    a.models
        .push(ModelProfile::resolve(&e, Path::new(".")).unwrap());
    a.loras.push(LoraEntry {
        id: "house-style".into(),
        model: "wan-tiny".into(),
        path: registry.to_path_buf(),
    });
    a
}

fn engine(out: &Path, max_batch: usize, registry: &Path) -> Arc<Engine> {
    Engine::new(
        &EngineConfig {
            scheduling: Default::default(),
            admission: admission(registry),
            out_dir: out.to_path_buf(),
            max_batch,
            workers: 1,
            checkpoint_every: 0,
            checkpoint_every_tier: Default::default(),
            safety: vidflow_operators::safety_record::SafetyConfig::in_repo(Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/.."
            ))),
        },
        EventSink::discard(),
    )
    .unwrap()
}

/// A rank-`r` PEFT adapter on two of the tiny Wan's layers; `in_q` is the
/// input width it claims for `blocks.0.attn1.to_q` (24 fits).
fn adapter(seed: u64, r: usize, in_q: usize, path: &Path) {
    let dev = Device::Cpu;
    let t = |s: u64, shape: &[usize]| {
        (Tensor::randn(0f32, 1f32, shape, &dev).unwrap() * (0.2 + s as f64 * 1e-3)).unwrap()
    };
    let mut m = HashMap::new();
    m.insert(
        "blocks.0.attn1.to_q.lora_A.weight".to_string(),
        t(seed, &[r, in_q]),
    );
    m.insert(
        "blocks.0.attn1.to_q.lora_B.weight".to_string(),
        t(seed + 1, &[24, r]),
    );
    m.insert(
        "blocks.1.ffn.net.2.lora_A.weight".to_string(),
        t(seed + 2, &[r, 48]),
    );
    m.insert(
        "blocks.1.ffn.net.2.lora_B.weight".to_string(),
        t(seed + 3, &[24, r]),
    );
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    candle_core::safetensors::save(&m, path).unwrap();
}

fn job(id: &str, tenant: &str, lora: serde_json::Value) -> JobSpec {
    let mut v = serde_json::json!({
        "job_id": id, "tenant": tenant, "tier": "standard", "kind": "t2v",
        "prompt": "a lantern in the fog", "resolution": "256x256", "frames": 9,
        "steps": 3, "guidance": 3.0, "seed": 21, "model": "wan-tiny"
    });
    if !lora.is_null() {
        v["lora"] = lora;
    }
    serde_json::from_value(v).unwrap()
}

fn run(
    out: &Path,
    max_batch: usize,
    registry: &Path,
    jobs: Vec<JobSpec>,
) -> HashMap<String, JobResult> {
    run_jobs(engine(out, max_batch, registry), 1, jobs)
        .unwrap()
        .into_iter()
        .map(|r| (r.job_id.clone(), r))
        .collect()
}

#[test]
fn jobs_with_different_adapters_share_batches_and_keep_their_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    adapter(1, 4, 24, &store.join("acme/loras/a.safetensors"));
    adapter(9, 8, 24, &store.join("acme/loras/b.safetensors"));
    let registry = tmp.path().join("registry/house.safetensors");
    adapter(17, 2, 24, &registry);
    let jobs = || {
        vec![
            job(
                "with-a",
                "acme",
                serde_json::json!({"key": "acme/loras/a.safetensors"}),
            ),
            job(
                "with-b",
                "acme",
                serde_json::json!({"key": "acme/loras/b.safetensors", "strength": 0.5}),
            ),
            job(
                "with-house",
                "acme",
                serde_json::json!({"id": "house-style"}),
            ),
            job("plain", "acme", serde_json::Value::Null),
        ]
    };
    let together = run(&store, 8, &registry, jobs());
    let mut alone = HashMap::new();
    for j in jobs() {
        alone.extend(run(&store, 1, &registry, vec![j]));
    }
    let mut shas = Vec::new();
    for id in ["with-a", "with-b", "with-house", "plain"] {
        let (t, a) = (&together[id], &alone[id]);
        assert_eq!(t.status, "completed", "{id}: {:?}", t.error);
        assert_eq!(a.status, "completed", "{id}: {:?}", a.error);
        assert_eq!(t.sha256, a.sha256, "{id}: batched bytes differ from alone");
        shas.push(t.sha256.clone());
        println!("{id}: batch sizes {:?}", t.batch_sizes);
    }
    // The batched run did share steps, and the adapters changed the video.
    assert!(
        together["with-a"].batch_sizes.iter().any(|&n| n > 1),
        "{:?}",
        together["with-a"].batch_sizes
    );
    shas.sort();
    shas.dedup();
    assert_eq!(shas.len(), 4, "every adapter changes the video");
}

#[test]
fn an_adapter_that_does_not_fit_or_is_not_the_tenants_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    adapter(1, 4, 30, &store.join("acme/loras/wrong.safetensors"));
    adapter(1, 4, 24, &store.join("globex/loras/theirs.safetensors"));
    let registry = tmp.path().join("none.safetensors");
    let res = run(
        &store,
        2,
        &registry,
        vec![
            job(
                "wrong",
                "acme",
                serde_json::json!({"key": "acme/loras/wrong.safetensors"}),
            ),
            job(
                "theirs",
                "acme",
                serde_json::json!({"key": "globex/loras/theirs.safetensors"}),
            ),
            job("unknown", "acme", serde_json::json!({"id": "nope"})),
        ],
    );
    let err = |id: &str| {
        assert_eq!(res[id].status, "failed", "{id}");
        res[id].error.clone().unwrap_or_default()
    };
    let e = err("wrong");
    assert!(
        e.contains("blocks.0.attn1.to_q") && e.contains("[24, 24]"),
        "{e}"
    );
    let e = err("theirs");
    assert!(e.contains("lora.key"), "{e}");
    let e = err("unknown");
    assert!(e.contains("lora.id") && e.contains("house-style"), "{e}");
}
