// The u32 sum of reduce.wgsl's reductions (same contract), with its own scratch `red_u`.
var<workgroup> red_u: array<u32, WG>;

fn wg_sum_u32(tid: u32, v: u32) -> u32 {
    red_u[tid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (tid < s) {
            red_u[tid] += red_u[tid + s];
        }
        workgroupBarrier();
    }
    let r = red_u[0];
    workgroupBarrier();
    return r;
}
