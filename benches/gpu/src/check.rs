//! `vidflow-gpu-bench check`: our kernels against the composed reference
//! ops on fresh random inputs (poisoned outputs would show as non-finite),
//! f32 within 1e-5 and bf16 within 1e-2 relative L2.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use serde_json::json;
use vidflow_gpu::kernels::{self, AttentionImpl, NormKind};
use vidflow_gpu::transformer::LatentGrid;

use crate::{randn, rel_err};

pub fn run(dev: &Device) -> Result<bool> {
    let ok = std::cell::Cell::new(true);
    let report = |name: String, err: f64, finite: bool, tol: f64, imp: Option<AttentionImpl>| {
        let pass = finite && err <= tol;
        ok.set(ok.get() && pass);
        println!(
            "{}",
            json!({"check": name, "rel_err": err, "finite": finite, "tol": tol, "pass": pass,
                   "impl": imp.map(|i| format!("{i:?}"))})
        );
    };
    // Attention: self (no bias) and cross (text mask with padded keys, one
    // item fully masked), odd lengths so every tail path runs.
    for &(dh, sq, sk, masked) in &[
        (64, 300, 300, false),
        (128, 257, 333, false),
        (64, 301, 77, true),
        (128, 130, 128, true),
    ] {
        let (b, h) = (2, 4);
        let q = randn(&[b, sq, h * dh], dev, DType::F32)?;
        let k = randn(&[b, h, sk, dh], dev, DType::F32)?;
        let v = randn(&[b, h, sk, dh], dev, DType::F32)?;
        let bias = if masked {
            let mut m = vec![0f32; b * sk];
            for (j, x) in m.iter_mut().enumerate().take(sk) {
                if j % 3 == 1 {
                    *x = -10000.0;
                }
            }
            for x in m.iter_mut().skip(sk) {
                *x = -10000.0;
            }
            Some(Tensor::from_vec(m, (b, sk), dev)?)
        } else {
            None
        };
        let view =
            |t: &Tensor| -> Result<Tensor> { Ok(t.reshape((b, sq, h, dh))?.transpose(1, 2)?) };
        let want = kernels::composed_attention(&view(&q)?.contiguous()?, &k, &v, bias.as_ref())?;
        for (dt, imp, tol, variant) in [
            (DType::F32, AttentionImpl::Simt, 1e-5, 0),
            (DType::BF16, AttentionImpl::Simt, 1e-2, 0),
            (DType::BF16, AttentionImpl::TensorCore, 1e-2, 1),
            (DType::BF16, AttentionImpl::TensorCore, 1e-2, 2),
            (DType::BF16, AttentionImpl::TensorCore, 1e-2, 3),
        ] {
            #[cfg(feature = "cuda")]
            kernels::cuda::set_tc_variant(variant);
            let _ = variant;
            let (qd, kd, vd) = (q.to_dtype(dt)?, k.to_dtype(dt)?, v.to_dtype(dt)?);
            // Reference in f32 from the same rounded inputs.
            let want_r = if dt == DType::F32 {
                want.clone()
            } else {
                let up = |t: &Tensor| t.to_dtype(DType::F32);
                kernels::composed_attention(
                    &view(&up(&qd)?)?.contiguous()?,
                    &up(&kd)?,
                    &up(&vd)?,
                    bias.as_ref(),
                )?
            };
            let (got, used) =
                kernels::attention_with(&view(&qd)?, &kd, &vd, bias.as_ref(), Some(imp))?;
            let (e, fin) = rel_err(&got, &want_r)?;
            report(
                format!("attention d{dh} sq{sq} sk{sk} mask={masked} {dt:?}"),
                e,
                fin,
                tol,
                Some(used),
            );
            if used != imp {
                ok.set(false);
                println!(
                    "{}",
                    json!({"check": "dispatch", "wanted": format!("{imp:?}"), "got": format!("{used:?}"), "pass": false})
                );
            }
        }
    }
    // Fused norms, per-item and per-token modulation.
    for &(t_per, kind) in &[
        (1, NormKind::Rms),
        (1, NormKind::Layer),
        (37, NormKind::Rms),
    ] {
        let (b, s, d) = (2, 37, 2048);
        let x = (randn(&[b, s, d], dev, DType::F32)? * 3.0)?;
        let sh = randn(&[b, t_per, d], dev, DType::F32)?;
        let sc = (randn(&[b, t_per, d], dev, DType::F32)? * 0.1)?;
        let n = match kind {
            NormKind::Rms => kernels::rms_norm(&x, None, 1e-6)?,
            NormKind::Layer => kernels::layer_norm_plain(&x, 1e-6)?,
        };
        let want = n.broadcast_mul(&(&sc + 1.0)?)?.broadcast_add(&sh)?;
        for (dt, tol) in [(DType::F32, 1e-5), (DType::BF16, 1e-2)] {
            let got = kernels::ada_norm(
                &x.to_dtype(dt)?,
                &sh.to_dtype(dt)?,
                &sc.to_dtype(dt)?,
                kind,
                1e-6,
            )?;
            let (e, fin) = rel_err(&got, &want)?;
            report(
                format!("ada_norm {kind:?} t_per={t_per} {dt:?}"),
                e,
                fin,
                tol,
                None,
            );
        }
    }
    {
        let (b, s, d) = (2, 96, 2048);
        let x = randn(&[b, s, d], dev, DType::F32)?;
        let w = ((randn(&[d], dev, DType::F32)? * 0.1)? + 1.0)?;
        let grid = LatentGrid {
            frames: 2,
            height: 6,
            width: 8,
            rope_scale: [0.32, 32.0, 32.0],
        };
        let (cos, sin) = vidflow_gpu::transformer::rope_tables(d, &grid, dev)?;
        let want = kernels::apply_rope(&kernels::rms_norm(&x, Some(&w), 1e-5)?, &cos, &sin)?;
        for (dt, tol) in [(DType::F32, 1e-5), (DType::BF16, 1e-2)] {
            let got = kernels::qk_norm_rope(&x.to_dtype(dt)?, &w.to_dtype(dt)?, &cos, &sin, 1e-5)?;
            let (e, fin) = rel_err(&got, &want)?;
            report(format!("qk_norm_rope {dt:?}"), e, fin, tol, None);
        }
    }
    Ok(ok.get())
}
