// Shared by every kernel module: the launch parameters and the binding slots.
//
// Every launch site owns one small uniform buffer of 32 words; each kernel documents which
// word means what (floats travel as their bit patterns). Word 31 always holds a quiet NaN,
// because WGSL cannot spell a NaN constant.
//
// The bindings have fixed numbers shared by all modules; a pipeline's layout lists only the
// ones its entry point uses (see `Binding` in pipelines.rs):
//   1 y:       the output of a kernel, or the buffer an update writes (parameter, accumulator)
//   2..4 x0-2: a kernel's inputs in order (read-only)
//   5, 6 s0-1: optimizer state (read-write)
//   7 scratch / 8 order: a launch site's own u32 scratch (ScatterAdd's sorted row lists)

struct Params { w: array<vec4<u32>, 8> }

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> x0: array<f32>;
@group(0) @binding(3) var<storage, read> x1: array<f32>;
@group(0) @binding(4) var<storage, read> x2: array<f32>;
@group(0) @binding(5) var<storage, read_write> s0: array<f32>;
@group(0) @binding(6) var<storage, read_write> s1: array<f32>;
@group(0) @binding(7) var<storage, read_write> scratch: array<u32>;
@group(0) @binding(8) var<storage, read> order: array<u32>;

const BAD_INDEX: u32 = 0xffffffffu;

fn pu(i: u32) -> u32 {
    return P.w[i / 4u][i % 4u];
}

fn pf(i: u32) -> f32 {
    return bitcast<f32>(pu(i));
}

fn nan() -> f32 {
    return bitcast<f32>(pu(31u));
}

// Workgroups beyond the per-dimension limit are folded into a second dimension; this is the
// linear workgroup number.
fn workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// n / d for 1 <= d < 2^30, any n, without an integer divide: CPU drivers such as lavapipe
// have no vector integer division and fall back to one scalar divide per lane, which made
// index arithmetic the bottleneck of every kernel. An f32 estimate, a second estimate of the
// (small) remainder, and a last +-1 step give the exact quotient (see `udiv` in kernels.rs,
// which tests the same steps).
fn udiv(n: u32, d: u32) -> u32 {
    let inv = 1.0 / f32(d);
    var q = u32(f32(n) * inv);
    let r = i32(n - q * d);
    q = u32(i32(q) + i32(floor(f32(r) * inv)));
    let r2 = i32(n - q * d);
    if (r2 < 0) {
        q -= 1u;
    } else if (r2 >= i32(d)) {
        q += 1u;
    }
    return q;
}

// Index data travels as floats holding small integers: the integer, or BAD_INDEX when the
// value is not an integer in 0..limit.
fn index_of(v: f32, limit: u32) -> u32 {
    if (v >= 0.0 && v < f32(limit) && floor(v) == v) {
        return u32(v);
    }
    return BAD_INDEX;
}

const GELU_C2: f32 = 1.5957691216057308; // 2 sqrt(2/pi)
const GELU_A: f32 = 0.044715;

// Stable both ways: exp(-|v|) never overflows.
fn sigmoid(v: f32) -> f32 {
    let e = exp(-abs(v));
    let r = 1.0 / (1.0 + e);
    return select(r, e * r, v < 0.0);
}

// The Unary kernel's op (0 relu, 1 gelu, 2 sigmoid), shared with the fused bias kernels.
fn activation(op: u32, v: f32) -> f32 {
    switch op {
        // `v < 0 -> 0` keeps NaN as NaN, like torch.relu.
        case 0u: { return select(v, 0.0, v < 0.0); }
        // 1/2 (1 + tanh u) = sigmoid(2u): one exp, no cancellation for very negative v.
        case 1u: { return v / (1.0 + exp(-(GELU_C2 * (v + GELU_A * v * v * v)))); }
        default: { return sigmoid(v); }
    }
}
