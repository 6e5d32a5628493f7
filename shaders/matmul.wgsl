// Linear layers: y[r][o] (+)= sum_k x[r][k] * W[o][k] (+ bias[o]), W row-major [O, K].
// `accumulate` fuses the residual add (h = h + W x) into the product.
// Defines: K, O, W_F16, QFMT (quantised records, quant.wgsl: the tiled kernel dequantises into
// its tile; the row-sharing path for them is matmul_quant.wgsl), ROWS_FROM_LOGITS (rows = pass.logit_rows instead of pass.rows),
// LANES, SUBGROUPS (matmul_rows: lanes per output, reduction by subgroup shuffles; see
// matmul_common.wgsl).
// Two entry points, one per regime:
//   matmul_tiled: many rows (prefill): 64x64 output tiles in workgroup memory, 4x4 per thread.
//   matmul_rows:  few rows (decode, B*L rows): each weight element is read once and used for
//                 every row of the pass (cross-loop parallelism is this sharing).

// #include matmul_common
// #include quant

@group(0) @binding(2) var<storage, read> x: array<f32>;       // [R, K]
@group(0) @binding(3) var<storage, read> w: array<u32>;       // [O, K], f32 bits, packed f16 or records

fn qword(i: u32) -> u32 {
    return w[i];
}

fn w_at(i: u32) -> f32 {
    if (QFMT != 0u) {
        return q_at(i / K, i % K, K);
    }
    if (W_F16) {
        return f16_at(w[i >> 1u], i & 1u);
    }
    return bitcast<f32>(w[i]);
}

const TM: u32 = 64u;  // rows per tile
const TN: u32 = 64u;  // outputs per tile
const TK: u32 = 16u;
var<workgroup> xs: array<f32, 1024>;  // [TK][TM]
var<workgroup> ws: array<f32, 1024>;  // [TK][TN]

@compute @workgroup_size(256)
fn matmul_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let rows = num_rows();
    let o0 = wid.x * TN;
    let r0 = wid.y * TM;
    let tx = tid % 16u;  // output columns tx*4 ..
    let ty = tid / 16u;  // rows ty*4 ..
    var acc: array<array<f32, 4>, 4>;
    for (var k0 = 0u; k0 < K; k0 += TK) {
        // Load a [TM x TK] tile of x and a [TN x TK] tile of W (4 elements per thread each).
        for (var i = 0u; i < 4u; i++) {
            let e = tid + i * 256u;
            let kk = e % TK;
            let mm = e / TK;
            let k = k0 + kk;
            var xv = 0.0;
            if (r0 + mm < rows && k < K) {
                xv = x[(r0 + mm) * K + k];
            }
            xs[kk * TM + mm] = xv;
            var wv = 0.0;
            if (o0 + mm < O && k < K) {
                wv = w_at((o0 + mm) * K + k);
            }
            ws[kk * TN + mm] = wv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = xs[kk * TM + ty * 4u + i];
                b[i] = ws[kk * TN + tx * 4u + i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] += a[i] * b[j];
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let r = r0 + ty * 4u + i;
        for (var j = 0u; j < 4u; j++) {
            let o = o0 + tx * 4u + j;
            if (r < rows && o < O) {
                store(r, o, acc[i][j]);
            }
        }
    }
}

// matmul_rows: 256 / LANES outputs per workgroup, LANES lanes per output splitting K (lane l
// reads k = l, l+LANES, ...: the lanes of an output read consecutive weights), all rows of a
// block of RB rows per weight read (matmul_common). Partial sums meet once per block (`reduce`).
@compute @workgroup_size(256)
fn matmul_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) tid: u32) {
    let rows = num_rows();
    let o = group_index(wid, nwg) * NO + tid / LANES;
    let lane = tid % LANES;
    let live = o < O;
    let wrow = min(o, O - 1u) * K;
    for (var rb = 0u; rb < rows; rb += RB) {
        var a0 = 0.0;
        var a1 = 0.0;
        var a2 = 0.0;
        var a3 = 0.0;
        let n = min(RB, rows - rb);
        if (live) {
            for (var k = lane; k < K; k += LANES) {
                let wv = w_at(wrow + k);
                let xb = rb * K + k;
                a0 += wv * x[xb];
                if (n > 1u) { a1 += wv * x[xb + K]; }
                if (n > 2u) { a2 += wv * x[xb + 2u * K]; }
                if (n > 3u) { a3 += wv * x[xb + 3u * K]; }
            }
        }
        reduce_store(tid, live, o, rb, n, vec4<f32>(a0, a1, a2, a3), vec4<f32>(1.0));
    }
}
