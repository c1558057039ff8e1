//! LoRA adapters on the built-in tiny models: applied at run time they
//! equal the merged-weights model within float tolerance (Wan and LTX),
//! a batch mixing adapters gives every job the bits it gets alone, the
//! PEFT and kohya layouts (and Wan's original layer names) load alike, and
//! an adapter that does not fit is refused naming the layer.

use std::collections::{BTreeMap, HashMap};

use candle_core::{Device, Tensor};
use vidflow_gpu::lora::{AdapterCache, Applied};
use vidflow_gpu::model::{Conditioning, Model};
use vidflow_gpu::pipeline::GenerateRequest;
use vidflow_gpu::rng::NoiseRng;
use vidflow_gpu::wan::{self, WanTransformer};
use vidflow_gpu::Weights;

/// A safetensors file of `tensors` with `metadata`.
fn file(tensors: &[(&str, Tensor)], metadata: &[(&str, &str)]) -> Vec<u8> {
    let map: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| (k.to_string(), t.clone()))
        .collect();
    let meta: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.safetensors");
    candle_core::safetensors::save(&map.into_iter().collect::<HashMap<_, _>>(), &p).unwrap();
    if meta.is_empty() {
        return std::fs::read(&p).unwrap();
    }
    // candle writes no metadata: re-serialise with it.
    let bytes = std::fs::read(&p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = st.tensors();
    safetensors::serialize(views, Some(meta)).unwrap()
}

fn randn(seed: u64, shape: &[usize], scale: f64) -> Tensor {
    (NoiseRng::stream(seed, 7)
        .randn(shape, &Device::Cpu)
        .unwrap()
        * scale)
        .unwrap()
}

/// A rank-`r` PEFT adapter on `layers` (name, out, in).
fn peft(seed: u64, r: usize, layers: &[(&str, usize, usize)], alpha: &str) -> Vec<u8> {
    let mut t = Vec::new();
    let names: Vec<(String, String)> = layers
        .iter()
        .map(|(n, _, _)| {
            (
                format!("transformer.{n}.lora_A.weight"),
                format!("transformer.{n}.lora_B.weight"),
            )
        })
        .collect();
    for (i, ((_, out, inp), (a, b))) in layers.iter().zip(&names).enumerate() {
        t.push((a.as_str(), randn(seed + 2 * i as u64, &[r, *inp], 0.3)));
        t.push((b.as_str(), randn(seed + 2 * i as u64 + 1, &[*out, r], 0.3)));
    }
    file(&t, &[("lora_alpha", alpha)])
}

fn wan_model() -> Model {
    Model::from(wan::tiny::pipeline(false).unwrap().0)
}

fn request(seed: u64) -> GenerateRequest {
    GenerateRequest {
        prompt: b"a boat".to_vec(),
        negative_prompt: b"".to_vec(),
        width: 64,
        height: 48,
        num_frames: 9,
        fps: 16.0,
        steps: 3,
        guidance_scale: 3.0,
        seed,
        ..Default::default()
    }
}

fn text(m: &Model, req: &GenerateRequest) -> Conditioning {
    let pos = m.encode_prompt(&req.prompt).unwrap();
    let neg = m.encode_prompt(&req.negative_prompt).unwrap();
    m.text_condition(&pos, Some(&neg), req.guidance_scale)
        .unwrap()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

const WAN_LAYERS: [(&str, usize, usize); 4] = [
    ("blocks.0.attn1.to_q", 24, 24),
    ("blocks.1.attn2.to_v", 24, 24),
    ("blocks.0.ffn.net.0.proj", 48, 24),
    ("condition_embedder.text_embedder.linear_1", 24, 32),
];

#[test]
fn a_runtime_adapter_equals_the_merged_weights_wan() {
    let m = wan_model();
    let adapter = std::sync::Arc::new(
        m.load_adapter("style", &peft(1, 4, &WAN_LAYERS, "8"))
            .unwrap(),
    );
    assert_eq!((adapter.rank, adapter.layers.len()), (4, 4));
    assert!((adapter.layers["blocks.0.attn1.to_q"].scale - 2.0).abs() < 1e-12);
    // The merged model: every drawn transformer tensor, adapted ones merged.
    let tw = wan::tiny::transformer_weights();
    let cfg = wan::tiny::transformer_config(false);
    WanTransformer::load(&tw, &cfg).unwrap();
    let all: BTreeMap<String, Tensor> = tw
        .metas()
        .into_iter()
        .map(|meta| (meta.name.clone(), tw.get(&meta.name, &meta.shape).unwrap()))
        .collect();
    let weights: BTreeMap<String, Tensor> = adapter
        .layers
        .keys()
        .map(|n| {
            let k = format!("{n}.weight");
            (n.clone(), all[&k].clone())
        })
        .collect();
    let merged = adapter.merged(&weights, 0.7).unwrap();
    let mut tensors: HashMap<String, Tensor> = all.into_iter().collect();
    for (n, w) in merged {
        tensors.insert(format!("{n}.weight"), w);
    }
    let Model::Wan(mut merged_pipe) = wan_model() else {
        unreachable!()
    };
    merged_pipe.transformer =
        WanTransformer::load(&Weights::from_tensors(tensors, "merged"), &cfg).unwrap();
    let merged_model = Model::Wan(merged_pipe);

    let req = request(5);
    let cond = text(&m, &req);
    let mut st = m.prepare(&req).unwrap();
    st.lora = Some(Applied {
        adapter: adapter.clone(),
        strength: 0.7,
    });
    let plain = m.prepare(&req).unwrap();
    let with = m.velocity_batched(&[(&st, &cond)]).unwrap().remove(0);
    let base = m.velocity_batched(&[(&plain, &cond)]).unwrap().remove(0);
    let want = merged_model
        .velocity_batched(&[(&plain, &cond)])
        .unwrap()
        .remove(0);
    let (err, moved) = (max_abs(&with, &want), max_abs(&with, &base));
    println!(
        "wan: runtime vs merged max |diff| {err:e}; the adapter moved the velocity by {moved:e}"
    );
    assert!(err < 1e-4, "runtime vs merged: {err}");
    assert!(
        moved > 100.0 * err.max(1e-6),
        "the adapter changed little: {moved}"
    );
}

#[test]
fn a_runtime_adapter_equals_the_merged_weights_ltx() {
    let p = vidflow_gpu::tiny::pipeline().unwrap();
    let targets = p.lora_targets.clone();
    let (name, (out, inp)) = targets
        .iter()
        .find(|(n, _)| n.contains("attn1.to_q"))
        .map(|(n, s)| (n.clone(), *s))
        .unwrap();
    let ff = targets
        .iter()
        .find(|(n, _)| n.contains("ff.net.2"))
        .map(|(n, s)| (n.clone(), *s))
        .unwrap();
    let layers = [(name.as_str(), out, inp), (ff.0.as_str(), ff.1 .0, ff.1 .1)];
    let m = Model::from(p);
    let adapter = std::sync::Arc::new(m.load_adapter("ltx", &peft(3, 2, &layers, "2")).unwrap());
    let tc = vidflow_gpu::tiny::transformer_config();
    let tw =
        vidflow_gpu::tiny::seeded_weights(&tc.tensor_shapes(), vidflow_gpu::tiny::TINY_SEED, "t")
            .unwrap();
    let mut tensors: HashMap<String, Tensor> = tc
        .tensor_shapes()
        .iter()
        .map(|(n, s)| (n.clone(), tw.get(n, s).unwrap()))
        .collect();
    let weights: BTreeMap<String, Tensor> = adapter
        .layers
        .keys()
        .map(|n| (n.clone(), tensors[&format!("{n}.weight")].clone()))
        .collect();
    for (n, w) in adapter.merged(&weights, 1.0).unwrap() {
        tensors.insert(format!("{n}.weight"), w);
    }
    let mut merged = vidflow_gpu::tiny::pipeline().unwrap();
    merged.transformer = vidflow_gpu::transformer::LtxTransformer::load(
        &Weights::from_tensors(tensors, "merged"),
        &tc,
    )
    .unwrap();
    let merged = Model::from(merged);
    let req = GenerateRequest {
        width: 64,
        height: 64,
        num_frames: 9,
        fps: 24.0,
        ..request(2)
    };
    let cond = text(&m, &req);
    let mut st = m.prepare(&req).unwrap();
    st.lora = Some(Applied {
        adapter,
        strength: 1.0,
    });
    let plain = m.prepare(&req).unwrap();
    let with = m.velocity_batched(&[(&st, &cond)]).unwrap().remove(0);
    let want = merged
        .velocity_batched(&[(&plain, &cond)])
        .unwrap()
        .remove(0);
    let err = max_abs(&with, &want);
    println!("ltx: runtime vs merged max |diff| {err:e}");
    assert!(err < 1e-4, "runtime vs merged: {err}");
}

#[test]
fn a_batch_of_different_adapters_gives_each_job_its_own_bits() {
    let m = wan_model();
    let x = std::sync::Arc::new(m.load_adapter("x", &peft(10, 4, &WAN_LAYERS, "4")).unwrap());
    let y = std::sync::Arc::new(
        m.load_adapter("y", &peft(20, 8, &WAN_LAYERS[..2], "16"))
            .unwrap(),
    );
    let jobs: Vec<(GenerateRequest, Option<Applied>)> = vec![
        (
            request(1),
            Some(Applied {
                adapter: x,
                strength: 1.0,
            }),
        ),
        (
            GenerateRequest {
                guidance_scale: 1.0,
                ..request(2)
            },
            Some(Applied {
                adapter: y,
                strength: 0.5,
            }),
        ),
        (request(3), None),
    ];
    let prepared: Vec<_> = jobs
        .iter()
        .map(|(req, a)| {
            let mut st = m.prepare(req).unwrap();
            st.lora = a.clone();
            (st, text(&m, req))
        })
        .collect();
    let pairs: Vec<_> = prepared.iter().map(|(s, c)| (s, c)).collect();
    let together = m.velocity_batched(&pairs).unwrap();
    for (i, (s, c)) in prepared.iter().enumerate() {
        let alone = m.velocity_batched(&[(s, c)]).unwrap().remove(0);
        let a: Vec<f32> = alone.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = together[i].flatten_all().unwrap().to_vec1().unwrap();
        assert!(a == b, "job {i}: batched bits differ from alone");
    }
}

#[test]
fn kohya_and_original_wan_names_load_like_peft() {
    let m = wan_model();
    let down = randn(1, &[4, 24], 0.3);
    let up = randn(2, &[24, 4], 0.3);
    let kohya = file(
        &[
            (
                "lora_unet_blocks_0_self_attn_q.lora_down.weight",
                down.clone(),
            ),
            ("lora_unet_blocks_0_self_attn_q.lora_up.weight", up.clone()),
            (
                "lora_unet_blocks_0_self_attn_q.alpha",
                Tensor::new(2f32, &Device::Cpu).unwrap(),
            ),
        ],
        &[],
    );
    let a = m.load_adapter("kohya", &kohya).unwrap();
    let l = &a.layers["blocks.0.attn1.to_q"];
    assert!((l.scale - 0.5).abs() < 1e-12);
    let original = file(
        &[
            (
                "diffusion_model.blocks.0.ffn.2.lora_A.weight",
                randn(3, &[4, 48], 0.3),
            ),
            (
                "diffusion_model.blocks.0.ffn.2.lora_B.weight",
                randn(4, &[24, 4], 0.3),
            ),
        ],
        &[],
    );
    let a = m.load_adapter("orig", &original).unwrap();
    // No alpha anywhere: alpha = rank, scale 1.
    assert!((a.layers["blocks.0.ffn.net.2"].scale - 1.0).abs() < 1e-12);
}

#[test]
fn an_adapter_that_does_not_fit_is_refused_naming_the_layer() {
    let m = wan_model();
    let bad = peft(
        1,
        4,
        &[
            ("blocks.0.attn1.to_q", 24, 24),
            ("blocks.1.attn1.to_k", 24, 30),
        ],
        "4",
    );
    let e = m.load_adapter("bad", &bad).unwrap_err().to_string();
    assert!(
        e.contains("blocks.1.attn1.to_k") && e.contains("[24, 24]"),
        "{e}"
    );
    let unknown = peft(1, 4, &[("blocks.7.attn1.to_q", 24, 24)], "4");
    let e = m.load_adapter("unknown", &unknown).unwrap_err().to_string();
    assert!(
        e.contains("blocks.7.attn1.to_q") && e.contains("not a linear layer"),
        "{e}"
    );
    let half = file(
        &[("blocks.0.attn1.to_q.lora_A.weight", randn(1, &[4, 24], 0.1))],
        &[],
    );
    let e = m.load_adapter("half", &half).unwrap_err().to_string();
    assert!(
        e.contains("blocks.0.attn1.to_q") && e.contains("down or up"),
        "{e}"
    );
    let e = m
        .load_adapter("junk", b"not safetensors")
        .unwrap_err()
        .to_string();
    assert!(e.contains("junk") && e.contains("safetensors"), "{e}");
}

#[test]
fn the_adapter_cache_keeps_the_recently_used_within_its_budget() {
    let m = wan_model();
    let bytes = peft(1, 4, &WAN_LAYERS, "4");
    let one = m.load_adapter("a", &bytes).unwrap().bytes;
    let mut c = AdapterCache::new(2 * one);
    for key in ["a", "b", "a", "c", "a", "b"] {
        c.get_or_load(key, || m.load_adapter(key, &bytes)).unwrap();
    }
    // a, b, (a hit), c evicts b, (a hit), b evicts c.
    assert_eq!((c.hits, c.misses, c.len()), (2, 4, 2));
}
