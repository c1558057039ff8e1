//! LoRA adapters chosen per job, applied without touching the base weights.
//!
//! An adapter holds, for some of a transformer's linear layers, a low-rank
//! pair `down` `[r, in]` and `up` `[out, r]` with a scale `alpha / r`; the
//! layer then computes `x W^T + b + s (x down^T) up^T`. Applied as this
//! side product rather than merged into `W`, a step batch can carry jobs
//! with different adapters (or none): every linear layer already runs its
//! GEMM per batch item on the CPU, and the side product is added per item
//! too, so a job's bits are the same in any batch as alone. Merging would
//! cost a full `out x in` update per layer and adapter switch, and a batch
//! could then hold one adapter only; the side product costs `2 r (in +
//! out)` per token (`docs/BENCHMARKS.md` has the measured step cost).
//!
//! The forward code of both families knows nothing of adapters: the batch
//! step installs each row's adapter for the duration of one transformer
//! forward ([`scoped`]), and [`crate::nn::Linear::forward`] looks its own
//! name up there. The scope is per thread, which is where a forward runs.
//!
//! Files are safetensors in the diffusers/PEFT layout (`<layer>.lora_A.weight`,
//! `<layer>.lora_B.weight`, optional `<layer>.alpha`) or kohya's
//! (`lora_unet_<layer with _>.lora_down.weight`, `.lora_up.weight`,
//! `.alpha`), with diffusers layer names, or for Wan the original
//! checkpoint's (`blocks.N.self_attn.q`, `cross_attn.k_img`, `ffn.0`, ...).
//! Rank comes from the tensors, alpha from `<layer>.alpha`, else the file's
//! `ss_network_alpha` / `lora_alpha` metadata, else the rank (scale 1).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use safetensors::SafeTensors;

use crate::error::{GpuError, Result};

/// A model's linear layers an adapter may target: name -> (out, in).
pub type Targets = BTreeMap<String, (usize, usize)>;

/// One adapted layer.
#[derive(Debug, Clone)]
pub struct LoraLayer {
    /// `[r, in]`.
    pub down: Tensor,
    /// `[out, r]`.
    pub up: Tensor,
    /// `alpha / r`.
    pub scale: f64,
}

/// A loaded adapter, fitted to one model.
#[derive(Debug)]
pub struct Adapter {
    /// What the job named it by (for errors and logs).
    pub name: String,
    /// Layers by the model's names.
    pub layers: BTreeMap<String, LoraLayer>,
    pub rank: usize,
    /// Bytes its tensors take (the cache's budget counts these).
    pub bytes: u64,
    /// SHA-256 of the file it was read from (hex): what a job's request
    /// hash, and so its checkpoints, are bound to.
    pub sha256: String,
}

/// An adapter as one job applies it: the adapter and the job's strength.
#[derive(Debug, Clone)]
pub struct Applied {
    pub adapter: Arc<Adapter>,
    /// Multiplies every layer's `alpha / r` (1 = as trained).
    pub strength: f64,
}

thread_local! {
    /// Per batch row, the adapter its job applies, while a forward runs.
    static ROWS: RefCell<Option<Vec<Option<Applied>>>> = const { RefCell::new(None) };
}

/// Runs `f` (one transformer forward) with `rows[i]` applied to batch row
/// `i` of every adapted linear layer. No adapter at all: `f` runs as is.
pub fn scoped<R>(rows: Vec<Option<Applied>>, f: impl FnOnce() -> R) -> R {
    if rows.iter().all(|r| r.is_none()) {
        return f();
    }
    struct Reset(Option<Vec<Option<Applied>>>);
    impl Drop for Reset {
        fn drop(&mut self) {
            let prev = self.0.take();
            ROWS.with(|r| *r.borrow_mut() = prev);
        }
    }
    let prev = ROWS.with(|r| r.borrow_mut().replace(rows));
    let _reset = Reset(prev);
    f()
}

/// The side products for layer `name` on input `x` (batch rows first):
/// `None` when no row's adapter touches the layer; else per row the delta
/// or `None`.
pub(crate) fn deltas(name: &str, x: &Tensor) -> Result<Option<Vec<Option<Tensor>>>> {
    ROWS.with(|rows| -> Result<Option<Vec<Option<Tensor>>>> {
        let rows = rows.borrow();
        let Some(rows) = rows.as_ref() else {
            return Ok(None);
        };
        let layers: Vec<Option<(&LoraLayer, f64)>> = rows
            .iter()
            .map(|r| {
                r.as_ref()
                    .and_then(|a| a.adapter.layers.get(name).map(|l| (l, a.strength)))
            })
            .collect();
        if layers.iter().all(|l| l.is_none()) {
            return Ok(None);
        }
        if x.dim(0)? != rows.len() {
            return Err(GpuError::invalid(
                "lora",
                format!(
                    "layer {name} sees {} leading rows, the batch has {}",
                    x.dim(0)?,
                    rows.len()
                ),
            ));
        }
        let mut out = Vec::with_capacity(rows.len());
        for (i, l) in layers.into_iter().enumerate() {
            out.push(match l {
                None => None,
                Some((l, strength)) => {
                    let xi = x.narrow(0, i, 1)?;
                    let dims = xi.dims().to_vec();
                    let in_dim = dims[dims.len() - 1];
                    let n: usize = dims[..dims.len() - 1].iter().product();
                    let x2 = xi.reshape((n, in_dim))?;
                    let down = l.down.to_dtype(x2.dtype())?;
                    let up = l.up.to_dtype(x2.dtype())?;
                    let d = x2
                        .matmul(&down.t()?)?
                        .matmul(&up.t()?)?
                        .affine(l.scale * strength, 0.0)?;
                    let mut od = dims;
                    let last = od.len() - 1;
                    od[last] = up.dim(0)?;
                    Some(d.reshape(od)?)
                }
            });
        }
        Ok(Some(out))
    })
}

/// The original Wan 2.1 name of a diffusers Wan layer (what adapters
/// trained on the original code call it), if it has one.
fn wan_original(name: &str) -> Option<String> {
    const MAP: [(&str, &str); 11] = [
        (".attn1.to_q", ".self_attn.q"),
        (".attn1.to_k", ".self_attn.k"),
        (".attn1.to_v", ".self_attn.v"),
        (".attn1.to_out.0", ".self_attn.o"),
        (".attn2.to_q", ".cross_attn.q"),
        (".attn2.to_k", ".cross_attn.k"),
        (".attn2.to_v", ".cross_attn.v"),
        (".attn2.to_out.0", ".cross_attn.o"),
        (".attn2.add_k_proj", ".cross_attn.k_img"),
        (".attn2.add_v_proj", ".cross_attn.v_img"),
        (".ffn.net.0.proj", ".ffn.0"),
    ];
    if !name.starts_with("blocks.") {
        return None;
    }
    if let Some(stem) = name.strip_suffix(".ffn.net.2") {
        return Some(format!("{stem}.ffn.2"));
    }
    MAP.iter()
        .find_map(|(d, o)| name.strip_suffix(d).map(|stem| format!("{stem}{o}")))
}

/// Every name a layer may go by in a file, mapped to the model's name.
fn aliases(targets: &Targets) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for name in targets.keys() {
        let mut names = vec![name.clone()];
        names.extend(wan_original(name));
        for n in names {
            m.insert(n.replace('.', "_"), name.clone());
            m.insert(n, name.clone());
        }
    }
    m
}

/// Which half of a pair a tensor is, and the layer name it belongs to.
enum Part {
    Down,
    Up,
    Alpha,
}

fn split_key(key: &str) -> Option<(String, Part)> {
    let suffixes = [
        (".lora_A.weight", Part::Down),
        (".lora_B.weight", Part::Up),
        (".lora_A.default.weight", Part::Down),
        (".lora_B.default.weight", Part::Up),
        (".lora_down.weight", Part::Down),
        (".lora_up.weight", Part::Up),
        (".alpha", Part::Alpha),
    ];
    suffixes.into_iter().find_map(|(suffix, part)| {
        key.strip_suffix(suffix)
            .map(|stem| (stem.to_string(), part))
    })
}

/// A file's layer name without the prefixes trainers put in front.
fn strip_prefix(stem: &str) -> &str {
    for p in [
        "base_model.model.",
        "transformer.",
        "diffusion_model.",
        "model.diffusion_model.",
        "lora_unet_",
        "lora_transformer_",
    ] {
        if let Some(rest) = stem.strip_prefix(p) {
            return strip_prefix(rest);
        }
    }
    stem
}

fn to_f32(view: &safetensors::tensor::TensorView<'_>, key: &str) -> Result<Tensor> {
    let dt = match view.dtype() {
        safetensors::Dtype::F32 => DType::F32,
        safetensors::Dtype::F16 => DType::F16,
        safetensors::Dtype::BF16 => DType::BF16,
        other => {
            return Err(GpuError::UnsupportedDtype {
                name: key.to_string(),
                dtype: format!("{other:?}"),
            })
        }
    };
    Ok(
        Tensor::from_raw_buffer(view.data(), dt, view.shape(), &Device::Cpu)?
            .to_dtype(DType::F32)?,
    )
}

impl Adapter {
    /// Reads a safetensors adapter (`bytes`) and fits it to `targets`;
    /// tensors land on `device` in `dtype`. Refuses, naming the layer, a
    /// layer the model lacks, a half without its pair, and the first layer
    /// (in name order) whose shapes do not fit.
    pub fn from_safetensors(
        name: &str,
        bytes: &[u8],
        targets: &Targets,
        device: &Device,
        dtype: DType,
    ) -> Result<Adapter> {
        let bad = |msg: String| GpuError::invalid("lora", format!("adapter {name}: {msg}"));
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let meta_alpha = SafeTensors::read_metadata(bytes)
            .ok()
            .and_then(|(_, m)| m.metadata().clone())
            .and_then(|m| {
                ["ss_network_alpha", "lora_alpha"]
                    .iter()
                    .find_map(|k| m.get(*k).and_then(|v| v.trim().parse::<f64>().ok()))
            });
        let alias = aliases(targets);
        type Pair = (Option<Tensor>, Option<Tensor>, Option<f64>);
        let mut pairs: BTreeMap<String, Pair> = BTreeMap::new();
        for (key, view) in st.tensors() {
            let Some((stem, part)) = split_key(&key) else {
                return Err(bad(format!(
                    "tensor {key} is not a LoRA down/up/alpha tensor"
                )));
            };
            let file_name = strip_prefix(&stem);
            let Some(layer) = alias.get(file_name) else {
                return Err(bad(format!(
                    "layer {file_name} is not a linear layer of this model"
                )));
            };
            let t = to_f32(&view, &key)?;
            let e = pairs.entry(layer.clone()).or_default();
            match part {
                Part::Down => e.0 = Some(t),
                Part::Up => e.1 = Some(t),
                Part::Alpha => {
                    e.2 = Some(
                        t.flatten_all()?
                            .to_vec1::<f32>()?
                            .first()
                            .copied()
                            .unwrap_or(0.0) as f64,
                    )
                }
            }
        }
        if pairs.is_empty() {
            return Err(bad("holds no LoRA layers".into()));
        }
        let mut layers = BTreeMap::new();
        let mut rank = 0;
        let mut total = 0u64;
        for (layer, (down, up, alpha)) in pairs {
            let (Some(down), Some(up)) = (down, up) else {
                return Err(bad(format!("layer {layer} lacks its down or up half")));
            };
            let (out, inp) = targets[&layer];
            let (dd, ud) = (down.dims().to_vec(), up.dims().to_vec());
            let r = dd.first().copied().unwrap_or(0);
            if dd.len() != 2 || ud.len() != 2 || r == 0 || dd[1] != inp || ud != [out, r] {
                return Err(bad(format!(
                    "layer {layer} takes [{out}, {inp}]: down {dd:?} and up {ud:?} do not fit (need [r, {inp}] and [{out}, r])"
                )));
            }
            let alpha = alpha.or(meta_alpha).unwrap_or(r as f64);
            if !alpha.is_finite() {
                return Err(bad(format!("layer {layer} has alpha {alpha}")));
            }
            rank = rank.max(r);
            total += ((r * inp + out * r) * dtype.size_in_bytes()) as u64;
            layers.insert(
                layer,
                LoraLayer {
                    down: down.to_dtype(dtype)?.to_device(device)?,
                    up: up.to_dtype(dtype)?.to_device(device)?,
                    scale: alpha / r as f64,
                },
            );
        }
        use sha2::Digest;
        let sha256 = sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Adapter {
            name: name.to_string(),
            layers,
            rank,
            bytes: total,
            sha256,
        })
    }

    /// `W + s · up · down` for every adapted layer of `weights` (name ->
    /// `[out, in]`): the merged model the side products must equal.
    pub fn merged(
        &self,
        weights: &BTreeMap<String, Tensor>,
        strength: f64,
    ) -> Result<BTreeMap<String, Tensor>> {
        let mut out = weights.clone();
        for (name, l) in &self.layers {
            let w = weights
                .get(name)
                .ok_or_else(|| GpuError::invalid("lora", format!("no weight {name}")))?;
            let d = l.up.matmul(&l.down)?.affine(l.scale * strength, 0.0)?;
            out.insert(name.clone(), (w + d.to_dtype(w.dtype())?)?);
        }
        Ok(out)
    }
}

/// Loaded adapters by key, least recently used dropped first once their
/// bytes pass the budget: a platform sees the same few adapters again and
/// again, and parsing and moving one to the device costs more than a step.
pub struct AdapterCache {
    budget_bytes: u64,
    used: u64,
    /// Oldest first.
    order: Vec<String>,
    map: HashMap<String, Arc<Adapter>>,
    pub hits: u64,
    pub misses: u64,
}

impl AdapterCache {
    pub fn new(budget_bytes: u64) -> Self {
        AdapterCache {
            budget_bytes,
            used: 0,
            order: Vec::new(),
            map: HashMap::new(),
            hits: 0,
            misses: 0,
        }
    }

    /// The adapter under `key`, or `load`'s, kept for next time.
    pub fn get_or_load(
        &mut self,
        key: &str,
        load: impl FnOnce() -> Result<Adapter>,
    ) -> Result<Arc<Adapter>> {
        if let Some(a) = self.map.get(key).cloned() {
            self.hits += 1;
            self.order.retain(|k| k != key);
            self.order.push(key.to_string());
            return Ok(a);
        }
        self.misses += 1;
        let a = Arc::new(load()?);
        self.used += a.bytes;
        self.map.insert(key.to_string(), a.clone());
        self.order.push(key.to_string());
        while self.used > self.budget_bytes && self.order.len() > 1 {
            let old = self.order.remove(0);
            if let Some(o) = self.map.remove(&old) {
                self.used -= o.bytes;
            }
        }
        Ok(a)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
