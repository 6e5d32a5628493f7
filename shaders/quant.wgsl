// Decoders of the quantised weight records (`// #include quant`; layouts in src/format.rs):
// QFMT (a define) 0: a float format (not decoded here), 1: Q8_0, 2: Q4_0, 3: Q4_1, 4: Q5_0,
// 5: Q5_1. A record is QBW u32 words: word 0 holds the f16 scale d (low half) and, for Q4_1 and
// Q5_1, the f16 offset m (high half); Q5_* then have qh (bit j: the 5th bit of weight j); then
// the quants: Q8_0 32 int8 (byte j = weight j), the others 16 bytes of nibbles (weight j < 16:
// low nibble of byte j; j >= 16: high nibble of byte j - 16). Every weight is d * q + m, with
// m = -8d (Q4_0), -16d (Q5_0), 0 (Q8_0): exact in f32 like the CPU's d * (q - 8).
// The including shader defines `fn qword(i: u32) -> u32` (word i of its weight buffer).

const QBW: u32 = select(select(select(5u, 6u, QFMT >= 4u), 9u, QFMT == 1u), 1u, QFMT == 0u);
// Where the quant bytes start in a record.
const QOFF: u32 = select(1u, 2u, QFMT >= 4u);

// (d, m) of the record at word `base`.
fn q_dm(base: u32) -> vec2<f32> {
    let s = unpack2x16float(qword(base));
    if (QFMT == 3u || QFMT == 5u) {
        return s;
    }
    if (QFMT == 2u) {
        return vec2<f32>(s.x, -8.0 * s.x);
    }
    if (QFMT == 4u) {
        return vec2<f32>(s.x, -16.0 * s.x);
    }
    return vec2<f32>(s.x, 0.0);
}

// The 8 weights of unit u (0..3) of the record at `base`: weights 4u .. 4u+3 (.lo) and
// 16+4u .. 16+4u+3 (.hi). One quant word for the 4- and 5-bit formats (its low and high
// nibbles), two for Q8_0 (words u and u + 4 of the quants): the four units cover the record.
struct QUnit {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

fn q_unit(base: u32, u: u32) -> QUnit {
    let dm = q_dm(base);
    var lo: vec4<f32>;
    var hi: vec4<f32>;
    if (QFMT == 1u) {
        let a = qword(base + 1u + u);
        let b = qword(base + 5u + u);
        let sh = vec4<u32>(24u, 16u, 8u, 0u);
        lo = vec4<f32>((bitcast<vec4<i32>>(vec4<u32>(a) << sh)) >> vec4<u32>(24u));
        hi = vec4<f32>((bitcast<vec4<i32>>(vec4<u32>(b) << sh)) >> vec4<u32>(24u));
    } else {
        let q = qword(base + QOFF + u);
        let sh = vec4<u32>(0u, 8u, 16u, 24u);
        var l = (vec4<u32>(q) >> sh) & vec4<u32>(15u);
        var h = (vec4<u32>(q) >> (sh + vec4<u32>(4u))) & vec4<u32>(15u);
        if (QFMT >= 4u) {
            let qh = qword(base + 1u);
            let j = vec4<u32>(4u * u) + vec4<u32>(0u, 1u, 2u, 3u);
            l |= ((vec4<u32>(qh) >> j) & vec4<u32>(1u)) << vec4<u32>(4u);
            h |= ((vec4<u32>(qh) >> (j + vec4<u32>(16u))) & vec4<u32>(1u)) << vec4<u32>(4u);
        }
        lo = vec4<f32>(l);
        hi = vec4<f32>(h);
    }
    return QUnit(dm.x * lo + vec4<f32>(dm.y), dm.x * hi + vec4<f32>(dm.y));
}

// Weight k of row `row` of a matrix with rows of `cols` weights (a multiple of 32).
fn q_at(row: u32, k: u32, cols: u32) -> f32 {
    let base = (row * (cols / 32u) + k / 32u) * QBW;
    let j = k % 32u;
    let dm = q_dm(base);
    var q: f32;
    if (QFMT == 1u) {
        let word = qword(base + 1u + j / 4u);
        q = f32(bitcast<i32>(word << (24u - 8u * (j % 4u))) >> 24u);
    } else {
        let b = j % 16u;
        let word = qword(base + QOFF + b / 4u);
        var n = (word >> (8u * (b % 4u) + 4u * (j / 16u))) & 15u;
        if (QFMT >= 4u) {
            n |= ((qword(base + 1u) >> j) & 1u) << 4u;
        }
        q = f32(n);
    }
    return dm.x * q + dm.y;
}
