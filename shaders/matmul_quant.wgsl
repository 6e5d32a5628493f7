// The row-sharing decode matmul for quantised weights (QFMT 1..8; records in quant.wgsl and
// src/format.rs): y[r][o] (+)= sum_k x[r][k] * W[o][k] (+ bias[o]), same bindings, parameters
// and results as matmul.wgsl's matmul_rows. K is a multiple of the block size QB (32, or 256
// for the K-quants); a weight row is K/QB blocks (q_row_words words).
// Defines: K, O, QFMT, ROWS_FROM_LOGITS, LANES, SUBGROUPS (matmul_common).
// LANES lanes per output split the row into units of 8 weights (QU per record, quant.wgsl: lane
// l takes units l, l + LANES, ..); each unit is decoded once and applied to every row of the pass (up to
// MAXR = the host's ROW_SHARING_MAX, accumulated in registers), so each weight block is read and
// dequantised once for all B*L rows; the sums meet once per block of RB rows (`reduce`).
// The folded norm (NORM) and the SwiGLU epilogue (GLU) are options of the float kernels only.

// #include matmul_common
// #include quant

@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;  // [R, K/4]
@group(0) @binding(3) var<storage, read> w: array<u32>;        // [O] rows of q_row_words(K/QB) words

fn qword(i: u32) -> u32 {
    return w[i];
}

const NB: u32 = K / QB;  // blocks per weight row
const NU: u32 = NB * QU;  // units per weight row
const K4: u32 = K / 4u;
const MAXR: u32 = 16u;

@compute @workgroup_size(256)
fn matmul_rows_q(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) tid: u32) {
    let rows = min(num_rows(), MAXR);
    let o = group_index(wid, nwg) * NO + tid / LANES;
    let lane = tid % LANES;
    let live = o < O;
    let wrow = min(o, O - 1u) * q_row_words(NB);
    var acc: array<f32, 16>;
    if (live) {
        for (var u = lane; u < NU; u += LANES) {
            let blk = u / QU;
            let s = u % QU;
            let c = q_unit(wrow, NB, blk, s);
            let xb = blk * (QB / 4u) + q_lo(s);  // vec4 of the unit's .lo weights; + QHI: .hi
            for (var r = 0u; r < rows; r++) {
                let xi = r * K4 + xb;
                acc[r] += dot(c.lo, x[xi]) + dot(c.hi, x[xi + QHI]);
            }
        }
    }
    for (var rb = 0u; rb < rows; rb += RB) {
        let n = min(RB, rows - rb);
        let a = vec4<f32>(acc[rb], acc[min(rb + 1u, 15u)], acc[min(rb + 2u, 15u)], acc[min(rb + 3u, 15u)]);
        reduce_store(tid, live, o, rb, n, a, vec4<f32>(1.0));
    }
}
