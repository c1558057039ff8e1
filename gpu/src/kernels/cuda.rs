//! The CUDA side of [`super`]: NVRTC compilation (once per process, per
//! source) and the launches, as candle custom ops. Extra inputs (keys,
//! values, modulation) ride in the op struct; candle hands us the first.
//!
//! Each function returns `Ok(None)` for a case its kernel does not cover
//! (dtype, head dim, alignment), and the caller runs the composed ops.

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage, WrapErr};
use candle_core::{CustomOp1, DType, Layout, Shape, Storage, Tensor};
use half::bf16;

use super::{AttentionImpl, NormKind, ATTENTION_SRC, NORM_SRC, PRELUDE};
use crate::error::{GpuError, Result};

/// Compiles a kernel source (after the prelude) to PTX for sm_90; the text
/// is kept for the process, and on disk under `VIDFLOW_KERNEL_CACHE`
/// (default `~/.cache/vidflow/kernels`) keyed by the sha256 of the source
/// and options, so a restart skips NVRTC (seconds for the attention file).
/// The module itself is cached per device by candle.
fn ptx(
    slot: &'static OnceLock<std::result::Result<String, String>>,
    name: &str,
    src: &str,
) -> candle_core::Result<&'static str> {
    let r = slot.get_or_init(|| {
        const ARCH: &str = "compute_90";
        let code = format!("{PRELUDE}\n{src}");
        let key = {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update(ARCH.as_bytes());
            h.update(code.as_bytes());
            h.finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let dir = std::env::var_os("VIDFLOW_KERNEL_CACHE")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|h| std::path::PathBuf::from(h).join(".cache/vidflow/kernels"))
            });
        let file = dir.as_ref().map(|d| {
            d.join(format!(
                "{}-{}.ptx",
                name.trim_end_matches(".cu"),
                &key[..16]
            ))
        });
        if let Some(text) = file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()) {
            if text.contains(".entry") {
                return Ok(text);
            }
        }
        let opts = CompileOptions {
            arch: Some(ARCH),
            options: vec!["--std=c++17".into()],
            name: Some(name.into()),
            ..Default::default()
        };
        let text = compile_ptx_with_opts(code, opts)
            .map(|p| p.to_src())
            .map_err(|e| format!("NVRTC failed on gpu/kernels/{name}: {e}"))?;
        // Best effort: a read-only or missing cache only costs a recompile.
        if let (Some(d), Some(f)) = (dir.as_ref(), file.as_ref()) {
            let tmp = f.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::create_dir_all(d).is_ok() && std::fs::write(&tmp, &text).is_ok() {
                let _ = std::fs::rename(&tmp, f);
            }
        }
        Ok(text)
    });
    r.as_deref().map_err(|e| candle_core::Error::Msg(e.clone()))
}

static ATTN_PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
static NORM_PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();

fn cuda_of(t: &Tensor) -> candle_core::Result<(candle_core::StorageRef<'_>, Layout)> {
    let (s, l) = t.storage_and_layout();
    if !matches!(&*s, Storage::Cuda(_)) {
        candle_core::bail!("vidflow kernel: every input must be on the same CUDA device");
    }
    Ok((s, l.clone()))
}

/// The elements of `s` from the layout's start offset.
fn view<'a, T: CudaDType>(s: &'a CudaStorage, l: &Layout) -> candle_core::Result<CudaView<'a, T>> {
    Ok(s.as_cuda_slice::<T>()?.slice(l.start_offset()..))
}

/// `cpu_fwd` of our ops: candle requires one, but the dispatch in `super`
/// only applies them to CUDA tensors.
fn cuda_only<T>(op: &str) -> candle_core::Result<T> {
    candle_core::bail!("{op} is CUDA only; the CPU runs the composed ops")
}

fn as_cuda(s: &Storage) -> &CudaStorage {
    match s {
        Storage::Cuda(c) => c,
        _ => unreachable!("checked by cuda_of"),
    }
}

/// Mirrors `struct AttnArgs` in attention.cu (passed by value).
#[repr(C)]
#[derive(Clone, Copy)]
struct AttnArgs {
    heads: i32,
    sq: i32,
    sk: i32,
    q: [i64; 3],
    k: [i64; 3],
    v: [i64; 3],
    scale: f32,
}
unsafe impl DeviceRepr for AttnArgs {}

/// `[B,H,S,dh]` element strides as (batch, seq, head), with the head dim
/// contiguous; `None` when it is not.
fn bsh_strides(l: &Layout) -> Option<[i64; 3]> {
    let st = l.stride();
    let dims = l.dims();
    if dims.len() != 4 || (st[3] != 1 && dims[3] > 1) {
        return None;
    }
    Some([st[0] as i64, st[2] as i64, st[1] as i64])
}

struct FlashAttention {
    k: Tensor,
    v: Tensor,
    /// f32 `[B, Sk]`, contiguous.
    bias: Option<Tensor>,
    kernel: String,
    rows_per_block: usize,
    threads: u32,
}

impl CustomOp1 for FlashAttention {
    fn name(&self) -> &'static str {
        "vidflow-flash-attention"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, Shape)> {
        cuda_only("vidflow-flash-attention")
    }

    fn cuda_fwd(&self, qs: &CudaStorage, ql: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let (b, h, sq, dh) = ql.shape().dims4()?;
        let (ks, kl) = cuda_of(&self.k)?;
        let (vs, vl) = cuda_of(&self.v)?;
        let sk = kl.dims()[2];
        let strides = |l: &Layout| {
            bsh_strides(l)
                .ok_or_else(|| candle_core::Error::Msg("attention: head dim not contiguous".into()))
        };
        let args = AttnArgs {
            heads: h as i32,
            sq: sq as i32,
            sk: sk as i32,
            q: strides(ql)?,
            k: strides(&kl)?,
            v: strides(&vl)?,
            scale: 1.0 / (dh as f32).sqrt(),
        };
        let dev: &CudaDevice = qs.device();
        let src = ptx(&ATTN_PTX, "attention.cu", ATTENTION_SRC)?;
        let func = dev.get_or_load_custom_func(&self.kernel, "vidflow_attention", src)?;
        let cfg = LaunchConfig {
            grid_dim: (sq.div_ceil(self.rows_per_block) as u32, h as u32, b as u32),
            block_dim: (self.threads, 1, 1),
            shared_mem_bytes: 0,
        };
        let n = b * sq * h * dh;
        let bias_guard = self.bias.as_ref().map(cuda_of).transpose()?;
        macro_rules! launch {
            ($t:ty) => {{
                let q = view::<$t>(qs, ql)?;
                let k = view::<$t>(as_cuda(&ks), &kl)?;
                let v = view::<$t>(as_cuda(&vs), &vl)?;
                let out = unsafe { dev.alloc::<$t>(n)? };
                let null = 0u64;
                let bias_view = match &bias_guard {
                    Some((s, l)) => Some(view::<f32>(as_cuda(s), &l)?),
                    None => None,
                };
                let mut lb = func.builder();
                lb.arg(&q).arg(&k).arg(&v);
                match &bias_view {
                    Some(bv) => lb.arg(bv),
                    None => lb.arg(&null),
                };
                lb.arg(&out).arg(&args);
                unsafe { lb.launch(cfg) }.w()?;
                CudaStorage::wrap_cuda_slice(out, dev.clone())
            }};
        }
        let out = match qs.dtype() {
            DType::BF16 => launch!(bf16),
            DType::F32 => launch!(f32),
            other => candle_core::bail!("vidflow-flash-attention: unsupported dtype {other:?}"),
        };
        Ok((out, Shape::from((b, sq, h * dh))))
    }
}

/// Element offset and strides all allow 16-byte vector loads.
fn aligned16(l: &Layout, elem: usize) -> bool {
    let st = l.stride();
    (l.start_offset() * elem) % 16 == 0 && st[..3].iter().all(|s| (s * elem) % 16 == 0)
}

pub(super) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    force: Option<AttentionImpl>,
) -> Result<Option<(Tensor, AttentionImpl)>> {
    let (b, h, _sq, dh) = q.dims4()?;
    let sk = k.dim(2)?;
    if k.dims() != [b, h, sk, dh] || v.dims() != [b, h, sk, dh] {
        return Err(GpuError::invalid(
            "attention",
            format!(
                "q {:?}, k {:?}, v {:?} do not agree",
                q.dims(),
                k.dims(),
                v.dims()
            ),
        ));
    }
    let dt = q.dtype();
    if k.dtype() != dt || v.dtype() != dt || !matches!(dt, DType::BF16 | DType::F32) {
        return Ok(None);
    }
    let layouts = [q.layout(), k.layout(), v.layout()];
    if layouts.iter().any(|l| bsh_strides(l).is_none()) {
        return Ok(None);
    }
    let bias = match bias {
        Some(t) => Some(t.to_dtype(DType::F32)?.reshape((b, sk))?.contiguous()?),
        None => None,
    };
    let tc_ok =
        dt == DType::BF16 && (dh == 64 || dh == 128) && layouts.iter().all(|l| aligned16(l, 2));
    let use_tc = match force {
        Some(AttentionImpl::TensorCore) if !tc_ok => return Ok(None),
        Some(AttentionImpl::TensorCore) => true,
        Some(AttentionImpl::Simt) => false,
        _ => tc_ok,
    };
    let op = if use_tc {
        let warps = TC_WARPS.load(std::sync::atomic::Ordering::Relaxed);
        FlashAttention {
            k: k.clone(),
            v: v.clone(),
            bias,
            kernel: super::tc_kernel_name(
                TC_VARIANT.load(std::sync::atomic::Ordering::Relaxed),
                warps,
                dh,
            ),
            rows_per_block: 16 * warps,
            threads: 32 * warps as u32,
        }
    } else {
        let Some(kernel) = super::simt_kernel_name(dt, dh) else {
            return Ok(None);
        };
        FlashAttention {
            k: k.clone(),
            v: v.clone(),
            bias,
            kernel,
            rows_per_block: 8,
            threads: 256,
        }
    };
    let imp = if use_tc {
        AttentionImpl::TensorCore
    } else {
        AttentionImpl::Simt
    };
    Ok(Some((q.apply_op1_no_bwd(&op)?, imp)))
}

static TC_WARPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(4);
static TC_VARIANT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// Tensor-core kernel variant (see `tc_kernel_name`): 1 plain shared
/// loads, 2 ldmatrix, 3 ldmatrix + cp.async. All are checked; the benchmark
/// times each and the fastest becomes the default once measured on a GPU.
pub fn set_tc_variant(v: usize) {
    TC_VARIANT.store(
        if (1..=3).contains(&v) { v } else { 1 },
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// Warps per block of the tensor-core kernel (4 or 8: 64 or 128 query rows
/// share each K/V tile); the benchmark measures both.
pub fn set_tc_warps(w: usize) {
    TC_WARPS.store(
        if w == 8 { 8 } else { 4 },
        std::sync::atomic::Ordering::Relaxed,
    );
}

struct AdaNorm {
    shift: Tensor,
    scale: Tensor,
    s_tokens: usize,
    t_per: usize,
    eps: f32,
    kind: NormKind,
}

/// Row-parallel launch shared by both norm kernels.
fn norm_cfg(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl CustomOp1 for AdaNorm {
    fn name(&self) -> &'static str {
        "vidflow-ada-norm"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, Shape)> {
        cuda_only("vidflow-ada-norm")
    }

    fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let dims = xl.dims().to_vec();
        let d = *dims.last().unwrap_or(&0);
        let rows = xl.shape().elem_count() / d.max(1);
        let (ss, sl) = cuda_of(&self.shift)?;
        let (cs, cl) = cuda_of(&self.scale)?;
        let dev = xs.device();
        let src = ptx(&NORM_PTX, "norm.cu", NORM_SRC)?;
        macro_rules! launch {
            ($t:ty, $name:literal) => {{
                let func = dev.get_or_load_custom_func($name, "vidflow_norm", src)?;
                let x = view::<$t>(xs, xl)?;
                let sh = view::<$t>(as_cuda(&ss), &sl)?;
                let sc = view::<$t>(as_cuda(&cs), &cl)?;
                let out = unsafe { dev.alloc::<$t>(rows * d)? };
                let (d32, s32, t32, kind) = (
                    d as i32,
                    self.s_tokens as i32,
                    self.t_per as i32,
                    self.kind as i32,
                );
                let mut lb = func.builder();
                lb.arg(&x)
                    .arg(&sh)
                    .arg(&sc)
                    .arg(&out)
                    .arg(&d32)
                    .arg(&s32)
                    .arg(&t32)
                    .arg(&self.eps)
                    .arg(&kind);
                unsafe { lb.launch(norm_cfg(rows)) }.w()?;
                CudaStorage::wrap_cuda_slice(out, dev.clone())
            }};
        }
        let out = match xs.dtype() {
            DType::BF16 => launch!(bf16, "ada_norm_bf16"),
            DType::F32 => launch!(f32, "ada_norm_f32"),
            other => candle_core::bail!("vidflow-ada-norm: unsupported dtype {other:?}"),
        };
        Ok((out, Shape::from(dims)))
    }
}

pub(super) fn ada_norm(
    x: &Tensor,
    shift: &Tensor,
    scale: &Tensor,
    kind: NormKind,
    eps: f64,
) -> Result<Option<Tensor>> {
    let (b, s, d) = x.dims3()?;
    let dt = x.dtype();
    if d > 4096
        || !matches!(dt, DType::BF16 | DType::F32)
        || shift.dtype() != dt
        || scale.dtype() != dt
    {
        return Ok(None);
    }
    let t_per = shift.dim(1)?;
    if shift.dims() != [b, t_per, d] || scale.dims() != [b, t_per, d] || (t_per != 1 && t_per != s)
    {
        return Ok(None);
    }
    let op = AdaNorm {
        shift: shift.contiguous()?,
        scale: scale.contiguous()?,
        s_tokens: s,
        t_per,
        eps: eps as f32,
        kind,
    };
    Ok(Some(x.contiguous()?.apply_op1_no_bwd(&op)?))
}

struct QkNormRope {
    weight: Tensor,
    cos: Tensor,
    sin: Tensor,
    s_tokens: usize,
    eps: f32,
}

impl CustomOp1 for QkNormRope {
    fn name(&self) -> &'static str {
        "vidflow-qk-norm-rope"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, Shape)> {
        cuda_only("vidflow-qk-norm-rope")
    }

    fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let dims = xl.dims().to_vec();
        let d = *dims.last().unwrap_or(&0);
        let rows = xl.shape().elem_count() / d.max(1);
        let (ws, wl) = cuda_of(&self.weight)?;
        let (cs, cl) = cuda_of(&self.cos)?;
        let (ss, sl) = cuda_of(&self.sin)?;
        let dev = xs.device();
        let src = ptx(&NORM_PTX, "norm.cu", NORM_SRC)?;
        let cosv = view::<f32>(as_cuda(&cs), &cl)?;
        let sinv = view::<f32>(as_cuda(&ss), &sl)?;
        macro_rules! launch {
            ($t:ty, $name:literal) => {{
                let func = dev.get_or_load_custom_func($name, "vidflow_norm", src)?;
                let x = view::<$t>(xs, xl)?;
                let w = view::<$t>(as_cuda(&ws), &wl)?;
                let out = unsafe { dev.alloc::<$t>(rows * d)? };
                let (d32, s32) = (d as i32, self.s_tokens as i32);
                let mut lb = func.builder();
                lb.arg(&x)
                    .arg(&w)
                    .arg(&cosv)
                    .arg(&sinv)
                    .arg(&out)
                    .arg(&d32)
                    .arg(&s32)
                    .arg(&self.eps);
                unsafe { lb.launch(norm_cfg(rows)) }.w()?;
                CudaStorage::wrap_cuda_slice(out, dev.clone())
            }};
        }
        let out = match xs.dtype() {
            DType::BF16 => launch!(bf16, "qk_norm_rope_bf16"),
            DType::F32 => launch!(f32, "qk_norm_rope_f32"),
            other => candle_core::bail!("vidflow-qk-norm-rope: unsupported dtype {other:?}"),
        };
        Ok((out, Shape::from(dims)))
    }
}

pub(super) fn qk_norm_rope(
    x: &Tensor,
    weight: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    eps: f64,
) -> Result<Option<Tensor>> {
    let (_b, s, d) = x.dims3()?;
    let dt = x.dtype();
    if d > 4096
        || d % 2 != 0
        || !matches!(dt, DType::BF16 | DType::F32)
        || weight.dtype() != dt
        || weight.dims() != [d]
        || cos.dims() != [s, d]
        || sin.dims() != [s, d]
        || cos.dtype() != DType::F32
        || sin.dtype() != DType::F32
    {
        return Ok(None);
    }
    let op = QkNormRope {
        weight: weight.contiguous()?,
        cos: cos.contiguous()?,
        sin: sin.contiguous()?,
        s_tokens: s,
        eps: eps as f32,
    };
    Ok(Some(x.contiguous()?.apply_op1_no_bwd(&op)?))
}

/// (free, total) bytes of the device's memory, as the driver reports it.
pub fn mem_info(dev: &candle_core::Device) -> Result<(u64, u64)> {
    let cuda = dev.as_cuda_device()?;
    let (free, total) = cuda
        .cuda_stream()
        .context()
        .mem_get_info()
        .map_err(|e| GpuError::invalid("cuda", e.to_string()))?;
    Ok((free as u64, total as u64))
}

/// Compiles (or loads from the disk cache) every kernel source with NVRTC;
/// (file, PTX bytes). Needs no GPU: the bench's `nvrtc` subcommand runs it
/// to check the run-time compile path on a machine without one.
pub fn compile_all() -> Result<Vec<(String, usize)>> {
    let a = ptx(&ATTN_PTX, "attention.cu", ATTENTION_SRC)?;
    let n = ptx(&NORM_PTX, "norm.cu", NORM_SRC)?;
    Ok(vec![
        ("attention.cu".into(), a.len()),
        ("norm.cu".into(), n.len()),
    ])
}
