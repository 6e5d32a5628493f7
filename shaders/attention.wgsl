// Attention for one pass (PLT-SPEC s3):
//   causal rows (loop 0; every loop in vanilla mode):  o = Attn(q; K, V, {0..t}) over the row's
//       full cache slot;
//   PLT rows (loop l >= 1): the fused gated sliding-window attention
//       G = Attn(q; K0, V0, {0..t})                  global: the shared loop-0 cache
//       S = Attn(q; Kl, Vl, {max(0,t-left)..t})      local: this loop's own K/V
//       o = g * G + (1 - g) * S,  g = the per-head gate (query or hidden-state mode).
// The local keys of positions written in this pass come from the qkv scratch (rows r, r-1, ..),
// older ones from the loop's ring buffer; the ring is updated after this kernel (ring_store).
//
// Rows that attend to the same cache slot form groups of up to RG rows (the host links them:
// Row.gnext, Row.gfollow; see src/model/plan.rs `group_attention_rows`): in a fused PLT decode pass,
// the L loops of one sequence; in a prefill chunk, RG consecutive positions. One workgroup per
// (group, query head) reads each global key and value once for all the group's queries, so
// the global branch of loops >= 1 shares its K/V reads with loop 0's attention. A row with
// gfollow = 0 leads a group (alone when gnext = 0); a follower's workgroup exits at once.
// Softmax per tile of WG keys: scores of all queries in workgroup memory, one thread per query
// takes the tile's max and probabilities (online softmax), then every thread its output dims.
//
// Long contexts (flash-decoding): with SPLIT > 0, `attention` computes only the global branch,
// split over positions: workgroup (r, h, s) takes positions s*SPLIT .. s*SPLIT+SPLIT-1 and writes,
// per query, its running max, sum and unnormalised output to `part`; `attention_combine`, one
// workgroup per (row, head), merges a row's splits and then runs the local branch, the gate and
// the mix. So a decode step at batch 1 runs (groups x H x splits) workgroups instead of
// (groups x H), each over at most SPLIT positions.
// Defines: H, HKV, DH, D, TMAX, SLOTS, W, RINGS, GATE_MODE (0 none, 1 query, 2 hidden), EPS, RG,
// KV_F16 (cache and ring elements stored as f16; attention math in f32 either way), SPLIT
// (positions per split, 0: no split), NSPLIT (splits per row: ceil(TMAX / SPLIT), 1 without).
// Grid: (R, H), or (R, H, NSPLIT) for `attention` with SPLIT > 0.

const WG: u32 = 64u;
const QD: u32 = H * DH;
const KVD: u32 = HKV * DH;
const QKVD: u32 = QD + 2u * KVD;
const ACC: u32 = (DH + WG - 1u) / WG;   // output dims per thread
const NEG: f32 = -3.0e38;
const GW: u32 = select(DH, D, GATE_MODE == 2u);  // gate weight row width

@group(0) @binding(0) var<storage, read> rows: array<Row>;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;     // [R, QKVD], q and k after RoPE
@group(0) @binding(2) var<storage, read> kv: array<u32>;      // [2][SLOTS][TMAX][KVD] f32 bits | f16 pairs
@group(0) @binding(3) var<storage, read> ring: array<u32>;    // [2][RINGS][W][KVD], the same
@group(0) @binding(4) var<storage, read> gate: array<f32>;    // [H*GW] weight | [H] bias | [D] gate_norm
@group(0) @binding(5) var<storage, read> hidden: array<f32>;  // [R, D] layer input (hidden gate)
@group(0) @binding(6) var<storage, read_write> out: array<f32>; // [R, QD]
// Split partials [R][H][NSPLIT][PW]: max, sum, then DH unnormalised outputs.
@group(0) @binding(7) var<storage, read_write> part: array<f32>;
const PW: u32 = DH + 2u;

var<workgroup> sq: array<f32, RG * DH>;  // the group's queries (this head)
var<workgroup> sp: array<f32, RG * WG>;  // per query: scores, then probabilities, of one key tile
var<workgroup> m_sh: array<f32, RG>;     // per query: running max,
var<workgroup> l_sh: array<f32, RG>;     // running sum,
var<workgroup> c_sh: array<f32, RG>;     // and this tile's rescale of the earlier tiles
// #include reduce
var<workgroup> grp_sh: array<u32, RG>;   // the group's rows
var<workgroup> rws_sh: array<Row, RG>;
var<workgroup> n_sh: u32;

// Query i's output dims d = tid + j*WG at o[i * ACC + j].
struct Acc {
    o: array<f32, RG * ACC>,
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

// Element i of the cache or ring (f32, or f16 with KV_F16; see rope.wgsl).
fn kv_at(i: u32) -> f32 {
    if (KV_F16) {
        return f16_at(kv[i >> 1u], i & 1u);
    }
    return bitcast<f32>(kv[i]);
}

fn ring_at(i: u32) -> f32 {
    if (KV_F16) {
        return f16_at(ring[i >> 1u], i & 1u);
    }
    return bitcast<f32>(ring[i]);
}

fn load(local: bool, fresh_hit: bool, i: u32) -> f32 {
    if (!local) {
        return kv_at(i);
    }
    if (fresh_hit) {
        return qkv[i];
    }
    return ring_at(i);
}

// Online-softmax attention of queries q0..q0+nq (rows of sq) over positions lo..=hi, one tile
// of WG keys at a time; query i sees positions up to lim[i]. Global (local == false): keys of
// cache slot `slot`, shared by the queries. Local: one query (nq = 1), row `r` (`rw`), keys from
// its ring `slot` or the scratch rows.
// Unnormalised (normalize == false), the output is sum_t p_t v_t with p_t = exp(score - m), and
// m_sh/l_sh hold each query's max and sum until the next call.
fn attend(local: bool, q0: u32, nq: u32, r: u32, rw: Row, slot: u32, kvh: u32, lo: u32, hi: u32,
          lim: array<u32, RG>, normalize: bool, tid: u32) -> Acc {
    var acc: Acc;
    for (var j = 0u; j < RG * ACC; j++) {
        acc.o[j] = 0.0;
    }
    if (tid < nq) {
        m_sh[tid] = NEG;
        l_sh[tid] = 0.0;
    }
    workgroupBarrier();
    let scale = inverseSqrt(f32(DH));
    for (var t0 = lo; t0 <= hi; t0 += WG) {
        // Scores: thread tid takes key t0 + tid, read once for every query.
        let s = t0 + tid;
        var dots: array<f32, RG>;
        if (s <= hi) {
            let kb = key_base(local, r, rw.pos, rw.fresh, slot, s, kvh, false);
            let hit = local && rw.pos - s < rw.fresh;
            for (var d = 0u; d < DH; d++) {
                let k = load(local, hit, kb + d);
                for (var i = 0u; i < nq; i++) {
                    dots[i] += sq[(q0 + i) * DH + d] * k;
                }
            }
        }
        for (var i = 0u; i < nq; i++) {
            sp[i * WG + tid] = select(NEG, dots[i] * scale, s <= lim[i]);
        }
        workgroupBarrier();
        // Softmax bookkeeping: thread i for query i.
        let n = min(WG, hi + 1u - t0);
        if (tid < nq) {
            let b = tid * WG;
            var mt = NEG;
            for (var j = 0u; j < n; j++) {
                mt = max(mt, sp[b + j]);
            }
            let m_old = m_sh[tid];
            let m_new = max(m_old, mt);
            var sum = 0.0;
            for (var j = 0u; j < n; j++) {
                let sc = sp[b + j];
                let p = select(0.0, exp(sc - m_new), sc > NEG);
                sp[b + j] = p;
                sum += p;
            }
            let corr = select(0.0, exp(m_old - m_new), m_old > NEG);
            c_sh[tid] = corr;
            l_sh[tid] = l_sh[tid] * corr + sum;
            m_sh[tid] = m_new;
        }
        workgroupBarrier();
        // Values: thread tid takes output dims tid + j*WG, each value read once for every query.
        for (var j = 0u; j < ACC; j++) {
            let d = tid + j * WG;
            if (d < DH) {
                var a: array<f32, RG>;
                for (var i = 0u; i < nq; i++) {
                    a[i] = acc.o[i * ACC + j] * c_sh[i];
                }
                for (var jj = 0u; jj < n; jj++) {
                    let si = t0 + jj;
                    let vb = key_base(local, r, rw.pos, rw.fresh, slot, si, kvh, true);
                    let v = load(local, local && rw.pos - si < rw.fresh, vb + d);
                    for (var i = 0u; i < nq; i++) {
                        a[i] += sp[i * WG + jj] * v;
                    }
                }
                for (var i = 0u; i < nq; i++) {
                    acc.o[i * ACC + j] = a[i];
                }
            }
        }
        workgroupBarrier();
    }
    if (normalize) {
        for (var i = 0u; i < nq; i++) {
            let inv = 1.0 / l_sh[i];
            for (var j = 0u; j < ACC; j++) {
                acc.o[i * ACC + j] *= inv;
            }
        }
    }
    workgroupBarrier();
    return acc;
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// Row r's output for head h from its global result `g` (this thread's dims): causal rows take
// it as is; PLT rows add the local branch (query sq[i]), the gate and the mix.
fn finish(i: u32, r: u32, rw: Row, h: u32, kvh: u32, g: array<f32, ACC>, tid: u32) {
    let ob = r * QD + h * DH;
    if (rw.ring == NONE || GATE_MODE == 0u) {
        for (var j = 0u; j < ACC; j++) {
            let d = tid + j * WG;
            if (d < DH) {
                out[ob + d] = g[j];
            }
        }
        return;
    }

    let left = W - 1u;
    let lo = select(0u, rw.pos - left, rw.pos >= left);
    var one: array<u32, RG>;
    one[0] = rw.pos;
    let s_acc = attend(true, i, 1u, r, rw, rw.ring, kvh, lo, rw.pos, one, true, tid);

    // The gate, one value per (row, head).
    var logit = 0.0;
    if (GATE_MODE == 1u) {
        var part_sum = 0.0;
        for (var d = tid; d < DH; d += WG) {
            part_sum += sq[i * DH + d] * gate[h * GW + d];
        }
        logit = wg_sum(tid, part_sum);
    } else {
        // sigmoid(W · RMSNorm(h_in; gate_norm) + b) = sigmoid(inv_rms * sum(h*gn*w) + b)
        var ss = 0.0;
        var part_sum = 0.0;
        for (var d = tid; d < D; d += WG) {
            let x = hidden[r * D + d];
            ss += x * x;
            part_sum += x * gate[H * GW + H + d] * gate[h * GW + d];
        }
        let sum_sq = wg_sum(tid, ss);
        let dot = wg_sum(tid, part_sum);
        logit = dot * inverseSqrt(sum_sq / f32(D) + EPS);
    }
    let gv = sigmoid(logit + gate[H * GW + h]);
    for (var j = 0u; j < ACC; j++) {
        let d = tid + j * WG;
        if (d < DH) {
            out[ob + d] = gv * g[j] + (1.0 - gv) * s_acc.o[j];
        }
    }
}

@compute @workgroup_size(WG)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let h = wid.y;
    if (tid == 0u) {
        // Collect the group this row leads (none when it follows another row).
        var n = 0u;
        var i = wid.x;
        if (rows[i].gfollow == 0u) {
            loop {
                grp_sh[n] = i;
                rws_sh[n] = rows[i];
                n++;
                i = rows[i].gnext;
                if (i == 0u || n == RG) {
                    break;
                }
            }
        }
        n_sh = n;
    }
    let n = workgroupUniformLoad(&n_sh);
    if (n == 0u) {
        return;
    }
    var grp = workgroupUniformLoad(&grp_sh);
    var rws = workgroupUniformLoad(&rws_sh);
    let kvh = h / (H / HKV);
    for (var e = tid; e < n * DH; e += WG) {
        sq[e] = qkv[grp[e / DH] * QKVD + h * DH + e % DH];
    }
    var lim: array<u32, RG>;
    var hi = 0u;
    for (var i = 0u; i < n; i++) {
        lim[i] = rws[i].pos;
        hi = max(hi, rws[i].pos);
    }
    workgroupBarrier();

    if (SPLIT > 0u) {
        // One split of the global branch: partials for `attention_combine`.
        let s = wid.z;
        let lo = s * SPLIT;
        if (lo > hi) {
            return;
        }
        let p = attend(false, 0u, n, grp[0], rws[0], rws[0].attn_slot, kvh, lo, min(hi, lo + SPLIT - 1u), lim, false, tid);
        for (var i = 0u; i < n; i++) {
            if (lo <= lim[i]) {
                let b = ((grp[i] * H + h) * NSPLIT + s) * PW;
                if (tid == 0u) {
                    part[b] = m_sh[i];
                    part[b + 1u] = l_sh[i];
                }
                for (var j = 0u; j < ACC; j++) {
                    let d = tid + j * WG;
                    if (d < DH) {
                        part[b + 2u + d] = p.o[i * ACC + j];
                    }
                }
            }
        }
        return;
    }

    // Global (causal) attention of every query of the group over the shared cache slot.
    let g_acc = attend(false, 0u, n, grp[0], rws[0], rws[0].attn_slot, kvh, 0u, hi, lim, true, tid);
    for (var i = 0u; i < n; i++) {
        var g: array<f32, ACC>;
        for (var j = 0u; j < ACC; j++) {
            g[j] = g_acc.o[i * ACC + j];
        }
        finish(i, grp[i], rws[i], h, kvh, g, tid);
    }
}

// After `attention` with SPLIT > 0: merges row r's splits 0 ..= pos/SPLIT of head h, then the
// local branch, gate and mix. Grid: (R, H).
@compute @workgroup_size(WG)
fn attention_combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let r = wid.x;
    let h = wid.y;
    if (tid == 0u) {
        rws_sh[0] = rows[r];
    }
    let rws = workgroupUniformLoad(&rws_sh);
    let rw = rws[0];
    let kvh = h / (H / HKV);
    for (var d = tid; d < DH; d += WG) {
        sq[d] = qkv[r * QKVD + h * DH + d];
    }
    let base = (r * H + h) * NSPLIT * PW;
    let ns = rw.pos / max(SPLIT, 1u) + 1u;
    var mx = NEG;
    for (var s = 0u; s < ns; s++) {
        mx = max(mx, part[base + s * PW]);
    }
    var l = 0.0;
    var g: array<f32, ACC>;
    for (var s = 0u; s < ns; s++) {
        let b = base + s * PW;
        let e = exp(part[b] - mx);
        l += part[b + 1u] * e;
        for (var j = 0u; j < ACC; j++) {
            let d = tid + j * WG;
            if (d < DH) {
                g[j] += part[b + 2u + d] * e;
            }
        }
    }
    for (var j = 0u; j < ACC; j++) {
        g[j] /= l;
    }
    workgroupBarrier();
    finish(0u, r, rw, h, kvh, g, tid);
}
