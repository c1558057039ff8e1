use super::*;
use crate::weights::parse_config;
use std::collections::HashMap;

fn tiny_cfg() -> T5Config {
    serde_json::from_value(serde_json::json!({
        "vocab_size": 16, "d_model": 8, "d_kv": 4, "d_ff": 12,
        "num_layers": 2, "num_heads": 2, "some_unknown_key": true
    }))
    .unwrap()
}

fn tiny_weights(cfg: &T5Config, skip: Option<&str>) -> Weights {
    let mut m = HashMap::new();
    for (i, (name, shape)) in expected_tensor_shapes(cfg).into_iter().enumerate() {
        if Some(name.as_str()) == skip {
            continue;
        }
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|j| (((j * 7 + i * 13) % 17) as f32 - 8.0) / 20.0)
            .collect();
        m.insert(name, Tensor::from_vec(data, shape, &Device::Cpu).unwrap());
    }
    Weights::from_tensors(m, "tiny test weights")
}

#[test]
fn config_defaults_and_missing_key() {
    let c = tiny_cfg();
    assert_eq!(c.relative_attention_num_buckets, 32);
    assert_eq!(c.relative_attention_max_distance, 128);
    assert_eq!(c.feed_forward_proj, "gated-gelu");
    let e = parse_config::<T5Config>(serde_json::json!({"vocab_size": 3}), "cfg.json")
        .unwrap_err()
        .to_string();
    assert!(e.contains("d_model"), "{e}");
}

#[test]
fn unsupported_ff_proj_is_error() {
    let mut c = tiny_cfg();
    c.feed_forward_proj = "gated-foo".into();
    let w = tiny_weights(&tiny_cfg(), None);
    let e = T5Encoder::load(&w, &c).err().unwrap().to_string();
    assert!(e.contains("feed_forward_proj"), "{e}");
}

#[test]
fn forward_shape_and_dtypes() {
    let c = tiny_cfg();
    let m = T5Encoder::load(&tiny_weights(&c, None), &c).unwrap();
    let ids = Tensor::new(&[[1u32, 2, 3], [4, 5, 15]], &Device::Cpu).unwrap();
    let y = m.forward(&ids).unwrap();
    assert_eq!(y.dims(), &[2, 3, 8]);
    assert_eq!(y.dtype(), DType::F32);
    let y64 = m.forward(&ids.to_dtype(DType::I64).unwrap()).unwrap();
    let d: f32 = (y - y64)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_eq!(d, 0.0);
}

#[test]
fn half_weights_run() {
    let c = tiny_cfg();
    let w = tiny_weights(&c, None);
    let ids = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu).unwrap();
    let y32 = T5Encoder::load(&w, &c).unwrap().forward(&ids).unwrap();
    for dt in [DType::F16, DType::BF16] {
        let m = T5Encoder::load(&w.clone().with_dtype(dt), &c).unwrap();
        let y = m.forward(&ids).unwrap();
        assert_eq!(y.dtype(), DType::F32);
        let d: f32 = (y - &y32)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(d < 0.1, "{dt:?}: {d}");
    }
}

#[test]
fn relu_variant_loads() {
    let mut c = tiny_cfg();
    c.feed_forward_proj = "relu".into();
    let w = tiny_weights(&c, None);
    assert!(w.contains("encoder.block.0.layer.1.DenseReluDense.wi.weight"));
    let m = T5Encoder::load(&w, &c).unwrap();
    let ids = Tensor::new(&[[1u32, 2]], &Device::Cpu).unwrap();
    assert_eq!(m.forward(&ids).unwrap().dims(), &[1, 2, 8]);
}

#[test]
fn ids_out_of_vocab_error() {
    let c = tiny_cfg();
    let m = T5Encoder::load(&tiny_weights(&c, None), &c).unwrap();
    for ids in [
        Tensor::new(&[[1u32, 16]], &Device::Cpu).unwrap(),
        Tensor::new(&[[1i64, -1]], &Device::Cpu).unwrap(),
    ] {
        match m.forward(&ids) {
            Err(GpuError::InvalidInput { field, msg }) => {
                assert_eq!(field, "input_ids");
                assert!(msg.contains("[0, 1]"), "{msg}");
            }
            other => panic!(
                "expected InvalidInput, got {:?}",
                other.map(|t| t.dims().to_vec())
            ),
        }
    }
    let bad_rank = Tensor::new(&[1u32, 2], &Device::Cpu).unwrap();
    assert!(matches!(
        m.forward(&bad_rank),
        Err(GpuError::InvalidInput { .. })
    ));
}

#[test]
fn missing_tensor_named() {
    let c = tiny_cfg();
    let name = "encoder.block.1.layer.1.DenseReluDense.wi_1.weight";
    let e = T5Encoder::load(&tiny_weights(&c, Some(name)), &c)
        .err()
        .unwrap();
    assert!(
        matches!(&e, GpuError::MissingTensor { name: n, .. } if n == name),
        "{e}"
    );
    assert!(e.to_string().contains(name));
}

#[test]
fn wrong_shape_named() {
    let c = tiny_cfg();
    let mut c2 = c.clone();
    c2.d_ff = 10;
    let e = T5Encoder::load(&tiny_weights(&c, None), &c2).err().unwrap();
    assert!(matches!(e, GpuError::ShapeMismatch { .. }), "{e}");
}

#[test]
fn buckets_match_reference() {
    // Values from transformers' _relative_position_bucket(bidirectional,
    // 32 buckets, max_distance 128).
    let b = |r| relative_position_bucket(r, 32, 128);
    assert_eq!(b(0), 0);
    assert_eq!(b(-1), 1);
    assert_eq!(b(1), 17);
    assert_eq!(b(-7), 7);
    assert_eq!(b(-8), 8);
    assert_eq!(b(-16), 10);
    assert_eq!(b(16), 26);
    assert_eq!(b(-200), 15);
    assert_eq!(b(200), 31);
}
