// Shared helpers, prepended to every kernel (after the host's `const` defines).
// Weight matrices are bound as array<u32>: f32 values are bit patterns (W_F16 = false),
// f16 values are packed two per word, element 2i in the low half (W_F16 = true).
// This needs no `shader-f16` feature, so it runs on every adapter, including browsers'.

const NONE: u32 = 0xffffffffu;

// Per-row metadata of one pass (see src/model/plan.rs `Row`, where each field is documented). One row = one (sequence, loop, position).
struct Row {
    pos: u32,        // absolute position t (RoPE, cache slot)
    lp: u32,         // loop l
    seq: u32,        // sequence slot b
    token: u32,      // token id x_t
    kv_slot: u32,    // full-cache region this row's K/V is written to (NONE: no write)
    attn_slot: u32,  // full-cache region this row attends to causally (positions 0..=t)
    ring: u32,       // ring buffer of this row's loop (NONE: no local branch, no gate)
    fresh: u32,      // positions t, t-1, .. t-fresh+1 of this loop are rows r, r-1, .. of this pass
    ring_write: u32, // 1: store this row's K/V in its ring after attention
    csrc: u32,       // carried-state row (cbuf) of the cross-loop input, NONE for loop 0
    cdst: u32,       // cbuf row that receives Norm(h) after the last layer (NONE: none)
    e_scale: f32,    // a (1 for loop 0)
    c_scale: f32,    // b (0 for loop 0)
    gnext: u32,      // next row of this row's attention group (0: none; see attention.wgsl)
    gfollow: u32,    // 1: an earlier row's workgroup attends for this row
    _p2: u32,
}

// Per-pass values, copied in before each pass (see src/model/plan.rs `PassInfo`).
struct Pass {
    rows: u32,        // rows in this pass
    logit_row0: u32,  // first row whose logits are wanted
    logit_rows: u32,  // how many
    seq0: u32,        // sequence of the first logit row (sampling: row i is sequence seq0 + i)
}

fn f16_at(word: u32, hi: u32) -> f32 {
    let v = unpack2x16float(word);
    return select(v.x, v.y, hi == 1u);
}

// Linear workgroup index of a grid that the host may have split over x and y (65535 limit).
fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}
