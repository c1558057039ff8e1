//! The interpreter against hand-written arithmetic and malformed models.

use super::ops::reshape_dims;
use super::*;
use prost::Message;

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
    let w: Vec<f32> = (0..2 * 1 * 3 * 3)
        .map(|i| ((i * 7 % 11) as f32 - 5.0) / 10.0)
        .collect();
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
            node(
                "AveragePool",
                &["m"],
                "a",
                vec![ints("kernel_shape", &[2, 2])],
            ),
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
    let got = g
        .run(x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();

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
    assert!(
        matches!(&e, OnnxError::Unsupported { op, .. } if op == "LSTM"),
        "{e}"
    );
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
    let group = pb::AttributeProto {
        name: "group".into(),
        i: 2,
        ..Default::default()
    };
    let bytes = model(
        vec![node("Conv", &["x", "w"], "y", vec![group])],
        vec![f32_init("w", &[2, 1, 1, 1], &[1.0, 1.0])],
        "y",
    );
    let e = OnnxGraph::from_bytes(&bytes).err().expect("refused");
    assert!(e.to_string().contains("group"), "{e}");
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + seed * 104729) % 2003) as f32 / 1001.5) - 1.0)
        .collect()
}

/// The kernels against the definitions written as plain loops, over
/// strides, dilation, asymmetric padding, and batch sizes on both sides of
/// the kernels' threading switch.
#[test]
fn conv_and_max_pool_kernels_match_the_definitions() {
    use super::cpu::{conv2d, max_pool, Window};
    for (b, stride, dilation, pads, k) in [
        (1, (1, 1), 1, [1, 1, 1, 1], 3),
        (3, (2, 2), 1, [0, 0, 1, 1], 3),
        (5, (2, 1), 2, [2, 1, 0, 3], 3),
        (4, (1, 1), 1, [0; 4], 1),
        (2, (2, 2), 1, [0; 4], 1),
        (2, (2, 2), 1, [3, 3, 3, 3], 7),
    ] {
        let (c, h, w, o) = (3, 9, 11, 4);
        let g = Window {
            b,
            c,
            h,
            w,
            kh: k,
            kw: k,
            stride,
            dilation,
            pads,
        };
        let x = values(b * c * h * w, 1);
        let wt = values(o * c * k * k, 2);
        let bias = values(o, 3);
        let got = conv2d(&x, &wt, Some(&bias), o, &g, false);
        let got_relu = conv2d(&x, &wt, Some(&bias), o, &g, true);
        assert!(got.iter().zip(&got_relu).all(|(a, r)| *r == a.max(0.0)));
        let got_pool = max_pool(&x, &g);
        let (ho, wo) = (g.ho(), g.wo());
        assert_eq!(got.len(), b * o * ho * wo);
        let at = |bi: usize, ci: usize, yo: usize, xo: usize, dy: usize, dx: usize| {
            let yi = (yo * stride.0 + dy * dilation) as isize - pads[0] as isize;
            let xi = (xo * stride.1 + dx * dilation) as isize - pads[1] as isize;
            (yi >= 0 && xi >= 0 && (yi as usize) < h && (xi as usize) < w)
                .then(|| x[((bi * c + ci) * h + yi as usize) * w + xi as usize])
        };
        for bi in 0..b {
            for oi in 0..o {
                for yo in 0..ho {
                    for xo in 0..wo {
                        let mut want = bias[oi] as f64;
                        for ci in 0..c {
                            for dy in 0..k {
                                for dx in 0..k {
                                    let v = at(bi, ci, yo, xo, dy, dx).unwrap_or(0.0);
                                    want += (v * wt[((oi * c + ci) * k + dy) * k + dx]) as f64;
                                }
                            }
                        }
                        let g = got[((bi * o + oi) * ho + yo) * wo + xo] as f64;
                        assert!(
                            (g - want).abs() < 1e-4,
                            "b{b} k{k} {stride:?}: {g} vs {want}"
                        );
                    }
                }
            }
            for ci in 0..c {
                for yo in 0..ho {
                    for xo in 0..wo {
                        let want = (0..k)
                            .flat_map(|dy| (0..k).map(move |dx| (dy, dx)))
                            .filter_map(|(dy, dx)| at(bi, ci, yo, xo, dy, dx))
                            .fold(f32::NEG_INFINITY, f32::max);
                        assert_eq!(got_pool[((bi * c + ci) * ho + yo) * wo + xo], want);
                    }
                }
            }
        }
    }
}

#[test]
fn dangling_inputs_and_bad_weights_name_what_is_wrong() {
    let bytes = model(vec![node("Relu", &["nowhere"], "y", vec![])], vec![], "y");
    let e = OnnxGraph::from_bytes(&bytes)
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("nowhere"), "{e}");
    let mut w = f32_init("w", &[2, 2], &[1.0, 2.0, 3.0]);
    w.dims = vec![2, 2];
    let bytes = model(vec![node("MatMul", &["x", "w"], "y", vec![])], vec![w], "y");
    let e = OnnxGraph::from_bytes(&bytes)
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("initializer w"), "{e}");
    assert!(OnnxGraph::from_bytes(b"\xff\xff\xff not protobuf").is_err());
}

#[test]
fn reshape_dims_follow_onnx_rules() {
    assert_eq!(
        reshape_dims(&[1, 1024, 1, 1], &[0, -1]).unwrap(),
        vec![1, 1024]
    );
    assert_eq!(reshape_dims(&[2, 3, 4], &[-1, 4]).unwrap(), vec![6, 4]);
    assert!(reshape_dims(&[2, 3], &[-1, -1]).is_err());
    assert!(reshape_dims(&[2, 3], &[4, -1]).is_err());
}
