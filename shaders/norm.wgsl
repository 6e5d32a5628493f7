// RMSNorm family: `RMSNorm(x; w) = x / sqrt(mean(x^2) + eps) * w`, statistics in f32.
// Defines: D (row width), EPS, WG (threads per row).

struct Params {
    apply: u32,   // norm_carry only: 1 = RMSNorm with model.norm, 0 = identity (plt_normalize_per_loop off)
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> pass_: Pass;
@group(0) @binding(2) var<storage, read> rows: array<Row>;
@group(0) @binding(3) var<storage, read> x: array<f32>;        // [R, D]
@group(0) @binding(4) var<storage, read> w: array<f32>;        // [D]
@group(0) @binding(5) var<storage, read_write> out: array<f32>; // [R, D] or cbuf rows

// #include reduce

// Writes RMSNorm(x[src]) * w (or a copy when `apply` is false) into out[dst]; all threads call it.
fn norm_row(src: u32, dst: u32, tid: u32, apply: bool) {
    var ss = 0.0;
    for (var d = tid; d < D; d += WG) {
        let v = x[src * D + d];
        ss += v * v;
    }
    let inv = inverseSqrt(wg_sum(tid, ss) / f32(D) + EPS);
    for (var d = tid; d < D; d += WG) {
        if (apply) {
            out[dst * D + d] = x[src * D + d] * inv * w[d];
        } else {
            out[dst * D + d] = x[src * D + d];
        }
    }
}

// out[r] = RMSNorm(x[r]); one workgroup per row.
@compute @workgroup_size(WG)
fn rmsnorm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    norm_row(wid.x, wid.x, tid, true);
}

// out[r] = RMSNorm(x[logit_row0 + r]): the final norm of the rows whose logits are wanted.
@compute @workgroup_size(WG)
fn rmsnorm_logits(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    norm_row(pass_.logit_row0 + wid.x, wid.x, tid, true);
}

var<workgroup> dst_shared: u32;

// cbuf[rows[r].cdst] = Norm(h[r]): the carried state C^{l+1} for the next loop (PLT-SPEC s5).
@compute @workgroup_size(WG)
fn norm_carry(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    if (tid == 0u) {
        dst_shared = rows[wid.x].cdst;
    }
    let dst = workgroupUniformLoad(&dst_shared);
    if (dst == NONE) {
        return;
    }
    norm_row(wid.x, dst, tid, params.apply == 1u);
}
