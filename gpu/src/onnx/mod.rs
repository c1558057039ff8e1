//! A small ONNX interpreter on candle, for the convolutional classifier we
//! ship as an `.onnx` file (open_nsfw's ResNet-50, `nsfw.rs`). It runs the
//! graph's nodes in file order (ONNX requires them topologically sorted) on
//! f32 tensors, and knows the operators such networks are made of: Conv,
//! Relu, Add, MaxPool, AveragePool, Transpose, Reshape, MatMul, Softmax.
//! Any other operator, or an attribute value outside what is implemented,
//! is refused by name when the model loads, never at scoring time.
//!
//! Why our own rather than an ONNX runtime crate: the one model needs nine
//! operators, while a general runtime (tract) took a quarter of the
//! project's compile time. Convolution and max pooling run on our CPU
//! kernels (`cpu.rs`), the rest on candle's tensor ops; a ReLU is folded
//! into the Conv or Add before it. The file is decoded with prost from
//! `proto/onnx.proto`, the subset of ONNX's schema these graphs use.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use prost::Message;

mod cpu;
pub(crate) mod error;
mod ops;
#[cfg(test)]
mod tests;

pub use error::OnnxError;
use ops::{apply, parse_op, Op};

/// The generated types of `proto/onnx.proto`.
mod pb {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

/// ONNX element types the interpreter reads (`TensorProto.DataType`).
const FLOAT: i32 = 1;
const INT64: i32 = 7;

type Result<T> = std::result::Result<T, OnnxError>;

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
        let nodes = fuse_relu(nodes, output, consts.len());
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

/// Folds each Relu into the Conv or Add before it when that node's result
/// feeds nothing else: the ReLU is then applied as the result is written,
/// instead of in another pass over memory with a new buffer (49 of
/// open_nsfw's 53 convolutions and all 16 of its residual sums).
fn fuse_relu(mut nodes: Vec<Node>, graph_output: usize, slots: usize) -> Vec<Node> {
    let mut readers = vec![0usize; slots];
    for n in &nodes {
        for &s in &n.inputs {
            readers[s] += 1;
        }
    }
    let producer: std::collections::HashMap<usize, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.output, i))
        .collect();
    let mut gone = vec![false; nodes.len()];
    for i in 0..nodes.len() {
        if !matches!(nodes[i].op, Op::Relu) {
            continue;
        }
        let src = nodes[i].inputs[0];
        let Some(&p) = producer.get(&src) else {
            continue;
        };
        if readers[src] != 1 || src == graph_output || gone[p] {
            continue;
        }
        let fused = match &mut nodes[p].op {
            Op::Conv { relu, .. } | Op::Add { relu } if !*relu => {
                *relu = true;
                true
            }
            _ => false,
        };
        if fused {
            nodes[p].output = nodes[i].output;
            gone[i] = true;
        }
    }
    nodes
        .into_iter()
        .zip(gone)
        .filter_map(|(n, g)| (!g).then_some(n))
        .collect()
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

/// Input counts, and the inputs that must be weights.
fn check_inputs(node: &str, op: &Op, ins: &[usize], consts: &[Option<Tensor>]) -> Result<()> {
    let (ok, expected) = match op {
        Op::Conv { .. } => (ins.len() == 2 || ins.len() == 3, "2 or 3"),
        Op::Add { .. } | Op::MatMul | Op::Reshape => (ins.len() == 2, "2"),
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
