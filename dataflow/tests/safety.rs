//! The safety stages inside the graph (real models from
//! `bash scripts/setup-models.sh`): the allow path, a blocked prompt that
//! never reaches encoding, a blocked video that never reaches the store,
//! durable decisions reused on a second delivery, and the named errors.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vidflow_dataflow::{run_jobs, Engine, EngineConfig, EventSink, JobResult};
use vidflow_operators::event::Stage;
use vidflow_operators::safety::Decision;
use vidflow_operators::safety_record::SafetyConfig;
use vidflow_operators::{AdmissionConfig, JobSpec};

fn root() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).to_path_buf()
}

fn spec(job_id: &str, tenant: &str, prompt: &str) -> JobSpec {
    serde_json::from_value(serde_json::json!({
        "job_id": job_id, "tenant": tenant, "tier": "standard", "kind": "t2v",
        "prompt": prompt, "resolution": "256x256", "frames": 9,
        "fps": 24.0, "mode": "realtime", "steps": 2, "seed": 1
    }))
    .unwrap()
}

fn engine_with(
    out: &Path,
    safety: SafetyConfig,
) -> Result<Arc<Engine>, vidflow_dataflow::DataflowError> {
    Engine::new(
        &EngineConfig {
            scheduling: Default::default(),
            admission: AdmissionConfig::builtin_tiny(),
            out_dir: out.to_path_buf(),
            max_batch: 4,
            workers: 1,
            checkpoint_every: 0,
            checkpoint_every_tier: Default::default(),
            safety,
        },
        EventSink::discard(),
    )
}

fn engine(out: &Path) -> Arc<Engine> {
    engine_with(out, SafetyConfig::in_repo(&root())).unwrap()
}

fn run_one(e: &Arc<Engine>, s: JobSpec) -> JobResult {
    let mut r = run_jobs(e.clone(), 1, vec![s]).unwrap();
    assert_eq!(r.len(), 1);
    r.pop().unwrap()
}

/// The decision recorded for a job's stage (`<stage>-<fingerprint>.json`).
fn decision(out: &Path, tenant: &str, job: &str, stage: &str) -> Option<Decision> {
    let dir = out.join(format!("safety/{tenant}/{job}"));
    let p = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{stage}-")))
        })?;
    std::fs::read(&p)
        .ok()
        .map(|b| serde_json::from_slice(&b).unwrap())
}

fn mp4s(out: &Path) -> usize {
    walk(out)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "mp4"))
        .count()
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                v.extend(walk(&p));
            } else {
                v.push(p);
            }
        }
    }
    v
}

#[test]
fn allowed_jobs_are_checked_twice_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let e = engine(tmp.path());
    let r = run_one(&e, spec("ok-1", "acme", "a red fox running through snow"));
    assert_eq!(r.status, "completed", "{r:?}");
    assert_eq!(r.safety.len(), 2);
    assert!(r.safety.iter().all(|d| d.allowed));
    let p = decision(tmp.path(), "acme", "ok-1", "prompt").expect("prompt decision recorded");
    assert!(p.allowed && p.policy_version.starts_with("2026-"));
    let v = decision(tmp.path(), "acme", "ok-1", "visual").expect("frame decision recorded");
    assert!(
        v.scores["nsfw.max"] < 0.5 && v.scores["nsfw.frames"] >= 2.0,
        "{v:?}"
    );
    assert_eq!(mp4s(tmp.path()), 1);
}

#[test]
fn a_blocked_prompt_never_reaches_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let e = engine(tmp.path());
    let r = run_one(
        &e,
        spec("bad-1", "acme", "explicit porn scene in a motel room"),
    );
    assert_eq!(r.status, "failed");
    assert_eq!(r.failed_stage, Some(Stage::Safety));
    let err = r.error.clone().unwrap();
    assert!(err.contains("category sexual"), "{err}");
    assert!(
        r.timings
            .iter()
            .all(|(s, _)| s != "encode" && s != "denoise"),
        "{r:?}"
    );
    let d = decision(tmp.path(), "acme", "bad-1", "prompt").unwrap();
    assert!(!d.allowed);
    assert_eq!(mp4s(tmp.path()), 0);
}

#[test]
fn a_recorded_decision_wins_over_a_fresh_one() {
    // A second delivery of a job (or a restart) gives the answer the first
    // gave for the same prompt under the same policy.
    let tmp = tempfile::tempdir().unwrap();
    let e = engine(tmp.path());
    let mut d = e.safety.prompt.check("acme", "explicit porn").unwrap();
    d.reason = "recorded earlier".into();
    let key = |job: &str| {
        let k = e
            .safety
            .prompt_record_key("acme", job, "a calm lake at dawn", "")
            .unwrap();
        tmp.path().join(k.as_ref())
    };
    let p = key("again-1");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, serde_json::to_vec(&d).unwrap()).unwrap();
    let r = run_one(&e, spec("again-1", "acme", "a calm lake at dawn"));
    assert_eq!(r.status, "failed");
    assert!(r.error.unwrap().contains("recorded earlier"));
    // A damaged record is not guessed at: the job fails, naming it.
    let p2 = key("again-2");
    std::fs::create_dir_all(p2.parent().unwrap()).unwrap();
    std::fs::write(&p2, b"{not json").unwrap();
    let r = run_one(&e, spec("again-2", "acme", "a calm lake at dawn"));
    assert_eq!(r.status, "failed");
    let err = r.error.unwrap();
    assert!(
        err.contains("safety/acme/again-2/prompt-") && err.contains("corrupt"),
        "{err}"
    );
    assert_eq!(mp4s(tmp.path()), 0);
}

/// A tenant whose override makes every frame fail: the video is decoded,
/// checked, and never stored.
#[test]
fn a_blocked_video_is_never_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = std::fs::read_to_string(root().join("configs/safety.toml")).unwrap();
    let dir = tmp.path().join("cfg");
    std::fs::create_dir_all(dir.join("safety")).unwrap();
    // The files the policy names beside it: the names list and the head.
    for f in ["real_people.txt", "head.json"] {
        std::fs::copy(
            root().join("configs/safety").join(f),
            dir.join("safety").join(f),
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("safety.toml"),
        format!("{policy}\n[tenants.paranoid]\nvisual_threshold = 0.0000001\n"),
    )
    .unwrap();
    let mut cfg = SafetyConfig::in_repo(&root());
    cfg.policy = dir.join("safety.toml");
    let out = tmp.path().join("out");
    let e = engine_with(&out, cfg).unwrap();
    let r = run_one(
        &e,
        spec("vis-1", "paranoid", "a red fox running through snow"),
    );
    assert_eq!(r.status, "failed", "{r:?}");
    assert_eq!(r.failed_stage, Some(Stage::Safety));
    assert!(
        r.error.as_deref().unwrap().contains("visual check"),
        "{r:?}"
    );
    assert!(r.timings.iter().any(|(s, _)| s == "decode"));
    assert_eq!(r.safety.len(), 2);
    assert!(
        !decision(&out, "paranoid", "vis-1", "visual")
            .unwrap()
            .allowed
    );
    assert_eq!(mp4s(&out), 0);
    // Other tenants are unaffected.
    let r = run_one(&e, spec("vis-2", "acme", "a red fox running through snow"));
    assert_eq!(r.status, "completed");
}

#[test]
fn missing_or_corrupt_models_name_the_file_and_the_setup_command() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = SafetyConfig::in_repo(&root());
    cfg.models_dir = tmp.path().join("nothing-here");
    let e = engine_with(tmp.path(), cfg.clone())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("nothing-here/minilm/model.safetensors"), "{e}");
    assert!(e.contains("scripts/setup-models.sh"), "{e}");
    // A copy of the real cache with the NSFW model damaged.
    let src = SafetyConfig::in_repo(&root()).models_dir;
    let dst = tmp.path().join("models");
    std::fs::create_dir_all(dst.join("minilm")).unwrap();
    for f in ["model.safetensors", "tokenizer.json", "config.json"] {
        std::fs::copy(src.join("minilm").join(f), dst.join("minilm").join(f)).unwrap();
    }
    std::fs::copy(src.join("profanity.json"), dst.join("profanity.json")).unwrap();
    let mut onnx = std::fs::read(src.join("open-nsfw.onnx")).unwrap();
    onnx.truncate(onnx.len() / 2);
    std::fs::write(dst.join("open-nsfw.onnx"), onnx).unwrap();
    cfg.models_dir = dst;
    let e = engine_with(tmp.path(), cfg).err().unwrap().to_string();
    assert!(e.contains("open-nsfw.onnx"), "{e}");
    assert!(e.contains("scripts/setup-models.sh"), "{e}");
}
