//! What the wgpu backend records, beyond what each launch asks: ScatterAdd's sort kept while
//! its indices stay the same, consecutive AccumulateSquares and Adam updates merged into one
//! dispatch, a MatMul and its bias Add fused (and an activation or residual after them), a
//! LayerNorm's affine part fused with it, and
//! in backward with the shift's gradient, a linear layer's two backward products paired, two
//! identical permutes paired, a softmax with the scaling before it (and after its backward), a
//! loss with its gradient —
//! with the numbers unchanged — and timestamps
//! around launches for device-side profiles.

#[macro_use]
mod common;

use common::{Rng, download, upload, wgpu_or_skip};
use sparsevar_core::backend::{Backend, BinaryOp, Kernel, UnaryOp, Update};
use sparsevar_wgpu::WgpuBackend;

/// The first element whose bits differ (`usize::MAX` for another length), if any.
fn first_difference(got: &[f64], want: &[f64]) -> Option<usize> {
    (got.len() != want.len()).then_some(usize::MAX).or_else(|| got.iter().zip(want).position(|(u, v)| u.to_bits() != v.to_bits()))
}

/// Every output in `got` has the bits of the same one in `want`; a failure names `label` and
/// the output (`names`, one per output).
fn assert_same_bits(label: &str, names: &[&str], got: &[Vec<f64>], want: &[Vec<f64>]) {
    assert_eq!((got.len(), want.len()), (names.len(), names.len()), "{label}: outputs");
    for ((what, got), want) in names.iter().zip(got).zip(want) {
        assert_eq!(first_difference(got, want), None, "{label}: {what}");
    }
}

/// ScatterAdd keeps its sort while the index buffer is unchanged, and sorts again after any
/// write to it: from the host, or as a kernel's output. (A scatter this large sorts; small
/// ones scan, with one dispatch.)
fn scatter_sorts_again_only_when_its_indices_change() {
    let Some(mut be) = wgpu_or_skip("scatter_sorts_again_only_when_its_indices_change") else { return };
    let counters = be.counters();
    let (table_rows, rows, cols) = (1200, 60_000, 2);
    let k = Kernel::ScatterAdd { groups: 1, table_rows, rows, cols };
    let dy_host: Vec<f64> = (0..rows * cols).map(|i| (i % 7) as f64 - 3.0).collect();
    let indices = |step: usize| -> Vec<f64> { (0..rows).map(|i| ((i * 31 + step * 17) % table_rows) as f64).collect() };
    let want = |idx: &[f64]| {
        let mut y = vec![0.0; table_rows * cols];
        for (i, &t) in idx.iter().enumerate() {
            for c in 0..cols {
                y[t as usize * cols + c] += dy_host[i * cols + c];
            }
        }
        y
    };
    let dy = upload(&mut be, &dy_host);
    let idx = upload(&mut be, &indices(0));
    let out = be.alloc(table_rows * cols).unwrap();
    let scatter = |be: &mut WgpuBackend| {
        let before = counters.dispatches();
        be.launch(&k, &[idx, dy], out).unwrap();
        (counters.dispatches() - before, download(be, out))
    };
    assert_eq!(scatter(&mut be), (2, want(&indices(0))), "first launch: sort and sum");
    assert_eq!(scatter(&mut be), (1, want(&indices(0))), "same indices: the sum alone");
    be.write(idx, &indices(1)).unwrap();
    assert_eq!(scatter(&mut be), (2, want(&indices(1))), "indices written by the host");
    let source = upload(&mut be, &indices(2));
    be.launch(&Kernel::Affine { len: rows, scale: 1.0, shift: 0.0 }, &[source], idx).unwrap();
    // An Affine may start a fused chain, so it is recorded at the next call: make that now.
    be.sync().unwrap();
    assert_eq!(scatter(&mut be), (2, want(&indices(2))), "indices written by a kernel");
    assert_eq!(scatter(&mut be).0, 1);
    // A small scatter scans in one dispatch.
    let small = Kernel::ScatterAdd { groups: 1, table_rows: 3, rows: 4, cols: 1 };
    let (i, d, y) = (upload(&mut be, &[2.0, 0.0, 2.0, 1.0]), upload(&mut be, &[1.0, 2.0, 3.0, 4.0]), be.alloc(3).unwrap());
    let before = counters.dispatches();
    be.launch(&small, &[i, d], y).unwrap();
    assert_eq!((counters.dispatches() - before, download(&mut be, y)), (1, vec![2.0, 4.0, 4.0]));
}

/// Consecutive AccumulateSquares into the same sums are recorded 27 gradients a dispatch
/// (where the device has the merged entry points' 28 storage bindings, as lavapipe does), and
/// give the same bits as launches recorded one by one (a read between them records each).
fn consecutive_squares_share_a_dispatch_and_keep_their_bits() {
    let Some(mut be) = wgpu_or_skip("consecutive_squares_share_a_dispatch_and_keep_their_bits") else { return };
    let counters = be.counters();
    let groups = 3;
    let lens = [700, 1, 0, 4096, 33, 65, 300, 5, 17, 128, 9, 2, 1000, 64, 7, 3, 11, 40, 0, 2, 8, 90, 1, 6, 13, 70, 4, 15, 21, 33, 12];
    let mut rng = Rng::new(5);
    let grads: Vec<_> = lens.iter().map(|&len| upload(&mut be, &rng.vec(groups * len))).collect();
    let accumulate = |be: &mut WgpuBackend, one_by_one: bool| {
        let norm = upload(be, &[0.5, 0.0, 2.0]);
        let before = counters.dispatches();
        for (&g, &len) in grads.iter().zip(&lens) {
            be.update(&Update::AccumulateSquares { groups, len }, &[g, norm]).unwrap();
            if one_by_one {
                download(be, norm);
            }
        }
        let sums = download(be, norm);
        (counters.dispatches() - before, sums)
    };
    let (merged, sums) = accumulate(&mut be, false);
    let (alone, want) = accumulate(&mut be, true);
    assert_eq!((merged, alone), (2, 29), "29 non-empty gradients: 27 and 2 merged, 29 alone");
    assert_eq!(sums.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    // A launch in between, or another sum, starts a new dispatch; the order of work holds.
    let norm = upload(&mut be, &[0.0; 3]);
    let other = upload(&mut be, &[0.0; 3]);
    let before = counters.dispatches();
    be.update(&Update::AccumulateSquares { groups, len: lens[0] }, &[grads[0], norm]).unwrap();
    be.update(&Update::AccumulateSquares { groups, len: lens[0] }, &[grads[0], other]).unwrap();
    be.launch(&Kernel::Affine { len: 3, scale: 2.0, shift: 0.0 }, &[other], norm).unwrap();
    be.update(&Update::AccumulateSquares { groups, len: lens[1] }, &[grads[1], norm]).unwrap();
    let got = download(&mut be, norm);
    assert_eq!(counters.dispatches() - before, 4);
    let first = download(&mut be, other);
    let g1 = download(&mut be, grads[1]);
    for (g, (&v, &o)) in got.iter().zip(&first).enumerate() {
        assert_eq!(v as f32, (2.0 * o as f32) + (g1[g] as f32) * (g1[g] as f32), "group {g}");
    }
    // A Zero on the sums joins the first sums' dispatch (they start from zero instead), with
    // the bits of the launches one by one; a Zero followed by anything else stays a launch.
    let norm = upload(&mut be, &[7.0; 3]);
    let zero_then_sums = |be: &mut WgpuBackend, one_by_one: bool| {
        be.write(norm, &[7.0; 3]).unwrap();
        let before = counters.dispatches();
        be.update(&Update::Zero { len: groups }, &[norm]).unwrap();
        for g in [0, 3] {
            if one_by_one {
                download(be, norm);
            }
            be.update(&Update::AccumulateSquares { groups, len: lens[g] }, &[grads[g], norm]).unwrap();
        }
        let sums = download(be, norm);
        (counters.dispatches() - before, sums.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
    };
    let (merged, bits) = zero_then_sums(&mut be, false);
    let (alone, want) = zero_then_sums(&mut be, true);
    assert_eq!((merged, alone), (1, 3));
    assert_eq!(bits, want);
    let before = counters.dispatches();
    be.update(&Update::Zero { len: groups }, &[norm]).unwrap();
    be.launch(&Kernel::Affine { len: 3, scale: 1.0, shift: 1.0 }, &[norm], other).unwrap();
    assert_eq!((download(&mut be, other), counters.dispatches() - before), (vec![1.0; 3], 2));
}

/// Consecutive Adam updates with the same settings run as one dispatch of up to six
/// parameters, with the bits they get one by one (with and without a clip norm); other
/// settings, a shared buffer or a launch in between start a new dispatch.
fn consecutive_adam_updates_share_a_dispatch_and_keep_their_bits() {
    let Some(mut be) = wgpu_or_skip("consecutive_adam_updates_share_a_dispatch_and_keep_their_bits") else { return };
    let counters = be.counters();
    let groups = 2;
    let lens = [300, 1, 0, 4096, 65, 7, 129, 2, 33, 0, 5, 17];
    let adam_lr = |len: usize, clip: Option<f64>, lr: f64| Update::Adam {
        groups,
        len,
        lr,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
        bias1: 0.19,
        bias2: 0.002,
        clip,
    };
    let adam = |len: usize, clip: Option<f64>| adam_lr(len, clip, 0.01);
    let mut rng = Rng::new(9);
    let start: Vec<[Vec<f64>; 4]> = lens
        .iter()
        .map(|&len| std::array::from_fn(|b| if b == 3 { rng.vec(groups * len).iter().map(|v| v * v).collect() } else { rng.vec(groups * len) }))
        .collect();
    let run = |be: &mut WgpuBackend, clip: Option<f64>, one_by_one: bool| {
        let bufs: Vec<Vec<_>> = start.iter().map(|s| s.iter().map(|v| upload(be, v)).collect()).collect();
        let norm = upload(be, &[4.0, 0.25]);
        let before = counters.dispatches();
        for (b, &len) in bufs.iter().zip(&lens) {
            let mut buffers = b.clone();
            buffers.extend(clip.map(|_| norm));
            be.update(&adam(len, clip), &buffers).unwrap();
            if one_by_one {
                download(be, b[0]);
            }
        }
        let bits: Vec<Vec<u64>> = bufs.iter().flat_map(|b| [b[0], b[2], b[3]]).map(|id| download(be, id).iter().map(|v| v.to_bits()).collect()).collect();
        (counters.dispatches() - before, bits)
    };
    for clip in [None, Some(0.5)] {
        let (merged, got) = run(&mut be, clip, false);
        let (alone, want) = run(&mut be, clip, true);
        assert_eq!((merged, alone), (2, 10), "ten non-empty parameters: two dispatches merged (six and four), ten alone");
        assert!(got == want, "merged Adam changed a parameter or its moments (clip {clip:?})");
    }
    // Other settings, a parameter updated twice, or a launch in between: a new dispatch each.
    let p: Vec<_> = (0..4).map(|_| upload(&mut be, &[0.5; 2])).collect();
    let q = be.alloc(2).unwrap();
    let before = counters.dispatches();
    be.update(&adam(1, None), &p).unwrap();
    be.update(&adam_lr(1, None, 0.02), &p).unwrap();
    be.update(&adam_lr(1, None, 0.02), &p).unwrap();
    be.launch(&Kernel::Affine { len: 2, scale: 1.0, shift: 0.0 }, &[p[1]], q).unwrap();
    be.update(&adam(1, None), &p).unwrap();
    download(&mut be, p[0]);
    assert_eq!(counters.dispatches() - before, 5, "four Adam dispatches and the launch");
}

/// Launches count under the label given before them, held squares under the label they were
/// launched with, nothing after timing stops; more launches than the query set holds are all
/// counted; and timing changes no result.
fn launches_are_timed_under_their_labels() {
    let Some(mut be) = wgpu_or_skip("launches_are_timed_under_their_labels") else { return };
    let x = upload(&mut be, &[1.0, 2.0, 3.0]);
    let (y, z, norm) = (be.alloc(3).unwrap(), be.alloc(3).unwrap(), be.alloc(1).unwrap());
    let twice = Kernel::Affine { len: 3, scale: 2.0, shift: 0.0 };
    assert!(be.time_launches_as(Some("a")).unwrap(), "lavapipe and GPUs have timestamps");
    for _ in 0..3 {
        be.launch(&twice, &[x], y).unwrap();
    }
    be.update(&Update::AccumulateSquares { groups: 1, len: 3 }, &[x, norm]).unwrap();
    be.time_launches_as(Some("b")).unwrap();
    be.launch(&twice, &[y], z).unwrap();
    be.time_launches_as(None).unwrap();
    be.launch(&twice, &[z], y).unwrap();
    let times = be.launch_times().unwrap();
    let counts: Vec<(&str, u64)> = times.iter().map(|(l, n, _)| (l.as_str(), *n)).collect();
    assert_eq!(counts, [("a", 4), ("b", 1)]);
    assert!(times.iter().all(|t| t.2 >= 0.0 && t.2 < 10.0), "{times:?}");
    assert_eq!(download(&mut be, y), [8.0, 16.0, 24.0]);
    assert_eq!(download(&mut be, norm), [14.0]);
    assert!(be.launch_times().unwrap().is_empty(), "read once");
    // More launches than the query set holds between two reads.
    be.time_launches_as(Some("many")).unwrap();
    for _ in 0..2100 {
        be.launch(&twice, &[x], y).unwrap();
    }
    assert_eq!(be.launch_times().unwrap().iter().map(|t| (t.0.as_str(), t.1)).collect::<Vec<_>>(), [("many", 2100)]);
}

/// A MatMul and the Add of a bias to its product run as one dispatch that writes both the
/// product and the sum, with the bits of the two launches recorded one by one (a read between
/// them records the first). Other Adds after a MatMul (not a bias, the operands the other way
/// round, a sum written over the product's operand) stay two dispatches and right.
fn a_matmul_and_its_bias_add_share_a_dispatch_and_keep_their_bits() {
    let Some(mut be) = wgpu_or_skip("a_matmul_and_its_bias_add_share_a_dispatch_and_keep_their_bits") else { return };
    let counters = be.counters();
    let mut rng = Rng::new(11);
    // (batch, m, k, n, transposes, Add's shape, a's strides, b's strides, bias length, fused)
    type Case = (usize, usize, usize, usize, (bool, bool), Vec<usize>, Vec<usize>, Vec<usize>, usize, bool);
    let cases: Vec<Case> = vec![
        // paper1l's: a table's rows (tiled), the CLS row (per element), the MLP.
        (1, 129, 64, 64, (false, false), vec![1, 129, 64], vec![8256, 64, 1], vec![64, 0, 1], 64, true),
        (1, 1, 64, 64, (false, false), vec![1, 1, 64], vec![64, 64, 1], vec![64, 64, 1], 64, true),
        (1, 32, 64, 256, (false, false), vec![1, 32, 256], vec![8192, 256, 1], vec![256, 0, 1], 256, true),
        (1, 32, 64, 2, (false, false), vec![1, 32, 2], vec![64, 2, 1], vec![2, 0, 1], 2, true),
        // An ensemble: a bias per member, and one bias shared by all; transposed operands.
        (3, 32, 64, 64, (false, true), vec![3, 32, 64], vec![2048, 64, 1], vec![64, 0, 1], 3 * 64, true),
        (3, 5, 7, 9, (true, false), vec![3, 5, 9], vec![45, 9, 1], vec![0, 0, 1], 9, true),
        (4, 1, 16, 20, (false, false), vec![4, 1, 20], vec![20, 20, 1], vec![20, 20, 1], 80, true),
        // Not a bias: one value per row, or a whole second matrix per group shape.
        (1, 32, 64, 64, (false, false), vec![1, 32, 64], vec![2048, 64, 1], vec![32, 1, 0], 32, false),
        (2, 8, 4, 8, (false, false), vec![2, 8, 8], vec![64, 8, 1], vec![64, 8, 1], 128, false),
    ];
    for (case, (batch, m, k, n, (ta, tb), shape, a_strides, b_strides, bias_len, fused)) in cases.into_iter().enumerate() {
        let matmul = Kernel::MatMul { batch, m, k, n, trans_a: ta, trans_b: tb };
        let add = Kernel::Binary { op: BinaryOp::Add, shape, a_strides, b_strides };
        let a = upload(&mut be, &rng.vec(batch * m * k));
        let b = upload(&mut be, &rng.vec(batch * k * n));
        let bias = upload(&mut be, &rng.vec(bias_len));
        let (product, sum) = (be.alloc(batch * m * n).unwrap(), be.alloc(batch * m * n).unwrap());
        let run = |be: &mut WgpuBackend, one_by_one: bool| {
            let before = counters.dispatches();
            be.launch(&matmul, &[a, b], product).unwrap();
            if one_by_one {
                download(be, product);
            }
            be.launch(&add, &[product, bias], sum).unwrap();
            let out = (download(be, product), download(be, sum));
            (counters.dispatches() - before, out)
        };
        let (together, (p1, s1)) = run(&mut be, false);
        let (alone, (p2, s2)) = run(&mut be, true);
        assert_eq!((together, alone), (if fused { 1 } else { 2 }, 2), "case {case}: dispatches");
        assert_eq!(first_difference(&p1, &p2), None, "case {case}: product");
        assert_eq!(first_difference(&s1, &s2), None, "case {case}: sum");
    }
    // The bias first, or the sum written over the product's first operand: two dispatches,
    // and the same sums (an f32 add commutes); the product still reads the operand before
    // the sum overwrites it.
    let matmul = Kernel::MatMul { batch: 1, m: 4, k: 2, n: 2, trans_a: false, trans_b: false };
    let (a, b, bias) = (upload(&mut be, &rng.vec(8)), upload(&mut be, &rng.vec(4)), upload(&mut be, &rng.vec(2)));
    let (product, sum) = (be.alloc(8).unwrap(), be.alloc(8).unwrap());
    let before = counters.dispatches();
    be.launch(&matmul, &[a, b], product).unwrap();
    let swapped = Kernel::Binary { op: BinaryOp::Add, shape: vec![4, 2], a_strides: vec![0, 1], b_strides: vec![2, 1] };
    be.launch(&swapped, &[bias, product], sum).unwrap();
    let (first_product, first_sum) = (download(&mut be, product), download(&mut be, sum));
    be.launch(&matmul, &[a, b], product).unwrap();
    let bias_add = Kernel::Binary { op: BinaryOp::Add, shape: vec![4, 2], a_strides: vec![2, 1], b_strides: vec![0, 1] };
    be.launch(&bias_add, &[product, bias], a).unwrap();
    assert_eq!((download(&mut be, product), download(&mut be, a)), (first_product, first_sum));
    assert_eq!(counters.dispatches() - before, 4, "nothing fused");
}

/// A LayerNorm, the product of its output with a scale and the sum with a shift run as one
/// dispatch writing all three outputs, with the bits of the three launches one by one (on
/// lavapipe; a driver that contracts the multiply-add into an FMA may round the last sum
/// once instead of twice). A chain broken after its second launch records both as they are.
fn a_layer_norm_and_its_scale_and_shift_share_a_dispatch() {
    let Some(mut be) = wgpu_or_skip("a_layer_norm_and_its_scale_and_shift_share_a_dispatch") else { return };
    let counters = be.counters();
    let mut rng = Rng::new(12);
    // (members, rows per member, cols, a scale per member, a shift per member)
    for (case, (members, rows, cols, own_scale, own_shift)) in
        [(1, 129, 64, true, true), (3, 32, 64, true, true), (2, 5, 100, false, true), (4, 3, 7, true, false)].into_iter().enumerate()
    {
        let total = members * rows * cols;
        let per = |own: bool| if own { (members * cols, vec![cols, 0, 1]) } else { (cols, vec![0, 0, 1]) };
        let ((scale_len, scale_strides), (shift_len, shift_strides)) = (per(own_scale), per(own_shift));
        let shape = vec![members, rows, cols];
        let dense = vec![rows * cols, cols, 1];
        let norm = Kernel::LayerNorm { rows: members * rows, cols, eps: 1e-5 };
        let mul = Kernel::Binary { op: BinaryOp::Mul, shape: shape.clone(), a_strides: dense.clone(), b_strides: scale_strides };
        let add = Kernel::Binary { op: BinaryOp::Add, shape, a_strides: dense, b_strides: shift_strides };
        let x = upload(&mut be, &rng.vec(total));
        let (scale, shift) = (upload(&mut be, &rng.vec(scale_len)), upload(&mut be, &rng.vec(shift_len)));
        let (h, t, o) = (be.alloc(total).unwrap(), be.alloc(total).unwrap(), be.alloc(total).unwrap());
        let run = |be: &mut WgpuBackend, one_by_one: bool| {
            let before = counters.dispatches();
            be.launch(&norm, &[x], h).unwrap();
            if one_by_one {
                download(be, h);
            }
            be.launch(&mul, &[h, scale], t).unwrap();
            if one_by_one {
                download(be, t);
            }
            be.launch(&add, &[t, shift], o).unwrap();
            let out = [download(be, h), download(be, t), download(be, o)];
            (counters.dispatches() - before, out)
        };
        let (together, fused) = run(&mut be, false);
        let (alone, want) = run(&mut be, true);
        assert_eq!((together, alone), (1, 3), "case {case}: dispatches");
        assert_same_bits(&format!("case {case}"), &["norm", "scaled", "shifted"], &fused, &want);
        // The norm and its scale, then another launch: two dispatches for the pair, one more.
        let before = counters.dispatches();
        be.launch(&norm, &[x], h).unwrap();
        be.launch(&mul, &[h, scale], t).unwrap();
        be.launch(&Kernel::Affine { len: total, scale: 2.0, shift: 0.0 }, &[t], o).unwrap();
        let twice = download(&mut be, o);
        assert_eq!(counters.dispatches() - before, 3, "case {case}: a broken chain");
        assert!(twice.iter().zip(&want[1]).all(|(u, v)| *u == 2.0 * v), "case {case}: a broken chain's numbers");
    }
}

/// In backward, the shift's gradient (dy summed over rows), dy times the scale and dy times
/// the normalised input run as one dispatch, with the bits of the three launches one by one;
/// the SumTo of the last product (the scale's gradient) stays a launch of its own.
fn a_shift_gradient_and_the_products_of_dy_share_a_dispatch() {
    let Some(mut be) = wgpu_or_skip("a_shift_gradient_and_the_products_of_dy_share_a_dispatch") else { return };
    let counters = be.counters();
    let mut rng = Rng::new(13);
    for (case, (members, rows, cols, own_scale)) in [(1, 129, 64, true), (3, 32, 64, true), (2, 37, 5, false)].into_iter().enumerate() {
        let total = members * rows * cols;
        let dense = vec![rows * cols, cols, 1];
        let shape = vec![members, rows, cols];
        let (scale_len, scale_strides) = if own_scale { (members * cols, vec![cols, 0, 1]) } else { (cols, vec![0, 0, 1]) };
        let sum = Kernel::SumTo { from: shape.clone(), to: vec![members, 1, cols] };
        let times_scale = Kernel::Binary { op: BinaryOp::Mul, shape: shape.clone(), a_strides: dense.clone(), b_strides: scale_strides };
        let times_h = Kernel::Binary { op: BinaryOp::Mul, shape, a_strides: dense.clone(), b_strides: dense };
        let (dy, scale, h) = (upload(&mut be, &rng.vec(total)), upload(&mut be, &rng.vec(scale_len)), upload(&mut be, &rng.vec(total)));
        let (dshift, dh, p, dscale) =
            (be.alloc(members * cols).unwrap(), be.alloc(total).unwrap(), be.alloc(total).unwrap(), be.alloc(members * cols).unwrap());
        let run = |be: &mut WgpuBackend, one_by_one: bool| {
            let before = counters.dispatches();
            for (kernel, inputs, output) in [(&sum, vec![dy], dshift), (&times_scale, vec![dy, scale], dh), (&times_h, vec![dy, h], p), (&sum, vec![p], dscale)]
            {
                be.launch(kernel, &inputs, output).unwrap();
                if one_by_one {
                    download(be, output);
                }
            }
            let out = [download(be, dshift), download(be, dh), download(be, p), download(be, dscale)];
            (counters.dispatches() - before, out)
        };
        let (together, fused) = run(&mut be, false);
        let (alone, want) = run(&mut be, true);
        assert_eq!((together, alone), (2, 4), "case {case}: dispatches");
        assert_same_bits(&format!("case {case}"), &["shift gradient", "dy times scale", "dy times h", "scale gradient"], &fused, &want);
    }
}

/// Two independent MatMuls of the same kernel over at most three operands (a linear layer's
/// backward: dx = dy·Wᵀ, dW = xᵀ·dy) run as one dispatch with the bits of each alone; a
/// second product that reads the first's output, four operands, or two different kernels
/// stay two dispatches.
fn a_linear_layers_two_backward_products_share_a_dispatch() {
    let Some(mut be) = wgpu_or_skip("a_linear_layers_two_backward_products_share_a_dispatch") else { return };
    let counters = be.counters();
    let mut rng = Rng::new(14);
    let mm = |batch, m, k, n, trans_a, trans_b| Kernel::MatMul { batch, m, k, n, trans_a, trans_b };
    // (batch, rows, in, out): dy [rows, out], W [out, in] (y = x Wᵀ), x [rows, in].
    for (case, (batch, rows, d_in, d_out)) in [(1, 32, 64, 256), (1, 129, 64, 64), (4, 32, 16, 129), (1, 32, 64, 2), (3, 5, 7, 9)].into_iter().enumerate() {
        let dy = upload(&mut be, &rng.vec(batch * rows * d_out));
        let w = upload(&mut be, &rng.vec(batch * d_out * d_in));
        let x = upload(&mut be, &rng.vec(batch * rows * d_in));
        let (dx, dw) = (be.alloc(batch * rows * d_in).unwrap(), be.alloc(batch * d_out * d_in).unwrap());
        let dx_k = mm(batch, rows, d_out, d_in, false, false);
        let dw_k = mm(batch, d_out, rows, d_in, true, false);
        // Either order: dx first (dy is the first product's a), or dW first.
        for (order, launches) in [[(&dx_k, [dy, w], dx), (&dw_k, [dy, x], dw)], [(&dw_k, [dy, x], dw), (&dx_k, [dy, w], dx)]].into_iter().enumerate() {
            let run = |be: &mut WgpuBackend, one_by_one: bool| {
                let before = counters.dispatches();
                for (kernel, inputs, output) in &launches {
                    be.launch(kernel, inputs, *output).unwrap();
                    if one_by_one {
                        download(be, *output);
                    }
                }
                (counters.dispatches() - before, [download(be, dx), download(be, dw)])
            };
            let (together, fused) = run(&mut be, false);
            let (alone, want) = run(&mut be, true);
            assert_eq!((together, alone), (1, 2), "case {case} order {order}: dispatches");
            assert_same_bits(&format!("case {case} order {order}"), &["dx", "dW"], &fused, &want);
        }
    }
    // Not paired: the second reads the first's output; four operands; a tiled and a small kernel.
    let (a, b, c, d) =
        (upload(&mut be, &rng.vec(64 * 64)), upload(&mut be, &rng.vec(64 * 64)), upload(&mut be, &rng.vec(64 * 64)), upload(&mut be, &rng.vec(64 * 64)));
    let (y, z) = (be.alloc(64 * 64).unwrap(), be.alloc(64 * 64).unwrap());
    let square = mm(1, 64, 64, 64, false, false);
    let before = counters.dispatches();
    be.launch(&square, &[a, b], y).unwrap();
    be.launch(&square, &[y, c], z).unwrap();
    let chained = download(&mut be, z);
    be.launch(&square, &[a, b], y).unwrap();
    be.launch(&square, &[c, d], z).unwrap();
    download(&mut be, z);
    // [512 × 64] · [64 × 512] tiles under any routing; one row against the same b does not.
    let (wide_a, wide_b, wide_y) = (upload(&mut be, &rng.vec(512 * 64)), upload(&mut be, &rng.vec(64 * 512)), be.alloc(512 * 512).unwrap());
    let (row, out_row) = (upload(&mut be, &rng.vec(64)), be.alloc(512).unwrap());
    be.launch(&mm(1, 512, 64, 512, false, false), &[wide_a, wide_b], wide_y).unwrap();
    be.launch(&mm(1, 1, 64, 512, false, false), &[row, wide_b], out_row).unwrap();
    download(&mut be, out_row);
    assert_eq!(counters.dispatches() - before, 6, "nothing paired");
    let (y_host, c_host) = (download(&mut be, y), download(&mut be, c));
    let want: Vec<f64> =
        (0..64 * 64).map(|e| (0..64).fold(0.0f32, |acc, p| acc + y_host[e / 64 * 64 + p] as f32 * c_host[p * 64 + e % 64] as f32) as f64).collect();
    let worst = chained.iter().zip(&want).map(|(u, v)| (u - v).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-3, "the chained product read the first one's output: off by {worst}");
}

/// After a product and its bias, an activation of the sum or a residual added to it joins
/// the same dispatch (written besides the product and the sum), with the bits of the three
/// launches one by one.
fn an_activation_or_a_residual_after_a_biased_product_joins_its_dispatch() {
    let Some(mut be) = wgpu_or_skip("an_activation_or_a_residual_after_a_biased_product_joins_its_dispatch") else { return };
    let counters = be.counters();
    let mut rng = Rng::new(15);
    // (batch, m, k, n, third: 0..3 the Unary ops, 3 residual after, 4 residual before)
    let ops = [UnaryOp::Relu, UnaryOp::Gelu, UnaryOp::Sigmoid];
    for (case, (batch, m, k, n, third)) in
        [(1, 32, 64, 256, 1), (1, 1, 64, 64, 0), (3, 32, 64, 64, 2), (1, 32, 256, 64, 3), (3, 5, 7, 9, 4)].into_iter().enumerate()
    {
        let total = batch * m * n;
        let shape = vec![batch, m, n];
        let dense = vec![m * n, n, 1];
        let matmul = Kernel::MatMul { batch, m, k, n, trans_a: false, trans_b: false };
        let add = Kernel::Binary { op: BinaryOp::Add, shape: shape.clone(), a_strides: dense.clone(), b_strides: vec![n, 0, 1] };
        let (a, b, bias, other) = (
            upload(&mut be, &rng.vec(batch * m * k)),
            upload(&mut be, &rng.vec(batch * k * n)),
            upload(&mut be, &rng.vec(batch * n)),
            upload(&mut be, &rng.vec(total)),
        );
        let (product, sum, out) = (be.alloc(total).unwrap(), be.alloc(total).unwrap(), be.alloc(total).unwrap());
        let (after, after_inputs) = match third {
            0..3 => (Kernel::Unary { op: ops[third], len: total }, vec![sum]),
            3 => (Kernel::Binary { op: BinaryOp::Add, shape, a_strides: dense.clone(), b_strides: dense }, vec![sum, other]),
            _ => (Kernel::Binary { op: BinaryOp::Add, shape, a_strides: dense.clone(), b_strides: dense }, vec![other, sum]),
        };
        let run = |be: &mut WgpuBackend, one_by_one: bool| {
            let before = counters.dispatches();
            for (kernel, inputs, output) in [(&matmul, vec![a, b], product), (&add, vec![product, bias], sum), (&after, after_inputs.clone(), out)] {
                be.launch(kernel, &inputs, output).unwrap();
                if one_by_one {
                    download(be, output);
                }
            }
            (counters.dispatches() - before, [download(be, product), download(be, sum), download(be, out)])
        };
        let (together, fused) = run(&mut be, false);
        let (alone, want) = run(&mut be, true);
        assert_eq!((together, alone), (1, 3), "case {case}: dispatches");
        assert_same_bits(&format!("case {case}"), &["product", "sum", "third"], &fused, &want);
    }
}

/// Two identical Permutes of different buffers (a head split of keys and values) run as one
/// dispatch; one that moves the other's output, or another permutation, runs on its own.
fn two_identical_permutes_share_a_dispatch() {
    let Some(mut be) = wgpu_or_skip("two_identical_permutes_share_a_dispatch") else { return };
    let counters = be.counters();
    let mut rng = Rng::new(16);
    let split = Kernel::Permute { shape: vec![3, 129, 4, 16], perm: vec![0, 2, 1, 3] };
    let back = Kernel::Permute { shape: vec![3, 4, 129, 16], perm: vec![0, 2, 1, 3] };
    let len = 3 * 129 * 4 * 16;
    let (k_host, v_host) = (rng.vec(len), rng.vec(len));
    let (k, v) = (upload(&mut be, &k_host), upload(&mut be, &v_host));
    let (kh, vh, again) = (be.alloc(len).unwrap(), be.alloc(len).unwrap(), be.alloc(len).unwrap());
    let moved = |x: &[f64]| -> Vec<f64> {
        (0..len).map(|e| x[(e / (4 * 129 * 16)) * 4 * 129 * 16 + (e / 16 % 129) * 64 + (e / (129 * 16) % 4) * 16 + e % 16]).collect()
    };
    let before = counters.dispatches();
    be.launch(&split, &[k], kh).unwrap();
    be.launch(&split, &[v], vh).unwrap();
    assert_eq!((download(&mut be, kh), download(&mut be, vh)), (moved(&k_host), moved(&v_host)));
    assert_eq!(counters.dispatches() - before, 1, "one dispatch for the pair");
    // The second moves the first's output back; then another permutation: two each.
    let before = counters.dispatches();
    be.launch(&split, &[k], kh).unwrap();
    be.launch(&back, &[kh], again).unwrap();
    assert_eq!(download(&mut be, again), k_host, "there and back");
    be.launch(&split, &[k], kh).unwrap();
    be.launch(&Kernel::Permute { shape: vec![3, 129, 4, 16], perm: vec![0, 1, 3, 2] }, &[v], vh).unwrap();
    download(&mut be, vh);
    assert_eq!(counters.dispatches() - before, 4, "nothing paired");
}

/// Attention's scaled scores: an Affine and the Softmax of its output run as one dispatch,
/// and in backward a SoftmaxBackward and the Affine of its output, with the bits of the
/// launches one by one.
fn a_scaled_softmax_and_its_backward_are_one_dispatch_each() {
    let Some(mut be) = wgpu_or_skip("a_scaled_softmax_and_its_backward_are_one_dispatch_each") else { return };
    let counters = be.counters();
    let mut rng = Rng::new(17);
    for (case, (rows, cols, scale, shift)) in [(128, 65, 0.25, 0.0), (3, 200, -1.5, 0.5), (7, 1, 2.0, 0.0)].into_iter().enumerate() {
        let len = rows * cols;
        let affine = Kernel::Affine { len, scale, shift };
        let (x, dp) = (upload(&mut be, &rng.scaled(len, 4.0)), upload(&mut be, &rng.vec(len)));
        let (s, p, ds, dx) = (be.alloc(len).unwrap(), be.alloc(len).unwrap(), be.alloc(len).unwrap(), be.alloc(len).unwrap());
        let run = |be: &mut WgpuBackend, one_by_one: bool| {
            let before = counters.dispatches();
            let launches = [
                (&affine, vec![x], s),
                (&Kernel::Softmax { rows, cols }, vec![s], p),
                (&Kernel::SoftmaxBackward { rows, cols }, vec![p, dp], ds),
                (&affine, vec![ds], dx),
            ];
            for (kernel, inputs, output) in launches {
                be.launch(kernel, &inputs, output).unwrap();
                if one_by_one {
                    download(be, output);
                }
            }
            (counters.dispatches() - before, [download(be, s), download(be, p), download(be, ds), download(be, dx)])
        };
        let (together, fused) = run(&mut be, false);
        let (alone, want) = run(&mut be, true);
        assert_eq!((together, alone), (2, 4), "case {case}: dispatches");
        assert_same_bits(&format!("case {case}"), &["scaled", "softmax", "softmax backward", "scaled backward"], &fused, &want);
    }
}

/// The loss and its gradient on the same logits run as one dispatch, with the bits of the two
/// launches one by one, a bad label's NaNs included.
fn a_loss_and_its_gradient_share_a_dispatch() {
    let Some(mut be) = wgpu_or_skip("a_loss_and_its_gradient_share_a_dispatch") else { return };
    let counters = be.counters();
    let mut rng = Rng::new(18);
    for (case, (groups, batch, classes)) in [(1, 32, 2), (70, 32, 2), (3, 5, 7)].into_iter().enumerate() {
        let logits = upload(&mut be, &rng.scaled(groups * batch * classes, 3.0));
        let mut label_values = rng.indices(groups * batch, classes);
        if case == 2 {
            label_values[4] = classes as f64; // out of range: NaN in its group and row
        }
        let (labels, dloss) = (upload(&mut be, &label_values), upload(&mut be, &rng.vec(groups)));
        let (loss, dlogits) = (be.alloc(groups).unwrap(), be.alloc(groups * batch * classes).unwrap());
        let run = |be: &mut WgpuBackend, one_by_one: bool| {
            let before = counters.dispatches();
            be.launch(&Kernel::CrossEntropy { groups, batch, classes }, &[logits, labels], loss).unwrap();
            if one_by_one {
                download(be, loss);
            }
            be.launch(&Kernel::CrossEntropyBackward { groups, batch, classes }, &[logits, labels, dloss], dlogits).unwrap();
            let bits = |v: Vec<f64>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            (counters.dispatches() - before, bits(download(be, loss)), bits(download(be, dlogits)))
        };
        let (together, fused_loss, fused_grad) = run(&mut be, false);
        let (alone, loss_bits, grad_bits) = run(&mut be, true);
        assert_eq!((together, alone), (1, 2), "case {case}: dispatches");
        assert!(fused_loss == loss_bits && fused_grad == grad_bits, "case {case}: the fused loss or gradient differs");
        assert_eq!(fused_loss.iter().filter(|b| f64::from_bits(**b).is_nan()).count(), usize::from(case == 2), "case {case}: NaN losses");
    }
}

fn main() -> std::process::ExitCode {
    common::harness(
        tests![
            scatter_sorts_again_only_when_its_indices_change,
            consecutive_squares_share_a_dispatch_and_keep_their_bits,
            consecutive_adam_updates_share_a_dispatch_and_keep_their_bits,
            launches_are_timed_under_their_labels,
            a_matmul_and_its_bias_add_share_a_dispatch_and_keep_their_bits,
            a_layer_norm_and_its_scale_and_shift_share_a_dispatch,
            a_shift_gradient_and_the_products_of_dy_share_a_dispatch,
            a_linear_layers_two_backward_products_share_a_dispatch,
            an_activation_or_a_residual_after_a_biased_product_joins_its_dispatch,
            two_identical_permutes_share_a_dispatch,
            a_scaled_softmax_and_its_backward_are_one_dispatch_each,
            a_loss_and_its_gradient_share_a_dispatch,
        ],
        &[],
        &[],
    )
}
