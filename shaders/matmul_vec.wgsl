// matmul_rows with 16-byte loads: the decode matmul (few rows, B*L) when K is a multiple of 8.
// y[r][o] (+)= sum_k x[r][k] * W[o][k] (+ bias[o]); same bindings, parameters and results as
// matmul.wgsl's matmul_rows, but every weight load is one vec4<u32> (8 f16 weights, or 4 f32) and
// every activation load one vec4<f32>, so a thread issues a quarter of the loads and the address
// arithmetic, and consecutive lanes of an output read consecutive 16-byte chunks (LANES lanes
// read LANES * 16 contiguous bytes of the weight row per step).
// Defines: K (a multiple of 8), O, W_F16, ROWS_FROM_LOGITS, NORM, GLU, LANES and SUBGROUPS
// (matmul_common).
// GLU: the weight rows are (gate, up) pairs (row 2j = gate_j, row 2j + 1 = up_j; O = 2F) and the
// kernel writes SwiGLU's output y[r][out_offset + j] = silu(gate) * up (row stride YS; no bias, no accumulate)
// instead of the product: each lane group computes both rows of its pair, so the pair meets in
// registers, and the swiglu dispatch and the [R, 2F] round trip are not needed in decode passes.
// NORM: the input is RMSNorm(x; nw) computed here (x = the raw hidden rows, and with
// ROWS_FROM_LOGITS the rows from pass.logit_row0 on): y = inv_rms(x_r) * sum_k (W[o][k] nw[k])
// x[r][k]. Each lane sums the squares of the activations it loads for its dot products anyway,
// and the lanes' sums are reduced with the products: the row statistics cost no extra load and
// no barrier, and the separate RMSNorm dispatch and its output buffer are not needed.
// Each weight chunk is read once per block of RB rows (cross-loop parallelism: one pass over the
// weights serves all L loops of a decode step when B*L <= RB).

// #include matmul_common

@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;       // [R, K/4]
@group(0) @binding(3) var<storage, read> w: array<vec4<u32>>;       // [O, K/8] f16 pairs, or [O, K/4] f32 bits
@group(0) @binding(6) var<storage, read> nw: array<vec4<f32>>;      // [K/4] RMSNorm weight (NORM)

// Weights per 16-byte chunk, chunks per weight row, vec4s per activation row.
const CW: u32 = select(4u, 8u, W_F16);
const KC: u32 = K / CW;
const K4: u32 = K / 4u;

// The chunk as two vec4s of weights (the second is zero for f32).
struct Chunk {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// Weight chunk c of row `row` (element offset wrow + c); with NORM, times the norm weights.
fn chunk(i: u32, c: u32) -> Chunk {
    let q = w[i];
    var ch: Chunk;
    if (W_F16) {
        let a = unpack2x16float(q.x);
        let b = unpack2x16float(q.y);
        let cc = unpack2x16float(q.z);
        let d = unpack2x16float(q.w);
        ch = Chunk(vec4<f32>(a, b), vec4<f32>(cc, d));
    } else {
        ch = Chunk(bitcast<vec4<f32>>(q), vec4<f32>(0.0));
    }
    if (NORM) {
        if (W_F16) {
            ch.lo *= nw[2u * c];
            ch.hi *= nw[2u * c + 1u];
        } else {
            ch.lo *= nw[c];
        }
    }
    return ch;
}

// The x row of pass row r: with NORM and ROWS_FROM_LOGITS, the raw hidden rows from logit_row0.
fn xrow(r: u32) -> u32 {
    if (NORM && ROWS_FROM_LOGITS) {
        return pass_.logit_row0 + r;
    }
    return r;
}

// Chunk c of weight row times the same k range of activation row r (.x), and with NORM the
// activations' sum of squares over that range (.y): the lanes of an output together cover every
// chunk of the row, so their reduced sums are the row's statistics, with no extra loads.
fn dot_chunk(wc: Chunk, r: u32, c: u32) -> vec2<f32> {
    if (W_F16) {
        let base = xrow(r) * K4 + 2u * c;
        let x0 = x[base];
        let x1 = x[base + 1u];
        var ss = 0.0;
        if (NORM) {
            ss = dot(x0, x0) + dot(x1, x1);
        }
        return vec2<f32>(dot(wc.lo, x0) + dot(wc.hi, x1), ss);
    }
    let x0 = x[xrow(r) * K4 + c];
    var ss = 0.0;
    if (NORM) {
        ss = dot(x0, x0);
    }
    return vec2<f32>(dot(wc.lo, x0), ss);
}

@compute @workgroup_size(256)
fn matmul_rows_vec(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) tid: u32) {
    let rows = num_rows();
    // Output o of this lane group (with GLU: pair o, weight rows 2o and 2o + 1).
    let outs = select(O, O / 2u, GLU);
    let o = group_index(wid, nwg) * NO + tid / LANES;
    let lane = tid % LANES;
    let live = o < outs;
    let wrow = select(1u, 2u, GLU) * min(o, outs - 1u) * KC;
    for (var rb = 0u; rb < rows; rb += RB) {
        var a = vec4<f32>(0.0);
        var b = vec4<f32>(0.0);  // GLU: the up row's sums
        var ss = vec4<f32>(0.0); // NORM: the rows' sums of squares
        let n = min(RB, rows - rb);
        if (live) {
            for (var c = lane; c < KC; c += LANES) {
                let wc = chunk(wrow + c, c);
                let d0 = dot_chunk(wc, rb, c);
                a.x += d0.x;
                ss.x += d0.y;
                if (n > 1u) { let d = dot_chunk(wc, rb + 1u, c); a.y += d.x; ss.y += d.y; }
                if (n > 2u) { let d = dot_chunk(wc, rb + 2u, c); a.z += d.x; ss.z += d.y; }
                if (n > 3u) { let d = dot_chunk(wc, rb + 3u, c); a.w += d.x; ss.w += d.y; }
                if (GLU) {
                    let wu = chunk(wrow + KC + c, c);
                    b.x += dot_chunk(wu, rb, c).x;
                    if (n > 1u) { b.y += dot_chunk(wu, rb + 1u, c).x; }
                    if (n > 2u) { b.z += dot_chunk(wu, rb + 2u, c).x; }
                    if (n > 3u) { b.w += dot_chunk(wu, rb + 3u, c).x; }
                }
            }
        }
        // NORM: y = inv_rms(x_r) * sum_k (W nw)[k] x[k], inv_rms from the reduced sums of squares.
        var scale = vec4<f32>(1.0);
        if (NORM) {
            scale = inverseSqrt(reduce(tid, ss) / f32(K) + vec4<f32>(EPS));
        }
        if (GLU) {
            let g = reduce(tid, a) * scale;
            let u = reduce(tid, b) * scale;
            if (live && lane < n) {
                let gl = g[lane];
                y[(rb + lane) * YS + params.out_offset + o] = gl / (1.0 + exp(-gl)) * u[lane];
            }
        } else {
            reduce_store(tid, live, o, rb, n, a, scale);
        }
    }
}
