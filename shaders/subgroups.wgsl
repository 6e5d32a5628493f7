// The subgroup probe (run once by Gpu::new when the adapter has the `subgroups` feature): the
// decode matmuls' shuffle reduction assumes that subgroups are runs of consecutive invocations
// (subgroup invocation id = local index mod subgroup size) and that xor shuffles by 1, 2, .., 16
// (those smaller than the subgroup) reach the neighbours they name. Each invocation writes the
// subgroup size when both hold for it, else 0.
enable subgroups;

@group(0) @binding(0) var<storage, read_write> probe: array<u32>; // [256]

@compute @workgroup_size(256)
fn subgroup_probe(@builtin(local_invocation_index) tid: u32,
                  @builtin(subgroup_invocation_id) inv: u32,
                  @builtin(subgroup_size) size: u32) {
    var ok = inv == tid % size;
    // Every xor mask the reductions use (up to 16, for 32 lanes per output) that fits the subgroup.
    for (var m = 1u; m <= 16u; m <<= 1u) {
        let x = subgroupShuffleXor(tid, m);
        ok = ok && (m >= size || x == (tid ^ m));
    }
    probe[tid] = select(0u, size, ok);
}
