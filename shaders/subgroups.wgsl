// The subgroup probe (run once by Gpu::new when the adapter has the `subgroups` feature): the
// decode matmuls' shuffle reduction assumes that subgroups are runs of consecutive invocations
// (subgroup invocation id = local index mod subgroup size) and that xor shuffles within 8 lanes
// reach the neighbours they name. Each invocation writes the subgroup size when both hold for
// it, else 0.
enable subgroups;

@group(0) @binding(0) var<storage, read_write> probe: array<u32>; // [256]

@compute @workgroup_size(256)
fn subgroup_probe(@builtin(local_invocation_index) tid: u32,
                  @builtin(subgroup_invocation_id) inv: u32,
                  @builtin(subgroup_size) size: u32) {
    let x1 = subgroupShuffleXor(tid, 1u);
    let x2 = subgroupShuffleXor(tid, 2u);
    let x4 = subgroupShuffleXor(tid, 4u);
    let ok = inv == tid % size && x1 == (tid ^ 1u) && x2 == (tid ^ 2u) && x4 == (tid ^ 4u);
    probe[tid] = select(0u, size, ok);
}
