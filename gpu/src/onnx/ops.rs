//! The operators the interpreter implements: their attributes, checked
//! when a model loads, and their arithmetic on candle tensors.

use std::collections::HashMap;

use candle_core::{DType, Device, Storage, Tensor, D};

use super::cpu::{conv2d, max_pool, Window};
use super::pb;
use super::{OnnxError, Result};

/// One operator with its attributes, checked at load.
#[derive(Debug, Clone)]
pub(super) enum Op {
    Transpose(Vec<usize>),
    /// `pads` in ONNX order: top, left, bottom, right.
    /// `relu`: a following Relu folded in at load (`fuse_relu`).
    Conv {
        stride: (usize, usize),
        pads: [usize; 4],
        dilation: usize,
        relu: bool,
    },
    Relu,
    Add {
        relu: bool,
    },
    MaxPool {
        kernel: (usize, usize),
        stride: (usize, usize),
        pads: [usize; 4],
    },
    AveragePool {
        kernel: (usize, usize),
        stride: (usize, usize),
    },
    Reshape,
    MatMul,
    /// `coerce_2d`: before opset 13 Softmax flattens the input to 2D at
    /// `axis` and normalises over everything after it.
    Softmax {
        axis: i64,
        coerce_2d: bool,
    },
}

/// A node's attributes by name.
struct Attrs<'a> {
    node: &'a str,
    by_name: HashMap<&'a str, &'a pb::AttributeProto>,
}

impl<'a> Attrs<'a> {
    fn new(node: &'a str, n: &'a pb::NodeProto) -> Self {
        Attrs {
            node,
            by_name: n.attribute.iter().map(|a| (a.name.as_str(), a)).collect(),
        }
    }

    fn bad(
        &self,
        name: &'static str,
        value: impl std::fmt::Debug,
        expected: &'static str,
    ) -> OnnxError {
        OnnxError::Attribute {
            node: self.node.to_string(),
            name,
            value: format!("{value:?}"),
            expected,
        }
    }

    fn ints(&self, name: &'static str) -> Option<&'a [i64]> {
        self.by_name.get(name).map(|a| a.ints.as_slice())
    }

    fn int(&self, name: &'static str) -> Option<i64> {
        self.by_name.get(name).map(|a| a.i)
    }

    /// A pair of positive values (`strides`, `kernel_shape`, `dilations`).
    fn pair(&self, name: &'static str, default: usize) -> Result<(usize, usize)> {
        match self.ints(name) {
            None => Ok((default, default)),
            Some(&[a, b]) if a > 0 && b > 0 => Ok((a as usize, b as usize)),
            Some(v) => Err(self.bad(name, v, "two positive values (2D only)")),
        }
    }

    /// `pads` (top, left, bottom, right); only explicit padding is
    /// implemented (`auto_pad` NOTSET or VALID).
    fn pads(&self) -> Result<[usize; 4]> {
        if let Some(a) = self.by_name.get("auto_pad") {
            let mode = String::from_utf8_lossy(&a.s);
            if mode != "NOTSET" && mode != "VALID" && !mode.is_empty() {
                return Err(self.bad("auto_pad", mode, "NOTSET or VALID"));
            }
        }
        match self.ints("pads") {
            None => Ok([0; 4]),
            Some(&[t, l, b, r]) if [t, l, b, r].iter().all(|&p| p >= 0) => {
                Ok([t as usize, l as usize, b as usize, r as usize])
            }
            Some(v) => Err(self.bad("pads", v, "four non-negative values (2D)")),
        }
    }
}

pub(super) fn parse_op(n: &pb::NodeProto, name: &str, opset: i64) -> Result<Op> {
    let a = Attrs::new(name, n);
    if !(n.domain.is_empty() || n.domain == "ai.onnx") {
        return Err(OnnxError::Unsupported {
            node: name.to_string(),
            op: format!("{}.{}", n.domain, n.op_type),
        });
    }
    Ok(match n.op_type.as_str() {
        "Transpose" => {
            let perm = a
                .ints("perm")
                .ok_or_else(|| a.bad("perm", "absent", "a permutation"))?;
            Op::Transpose(perm.iter().map(|&p| p as usize).collect())
        }
        "Conv" => {
            let (dh, dw) = a.pair("dilations", 1)?;
            if dh != dw {
                return Err(a.bad("dilations", (dh, dw), "equal dilations"));
            }
            let group = a.int("group").unwrap_or(1);
            if group != 1 {
                return Err(a.bad("group", group, "1 (no grouped convolution)"));
            }
            Op::Conv {
                stride: a.pair("strides", 1)?,
                pads: a.pads()?,
                dilation: dh,
                relu: false,
            }
        }
        "Relu" => Op::Relu,
        "Add" => Op::Add { relu: false },
        "MaxPool" | "AveragePool" => {
            let kernel = a.pair("kernel_shape", 0)?;
            let stride = a.pair("strides", 1)?;
            if a.int("ceil_mode").unwrap_or(0) != 0 {
                return Err(a.bad("ceil_mode", 1, "0 (floor)"));
            }
            if n.op_type == "MaxPool" {
                if a.pair("dilations", 1)? != (1, 1) {
                    return Err(a.bad("dilations", a.ints("dilations"), "1"));
                }
                Op::MaxPool {
                    kernel,
                    stride,
                    pads: a.pads()?,
                }
            } else {
                if a.pads()? != [0; 4] {
                    return Err(a.bad("pads", a.ints("pads"), "no padding"));
                }
                Op::AveragePool { kernel, stride }
            }
        }
        "Reshape" => {
            if a.int("allowzero").unwrap_or(0) != 0 {
                return Err(a.bad("allowzero", 1, "0"));
            }
            Op::Reshape
        }
        "MatMul" => Op::MatMul,
        "Softmax" => Op::Softmax {
            axis: a.int("axis").unwrap_or(if opset >= 13 { -1 } else { 1 }),
            coerce_2d: opset < 13,
        },
        other => {
            return Err(OnnxError::Unsupported {
                node: name.to_string(),
                op: other.to_string(),
            })
        }
    })
}

/// Runs `f` on `t`'s values as one contiguous f32 slice of CPU memory.
fn cpu_f32<R>(
    t: &Tensor,
    f: impl FnOnce(&[f32]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(&s.as_slice::<f32>()?[layout.start_offset()..][..t.elem_count()]),
        _ => candle_core::bail!("the ONNX interpreter runs on the CPU"),
    }
}

pub(super) fn apply(op: &Op, args: &[&Tensor]) -> candle_core::Result<Tensor> {
    let x = args[0];
    match op {
        Op::Transpose(perm) => x.permute(perm.as_slice())?.contiguous(),
        Op::Conv {
            stride,
            pads,
            dilation,
            relu,
        } => {
            let (b, c, h, w) = x.dims4()?;
            let (o, wc, kh, kw) = args[1].dims4()?;
            if wc != c {
                candle_core::bail!("the input has {c} channels, the weight expects {wc}");
            }
            let g = Window {
                b,
                c,
                h,
                w,
                kh,
                kw,
                stride: *stride,
                dilation: *dilation,
                pads: *pads,
            };
            if !g.fits() {
                candle_core::bail!("a {kh}x{kw} kernel does not fit a {h}x{w} input");
            }
            let out = cpu_f32(x, |xv| {
                cpu_f32(args[1], |wv| match args.get(2) {
                    Some(bias) => cpu_f32(bias, |bv| Ok(conv2d(xv, wv, Some(bv), o, &g, *relu))),
                    None => Ok(conv2d(xv, wv, None, o, &g, *relu)),
                })
            })?;
            Tensor::from_vec(out, (b, o, g.ho(), g.wo()), &Device::Cpu)
        }
        Op::Relu => x.relu(),
        Op::Add { relu: false } => x.broadcast_add(args[1]),
        Op::Add { relu: true } if x.dims() == args[1].dims() => {
            let sum = cpu_f32(x, |a| {
                cpu_f32(args[1], |b| {
                    Ok(a.iter()
                        .zip(b)
                        .map(|(a, b)| (a + b).max(0.0))
                        .collect::<Vec<f32>>())
                })
            })?;
            Tensor::from_vec(sum, x.dims(), &Device::Cpu)
        }
        Op::Add { relu: true } => x.broadcast_add(args[1])?.relu(),
        Op::MaxPool {
            kernel,
            stride,
            pads,
        } => {
            let (b, c, h, w) = x.dims4()?;
            let g = Window {
                b,
                c,
                h,
                w,
                kh: kernel.0,
                kw: kernel.1,
                stride: *stride,
                dilation: 1,
                pads: *pads,
            };
            if !g.fits() {
                candle_core::bail!("a {kernel:?} window does not fit a {h}x{w} input");
            }
            let out = cpu_f32(x, |xv| Ok(max_pool(xv, &g)))?;
            Tensor::from_vec(out, (b, c, g.ho(), g.wo()), &Device::Cpu)
        }
        Op::AveragePool { kernel, stride } => x.avg_pool2d_with_stride(*kernel, *stride),
        Op::Reshape => {
            let spec = args[1].to_dtype(DType::I64)?.to_vec1::<i64>()?;
            x.reshape(reshape_dims(x.dims(), &spec)?)
        }
        Op::MatMul => {
            if x.rank() == 2 && args[1].rank() == 2 {
                x.matmul(args[1])
            } else {
                x.broadcast_matmul(args[1])
            }
        }
        Op::Softmax { axis, coerce_2d } => {
            let rank = x.rank() as i64;
            let axis = if *axis < 0 { axis + rank } else { *axis };
            if axis < 0 || axis >= rank {
                candle_core::bail!("softmax axis {axis} out of range for rank {rank}");
            }
            let axis = axis as usize;
            if *coerce_2d {
                let dims = x.dims().to_vec();
                let rows: usize = dims[..axis].iter().product();
                let flat = x.reshape((rows, x.elem_count() / rows.max(1)))?;
                softmax_last(&flat)?.reshape(dims)
            } else {
                let moved = x.transpose(axis, x.rank() - 1)?.contiguous()?;
                softmax_last(&moved)?
                    .transpose(axis, x.rank() - 1)?
                    .contiguous()
            }
        }
    }
}

fn softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    let e = x.broadcast_sub(&x.max_keepdim(D::Minus1)?)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// ONNX Reshape's target: 0 copies the input's dimension, -1 takes what is
/// left.
pub(super) fn reshape_dims(input: &[usize], spec: &[i64]) -> candle_core::Result<Vec<usize>> {
    let total: usize = input.iter().product();
    let mut dims = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &s) in spec.iter().enumerate() {
        match s {
            0 => dims.push(*input.get(i).ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "reshape: 0 at {i} but the input has rank {}",
                    input.len()
                ))
            })?),
            -1 if infer.is_none() => {
                infer = Some(i);
                dims.push(1);
            }
            s if s > 0 => dims.push(s as usize),
            s => candle_core::bail!("reshape: bad dimension {s} in {spec:?}"),
        }
    }
    if let Some(i) = infer {
        let known: usize = dims.iter().product();
        if known == 0 || total % known != 0 {
            candle_core::bail!("reshape: cannot infer -1 in {spec:?} for {input:?}");
        }
        dims[i] = total / known;
    }
    Ok(dims)
}
