// Attention for one pass, one workgroup per (row, query head) (PLT-SPEC s3):
//   causal rows (loop 0; every loop in vanilla mode):  o = Attn(q; K, V, {0..t}) over the row's
//       full cache slot;
//   PLT rows (loop l >= 1): the fused gated sliding-window attention
//       G = Attn(q; K0, V0, {0..t})                  global: the shared loop-0 cache
//       S = Attn(q; Kl, Vl, {max(0,t-left)..t})      local: this loop's own K/V
//       o = g * G + (1 - g) * S,  g = the per-head gate (query or hidden-state mode).
// The local keys of positions written in this pass come from the qkv scratch (rows r, r-1, ..),
// older ones from the loop's ring buffer; the ring is updated after this kernel (ring_store).
// Defines: H, HKV, DH, D, TMAX, SLOTS, W, RINGS, GATE_MODE (0 none, 1 query, 2 hidden), EPS.
// Grid: (R, H).

const WG: u32 = 64u;
const QD: u32 = H * DH;
const KVD: u32 = HKV * DH;
const QKVD: u32 = QD + 2u * KVD;
const ACC: u32 = (DH + WG - 1u) / WG;   // output dims per thread
const NEG: f32 = -3.0e38;
const GW: u32 = select(DH, D, GATE_MODE == 2u);  // gate weight row width

@group(0) @binding(0) var<storage, read> rows: array<Row>;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;     // [R, QKVD], q and k after RoPE
@group(0) @binding(2) var<storage, read> kv: array<f32>;      // [2][SLOTS][TMAX][KVD]
@group(0) @binding(3) var<storage, read> ring: array<f32>;    // [2][RINGS][W][KVD]
@group(0) @binding(4) var<storage, read> gate: array<f32>;    // [H*GW] weight | [H] bias | [D] gate_norm
@group(0) @binding(5) var<storage, read> hidden: array<f32>;  // [R, D] layer input (hidden gate)
@group(0) @binding(6) var<storage, read_write> out: array<f32>; // [R, QD]

var<workgroup> sq: array<f32, DH>;    // the query head
var<workgroup> sp: array<f32, WG>;    // scores, then probabilities, of one key tile
var<workgroup> red: array<f32, WG>;
var<workgroup> row_sh: Row;

struct Acc {
    o: array<f32, ACC>,
}

fn reduce_max(tid: u32, v: f32) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (tid < s) {
            red[tid] = max(red[tid], red[tid + s]);
        }
        workgroupBarrier();
    }
    let m = red[0];
    workgroupBarrier();
    return m;
}

fn reduce_sum(tid: u32, v: f32) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (tid < s) {
            red[tid] += red[tid + s];
        }
        workgroupBarrier();
    }
    let m = red[0];
    workgroupBarrier();
    return m;
}

// Offset of key (value: +KVD... see below) element 0 of kv head `kvh` at position s.
// local == false: the full cache slot `slot`; local == true: this row's loop, ring or scratch.
fn key_base(local: bool, r: u32, pos: u32, fresh: u32, slot: u32, s: u32, kvh: u32, value: bool) -> u32 {
    if (!local) {
        let part = select(0u, SLOTS, value);
        return ((part + slot) * TMAX + s) * KVD + kvh * DH;
    }
    if (pos - s < fresh) {
        let rr = r - (pos - s);
        return rr * QKVD + QD + select(0u, KVD, value) + kvh * DH;
    }
    let part = select(0u, RINGS, value);
    return ((part + slot) * W + s % W) * KVD + kvh * DH;
}

fn load(local: bool, fresh_hit: bool, i: u32) -> f32 {
    if (!local) {
        return kv[i];
    }
    if (fresh_hit) {
        return qkv[i];
    }
    return ring[i];
}

// Online-softmax attention of the workgroup's query over positions lo..=hi, one tile of WG
// keys at a time. Returns this thread's output dims d = tid + j*WG.
fn attend(local: bool, r: u32, pos: u32, fresh: u32, slot: u32, kvh: u32, lo: u32, hi: u32, tid: u32) -> Acc {
    var acc: Acc;
    for (var j = 0u; j < ACC; j++) {
        acc.o[j] = 0.0;
    }
    var m = NEG;
    var l = 0.0;
    let scale = inverseSqrt(f32(DH));
    for (var t0 = lo; t0 <= hi; t0 += WG) {
        let s = t0 + tid;
        var score = NEG;
        if (s <= hi) {
            let kb = key_base(local, r, pos, fresh, slot, s, kvh, false);
            let hit = pos - s < fresh;
            var dot = 0.0;
            for (var d = 0u; d < DH; d++) {
                dot += sq[d] * load(local, hit, kb + d);
            }
            score = dot * scale;
        }
        let m_new = max(m, reduce_max(tid, score));
        var p = 0.0;
        if (s <= hi) {
            p = exp(score - m_new);
        }
        sp[tid] = p;
        let corr = exp(m - m_new);
        l = l * corr + reduce_sum(tid, p);
        let n = min(WG, hi + 1u - t0);
        for (var j = 0u; j < ACC; j++) {
            let d = tid + j * WG;
            if (d < DH) {
                var a = acc.o[j] * corr;
                for (var i = 0u; i < n; i++) {
                    let si = t0 + i;
                    let vb = key_base(local, r, pos, fresh, slot, si, kvh, true);
                    a += sp[i] * load(local, pos - si < fresh, vb + d);
                }
                acc.o[j] = a;
            }
        }
        m = m_new;
        workgroupBarrier();
    }
    for (var j = 0u; j < ACC; j++) {
        acc.o[j] = acc.o[j] / l;
    }
    return acc;
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

@compute @workgroup_size(WG)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let r = wid.x;
    let h = wid.y;
    if (tid == 0u) {
        row_sh = rows[r];
    }
    let row = workgroupUniformLoad(&row_sh);
    let kvh = h / (H / HKV);
    for (var d = tid; d < DH; d += WG) {
        sq[d] = qkv[r * QKVD + h * DH + d];
    }
    workgroupBarrier();

    let g_acc = attend(false, r, row.pos, row.fresh, row.attn_slot, kvh, 0u, row.pos, tid);
    if (row.ring == NONE || GATE_MODE == 0u) {
        for (var j = 0u; j < ACC; j++) {
            let d = tid + j * WG;
            if (d < DH) {
                out[r * QD + h * DH + d] = g_acc.o[j];
            }
        }
        return;
    }

    let left = W - 1u;
    let lo = select(0u, row.pos - left, row.pos >= left);
    let s_acc = attend(true, r, row.pos, row.fresh, row.ring, kvh, lo, row.pos, tid);

    // The gate, one value per (row, head).
    var logit = 0.0;
    if (GATE_MODE == 1u) {
        var part = 0.0;
        for (var d = tid; d < DH; d += WG) {
            part += sq[d] * gate[h * GW + d];
        }
        logit = reduce_sum(tid, part);
    } else {
        // sigmoid(W · RMSNorm(h_in; gate_norm) + b) = sigmoid(inv_rms * sum(h*gn*w) + b)
        var ss = 0.0;
        var part = 0.0;
        for (var d = tid; d < D; d += WG) {
            let x = hidden[r * D + d];
            ss += x * x;
            part += x * gate[H * GW + H + d] * gate[h * GW + d];
        }
        let sum_sq = reduce_sum(tid, ss);
        let dot = reduce_sum(tid, part);
        logit = dot * inverseSqrt(sum_sq / f32(D) + EPS);
    }
    let g = sigmoid(logit + gate[H * GW + h]);
    for (var j = 0u; j < ACC; j++) {
        let d = tid + j * WG;
        if (d < DH) {
            out[r * QD + h * DH + d] = g * g_acc.o[j] + (1.0 - g) * s_acc.o[j];
        }
    }
}
