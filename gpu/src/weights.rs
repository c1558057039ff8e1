//! Weight storage: memory-mapped safetensors files (single or sharded) or
//! in-memory tensors, or tensors drawn on request from a seed (the built-in
//! tiny models), behind one lookup API that checks names and shapes so a bad
//! checkpoint is an error, never a panic.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;

use crate::error::{GpuError, Result};

struct FileEntry {
    path: PathBuf,
    mmap: Mmap,
    /// Offset of the data section (8-byte length + JSON header).
    data_start: usize,
}

struct TensorEntry {
    file: usize,
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    range: (usize, usize),
}

enum Store {
    Files {
        files: Vec<FileEntry>,
        tensors: HashMap<String, TensorEntry>,
    },
    Memory(HashMap<String, Tensor>),
    /// Every name exists; a tensor is drawn by `init` when a loader asks
    /// for it with its shape, and the (name, shape) pairs drawn are kept for
    /// `names`/`metas`. The architecture's loader is then the only list of
    /// its tensors: a built-in model cannot drift from what a checkpoint of
    /// the same architecture must hold.
    Seeded {
        init: SeedInit,
        seed: u64,
        drawn: Mutex<BTreeMap<String, Vec<usize>>>,
    },
}

/// Draws one named tensor of a shape from a seed (see [`Weights::seeded`]).
pub type SeedInit = fn(&str, &[usize], u64) -> Result<Tensor>;

/// A read-only view of a set of named tensors, optionally under a name prefix.
/// Tensors come out in the view's compute dtype on its device.
#[derive(Clone)]
pub struct Weights {
    store: Arc<Store>,
    prefix: String,
    dtype: DType,
    device: Device,
    desc: Arc<str>,
    /// Every linear layer loaded through this view or one derived from it
    /// (full name -> (out, in)): the layers a LoRA adapter may target.
    linears: Arc<Mutex<BTreeMap<String, (usize, usize)>>>,
}

/// One tensor's metadata, for `model info`.
#[derive(Debug, Clone)]
pub struct TensorMeta {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
}

fn wf(path: &Path, msg: impl Into<String>) -> GpuError {
    GpuError::WeightFile {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// One tensor as a safetensors header declares it (checked).
#[derive(Debug, Clone)]
pub struct CheckedTensor {
    pub name: String,
    pub dtype: safetensors::Dtype,
    pub shape: Vec<usize>,
    /// Byte range within the data section.
    pub range: (usize, usize),
}

/// Reads and checks a safetensors file's header (untrusted bytes: a
/// checkpoint from anywhere): every tensor must lie inside the data section
/// and its byte length must match its shape (no overflow on absurd
/// shapes). Returns the data section's offset and the tensors.
pub fn check_safetensors(bytes: &[u8]) -> std::result::Result<(usize, Vec<CheckedTensor>), String> {
    let (n, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| format!("not a valid safetensors file: {e}"))?;
    let data_start = 8usize
        .checked_add(n)
        .filter(|&s| s <= bytes.len())
        .ok_or("header longer than the file")?;
    let data_len = bytes.len() - data_start;
    let mut out = Vec::new();
    for (name, info) in meta.tensors() {
        let (a, b) = info.data_offsets;
        if b > data_len || a > b {
            return Err(format!(
                "tensor `{name}` lies outside the file (truncated?)"
            ));
        }
        if let Some(sz) = dtype_size(info.dtype) {
            let bytes = info.shape.iter().try_fold(sz, |acc, &d| acc.checked_mul(d));
            if bytes != Some(b - a) {
                return Err(format!(
                    "tensor `{name}` byte length does not match its shape"
                ));
            }
        }
        out.push(CheckedTensor {
            name,
            dtype: info.dtype,
            shape: info.shape.clone(),
            range: (a, b),
        });
    }
    Ok((data_start, out))
}

fn dtype_size(d: safetensors::Dtype) -> Option<usize> {
    use safetensors::Dtype::*;
    Some(match d {
        F32 | I32 | U32 => 4,
        F16 | BF16 | I16 | U16 => 2,
        F64 | I64 | U64 => 8,
        U8 | I8 | BOOL => 1,
        _ => return None,
    })
}

impl Weights {
    /// Memory-maps the given safetensors files. The header of each is validated
    /// up front (size, offsets), so truncation is reported here with the file.
    pub fn from_files(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::new();
        let mut tensors = HashMap::new();
        for path in paths {
            let file = std::fs::File::open(path).map_err(|source| GpuError::Io {
                path: path.clone(),
                source,
            })?;
            // SAFETY: the file is opened read-only; checkpoints are not expected
            // to be modified while a model is loaded.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|source| GpuError::Io {
                path: path.clone(),
                source,
            })?;
            let (data_start, metas) = check_safetensors(&mmap).map_err(|e| wf(path, e))?;
            let idx = files.len();
            for m in metas {
                if tensors.contains_key(&m.name) {
                    return Err(wf(
                        path,
                        format!("tensor `{}` appears in two files", m.name),
                    ));
                }
                tensors.insert(
                    m.name,
                    TensorEntry {
                        file: idx,
                        dtype: m.dtype,
                        shape: m.shape,
                        range: m.range,
                    },
                );
            }
            files.push(FileEntry {
                path: path.clone(),
                mmap,
                data_start,
            });
        }
        let desc = match paths {
            [one] => one.display().to_string(),
            _ => format!("{} safetensors files", paths.len()),
        };
        Ok(Weights {
            store: Arc::new(Store::Files { files, tensors }),
            prefix: String::new(),
            dtype: DType::F32,
            device: Device::Cpu,
            desc: desc.into(),
            linears: Arc::default(),
        })
    }

    /// Loads a component directory: a `*.safetensors.index.json` shard index if
    /// present, else every `*.safetensors` file in it.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let rd = std::fs::read_dir(dir).map_err(|source| GpuError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut index = None;
        let mut singles = Vec::new();
        for entry in rd.flatten() {
            let p = entry.path();
            let name = p.file_name().and_then(|s| s.to_str()).unwrap_or("");
            if name.ends_with(".safetensors.index.json") {
                index = Some(p);
            } else if name.ends_with(".safetensors") {
                singles.push(p);
            }
        }
        let paths = if let Some(index) = index {
            shard_paths(&index)?
        } else {
            singles.sort();
            singles
        };
        if paths.is_empty() {
            return Err(wf(dir, "no *.safetensors file in this directory"));
        }
        let mut w = Self::from_files(&paths)?;
        w.desc = dir.display().to_string().into();
        Ok(w)
    }

    /// Wraps tensors already in memory (seeded built-in weights, tests).
    pub fn from_tensors(tensors: HashMap<String, Tensor>, desc: &str) -> Self {
        Weights {
            store: Arc::new(Store::Memory(tensors)),
            prefix: String::new(),
            dtype: DType::F32,
            device: Device::Cpu,
            desc: desc.into(),
            linears: Arc::default(),
        }
    }

    /// Weights drawn by `init` from `seed` as a loader asks for them (the
    /// built-in tiny models): `contains` is true for every name, and after
    /// loading, `names`/`metas` list what was drawn.
    pub fn seeded(init: SeedInit, seed: u64, desc: &str) -> Self {
        Weights {
            store: Arc::new(Store::Seeded {
                init,
                seed,
                drawn: Mutex::new(BTreeMap::new()),
            }),
            prefix: String::new(),
            dtype: DType::F32,
            device: Device::Cpu,
            desc: desc.into(),
            linears: Arc::default(),
        }
    }

    pub fn with_dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    pub fn with_device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// A view under `prefix.` (nesting composes).
    pub fn pp(&self, prefix: impl AsRef<str>) -> Self {
        let mut w = self.clone();
        w.prefix = format!("{}{}.", self.prefix, prefix.as_ref());
        w
    }

    fn full(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    /// `name` under this view's prefix.
    pub fn full_name(&self, name: &str) -> String {
        self.full(name)
    }

    /// Notes a linear layer loaded from this view (`nn::Linear::load`).
    pub fn record_linear(&self, full: &str, out: usize, inp: usize) {
        if let Ok(mut l) = self.linears.lock() {
            l.insert(full.to_string(), (out, inp));
        }
    }

    /// The linear layers loaded through this view and its derived views:
    /// what a LoRA adapter for the component may target.
    pub fn linears(&self) -> BTreeMap<String, (usize, usize)> {
        self.linears.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn contains(&self, name: &str) -> bool {
        let full = self.full(name);
        match &*self.store {
            Store::Files { tensors, .. } => tensors.contains_key(&full),
            Store::Memory(m) => m.contains_key(&full),
            Store::Seeded { .. } => true,
        }
    }

    /// Shape of a tensor if present.
    pub fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        let full = self.full(name);
        match &*self.store {
            Store::Files { tensors, .. } => tensors.get(&full).map(|t| t.shape.clone()),
            Store::Memory(m) => m.get(&full).map(|t| t.dims().to_vec()),
            Store::Seeded { drawn, .. } => drawn.lock().ok()?.get(&full).cloned(),
        }
    }

    /// Loads a tensor and checks its shape.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = match &*self.store {
            Store::Seeded { init, seed, drawn } => {
                let full = self.full(name);
                let t = init(&full, shape, *seed)?;
                if let Ok(mut d) = drawn.lock() {
                    d.insert(full, shape.to_vec());
                }
                t.to_dtype(self.dtype)?.to_device(&self.device)?
            }
            _ => self.get_unchecked(name)?,
        };
        if t.dims() != shape {
            return Err(GpuError::ShapeMismatch {
                name: self.full(name),
                expected: shape.to_vec(),
                found: t.dims().to_vec(),
            });
        }
        Ok(t)
    }

    /// Loads a tensor whatever its shape (inputs, scalars).
    pub fn get_unchecked(&self, name: &str) -> Result<Tensor> {
        let full = self.full(name);
        let missing = || GpuError::MissingTensor {
            name: full.clone(),
            source_desc: self.desc.to_string(),
        };
        let t = match &*self.store {
            // A drawn tensor needs its shape: only `get` can draw one.
            Store::Seeded { .. } => return Err(missing()),
            Store::Memory(m) => m.get(&full).ok_or_else(missing)?.clone(),
            Store::Files { files, tensors } => {
                let e = tensors.get(&full).ok_or_else(missing)?;
                let f = &files[e.file];
                let bytes = &f.mmap[f.data_start + e.range.0..f.data_start + e.range.1];
                let dt = match e.dtype {
                    safetensors::Dtype::F32 => DType::F32,
                    safetensors::Dtype::F16 => DType::F16,
                    safetensors::Dtype::BF16 => DType::BF16,
                    safetensors::Dtype::I64 => DType::I64,
                    safetensors::Dtype::F64 => DType::F64,
                    safetensors::Dtype::U8 => DType::U8,
                    safetensors::Dtype::U32 => DType::U32,
                    other => {
                        return Err(GpuError::UnsupportedDtype {
                            name: full,
                            dtype: format!("{other:?}"),
                        })
                    }
                };
                Tensor::from_raw_buffer(bytes, dt, &e.shape, &Device::Cpu)?
            }
        };
        let t = if t.dtype().is_float() && t.dtype() != self.dtype {
            t.to_dtype(self.dtype)?
        } else {
            t
        };
        Ok(t.to_device(&self.device)?)
    }

    /// All tensor names under this view's prefix (prefix stripped), sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = match &*self.store {
            Store::Files { tensors, .. } => tensors.keys().cloned().collect(),
            Store::Memory(m) => m.keys().cloned().collect(),
            Store::Seeded { drawn, .. } => drawn
                .lock()
                .map(|d| d.keys().cloned().collect())
                .unwrap_or_default(),
        };
        v.retain(|n| n.starts_with(&self.prefix));
        let mut v: Vec<String> = v
            .into_iter()
            .map(|n| n[self.prefix.len()..].to_string())
            .collect();
        v.sort();
        v
    }

    /// Metadata of every tensor under the prefix, with on-disk dtypes.
    pub fn metas(&self) -> Vec<TensorMeta> {
        let mut out = Vec::new();
        for n in self.names() {
            let full = self.full(&n);
            let (dtype, shape) = match &*self.store {
                Store::Files { tensors, .. } => {
                    let e = &tensors[&full];
                    (format!("{:?}", e.dtype), e.shape.clone())
                }
                Store::Memory(m) => {
                    let t = &m[&full];
                    (format!("{:?}", t.dtype()), t.dims().to_vec())
                }
                Store::Seeded { .. } => ("F32".to_string(), self.shape_of(&n).unwrap_or_default()),
            };
            out.push(TensorMeta {
                name: n,
                dtype,
                shape,
            });
        }
        out
    }

    pub fn source_desc(&self) -> &str {
        &self.desc
    }

    /// Paths of the backing files (empty for in-memory weights).
    pub fn files(&self) -> Vec<PathBuf> {
        match &*self.store {
            Store::Files { files, .. } => files.iter().map(|f| f.path.clone()).collect(),
            Store::Memory(_) | Store::Seeded { .. } => Vec::new(),
        }
    }
}

/// Reads a diffusers/transformers shard index (`weight_map`: tensor -> file).
fn shard_paths(index: &Path) -> Result<Vec<PathBuf>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(index).map_err(|source| GpuError::Io {
        path: index.to_path_buf(),
        source,
    })?;
    let idx: Index = serde_json::from_str(&text).map_err(|e| wf(index, e.to_string()))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<String> = idx.weight_map.into_values().collect();
    files.sort();
    files.dedup();
    let mut out = Vec::new();
    for f in files {
        if f.contains('/') || f.contains("..") {
            return Err(wf(
                index,
                format!("shard name `{f}` must be a plain file name"),
            ));
        }
        let p = dir.join(&f);
        if !p.exists() {
            return Err(wf(
                index,
                format!("shard `{f}` listed in the index is missing"),
            ));
        }
        out.push(p);
    }
    Ok(out)
}

/// Parses a JSON config into a typed struct; serde's message names any
/// missing or mistyped key, and we prefix the source so the file is known.
pub fn parse_config<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    source_desc: &str,
) -> Result<T> {
    serde_json::from_value(value).map_err(|e| GpuError::config(source_desc, e.to_string()))
}

/// Reads and parses a `config.json`.
pub fn read_config<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| GpuError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let desc = path.display().to_string();
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| GpuError::config(&desc, e.to_string()))?;
    parse_config(v, &desc)
}
