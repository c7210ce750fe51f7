//! Error paths: wrong lengths, unknown buffers, aliasing, bad indices and shapes.

mod common;

use common::upload;
use sparsevar_core::backend::{Backend, BackendError, BufferId, Kernel, Update};
use sparsevar_cpu::CpuBackend;

#[test]
fn wrong_input_length_is_buffer_size() {
    let be = &mut CpuBackend::<f32>::new();
    let kern = Kernel::MatMul { batch: 2, m: 3, k: 4, n: 5, trans_a: false, trans_b: false };
    let a = be.alloc(2 * 3 * 4).unwrap();
    let b = be.alloc(2 * 4 * 5 - 1).unwrap();
    let y = be.alloc(2 * 3 * 5).unwrap();
    match be.launch(&kern, &[a, b], y) {
        Err(BackendError::BufferSize { kernel, buffer, have, need, backend }) => {
            assert_eq!((kernel.as_str(), buffer, have, need, backend.as_str()), ("matmul", b, 39, 40, "cpu"));
        }
        other => panic!("expected BufferSize, got {other:?}"),
    }
}

#[test]
fn wrong_output_length_is_buffer_size() {
    let be = &mut CpuBackend::<f64>::new();
    let x = be.alloc(12).unwrap();
    let y = be.alloc(11).unwrap();
    let err = be.launch(&Kernel::Softmax { rows: 3, cols: 4 }, &[x], y).unwrap_err();
    assert!(matches!(err, BackendError::BufferSize { ref kernel, have: 11, need: 12, .. } if kernel == "softmax"), "{err}");
    assert!(err.to_string().contains("cpu-f64"));
}

#[test]
fn update_length_is_checked() {
    let be = &mut CpuBackend::<f32>::new();
    let (x, acc) = (be.alloc(10).unwrap(), be.alloc(3).unwrap());
    let err = be.update(&Update::AccumulateSquares { groups: 2, len: 5 }, &[x, acc]).unwrap_err();
    assert!(matches!(err, BackendError::BufferSize { buffer, have: 3, need: 2, .. } if buffer == acc), "{err}");
    // The same buffer twice is refused, and leaves the buffers intact.
    let p = upload(be, &[1.0, 2.0]);
    let err = be.update(&Update::Sgd { groups: 1, len: 2, lr: 0.1, momentum: 0.0, weight_decay: 0.0, clip: None }, &[p, p, p]).unwrap_err();
    assert!(matches!(err, BackendError::Device { .. }), "{err}");
    let mut v = Vec::new();
    be.read(p, &mut v).unwrap();
    assert_eq!(v, [1.0, 2.0]);
}

#[test]
fn unknown_buffer_aliasing_and_arity() {
    let be = &mut CpuBackend::<f32>::new();
    let x = be.alloc(4).unwrap();
    let y = be.alloc(4).unwrap();
    let relu = Kernel::Unary { op: sparsevar_core::backend::UnaryOp::Relu, len: 4 };
    assert!(matches!(be.launch(&relu, &[BufferId(99)], y), Err(BackendError::UnknownBuffer(BufferId(99), _))));
    assert!(matches!(be.launch(&relu, &[x], x), Err(BackendError::Device { .. })));
    assert!(matches!(be.launch(&relu, &[x, x], y), Err(BackendError::Device { .. })));
    assert!(be.write(x, &[1.0; 3]).is_err());
    // The failed launches left every buffer in place.
    be.write(x, &[-1.0, 2.0, -3.0, 4.0]).unwrap();
    be.launch(&relu, &[x], y).unwrap();
    let mut v = Vec::new();
    be.read(y, &mut v).unwrap();
    assert_eq!(v, [0.0, 2.0, 0.0, 4.0]);
}

#[test]
fn bad_indices_and_shapes_are_device_errors() {
    let be = &mut CpuBackend::<f32>::new();
    let table = be.alloc(6).unwrap();
    let idx = upload(be, &[0.0, 3.0]);
    let y = be.alloc(6).unwrap();
    let gather = Kernel::Gather { groups: 1, table_rows: 2, rows: 2, cols: 3 };
    assert!(matches!(be.launch(&gather, &[table, idx], y), Err(BackendError::Device { .. })));
    let half = upload(be, &[0.5, 1.0]);
    assert!(matches!(be.launch(&gather, &[table, half], y), Err(BackendError::Device { .. })));

    let logits = be.alloc(4).unwrap();
    let labels = upload(be, &[0.0, 2.0]);
    let loss = be.alloc(1).unwrap();
    let ce = Kernel::CrossEntropy { groups: 1, batch: 2, classes: 2 };
    assert!(matches!(be.launch(&ce, &[logits, labels], loss), Err(BackendError::Device { .. })));

    let x = be.alloc(6).unwrap();
    let out = be.alloc(6).unwrap();
    let perm = Kernel::Permute { shape: vec![2, 3], perm: vec![1, 1] };
    assert!(matches!(be.launch(&perm, &[x], out), Err(BackendError::Device { .. })));
    let sum = Kernel::SumTo { from: vec![2, 3], to: vec![2, 3] };
    assert!(be.launch(&sum, &[x], out).is_ok());
    let out2 = be.alloc(4).unwrap();
    let narrow = Kernel::Narrow { outer: 1, axis: 6, start: 4, len: 4, inner: 1 };
    assert!(matches!(be.launch(&narrow, &[x], out2), Err(BackendError::Device { .. })));
}

#[test]
fn a_freed_buffer_fails_its_next_launch_and_the_others_live_on() {
    let be = &mut CpuBackend::<f32>::new();
    let relu = Kernel::Unary { op: sparsevar_core::backend::UnaryOp::Relu, len: 3 };
    let x = upload(be, &[-1.0, 2.0, -3.0]);
    let y = be.alloc(3).unwrap();
    be.free(x).unwrap();
    let err = be.launch(&relu, &[x], y).unwrap_err();
    assert!(matches!(err, BackendError::BufferSize { have: 0, need: 3, .. }), "{err}");
    assert!(matches!(be.free(BufferId(99)), Err(BackendError::UnknownBuffer(..))));
    // Ids are not reused: a new buffer gets a new one.
    let z = upload(be, &[4.0, -5.0, 6.0]);
    assert_ne!(z, x);
    be.launch(&relu, &[z], y).unwrap();
    let mut out = Vec::new();
    be.read(y, &mut out).unwrap();
    assert_eq!(out, [4.0, 0.0, 6.0]);
}
