// Sampling on the GPU, one workgroup per logit row; only the chosen id is read back.
// The rules and the random numbers are those of src/sampling.rs (`sample_cpu` is the reference).
// Defines: V (vocabulary), HMAX (history slots per sequence). Grid: (logit_rows).

struct SampleParams {
    temperature: f32,  // 0: greedy
    top_k: u32,        // 0: off
    top_p: f32,        // 1: off
    min_p: f32,        // 0: off
    penalty: f32,      // 1: off
    hist_len: u32,     // recent tokens in `history` the penalty applies to
    seed_lo: u32,
    seed_hi: u32,
    step: u32,         // position of the token being drawn
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> pass_: Pass;
@group(0) @binding(1) var<storage, read> params: array<SampleParams>;  // [B]
@group(0) @binding(2) var<storage, read> history: array<u32>;         // [B][HMAX]
@group(0) @binding(3) var<storage, read> logits: array<f32>;          // [rows, V]
@group(0) @binding(4) var<storage, read_write> work: array<f32>;      // [rows, V] scratch
@group(0) @binding(5) var<storage, read_write> chosen: array<u32>;    // [rows]

const WG: u32 = 256u;
// #include reduce
// #include reduce_u32
var<workgroup> sh: SampleParams;
var<workgroup> sh_bad: u32;
// The id of a row whose logits hold a NaN or an infinity (`model::NON_FINITE_ID`).
const NON_FINITE: u32 = 0xfffffffeu;

fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

fn uniform01(seed_lo: u32, seed_hi: u32, step: u32, row: u32) -> f32 {
    let s = pcg(seed_lo ^ pcg(seed_hi));
    let h = pcg(pcg(s + step) + row);
    return f32(h >> 8u) / 16777216.0;
}

// Keys that order like the floats.
fn key(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    if ((b & 0x80000000u) != 0u) {
        return ~b;
    }
    return b | 0x80000000u;
}

// Mass of the values with key >= t: sum exp(z - zmax).
fn mass(base: u32, tid: u32, t: u32, temp: f32, zmax: f32) -> f32 {
    var m = 0.0;
    for (var i = tid; i < V; i += WG) {
        let z = work[base + i] / temp;
        if (key(z) >= t) {
            m += exp(z - zmax);
        }
    }
    return wg_sum(tid, m);
}

@compute @workgroup_size(WG)
fn sample(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let r = wid.x;
    let seq = pass_.seq0 + r;
    if (tid == 0u) {
        sh = params[seq];
    }
    let p = workgroupUniformLoad(&sh);
    let base = r * V;
    // A NaN or an infinity among the logits: the id NON_FINITE instead of a draw (checked on
    // the exponent bits, which no compiler assumption about non-finite floats removes).
    var bad = 0u;
    for (var i = tid; i < V; i += WG) {
        let v = logits[base + i];
        work[base + i] = v;
        bad |= u32((bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u);
    }
    let nbad = wg_sum_u32(tid, bad);
    if (tid == 0u) {
        sh_bad = nbad;
    }
    if (workgroupUniformLoad(&sh_bad) != 0u) {
        if (tid == 0u) {
            chosen[r] = NON_FINITE;
        }
        return;
    }
    storageBarrier();
    // 1. Repetition penalty, once per distinct recent token.
    if (tid == 0u && p.penalty != 1.0) {
        for (var j = 0u; j < p.hist_len; j++) {
            let t = history[seq * HMAX + j];
            var dup = false;
            for (var k = 0u; k < j; k++) {
                if (history[seq * HMAX + k] == t) {
                    dup = true;
                }
            }
            if (!dup && t < V) {
                let v = work[base + t];
                work[base + t] = select(v * p.penalty, v / p.penalty, v > 0.0);
            }
        }
    }
    storageBarrier();

    // 2. Greedy: argmax, lowest id on ties.
    if (p.temperature == 0.0) {
        var best = NONE;
        var best_v = 0.0;
        for (var i = tid; i < V; i += WG) {
            let v = work[base + i];
            if (best == NONE || v > best_v) {
                best = i;
                best_v = v;
            }
        }
        red_f[tid] = best_v;
        red_u[tid] = best;
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s >>= 1u) {
            if (tid < s) {
                let ob = red_u[tid + s];
                let ov = red_f[tid + s];
                let mb = red_u[tid];
                if (ob != NONE && (mb == NONE || ov > red_f[tid] || (ov == red_f[tid] && ob < mb))) {
                    red_u[tid] = ob;
                    red_f[tid] = ov;
                }
            }
            workgroupBarrier();
        }
        if (tid == 0u) {
            chosen[r] = red_u[0];
        }
        return;
    }

    // 3-5. Temperature, then the kept set {key(z) >= tau}.
    let temp = p.temperature;
    var local_max = -3.0e38;
    for (var i = tid; i < V; i += WG) {
        local_max = max(local_max, work[base + i] / temp);
    }
    let zmax = wg_max(tid, local_max);
    var tau = 0u;
    if (p.top_k > 0u && p.top_k < V) {
        var t = 0u;
        for (var bit = 31i; bit >= 0i; bit--) {
            let cand = t | (1u << u32(bit));
            var c = 0u;
            for (var i = tid; i < V; i += WG) {
                c += u32(key(work[base + i] / temp) >= cand);
            }
            if (wg_sum_u32(tid, c) >= p.top_k) {
                t = cand;
            }
        }
        tau = t;
    }
    if (p.top_p < 1.0) {
        let need = p.top_p * mass(base, tid, tau, temp, zmax);
        var t = 0u;
        for (var bit = 31i; bit >= 0i; bit--) {
            let cand = t | (1u << u32(bit));
            // Below tau the set is what top-k kept: always enough.
            let m = mass(base, tid, max(cand, tau), temp, zmax);
            if (cand < tau || m >= need) {
                t = cand;
            }
        }
        tau = max(tau, t);
    }
    if (p.min_p > 0.0) {
        tau = max(tau, key(zmax + log(p.min_p)));
    }

    // 6. Draw: u * kept mass, located by per-thread chunk sums in id order.
    let chunk = (V + WG - 1u) / WG;
    let lo = tid * chunk;
    let hi = min(V, lo + chunk);
    var part = 0.0;
    for (var i = lo; i < hi; i++) {
        let z = work[base + i] / temp;
        if (key(z) >= tau) {
            part += exp(z - zmax);
        }
    }
    red_f[tid] = part;
    workgroupBarrier();
    if (tid == 0u) {
        var total = 0.0;
        for (var j = 0u; j < WG; j++) {
            total += red_f[j];
        }
        let u = uniform01(p.seed_lo, p.seed_hi, p.step, seq) * total;
        var acc = 0.0;
        var pick = NONE;
        var last = 0u;
        for (var j = 0u; j < WG && pick == NONE; j++) {
            if (acc + red_f[j] > u) {
                for (var i = j * chunk; i < min(V, j * chunk + chunk); i++) {
                    let z = work[base + i] / temp;
                    if (key(z) >= tau) {
                        acc += exp(z - zmax);
                        last = i;
                        if (acc > u) {
                            pick = i;
                            break;
                        }
                    }
                }
            } else {
                acc += red_f[j];
                if (red_f[j] > 0.0) {
                    for (var i = j * chunk; i < min(V, j * chunk + chunk); i++) {
                        if (key(work[base + i] / temp) >= tau) {
                            last = i;
                        }
                    }
                }
            }
        }
        chosen[r] = select(pick, last, pick == NONE);
    }
}
