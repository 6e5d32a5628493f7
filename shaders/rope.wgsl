// RoPE (Hugging Face rotate_half convention, PLT-SPEC s2) on q and k of every row, then the
// row's K/V written into its full cache slot (loop 0 in PLT mode, every loop in vanilla mode).
// Defines: H, HKV, DH, TMAX, SLOTS, KV_F16. Grid: (R). The angles' cosines and sines come from a
// table computed on the host in f64 (`kernels::rope_table`), not from the device's pow/cos/sin.
//
// qkv row layout: [q: H*DH | k: HKV*DH | v: HKV*DH]; the k heads directly follow the q heads,
// so "head" hh < H+HKV indexes both. Cache layout per layer: [2 (K,V)][SLOTS][TMAX][HKV*DH]
// elements, f32 (bit patterns in u32 words) or, with KV_F16, f16 packed two per word (element
// 2i in the low half; DH is even, so a pair never straddles two heads or positions).

@group(0) @binding(0) var<storage, read> rows: array<Row>;
@group(0) @binding(1) var<storage, read_write> qkv: array<f32>;  // [R, (H+2HKV)*DH]
@group(0) @binding(2) var<storage, read_write> kv: array<u32>;   // [2][SLOTS][TMAX][HKV*DH]
@group(0) @binding(4) var<storage, read> rope: array<vec2<f32>>; // [TMAX][DH/2] (cos, sin)

const QD: u32 = H * DH;
const KVD: u32 = HKV * DH;
const QKVD: u32 = QD + 2u * KVD;
const HALF: u32 = DH / 2u;

// Elements src..src+n of qkv (n even) into a cache/ring array at element dst (even), by pairs.
fn store_pairs_kv(dst: u32, src: u32, n: u32, tid: u32) {
    for (var i = tid; i < n / 2u; i += 64u) {
        let a = qkv[src + 2u * i];
        let b = qkv[src + 2u * i + 1u];
        if (KV_F16) {
            kv[dst / 2u + i] = pack2x16float(vec2<f32>(a, b));
        } else {
            kv[dst + 2u * i] = bitcast<u32>(a);
            kv[dst + 2u * i + 1u] = bitcast<u32>(b);
        }
    }
}

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
        let cs = rope[row.pos * HALF + j];
        let c = cs.x;
        let s = cs.y;
        let a = base + hh * DH + j;
        let x0 = qkv[a];
        let x1 = qkv[a + HALF];
        let y0 = x0 * c - x1 * s;
        let y1 = x1 * c + x0 * s;
        qkv[a] = y0;
        qkv[a + HALF] = y1;
    }
    // The rotated K (written by other threads of this workgroup) and V into the cache.
    storageBarrier();
    if (row.kv_slot != NONE) {
        store_pairs_kv(cache_k, base + QD, KVD, tid);
        store_pairs_kv(cache_v, base + QD + KVD, KVD, tid);
    }
}

// A PLT loop l >= 1 row's K/V into its ring buffer slot (pos mod W), after attention has read
// the ring. Ring layout per layer: [2 (K,V)][RINGS][W][HKV*DH], stored like the cache.
// Defines also W, RINGS.
@group(0) @binding(3) var<storage, read_write> ring: array<u32>;

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
    let src = r * QKVD + QD;
    for (var i = tid; i < KVD / 2u; i += 64u) {
        let a = qkv[src + 2u * i];
        let b = qkv[src + 2u * i + 1u];
        let c = qkv[src + KVD + 2u * i];
        let d = qkv[src + KVD + 2u * i + 1u];
        if (KV_F16) {
            ring[dk / 2u + i] = pack2x16float(vec2<f32>(a, b));
            ring[dv / 2u + i] = pack2x16float(vec2<f32>(c, d));
        } else {
            ring[dk + 2u * i] = bitcast<u32>(a);
            ring[dk + 2u * i + 1u] = bitcast<u32>(b);
            ring[dv + 2u * i] = bitcast<u32>(c);
            ring[dv + 2u * i + 1u] = bitcast<u32>(d);
        }
    }
}
