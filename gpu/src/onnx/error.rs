//! The interpreter's error type, on its own: `crate::error::GpuError`
//! wraps it, and the interpreter's modules use the crate's numeric helpers
//! (which return `GpuError`), so keeping it in `onnx/mod.rs` would tie the
//! two modules in a circle.

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("not an ONNX model: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("the model has no graph")]
    NoGraph,
    #[error(
        "the graph has {inputs} non-weight inputs and {outputs} outputs; one of each is supported"
    )]
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
