//! Error paths on wgpu: the same `BackendError`s as the CPU backend for bad lengths, unknown
//! buffers, aliasing and arity; NaN where an index is out of range; the no-adapter message.

#[macro_use]
mod common;

use common::{download, upload, wgpu_or_skip};
use sparsevar_core::backend::{Backend, BackendError, BufferId, Kernel, UnaryOp, Update};
use sparsevar_wgpu::{WgpuBackend, WgpuError};

fn wrong_lengths_unknown_buffers_aliasing_and_arity() {
    let Some(mut be) = wgpu_or_skip("wrong_lengths_unknown_buffers_aliasing_and_arity") else { return };
    let kern = Kernel::MatMul { batch: 2, m: 3, k: 4, n: 5, trans_a: false, trans_b: false };
    let a = be.alloc(2 * 3 * 4).unwrap();
    let b = be.alloc(2 * 4 * 5 - 1).unwrap();
    let y = be.alloc(2 * 3 * 5).unwrap();
    match be.launch(&kern, &[a, b], y) {
        Err(BackendError::BufferSize { kernel, buffer, have, need, backend }) => {
            assert_eq!((kernel.as_str(), buffer, have, need, backend.as_str()), ("matmul", b, 39, 40, "wgpu"));
        }
        other => panic!("expected BufferSize, got {other:?}"),
    }
    let x = be.alloc(4).unwrap();
    let z = be.alloc(4).unwrap();
    let relu = Kernel::Unary { op: UnaryOp::Relu, len: 4 };
    assert!(matches!(be.launch(&relu, &[BufferId(999)], z), Err(BackendError::UnknownBuffer(BufferId(999), _))));
    assert!(matches!(be.launch(&relu, &[x], x), Err(BackendError::Device { .. })));
    assert!(matches!(be.launch(&relu, &[x, x], z), Err(BackendError::Device { .. })));
    assert!(be.write(x, &[1.0; 3]).is_err());
    let p = upload(&mut be, &[1.0, 2.0]);
    let err = be.update(&Update::Sgd { groups: 1, len: 2, lr: 0.1, momentum: 0.0, weight_decay: 0.0, clip: None }, &[p, p, p]).unwrap_err();
    assert!(matches!(err, BackendError::Device { .. }), "{err}");
    assert_eq!(download(&mut be, p), [1.0, 2.0]);
    // Bad shapes are refused with the CPU's messages.
    let perm = Kernel::Permute { shape: vec![2, 3], perm: vec![0, 0] };
    let (s, t) = (be.alloc(6).unwrap(), be.alloc(6).unwrap());
    let err = be.launch(&perm, &[s], t).unwrap_err();
    assert!(err.to_string().contains("not a permutation"), "{err}");
    // A buffer beyond the adapter's storage-binding limit is an error, not a panic.
    let err = be.alloc(usize::MAX / 8).unwrap_err();
    assert!(err.to_string().contains("storage binding limit"), "{err}");
    // After all that, the backend still works.
    be.write(x, &[-1.0, 2.0, -3.0, 4.0]).unwrap();
    be.launch(&relu, &[x], z).unwrap();
    assert_eq!(download(&mut be, z), [0.0, 2.0, 0.0, 4.0]);
}

fn out_of_range_indices_give_nan_not_garbage() {
    let Some(mut be) = wgpu_or_skip("out_of_range_indices_give_nan_not_garbage") else { return };
    // Gather: row 1 asks for table row 5 of 3.
    let table = upload(&mut be, &[1.0, 2.0, 3.0]);
    let idx = upload(&mut be, &[2.0, 5.0]);
    let y = be.alloc(2).unwrap();
    be.launch(&Kernel::Gather { groups: 1, table_rows: 3, rows: 2, cols: 1 }, &[table, idx], y).unwrap();
    let v = download(&mut be, y);
    assert_eq!(v[0], 3.0);
    assert!(v[1].is_nan());
    // ScatterAdd: a bad index poisons its group only.
    let idx = upload(&mut be, &[0.0, 1.5, 1.0, 0.0]);
    let dy = upload(&mut be, &[1.0, 2.0, 3.0, 4.0]);
    let out = be.alloc(4).unwrap();
    be.launch(&Kernel::ScatterAdd { groups: 2, table_rows: 2, rows: 2, cols: 1 }, &[idx, dy], out).unwrap();
    let v = download(&mut be, out);
    assert!(v[0].is_nan() && v[1].is_nan());
    assert_eq!(&v[2..], &[4.0, 3.0]);
    // The same in groups long enough to scan a table row per workgroup (128 rows and more):
    // row 130 of group 0 points past the table; group 1 sums as usual.
    let rows = 200;
    let mut idx_host: Vec<f64> = (0..2 * rows).map(|i| (i % 3) as f64).collect();
    idx_host[130] = 3.0;
    let idx = upload(&mut be, &idx_host);
    let dy = upload(&mut be, &vec![1.0; 2 * rows]);
    let out = be.alloc(6).unwrap();
    be.launch(&Kernel::ScatterAdd { groups: 2, table_rows: 3, rows, cols: 1 }, &[idx, dy], out).unwrap();
    let v = download(&mut be, out);
    assert!(v[..3].iter().all(|x| x.is_nan()), "{v:?}");
    let counts: Vec<f64> = (0..3).map(|t| (rows..2 * rows).filter(|i| i % 3 == t).count() as f64).collect();
    assert_eq!(&v[3..], &counts[..]);
    // CrossEntropy: a label outside the classes.
    let logits = upload(&mut be, &[0.0, 1.0, 0.5, 0.5]);
    let labels = upload(&mut be, &[1.0, 2.0]);
    let loss = be.alloc(1).unwrap();
    be.launch(&Kernel::CrossEntropy { groups: 1, batch: 2, classes: 2 }, &[logits, labels], loss).unwrap();
    assert!(download(&mut be, loss)[0].is_nan());
}

fn no_adapter_message_names_the_fix() {
    let msg = WgpuError::NoAdapter.to_string();
    assert!(msg.contains("apt-get install mesa-vulkan-drivers libvulkan1"), "{msg}");
    let msg = WgpuError::AdapterIndex { index: 7, count: 1 }.to_string();
    assert!(msg.contains('7') && msg.contains('1'), "{msg}");
}

fn adapters_are_listed_and_can_be_chosen() {
    let Some(be) = wgpu_or_skip("adapters_are_listed_and_can_be_chosen") else { return };
    let list = sparsevar_wgpu::adapters();
    for a in &list {
        println!("{a}");
    }
    assert!(!list.is_empty());
    let chosen = be.adapter();
    assert_eq!(&list[chosen.index], chosen, "the backend's adapter is in the list");
    assert!(chosen.max_compute_workgroups_per_dimension >= 65535 && chosen.max_compute_invocations_per_workgroup >= 256);
    // The preference order: no adapter in the list is a better kind than the chosen one.
    let rank = |t: &str| ["discrete", "integrated", "virtual", "other", "cpu"].iter().position(|x| *x == t).unwrap();
    assert!(list.iter().all(|a| rank(&a.device_type) >= rank(&chosen.device_type)));
    let again = WgpuBackend::with_adapter(chosen.index).unwrap();
    assert_eq!(again.adapter(), chosen);
    assert_eq!(again.name(), "wgpu");
    assert!(matches!(WgpuBackend::with_adapter(list.len()), Err(WgpuError::AdapterIndex { .. })));
}

fn a_freed_buffer_fails_its_next_launch_and_its_launch_sites_go() {
    let Some(mut be) = wgpu_or_skip("a_freed_buffer_fails_its_next_launch_and_its_launch_sites_go") else { return };
    let relu = Kernel::Unary { op: UnaryOp::Relu, len: 3 };
    let x = upload(&mut be, &[-1.0, 2.0, -3.0]);
    let y = be.alloc(3).unwrap();
    be.launch(&relu, &[x], y).unwrap();
    assert_eq!(download(&mut be, y), [0.0, 2.0, 0.0]);
    be.free(x).unwrap();
    let err = be.launch(&relu, &[x], y).unwrap_err();
    assert!(matches!(err, BackendError::BufferSize { have: 0, need: 3, .. }), "{err}");
    assert!(matches!(be.free(BufferId(999)), Err(BackendError::UnknownBuffer(..))));
    let z = upload(&mut be, &[4.0, -5.0, 6.0]);
    be.launch(&relu, &[z], y).unwrap();
    assert_eq!(download(&mut be, y), [4.0, 0.0, 6.0]);
}

fn main() -> std::process::ExitCode {
    common::harness(
        tests![
            wrong_lengths_unknown_buffers_aliasing_and_arity,
            out_of_range_indices_give_nan_not_garbage,
            adapters_are_listed_and_can_be_chosen,
            a_freed_buffer_fails_its_next_launch_and_its_launch_sites_go,
        ],
        &[],
        tests![no_adapter_message_names_the_fix],
    )
}
