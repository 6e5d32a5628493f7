// RoPE (Hugging Face rotate_half convention, PLT-SPEC s2) on q and k of every row, then the
// row's K/V written into its full cache slot (loop 0 in PLT mode, every loop in vanilla mode).
// Defines: H, HKV, DH, THETA, TMAX, SLOTS. Grid: (R).
//
// qkv row layout: [q: H*DH | k: HKV*DH | v: HKV*DH]; the k heads directly follow the q heads,
// so "head" hh < H+HKV indexes both. Cache layout per layer: [2 (K,V)][SLOTS][TMAX][HKV*DH].

@group(0) @binding(0) var<storage, read> rows: array<Row>;
@group(0) @binding(1) var<storage, read_write> qkv: array<f32>;  // [R, (H+2HKV)*DH]
@group(0) @binding(2) var<storage, read_write> kv: array<f32>;   // [2][SLOTS][TMAX][HKV*DH]

const QD: u32 = H * DH;
const KVD: u32 = HKV * DH;
const QKVD: u32 = QD + 2u * KVD;
const HALF: u32 = DH / 2u;

@compute @workgroup_size(64)
fn rope_store(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let r = wid.x;
    let row = rows[r];
    let base = r * QKVD;
    let cache_k = (row.kv_slot * TMAX + row.pos) * KVD;
    let cache_v = ((SLOTS + row.kv_slot) * TMAX + row.pos) * KVD;
    for (var i = tid; i < (H + HKV) * HALF; i += 64u) {
        let hh = i / HALF;
        let j = i % HALF;
        // inv_freq[j] = theta^(-2j/Dh)
        let inv_freq = pow(THETA, -2.0 * f32(j) / f32(DH));
        let ang = f32(row.pos) * inv_freq;
        let c = cos(ang);
        let s = sin(ang);
        let a = base + hh * DH + j;
        let x0 = qkv[a];
        let x1 = qkv[a + HALF];
        let y0 = x0 * c - x1 * s;
        let y1 = x1 * c + x0 * s;
        qkv[a] = y0;
        qkv[a + HALF] = y1;
        if (hh >= H && row.kv_slot != NONE) {
            let kk = (hh - H) * DH + j;
            kv[cache_k + kk] = y0;
            kv[cache_k + kk + HALF] = y1;
        }
    }
    if (row.kv_slot != NONE) {
        for (var i = tid; i < KVD; i += 64u) {
            kv[cache_v + i] = qkv[base + QD + KVD + i];
        }
    }
}

// A PLT loop l >= 1 row's K/V into its ring buffer slot (pos mod W), after attention has read
// the ring. Ring layout per layer: [2 (K,V)][RINGS][W][HKV*DH]. Defines also W, RINGS.
@group(0) @binding(3) var<storage, read_write> ring: array<f32>;

@compute @workgroup_size(64)
fn ring_store(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let r = wid.x;
    let row = rows[r];
    if (row.ring_write == 0u) {
        return;
    }
    let slot = row.pos % W;
    let dk = (row.ring * W + slot) * KVD;
    let dv = ((RINGS + row.ring) * W + slot) * KVD;
    for (var i = tid; i < KVD; i += 64u) {
        ring[dk + i] = qkv[r * QKVD + QD + i];
        ring[dv + i] = qkv[r * QKVD + QD + KVD + i];
    }
}
