// Embedding gather and the cross-loop input (PLT-SPEC s3, s5):
//   loop 0:   X_r = E[x_t]
//   loop l>0: X_r = a * E[x_t] + b * C   (C = a carried state row of cbuf)
// Defines: D, W_F16, QFMT (embedding storage: f32 bits, packed f16, or quantised records read
// row by row, quant.wgsl; D a multiple of the block size, 32 or 256, then), V0 and VN: the bound
// table holds rows V0 .. V0 + VN of the embedding (one part of a table split to fit the binding
// limit; one dispatch per part, each writing the rows whose token it holds). Grid: (ceil(D/64), R).

// #include quant

@group(0) @binding(0) var<storage, read> rows: array<Row>;
@group(0) @binding(1) var<storage, read> emb: array<u32>;       // [VN, D] (f32 bits, packed f16 or records)
@group(0) @binding(2) var<storage, read> cbuf: array<f32>;      // [*, D] carried states
@group(0) @binding(3) var<storage, read_write> x: array<f32>;   // [R, D]

fn qword(i: u32) -> u32 {
    return emb[i];
}

fn emb_at(i: u32) -> f32 {
    if (QFMT != 0u) {
        return q_at(i / D, i % D, D);
    }
    if (W_F16) {
        return f16_at(emb[i >> 1u], i & 1u);
    }
    return bitcast<f32>(emb[i]);
}

@compute @workgroup_size(64)
fn embed_input(@builtin(global_invocation_id) gid: vec3<u32>) {
    let d = gid.x;
    let r = gid.y;
    if (d >= D) {
        return;
    }
    let row = rows[r];
    if (row.token < V0 || row.token - V0 >= VN) {
        return; // another part's row
    }
    var v = row.e_scale * emb_at((row.token - V0) * D + d);
    // Loop 0 rows have no carried input; never read it (it may hold anything).
    if (row.csrc != NONE) {
        v += row.c_scale * cbuf[row.csrc * D + d];
    }
    x[r * D + d] = v;
}
