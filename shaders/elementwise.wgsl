// Element-wise ops. Defines: F (MLP width). Grid: (ceil(F/64), R).

@group(0) @binding(0) var<storage, read> gu: array<f32>;        // [R, 2F]: (gate_j, up_j) pairs
@group(0) @binding(1) var<storage, read_write> act: array<f32>; // [R, F]

// SwiGLU: act = silu(gate) * up, silu(x) = x * sigmoid(x). The gate_up matmul's output pairs
// are interleaved (its weight rows are; see matmul_vec.wgsl GLU); prefill passes use this
// kernel, decode passes the matmul's GLU epilogue.
@compute @workgroup_size(64)
fn swiglu(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let r = gid.y;
    if (j >= F) {
        return;
    }
    let g = gu[r * 2u * F + 2u * j];
    let u = gu[r * 2u * F + 2u * j + 1u];
    act[r * F + j] = g / (1.0 + exp(-g)) * u;
}
