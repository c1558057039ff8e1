use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use super::ops::{depth_to_space, patchify, space_to_depth, swap_cf, unpatchify, Conv3d, Params};
use super::*;
use crate::weights::parse_config;

fn lcg(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn rand_t(seed: u64, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(lcg(seed, n), shape, &Device::Cpu).unwrap()
}

/// Direct 3D convolution on `[B, C, F, H, W]` with the reference padding.
#[allow(clippy::too_many_arguments)]
fn naive_conv3d(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    k: usize,
    st: usize,
    ss: usize,
    causal: bool,
) -> Tensor {
    let (b, c, f, h, wd) = x.dims5().unwrap();
    let o = w.dim(0).unwrap();
    let xv: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    let wv: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
    let bv: Vec<f32> = bias.to_vec1().unwrap();
    let front = if causal { k - 1 } else { (k - 1) / 2 };
    let back = if causal { 0 } else { (k - 1) / 2 };
    let fo = (f + front + back - k) / st + 1;
    let ps = k / 2;
    let ho = (h + 2 * ps - k) / ss + 1;
    let wo = (wd + 2 * ps - k) / ss + 1;
    let mut out = vec![0f32; b * o * fo * ho * wo];
    for bi in 0..b {
        for oi in 0..o {
            for t in 0..fo {
                for y in 0..ho {
                    for xx in 0..wo {
                        let mut acc = bv[oi];
                        for ci in 0..c {
                            for kt in 0..k {
                                let src_t = ((t * st + kt) as i64 - front as i64)
                                    .clamp(0, f as i64 - 1)
                                    as usize;
                                for ky in 0..k {
                                    for kx in 0..k {
                                        let sy = (y * ss + ky) as i64 - ps as i64;
                                        let sx = (xx * ss + kx) as i64 - ps as i64;
                                        if sy < 0 || sx < 0 || sy >= h as i64 || sx >= wd as i64 {
                                            continue;
                                        }
                                        let xi = (((bi * c + ci) * f + src_t) * h + sy as usize)
                                            * wd
                                            + sx as usize;
                                        let wi = (((oi * c + ci) * k + kt) * k + ky) * k + kx;
                                        acc += xv[xi] * wv[wi];
                                    }
                                }
                            }
                        }
                        out[(((bi * o + oi) * fo + t) * ho + y) * wo + xx] = acc;
                    }
                }
            }
        }
    }
    Tensor::from_vec(out, (b, o, fo, ho, wo), &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
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

#[test]
fn conv3d_matches_naive_loop() {
    for &(k, st, ss, causal, f) in &[
        (3, 1, 1, true, 4),
        (3, 1, 1, false, 3),
        (3, 2, 2, true, 5),
        (3, 2, 2, true, 1),
        (1, 1, 1, true, 3),
        (3, 1, 1, false, 1),
    ] {
        let (b, c, o, h, w) = (2, 3, 4, 5, 6);
        let x = rand_t(1, &[b, c, f, h, w]);
        let wt = rand_t(2, &[o, c, k, k, k]);
        let bias = rand_t(3, &[o]);
        let mut m = HashMap::new();
        m.insert("c.weight".to_string(), wt.clone());
        m.insert("c.bias".to_string(), bias.clone());
        let ws = Weights::from_tensors(m, "test");
        let conv = Conv3d::load(&Params::load(&ws), "c", c, o, k, (st, ss), causal).unwrap();
        let got = swap_cf(&conv.forward(&swap_cf(&x).unwrap()).unwrap()).unwrap();
        let want = naive_conv3d(&x, &wt, &bias, k, st, ss, causal);
        let d = max_diff(&got, &want);
        assert!(d < 1e-5, "k{k} st{st} ss{ss} causal{causal} f{f}: diff {d}");
    }
}

#[test]
fn conv3d_rejects_wrong_channels() {
    let mut m = HashMap::new();
    m.insert("c.weight".to_string(), rand_t(2, &[4, 3, 3, 3, 3]));
    m.insert("c.bias".to_string(), rand_t(3, &[4]));
    let ws = Weights::from_tensors(m, "test");
    let conv = Conv3d::load(&Params::load(&ws), "c", 3, 4, 3, (1, 1), true).unwrap();
    let err = conv.forward(&rand_t(1, &[1, 2, 5, 4, 4])).unwrap_err();
    assert!(err.to_string().contains("channels"), "{err}");
}

#[test]
fn space_depth_and_patch_roundtrip() {
    let x = rand_t(5, &[2, 4, 3, 8, 12]);
    let y = unpatchify(&patchify(&x, 4).unwrap(), 4).unwrap();
    assert_eq!(max_diff(&x, &y), 0.0);
    // Patch channel c*16 + w_sub*4 + h_sub of patch (h0, w0) is pixel
    // (h0*4 + h_sub, w0*4 + w_sub).
    let p = patchify(&x, 4).unwrap(); // [B, F, C*16, H/4, W/4]
    let v = |t: &Tensor, i: &[usize]| -> f32 {
        let mut t = t.clone();
        for &j in i {
            t = t.get(j).unwrap();
        }
        t.to_scalar().unwrap()
    };
    assert_eq!(
        v(&p, &[1, 2, 3 * 16 + 2 * 4 + 1, 1, 2]),
        v(&x, &[1, 3, 2, 4 + 1, 8 + 2])
    );

    let z = rand_t(6, &[1, 2, 16, 3, 4]);
    let s = (2, 2, 2);
    let d = depth_to_space(&z, s).unwrap();
    assert_eq!(d.dims(), &[1, 4, 2, 6, 8]);
    assert_eq!(max_diff(&space_to_depth(&d, s).unwrap(), &z), 0.0);
    // Channel c*8 + i*4 + j*2 + l of (f, h, w) lands at (2f+i, 2h+j, 2w+l).
    assert_eq!(
        v(&d, &[0, 2 + 1, 1, 2 * 2, 2 * 3 + 1]),
        v(&z, &[0, 1, 8 + 4 + 1, 2, 3])
    );
}

fn tiny_config(extra: serde_json::Value) -> VaeConfig {
    let mut base = serde_json::json!({
        "block_out_channels": [8, 16, 16, 16],
        "decoder_block_out_channels": [8, 16, 16, 16],
        "latent_channels": 8,
        "layers_per_block": [1, 1, 1, 1, 1],
        "decoder_layers_per_block": [1, 1, 1, 1, 1],
        "spatial_compression_ratio": null,
    });
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(base).unwrap()
}

fn random_weights(cfg: &VaeConfig) -> Weights {
    let mut m = HashMap::new();
    for (i, (name, shape)) in expected_tensor_shapes(cfg).into_iter().enumerate() {
        let t = if name.ends_with("timestep_scale_multiplier") {
            Tensor::new(1000f32, &Device::Cpu).unwrap()
        } else if name == "latents_std" {
            (rand_t(i as u64, &shape).abs().unwrap() + 0.5).unwrap()
        } else {
            (rand_t(i as u64, &shape) * 0.2).unwrap()
        };
        m.insert(name, t);
    }
    Weights::from_tensors(m, "random")
}

#[test]
fn defaults_and_compression() {
    let cfg: VaeConfig = serde_json::from_value(serde_json::json!({"unknown_key": 1})).unwrap();
    assert_eq!(cfg.latent_channels, 128);
    assert_eq!(cfg.spatial_compression(), 32);
    assert_eq!(cfg.temporal_compression(), 8);
    assert_eq!(
        VaeConfig::default().block_out_channels,
        vec![128, 256, 512, 512]
    );
    let shapes = expected_tensor_shapes(&cfg);
    assert!(shapes
        .iter()
        .any(|(n, s)| n == "decoder.conv_out.conv.weight" && s == &[48, 128, 3, 3, 3]));
    assert!(shapes
        .iter()
        .any(|(n, _)| n == "encoder.down_blocks.0.conv_out.norm3.weight"));
}

#[test]
fn shapes_match_golden_weight_files() {
    let root = crate::golden::default_golden_dir();
    for name in [
        "ltx_vae_decoder",
        "ltx_vae_decoder_timestep_conditioned",
        "ltx_vae_encoder",
    ] {
        let case = crate::golden::Case::load(&root.join(name)).unwrap();
        let cfg: VaeConfig = parse_config(case.config.clone(), name).unwrap();
        let mut want: Vec<(String, Vec<usize>)> = case
            .weights()
            .unwrap()
            .metas()
            .into_iter()
            .map(|m| (m.name, m.shape))
            .collect();
        want.sort();
        let mut got = expected_tensor_shapes(&cfg);
        got.sort();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn random_weights_roundtrip_shapes_and_errors() {
    let configs = [
        tiny_config(serde_json::json!({})),
        tiny_config(serde_json::json!({
            "decoder_block_out_channels": [8, 16, 32],
            "decoder_layers_per_block": [1, 1, 1, 1],
            "decoder_spatio_temporal_scaling": [true, true, true],
            "decoder_inject_noise": [true, true, true, false],
            "upsample_residual": [true, true, true],
            "upsample_factor": [2, 2, 2],
            "timestep_conditioning": true,
        })),
        tiny_config(serde_json::json!({
            "block_out_channels": [8, 16, 32, 64, 64],
            "down_block_types": ["LTXVideo095DownBlock3D", "LTXVideo095DownBlock3D", "LTXVideo095DownBlock3D", "LTXVideo095DownBlock3D"],
            "downsample_type": ["spatial", "temporal", "spatiotemporal", "spatiotemporal"],
            "spatio_temporal_scaling": [true, true, true, true],
            "spatial_compression_ratio": 32,
            "temporal_compression_ratio": 8,
        })),
    ];
    for (ci, cfg) in configs.iter().enumerate() {
        let w = random_weights(cfg);
        let vae = LtxVae::load(&w, cfg).unwrap();
        let (sc, tc) = (cfg.spatial_compression(), cfg.temporal_compression());
        let video = rand_t(7, &[1, 3, tc + 1, sc, 2 * sc]);
        let (mean, std) = vae.encode(&video).unwrap();
        assert_eq!(mean.dims(), &[1, 8, 2, 1, 2], "config {ci}");
        assert_eq!(std.dims(), mean.dims());
        let t = cfg.timestep_conditioning.then_some(0.05);
        let out = vae.decode(&mean, t).unwrap();
        assert_eq!(out.dims(), &[1, 3, tc + 1, sc, 2 * sc], "config {ci}");
        let n = vae.normalize_latents(&mean).unwrap();
        let back = vae.denormalize_latents(&n).unwrap();
        assert!(max_diff(&back, &mean) < 1e-5);
        // Bad inputs are errors, not panics.
        assert!(vae.decode(&rand_t(1, &[1, 5, 2, 1, 1]), t).is_err());
        assert!(vae.encode(&rand_t(1, &[1, 3, 9, 30, 30])).is_err());
        if cfg.timestep_conditioning {
            assert!(vae.decode(&mean, None).is_err());
        }
    }
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    let cfg = tiny_config(serde_json::json!({}));
    let shapes = expected_tensor_shapes(&cfg);
    let mut m: HashMap<String, Tensor> = shapes
        .iter()
        .map(|(n, s)| {
            (
                n.clone(),
                Tensor::zeros(s.as_slice(), DType::F32, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    m.remove("decoder.mid_block.resnets.0.conv2.conv.bias");
    let err = LtxVae::load(&Weights::from_tensors(m.clone(), "t"), &cfg)
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("decoder.mid_block.resnets.0.conv2.conv.bias"),
        "{err}"
    );
    m.insert(
        "decoder.mid_block.resnets.0.conv2.conv.bias".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let err = LtxVae::load(&Weights::from_tensors(m, "t"), &cfg)
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("decoder.mid_block.resnets.0.conv2.conv.bias"),
        "{err}"
    );
    let bad = tiny_config(serde_json::json!({"decoder_layers_per_block": [1, 1]}));
    assert!(try_expected_tensor_shapes(&bad).is_err());
}

/// Rough CPU timing at the benchmark size (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn timing_decode_256x256x25() {
    let cfg = tiny_config(serde_json::json!({
        "latent_channels": 128,
        "block_out_channels": [32, 64, 128, 128],
        "decoder_block_out_channels": [32, 64, 128, 128],
    }));
    let w = random_weights(&cfg);
    let vae = LtxVae::load(&w, &cfg).unwrap();
    let z = rand_t(3, &[1, 128, 4, 8, 8]);
    let t0 = std::time::Instant::now();
    let out = vae.decode(&z, None).unwrap();
    eprintln!("decode {:?} in {:?}", out.dims(), t0.elapsed());
    let video = rand_t(4, &[1, 3, 25, 256, 256]);
    let t0 = std::time::Instant::now();
    let (m, _) = vae.encode(&video).unwrap();
    eprintln!("encode {:?} in {:?}", m.dims(), t0.elapsed());
    let x = rand_t(5, &[1, 25, 32, 64, 64]);
    let t0 = std::time::Instant::now();
    for _ in 0..5 {
        super::ops::rms_norm_channels(&x, 1e-8).unwrap();
    }
    eprintln!("5x rms_norm [1,25,32,64,64] in {:?}", t0.elapsed());
}
