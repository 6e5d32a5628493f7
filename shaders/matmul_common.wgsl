// Shared by matmul.wgsl and matmul_vec.wgsl (`// #include matmul_common`): parameters, the
// bindings both use the same way, the row count, the epilogue (bias, residual add), and the
// row-sharing kernels' layout and reduction (subgroup shuffles with SUBGROUPS, else workgroup
// memory).
// Output columns: W may be one part of a larger matrix (a window past the binding limit, or one
// format of a fused matrix whose tensors differ): its row o computes column
// c = params.out_offset + o * YSTEP of y, whose rows are YS long; the bias is indexed by c. (A
// whole matrix: offset 0, YSTEP = 1, YS = O.)

struct Params {
    accumulate: u32,
    has_bias: u32,
    out_offset: u32, // Y0 below
    _p1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> pass_: Pass;
@group(0) @binding(4) var<storage, read> bias: array<f32>;    // [YS] (a dummy when absent)
@group(0) @binding(5) var<storage, read_write> y: array<f32>; // [R, YS]

fn num_rows() -> u32 {
    if (ROWS_FROM_LOGITS) {
        return pass_.logit_rows;
    }
    return pass_.rows;
}

fn store(r: u32, o: u32, v: f32) {
    let c = params.out_offset + o * YSTEP;
    var acc = v;
    if (params.has_bias == 1u) {
        acc += bias[c];
    }
    let i = r * YS + c;
    if (params.accumulate == 1u) {
        acc += y[i];
    }
    y[i] = acc;
}

// Row-sharing kernels: LANES (a define: 8, 16 or 32) threads per output splitting K, 256 / LANES
// outputs per workgroup, all rows of a block of RB rows per weight read. Few lanes per output
// suit large O (and CPU adapters); many give a small O more workgroups (host: `decode_lanes`).
const RB: u32 = 4u;             // rows per register block
const NO: u32 = 256u / LANES;   // outputs per workgroup
var<workgroup> red: array<f32, 1024>;  // [RB][NO * LANES]

// #if SUBGROUPS
enable subgroups;

// The lanes' partial sums `a` (rows rb .. rb+3) meet by subgroup shuffles: the LANES lanes of
// an output are neighbouring invocations of one subgroup (the host uses this path only when
// Gpu::new's probe saw subgroups of at least LANES consecutive invocations), so a butterfly
// over xor LANES/2, .., 2, 1 leaves every lane the four totals, with no workgroup memory and no
// barrier. All threads call it (uniformly); lane i needs element i.
fn reduce(tid: u32, a: vec4<f32>) -> vec4<f32> {
    var s = a;
    if (LANES > 16u) {
        s += subgroupShuffleXor(s, 16u);
    }
    if (LANES > 8u) {
        s += subgroupShuffleXor(s, 8u);
    }
    s += subgroupShuffleXor(s, 4u);
    s += subgroupShuffleXor(s, 2u);
    s += subgroupShuffleXor(s, 1u);
    return s;
}
// #else
// The lanes' partial sums `a` (rows rb .. rb+3) meet in workgroup memory; lane i < 4 of each
// output gets row i's total as element i. All threads call it.
fn reduce(tid: u32, a: vec4<f32>) -> vec4<f32> {
    red[tid] = a.x;
    red[256u + tid] = a.y;
    red[512u + tid] = a.z;
    red[768u + tid] = a.w;
    workgroupBarrier();
    let lane = tid % LANES;
    var t = vec4<f32>(0.0);
    if (lane < RB) {
        let base = lane * 256u + (tid - lane);
        var sum = 0.0;
        for (var l = 0u; l < LANES; l++) {
            sum += red[base + l];
        }
        t[lane] = sum;
    }
    workgroupBarrier();
    return t;
}
// #endif

// Lane i of each output stores row rb + i (if i < n): its total times scale[i].
fn reduce_store(tid: u32, live: bool, o: u32, rb: u32, n: u32, a: vec4<f32>, scale: vec4<f32>) {
    let t = reduce(tid, a);
    let lane = tid % LANES;
    if (live && lane < n) {
        store(rb + lane, o, t[lane] * scale[lane]);
    }
}
