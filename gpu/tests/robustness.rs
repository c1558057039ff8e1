//! Bad inputs are typed errors naming the file, tensor or field; never panics.
//! Also: the tiny model's text-to-video and image-to-video runs are
//! deterministic per seed.

use std::path::Path;

use vidflow_gpu::pipeline::{Flow, GenerateRequest, LtxPipeline, RgbImage};
use vidflow_gpu::{tiny, GpuError, Weights};

fn export(dir: &Path) {
    tiny::write_checkpoint(dir).unwrap();
}

fn small_request() -> GenerateRequest {
    GenerateRequest {
        prompt: b"a lighthouse at dusk".to_vec(),
        width: 96,
        height: 64,
        num_frames: 9,
        steps: 3,
        seed: 11,
        ..Default::default()
    }
}

#[test]
fn tiny_t2v_and_i2v_are_deterministic() {
    let p = tiny::pipeline().unwrap();
    assert!(p.untrained);
    let req = small_request();
    let mut steps = 0;
    let a = p
        .generate(&req, &mut |s| {
            steps = s.step;
            Flow::Continue
        })
        .unwrap();
    assert_eq!(steps, 3);
    assert_eq!((a.frames, a.width, a.height), (9, 96, 64));
    assert_eq!(a.rgb.len(), 9 * 96 * 64 * 3);
    assert!(a.untrained);
    let b = p.generate(&req, &mut |_| Flow::Continue).unwrap();
    assert_eq!(a.rgb, b.rgb, "same seed must give the same bytes");
    let c = p
        .generate(
            &GenerateRequest {
                seed: 12,
                ..req.clone()
            },
            &mut |_| Flow::Continue,
        )
        .unwrap();
    assert_ne!(a.rgb, c.rgb);

    // Image-to-video: frame 0 latent stays clean; same seed, same bytes.
    let img = RgbImage {
        width: 96,
        height: 64,
        data: (0..96 * 64 * 3).map(|i| (i * 7 % 251) as u8).collect(),
    };
    let ireq = GenerateRequest {
        image: Some(img),
        ..req.clone()
    };
    let mut st = p.prepare(&ireq).unwrap();
    assert_eq!(st.frozen_tokens, 2 * 3);
    let frozen0 = st
        .latents
        .narrow(1, 0, 6)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let pos = p.encode_prompt(&ireq.prompt).unwrap();
    let neg = p.encode_prompt(b"").unwrap();
    let text = p
        .text_condition(&pos, Some(&neg), ireq.guidance_scale)
        .unwrap();
    p.denoise(&mut st, &text, &mut |_| Flow::Continue).unwrap();
    let frozen1 = st
        .latents
        .narrow(1, 0, 6)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(frozen0, frozen1, "conditioning frame must stay bit-exact");
    let i1 = p.generate(&ireq, &mut |_| Flow::Continue).unwrap();
    let i2 = p.generate(&ireq, &mut |_| Flow::Continue).unwrap();
    assert_eq!(i1.rgb, i2.rgb);
    assert_ne!(i1.rgb, a.rgb);
}

#[test]
fn cancellation_stops_within_one_step() {
    let p = tiny::pipeline().unwrap();
    let err = p
        .generate(
            &GenerateRequest {
                steps: 5,
                ..small_request()
            },
            &mut |s| {
                if s.step == 2 {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            },
        )
        .unwrap_err();
    assert!(matches!(err, GpuError::Cancelled { step: 2 }), "{err}");
}

#[test]
fn exported_checkpoint_loads_and_matches_builtin() {
    let tmp = tempfile::tempdir().unwrap();
    export(tmp.path());
    let from_disk = LtxPipeline::from_dir(tmp.path()).unwrap();
    assert!(
        from_disk.untrained,
        "an exported tiny model keeps its untrained label"
    );
    let builtin = tiny::pipeline().unwrap();
    let req = GenerateRequest {
        steps: 2,
        ..small_request()
    };
    let a = from_disk.generate(&req, &mut |_| Flow::Continue).unwrap();
    let b = builtin.generate(&req, &mut |_| Flow::Continue).unwrap();
    assert_eq!(a.rgb, b.rgb);
}

#[test]
fn truncated_safetensors_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    export(tmp.path());
    let f = tmp
        .path()
        .join("transformer/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 100]).unwrap();
    let err = LtxPipeline::from_dir(tmp.path()).err().expect("must fail");
    let msg = err.to_string();
    assert!(msg.contains("diffusion_pytorch_model.safetensors"), "{msg}");
    // A header cut short is also an error, not a panic.
    std::fs::write(&f, &bytes[..20]).unwrap();
    let msg = LtxPipeline::from_dir(tmp.path())
        .err()
        .expect("must fail")
        .to_string();
    assert!(msg.contains("diffusion_pytorch_model.safetensors"), "{msg}");
}

#[test]
fn wrong_shape_names_tensor_and_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    export(tmp.path());
    // Claim a wider model in the config than the weights have.
    let cfgp = tmp.path().join("transformer/config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfgp).unwrap()).unwrap();
    cfg["attention_head_dim"] = 16.into();
    cfg["cross_attention_dim"] = 64.into();
    std::fs::write(&cfgp, cfg.to_string()).unwrap();
    let err = LtxPipeline::from_dir(tmp.path()).err().expect("must fail");
    match &err {
        GpuError::ShapeMismatch {
            name,
            expected,
            found,
        } => {
            assert!(!name.is_empty());
            assert_ne!(expected, found);
        }
        other => panic!("expected ShapeMismatch, got {other}"),
    }
    assert!(err.to_string().contains("expected"), "{err}");
}

#[test]
fn missing_tensor_is_named() {
    let w = Weights::from_tensors(Default::default(), "empty set");
    let err = w.get("proj_in.weight", &[1, 1]).unwrap_err();
    assert!(err.to_string().contains("proj_in.weight"), "{err}");
    assert!(err.to_string().contains("empty set"), "{err}");
}

#[test]
fn missing_config_key_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    export(tmp.path());
    let cfgp = tmp.path().join("text_encoder/config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfgp).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("d_model");
    std::fs::write(&cfgp, cfg.to_string()).unwrap();
    let msg = LtxPipeline::from_dir(tmp.path())
        .err()
        .expect("must fail")
        .to_string();
    assert!(msg.contains("d_model"), "{msg}");
    assert!(msg.contains("text_encoder/config.json"), "{msg}");
    // Not JSON at all.
    std::fs::write(&cfgp, b"{not json").unwrap();
    let msg = LtxPipeline::from_dir(tmp.path())
        .err()
        .expect("must fail")
        .to_string();
    assert!(msg.contains("text_encoder/config.json"), "{msg}");
}

#[test]
fn non_utf8_prompt_is_a_prompt_error() {
    let p = tiny::pipeline().unwrap();
    let req = GenerateRequest {
        prompt: vec![b'o', b'k', 0xff, 0xfe],
        ..small_request()
    };
    match p.generate(&req, &mut |_| Flow::Continue).unwrap_err() {
        GpuError::InvalidInput { field, msg } => {
            assert_eq!(field, "prompt");
            assert!(msg.contains('2'), "should name the byte offset: {msg}");
        }
        other => panic!("expected InvalidInput, got {other}"),
    }
    let req = GenerateRequest {
        negative_prompt: vec![0xc3],
        ..small_request()
    };
    match p.generate(&req, &mut |_| Flow::Continue).unwrap_err() {
        GpuError::InvalidInput { field, .. } => assert_eq!(field, "negative_prompt"),
        other => panic!("expected InvalidInput, got {other}"),
    }
}

#[test]
fn bad_sizes_name_the_field_and_nearest_values() {
    let p = tiny::pipeline().unwrap();
    let cases: Vec<(GenerateRequest, &str, &str)> = vec![
        (
            GenerateRequest {
                num_frames: 0,
                ..small_request()
            },
            "num_frames",
            "8*n+1",
        ),
        (
            GenerateRequest {
                num_frames: 10,
                ..small_request()
            },
            "num_frames",
            "9 or 17",
        ),
        (
            GenerateRequest {
                width: 100,
                ..small_request()
            },
            "width",
            "96 or 128",
        ),
        (
            GenerateRequest {
                height: 0,
                ..small_request()
            },
            "height",
            "multiple of 32",
        ),
        (
            GenerateRequest {
                steps: 0,
                ..small_request()
            },
            "steps",
            "at least 1",
        ),
        (
            GenerateRequest {
                fps: 0.0,
                ..small_request()
            },
            "fps",
            "positive",
        ),
        (
            GenerateRequest {
                guidance_scale: f64::NAN,
                ..small_request()
            },
            "guidance_scale",
            "finite",
        ),
    ];
    for (req, field, hint) in cases {
        match p.generate(&req, &mut |_| Flow::Continue).unwrap_err() {
            GpuError::InvalidInput { field: f, msg } => {
                assert_eq!(f, field);
                assert!(msg.contains(hint), "{field}: {msg}");
            }
            other => panic!("{field}: expected InvalidInput, got {other}"),
        }
    }
    let img = RgbImage {
        width: 32,
        height: 32,
        data: vec![0; 32 * 32 * 3],
    };
    match p
        .generate(
            &GenerateRequest {
                image: Some(img),
                ..small_request()
            },
            &mut |_| Flow::Continue,
        )
        .unwrap_err()
    {
        GpuError::InvalidInput { field, .. } => assert_eq!(field, "image"),
        other => panic!("expected InvalidInput, got {other}"),
    }
}

#[test]
fn sharded_index_loads_and_missing_shard_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    export(tmp.path());
    // Split the text encoder into two shards with an index.
    let d = tmp.path().join("text_encoder");
    let w = Weights::from_dir(&d).unwrap();
    let names = w.names();
    let (a, b) = names.split_at(names.len() / 2);
    let mut map = serde_json::Map::new();
    for (part, file) in [
        (a, "model-00001-of-00002.safetensors"),
        (b, "model-00002-of-00002.safetensors"),
    ] {
        let mut m = std::collections::HashMap::new();
        for n in part {
            m.insert(n.clone(), w.get_unchecked(n).unwrap());
            map.insert(n.clone(), file.into());
        }
        candle_core::safetensors::save(&m, d.join(file)).unwrap();
    }
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    std::fs::write(
        d.join("model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
    let sharded = LtxPipeline::from_dir(tmp.path()).unwrap();
    let builtin = tiny::pipeline().unwrap();
    let req = GenerateRequest {
        steps: 1,
        ..small_request()
    };
    assert_eq!(
        sharded.generate(&req, &mut |_| Flow::Continue).unwrap().rgb,
        builtin.generate(&req, &mut |_| Flow::Continue).unwrap().rgb
    );
    std::fs::remove_file(d.join("model-00002-of-00002.safetensors")).unwrap();
    let msg = LtxPipeline::from_dir(tmp.path())
        .err()
        .expect("must fail")
        .to_string();
    assert!(msg.contains("model-00002-of-00002.safetensors"), "{msg}");
}

#[test]
fn bf16_and_f16_weights_load() {
    let tmp = tempfile::tempdir().unwrap();
    export(tmp.path());
    for (dt, name) in [
        (candle_core::DType::BF16, "bf16"),
        (candle_core::DType::F16, "f16"),
    ] {
        let d = tmp.path().join("transformer");
        let f = d.join("diffusion_pytorch_model.safetensors");
        let w = Weights::from_files(&[f.clone()]).unwrap();
        let mut m = std::collections::HashMap::new();
        for n in w.names() {
            m.insert(
                n.clone(),
                w.get_unchecked(&n).unwrap().to_dtype(dt).unwrap(),
            );
        }
        let out = tmp.path().join(format!("t_{name}.safetensors"));
        candle_core::safetensors::save(&m, &out).unwrap();
        let w2 = Weights::from_files(&[out]).unwrap();
        let metas = w2.metas();
        assert!(
            metas
                .iter()
                .all(|m| m.dtype == format!("{dt:?}").to_uppercase()),
            "{:?}",
            metas[0]
        );
        // Loaded into the f32 compute dtype.
        assert_eq!(
            w2.get_unchecked("proj_in.weight").unwrap().dtype(),
            candle_core::DType::F32
        );
    }
}
