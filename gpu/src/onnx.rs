//! A small ONNX interpreter on candle, for the convolutional classifier we
//! ship as an `.onnx` file (open_nsfw's ResNet-50, `nsfw.rs`). It runs the
//! graph's nodes in file order (ONNX requires them topologically sorted) on
//! f32 tensors, and knows the operators such networks are made of: Conv,
//! Relu, Add, MaxPool, AveragePool, Transpose, Reshape, MatMul, Softmax.
//! Any other operator, or an attribute value outside what is implemented,
//! is refused by name when the model loads, never at scoring time.
//!
//! Why our own rather than an ONNX runtime crate: the one model needs nine
//! operators whose kernels candle already has (convolution, pooling, GEMM),
//! while a general runtime (tract) took a quarter of the project's compile
//! time. The file is decoded with prost from `proto/onnx.proto`, the subset
//! of ONNX's schema these graphs use.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, D};
use prost::Message;

/// The generated types of `proto/onnx.proto`.
mod pb {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

/// ONNX element types the interpreter reads (`TensorProto.DataType`).
const FLOAT: i32 = 1;
const INT64: i32 = 7;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("not an ONNX model: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("the model has no graph")]
    NoGraph,
    #[error("the graph has {inputs} non-weight inputs and {outputs} outputs; one of each is supported")]
    Arity { inputs: usize, outputs: usize },
    #[error("node {node}: operator {op} is not supported by this interpreter")]
    Unsupported { node: String, op: String },
    #[error("node {node}: attribute {name} = {value}: {expected}")]
    Attribute {
        node: String,
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("node {node}: needs {expected} inputs, has {found}")]
    Inputs {
        node: String,
        expected: &'static str,
        found: usize,
    },
    #[error("node {node}: input {name} comes from no earlier node, initializer or graph input")]
    Unknown { node: String, name: String },
    #[error("node {node}: input {name} must be an initializer")]
    NotConstant { node: String, name: String },
    #[error("initializer {name}: element type {data_type} (FLOAT and INT64 are read)")]
    ElementType { name: String, data_type: i32 },
    #[error("initializer {name}: {bytes} bytes of data for dims {dims:?}")]
    DataLength {
        name: String,
        bytes: usize,
        dims: Vec<i64>,
    },
    #[error("node {node}: {source}")]
    Compute {
        node: String,
        #[source]
        source: candle_core::Error,
    },
}

type Result<T> = std::result::Result<T, OnnxError>;

/// One operator with its attributes, checked at load.
#[derive(Debug, Clone)]
enum Op {
    Transpose(Vec<usize>),
    /// `pads` in ONNX order: top, left, bottom, right.
    Conv {
        stride: usize,
        pads: [usize; 4],
        dilation: usize,
        group: usize,
    },
    Relu,
    Add,
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
    Softmax { axis: i64, coerce_2d: bool },
}

#[derive(Debug)]
struct Node {
    name: String,
    op: Op,
    /// Value slots read, in the operator's input order.
    inputs: Vec<usize>,
    output: usize,
}

/// A loaded graph: nodes over numbered value slots, weights already in
/// tensors.
pub struct OnnxGraph {
    nodes: Vec<Node>,
    /// The initializers, by slot (`None` for computed values).
    consts: Vec<Option<Tensor>>,
    /// For each slot, the last node that reads it: computed values are
    /// dropped there, so a run holds only the live activations.
    last_use: Vec<usize>,
    input: usize,
    output: usize,
}

impl OnnxGraph {
    /// Decodes an ONNX file's bytes and checks every node it will run.
    pub fn from_bytes(bytes: &[u8]) -> Result<OnnxGraph> {
        let model = pb::ModelProto::decode(bytes)?;
        let opset = model
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version)
            .unwrap_or(1);
        let graph = model.graph.ok_or(OnnxError::NoGraph)?;
        let mut slots: HashMap<String, usize> = HashMap::new();
        let mut consts: Vec<Option<Tensor>> = Vec::new();
        for t in &graph.initializer {
            slots.insert(t.name.clone(), consts.len());
            consts.push(Some(tensor_of(t)?));
        }
        // Graph inputs that are not weights (older exporters list the
        // initializers among the inputs too).
        let inputs: Vec<&str> = graph
            .input
            .iter()
            .map(|v| v.name.as_str())
            .filter(|n| !slots.contains_key(*n))
            .collect();
        if inputs.len() != 1 || graph.output.len() != 1 {
            return Err(OnnxError::Arity {
                inputs: inputs.len(),
                outputs: graph.output.len(),
            });
        }
        let input = consts.len();
        slots.insert(inputs[0].to_string(), input);
        consts.push(None);
        let mut nodes = Vec::with_capacity(graph.node.len());
        for n in &graph.node {
            let name = if n.name.is_empty() {
                n.output.first().cloned().unwrap_or_default()
            } else {
                n.name.clone()
            };
            let op = parse_op(n, &name, opset)?;
            let ins = n
                .input
                .iter()
                .map(|i| {
                    slots.get(i).copied().ok_or_else(|| OnnxError::Unknown {
                        node: name.clone(),
                        name: i.clone(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            check_inputs(&name, &op, &ins, &consts)?;
            let [out] = n.output.as_slice() else {
                return Err(OnnxError::Attribute {
                    node: name,
                    name: "output",
                    value: format!("{:?}", n.output),
                    expected: "exactly one output",
                });
            };
            slots.insert(out.clone(), consts.len());
            consts.push(None);
            nodes.push(Node {
                name,
                op,
                inputs: ins,
                output: consts.len() - 1,
            });
        }
        let out_name = &graph.output[0].name;
        let output = *slots.get(out_name).ok_or_else(|| OnnxError::Unknown {
            node: "graph output".into(),
            name: out_name.clone(),
        })?;
        let mut last_use = vec![usize::MAX; consts.len()];
        for (i, n) in nodes.iter().enumerate() {
            for &s in &n.inputs {
                last_use[s] = i;
            }
        }
        Ok(OnnxGraph {
            nodes,
            consts,
            last_use,
            input,
            output,
        })
    }

    /// Runs the graph on `input` (f32, CPU) and returns its output.
    pub fn run(&self, input: Tensor) -> Result<Tensor> {
        let mut vals: Vec<Option<Tensor>> = vec![None; self.consts.len()];
        vals[self.input] = Some(input);
        for (i, n) in self.nodes.iter().enumerate() {
            let args = n
                .inputs
                .iter()
                .map(|&s| {
                    self.consts[s]
                        .as_ref()
                        .or(vals[s].as_ref())
                        .expect("load checked every input has a producer before it")
                })
                .collect::<Vec<_>>();
            let out = apply(&n.op, &args).map_err(|source| OnnxError::Compute {
                node: n.name.clone(),
                source,
            })?;
            for &s in &n.inputs {
                if self.last_use[s] == i && s != self.output {
                    vals[s] = None;
                }
            }
            vals[n.output] = Some(out);
        }
        Ok(vals[self.output]
            .take()
            .expect("the output slot is a node's output, checked at load"))
    }
}

/// An initializer as a CPU tensor.
fn tensor_of(t: &pb::TensorProto) -> Result<Tensor> {
    let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    let n: usize = dims.iter().product();
    let bad_len = |bytes| OnnxError::DataLength {
        name: t.name.clone(),
        bytes,
        dims: t.dims.clone(),
    };
    let compute = |source| OnnxError::Compute {
        node: format!("initializer {}", t.name),
        source,
    };
    match t.data_type {
        FLOAT => {
            let v: Vec<f32> = if !t.raw_data.is_empty() {
                if t.raw_data.len() != n * 4 {
                    return Err(bad_len(t.raw_data.len()));
                }
                t.raw_data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            } else {
                t.float_data.clone()
            };
            if v.len() != n {
                return Err(bad_len(v.len() * 4));
            }
            Tensor::from_vec(v, dims, &Device::Cpu).map_err(compute)
        }
        INT64 => {
            let v: Vec<i64> = if !t.raw_data.is_empty() {
                if t.raw_data.len() != n * 8 {
                    return Err(bad_len(t.raw_data.len()));
                }
                t.raw_data
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("chunks of 8")))
                    .collect()
            } else {
                t.int64_data.clone()
            };
            if v.len() != n {
                return Err(bad_len(v.len() * 8));
            }
            Tensor::from_vec(v, dims, &Device::Cpu).map_err(compute)
        }
        data_type => Err(OnnxError::ElementType {
            name: t.name.clone(),
            data_type,
        }),
    }
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

    fn bad(&self, name: &'static str, value: impl std::fmt::Debug, expected: &'static str) -> OnnxError {
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

fn parse_op(n: &pb::NodeProto, name: &str, opset: i64) -> Result<Op> {
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
            let (sh, sw) = a.pair("strides", 1)?;
            let (dh, dw) = a.pair("dilations", 1)?;
            if sh != sw {
                return Err(a.bad("strides", (sh, sw), "equal strides"));
            }
            if dh != dw {
                return Err(a.bad("dilations", (dh, dw), "equal dilations"));
            }
            let group = a.int("group").unwrap_or(1);
            if group < 1 {
                return Err(a.bad("group", group, "at least 1"));
            }
            Op::Conv {
                stride: sh,
                pads: a.pads()?,
                dilation: dh,
                group: group as usize,
            }
        }
        "Relu" => Op::Relu,
        "Add" => Op::Add,
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

/// Input counts, and the inputs that must be weights.
fn check_inputs(node: &str, op: &Op, ins: &[usize], consts: &[Option<Tensor>]) -> Result<()> {
    let (ok, expected) = match op {
        Op::Conv { .. } => (ins.len() == 2 || ins.len() == 3, "2 or 3"),
        Op::Add | Op::MatMul | Op::Reshape => (ins.len() == 2, "2"),
        _ => (ins.len() == 1, "1"),
    };
    if !ok {
        return Err(OnnxError::Inputs {
            node: node.to_string(),
            expected,
            found: ins.len(),
        });
    }
    if matches!(op, Op::Reshape) && consts[ins[1]].is_none() {
        return Err(OnnxError::NotConstant {
            node: node.to_string(),
            name: "shape (input 2)".to_string(),
        });
    }
    Ok(())
}

/// Pads `x` along `dim` with `value`.
fn pad_value(x: &Tensor, dim: usize, before: usize, after: usize, value: f32) -> candle_core::Result<Tensor> {
    if before == 0 && after == 0 {
        return Ok(x.clone());
    }
    let mut parts = Vec::with_capacity(3);
    let mut shape = x.dims().to_vec();
    if before > 0 {
        shape[dim] = before;
        parts.push(Tensor::full(value, shape.as_slice(), x.device())?);
    }
    parts.push(x.clone());
    if after > 0 {
        shape[dim] = after;
        parts.push(Tensor::full(value, shape.as_slice(), x.device())?);
    }
    Tensor::cat(&parts, dim)
}

fn apply(op: &Op, args: &[&Tensor]) -> candle_core::Result<Tensor> {
    let x = args[0];
    match op {
        Op::Transpose(perm) => x.permute(perm.as_slice())?.contiguous(),
        Op::Conv {
            stride,
            pads,
            dilation,
            group,
        } => {
            let [t, l, b, r] = *pads;
            let (x, pad) = if t == b && l == r && t == l {
                (x.clone(), t)
            } else {
                (x.pad_with_zeros(2, t, b)?.pad_with_zeros(3, l, r)?, 0)
            };
            let y = x.conv2d(args[1], pad, *stride, *dilation, *group)?;
            match args.get(2) {
                Some(bias) => y.broadcast_add(&bias.reshape((1, bias.elem_count(), 1, 1))?),
                None => Ok(y),
            }
        }
        Op::Relu => x.relu(),
        Op::Add => x.broadcast_add(args[1]),
        Op::MaxPool {
            kernel,
            stride,
            pads,
        } => {
            let [t, l, b, r] = *pads;
            // Padding never wins a max: pad with -inf.
            let x = pad_value(x, 2, t, b, f32::NEG_INFINITY)?;
            let x = pad_value(&x, 3, l, r, f32::NEG_INFINITY)?;
            x.max_pool2d_with_stride(*kernel, *stride)
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
                softmax_last(&moved)?.transpose(axis, x.rank() - 1)?.contiguous()
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
fn reshape_dims(input: &[usize], spec: &[i64]) -> candle_core::Result<Vec<usize>> {
    let total: usize = input.iter().product();
    let mut dims = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &s) in spec.iter().enumerate() {
        match s {
            0 => dims.push(*input.get(i).ok_or_else(|| {
                candle_core::Error::Msg(format!("reshape: 0 at {i} but the input has rank {}", input.len()))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_init(name: &str, dims: &[i64], v: &[f32]) -> pb::TensorProto {
        pb::TensorProto {
            dims: dims.to_vec(),
            data_type: FLOAT,
            raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            name: name.into(),
            ..Default::default()
        }
    }

    fn node(op: &str, ins: &[&str], out: &str, attrs: Vec<pb::AttributeProto>) -> pb::NodeProto {
        pb::NodeProto {
            input: ins.iter().map(|s| s.to_string()).collect(),
            output: vec![out.into()],
            name: out.into(),
            op_type: op.into(),
            attribute: attrs,
            ..Default::default()
        }
    }

    fn ints(name: &str, v: &[i64]) -> pb::AttributeProto {
        pb::AttributeProto {
            name: name.into(),
            ints: v.to_vec(),
            ..Default::default()
        }
    }

    fn model(nodes: Vec<pb::NodeProto>, inits: Vec<pb::TensorProto>, out: &str) -> Vec<u8> {
        pb::ModelProto {
            ir_version: 4,
            graph: Some(pb::GraphProto {
                node: nodes,
                initializer: inits,
                input: vec![pb::ValueInfoProto { name: "x".into() }],
                output: vec![pb::ValueInfoProto { name: out.into() }],
                ..Default::default()
            }),
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 9,
            }],
        }
        .encode_to_vec()
    }

    /// A 3x3 conv with asymmetric padding, ReLU, a padded max pool, global
    /// average pool, flatten, a dense layer and softmax, against the same
    /// arithmetic written out by hand.
    #[test]
    fn small_cnn_matches_hand_computation() {
        let w: Vec<f32> = (0..2 * 1 * 3 * 3).map(|i| ((i * 7 % 11) as f32 - 5.0) / 10.0).collect();
        let bytes = model(
            vec![
                node(
                    "Conv",
                    &["x", "w", "b"],
                    "c",
                    vec![ints("strides", &[1, 1]), ints("pads", &[0, 0, 1, 1])],
                ),
                node("Relu", &["c"], "r", vec![]),
                node(
                    "MaxPool",
                    &["r"],
                    "m",
                    vec![
                        ints("kernel_shape", &[2, 2]),
                        ints("strides", &[2, 2]),
                        ints("pads", &[0, 0, 1, 1]),
                    ],
                ),
                node("AveragePool", &["m"], "a", vec![ints("kernel_shape", &[2, 2])]),
                node("Reshape", &["a", "shape"], "f", vec![]),
                node("MatMul", &["f", "fc"], "mm", vec![]),
                node("Add", &["mm", "fcb"], "logits", vec![]),
                node("Softmax", &["logits"], "p", vec![]),
            ],
            vec![
                f32_init("w", &[2, 1, 3, 3], &w),
                f32_init("b", &[2], &[0.1, -0.2]),
                pb::TensorProto {
                    dims: vec![2],
                    data_type: INT64,
                    int64_data: vec![0, -1],
                    name: "shape".into(),
                    ..Default::default()
                },
                f32_init("fc", &[2, 2], &[1.0, -1.0, 0.5, 2.0]),
                f32_init("fcb", &[2], &[0.0, 0.3]),
            ],
            "p",
        );
        let g = OnnxGraph::from_bytes(&bytes).unwrap();
        let xv: Vec<f32> = (0..25).map(|i| ((i * 5 % 13) as f32 - 6.0) / 4.0).collect();
        let x = Tensor::from_vec(xv.clone(), (1, 1, 5, 5), &Device::Cpu).unwrap();
        let got = g.run(x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();

        // By hand: pad bottom/right by one (6x6), valid 3x3 conv -> 4x4.
        let px = |y: usize, x: usize| if y < 5 && x < 5 { xv[y * 5 + x] } else { 0.0 };
        let mut feat = [0f32; 2];
        for (o, f) in feat.iter_mut().enumerate() {
            let mut conv = [[0f32; 4]; 4];
            for (y, row) in conv.iter_mut().enumerate() {
                for (x, v) in row.iter_mut().enumerate() {
                    let mut s = [0.1f32, -0.2][o];
                    for dy in 0..3 {
                        for dx in 0..3 {
                            s += w[o * 9 + dy * 3 + dx] * px(y + dy, x + dx);
                        }
                    }
                    *v = s.max(0.0);
                }
            }
            // Max pool 2x2 stride 2 with a -inf row/column: 4x4 -> 5x5 -> 2x2.
            let mut pooled = [[0f32; 2]; 2];
            for (y, row) in pooled.iter_mut().enumerate() {
                for (x, v) in row.iter_mut().enumerate() {
                    *v = (0..2)
                        .flat_map(|dy| (0..2).map(move |dx| (dy, dx)))
                        .map(|(dy, dx)| conv[2 * y + dy][2 * x + dx])
                        .fold(f32::NEG_INFINITY, f32::max);
                }
            }
            *f = pooled.iter().flatten().sum::<f32>() / 4.0;
        }
        let logits = [
            feat[0] * 1.0 + feat[1] * 0.5,
            feat[0] * -1.0 + feat[1] * 2.0 + 0.3,
        ];
        let m = logits[0].max(logits[1]);
        let z = (logits[0] - m).exp() + (logits[1] - m).exp();
        let want = [(logits[0] - m).exp() / z, (logits[1] - m).exp() / z];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn transpose_then_symmetric_stride_2_conv_keeps_nhwc_meaning() {
        // NHWC input [1, 4, 4, 1] -> NCHW, 1x1 conv stride 2 = subsampling.
        let bytes = model(
            vec![
                node("Transpose", &["x"], "t", vec![ints("perm", &[0, 3, 1, 2])]),
                node("Conv", &["t", "w"], "c", vec![ints("strides", &[2, 2])]),
            ],
            vec![f32_init("w", &[1, 1, 1, 1], &[2.0])],
            "c",
        );
        let g = OnnxGraph::from_bytes(&bytes).unwrap();
        let x = Tensor::arange(0f32, 16.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 4, 4, 1))
            .unwrap();
        let y = g.run(x).unwrap();
        assert_eq!(y.dims(), &[1, 1, 2, 2]);
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![0.0, 4.0, 16.0, 20.0]
        );
    }

    #[test]
    fn unsupported_operator_is_refused_at_load_by_name() {
        let bytes = model(vec![node("LSTM", &["x"], "y", vec![])], vec![], "y");
        let e = OnnxGraph::from_bytes(&bytes).err().expect("refused");
        assert!(matches!(&e, OnnxError::Unsupported { op, .. } if op == "LSTM"), "{e}");
        assert!(e.to_string().contains("LSTM"), "{e}");
    }

    #[test]
    fn unimplemented_attribute_values_are_refused_at_load() {
        let same = pb::AttributeProto {
            name: "auto_pad".into(),
            s: b"SAME_UPPER".to_vec(),
            ..Default::default()
        };
        let bytes = model(
            vec![node("Conv", &["x", "w"], "y", vec![same])],
            vec![f32_init("w", &[1, 1, 1, 1], &[1.0])],
            "y",
        );
        let e = OnnxGraph::from_bytes(&bytes).err().expect("refused");
        assert!(e.to_string().contains("auto_pad"), "{e}");
        let bytes = model(
            vec![node("Conv", &["x", "w"], "y", vec![ints("strides", &[1, 2])])],
            vec![f32_init("w", &[1, 1, 1, 1], &[1.0])],
            "y",
        );
        assert!(OnnxGraph::from_bytes(&bytes).is_err());
    }

    #[test]
    fn dangling_inputs_and_bad_weights_name_what_is_wrong() {
        let bytes = model(vec![node("Relu", &["nowhere"], "y", vec![])], vec![], "y");
        let e = OnnxGraph::from_bytes(&bytes).err().expect("refused").to_string();
        assert!(e.contains("nowhere"), "{e}");
        let mut w = f32_init("w", &[2, 2], &[1.0, 2.0, 3.0]);
        w.dims = vec![2, 2];
        let bytes = model(vec![node("MatMul", &["x", "w"], "y", vec![])], vec![w], "y");
        let e = OnnxGraph::from_bytes(&bytes).err().expect("refused").to_string();
        assert!(e.contains("initializer w"), "{e}");
        assert!(OnnxGraph::from_bytes(b"\xff\xff\xff not protobuf").is_err());
    }

    #[test]
    fn reshape_dims_follow_onnx_rules() {
        assert_eq!(reshape_dims(&[1, 1024, 1, 1], &[0, -1]).unwrap(), vec![1, 1024]);
        assert_eq!(reshape_dims(&[2, 3, 4], &[-1, 4]).unwrap(), vec![6, 4]);
        assert!(reshape_dims(&[2, 3], &[-1, -1]).is_err());
        assert!(reshape_dims(&[2, 3], &[4, -1]).is_err());
    }
}
