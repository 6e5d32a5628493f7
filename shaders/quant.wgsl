// Decoders of the quantised weight rows (`// #include quant`; layouts in src/format.rs):
// QFMT (a define) 0: a float format (not decoded here), 1: Q8_0, 2: Q4_0, 3: Q4_1, 4: Q5_0,
// 5: Q5_1 (blocks of QB = 32 weights), 6: Q4_K, 7: Q5_K, 8: Q6_K (super-blocks of QB = 256).
// A row of nb blocks is nb bodies of QBW u32 words, then, for the formats whose file blocks
// are not whole words (QSOA: Q8_0, Q4_0, Q5_0, Q6_K), the blocks' f16 scales d, two to a word
// (block 2i in the low half): q_row_words(nb) words in all, the file's bytes when nb is even.
// 32-weight bodies: Q4_1 and Q5_1 start with [d | m] (f16 scale and offset); Q5_* then have qh
// (bit j: the 5th bit of weight j); then the quants from word QOFF: Q8_0 32 int8 (byte j =
// weight j), the others 16 bytes of nibbles (weight j < 16: low nibble of byte j; j >= 16:
// high nibble of byte j - 16). Every weight is d * q + m, with m = -8d (Q4_0), -16d (Q5_0),
// 0 (Q8_0): exact in f32 like the CPU's d * (q - 8).
// K-quant bodies (QBW words): Q4_K 36: word 0 [d | dmin], words 1-3 the 12 scale/min bytes,
// 4-35 qs; Q5_K 44: the same with qh in words 4-11 and qs in 12-43; Q6_K 52: ql in words 0-31,
// qh 32-47, int8 scales 48-51 (its d apart). Element order as gguf::dequantize (src/format.rs).
// Every format is read in units of 8 weights (QU units per block): unit u holds 4 consecutive
// weights at vec4 QLO(u) of the block (.lo) and 4 at vec4 QLO(u) + QHI (.hi); 32-weight
// blocks: QLO(u) = u, QHI = 4; Q4_K/Q5_K: one qs word, QLO = 16 (u / 8) + u % 8, QHI = 8;
// Q6_K: one ql word, QLO = 32 (u / 16) + u % 16, QHI = 16.
// The including shader defines `fn qword(i: u32) -> u32` (word i of its weight buffer).

const QKQ: bool = QFMT >= 6u;
const QB: u32 = select(32u, 256u, QKQ);
const QU: u32 = QB / 8u;
const QHI: u32 = select(select(4u, 8u, QKQ), 16u, QFMT == 8u);
// Body words per block.
const QBW: u32 = select(select(select(select(select(select(select(1u, 8u, QFMT == 1u), 4u, QFMT == 2u), 5u, QFMT == 3u || QFMT == 4u), 6u, QFMT == 5u), 36u, QFMT == 6u), 44u, QFMT == 7u), 52u, QFMT == 8u);
// The blocks' d values follow the bodies of their row.
const QSOA: bool = QFMT == 1u || QFMT == 2u || QFMT == 4u || QFMT == 8u;
// Where the quant bytes start in a body (32-weight formats); Q5_*'s qh is the word before.
const QOFF: u32 = select(select(0u, 1u, QFMT == 3u || QFMT == 4u), 2u, QFMT == 5u);

// Words of a row of nb blocks.
fn q_row_words(nb: u32) -> u32 {
    return nb * QBW + select(0u, (nb + 1u) / 2u, QSOA);
}

// The f16 scale d of block blk of the row at word `row` (nb blocks; QSOA formats).
fn q_d(row: u32, nb: u32, blk: u32) -> f32 {
    let v = unpack2x16float(qword(row + nb * QBW + blk / 2u));
    return select(v.x, v.y, blk % 2u == 1u);
}

fn q_lo(u: u32) -> u32 {
    if (QFMT == 8u) {
        return 32u * (u / 16u) + u % 16u;
    }
    if (QKQ) {
        return 16u * (u / 8u) + u % 8u;
    }
    return u;
}

// Byte n of the body at word `base`.
fn q_byte(base: u32, n: u32) -> u32 {
    return (qword(base + n / 4u) >> (8u * (n % 4u))) & 255u;
}

// Q4_K/Q5_K: (scale, min) of sub-block j (0..7), as ggml's get_scale_min_k4 (bytes at word 1).
fn q_scale_min(base: u32, j: u32) -> vec2<f32> {
    let s = base + 1u;
    if (j < 4u) {
        return vec2<f32>(f32(q_byte(s, j) & 63u), f32(q_byte(s, j + 4u) & 63u));
    }
    let sc = (q_byte(s, j + 4u) & 15u) | ((q_byte(s, j - 4u) >> 6u) << 4u);
    let mn = (q_byte(s, j + 4u) >> 4u) | ((q_byte(s, j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(mn));
}

// The 8 weights of K-quant unit u of block blk of the row at word `row` (nb blocks).
fn q_unit_k(row: u32, nb: u32, blk: u32, u: u32) -> QUnit {
    let base = row + blk * QBW;
    let sh = vec4<u32>(0u, 8u, 16u, 24u);
    if (QFMT == 8u) {
        let h = u / 16u;
        let w = u % 16u;
        let second = w / 8u;  // 1: ql[l + 32] (weights l + 32, l + 96)
        let q = qword(base + u);
        let qh = qword(base + 32u + 8u * h + w % 8u);
        let hs = sh + vec4<u32>(2u * second);
        let l = ((vec4<u32>(q) >> sh) & vec4<u32>(15u)) | (((vec4<u32>(qh) >> hs) & vec4<u32>(3u)) << vec4<u32>(4u));
        let hq = ((vec4<u32>(q) >> (sh + vec4<u32>(4u))) & vec4<u32>(15u)) | (((vec4<u32>(qh) >> (hs + vec4<u32>(4u))) & vec4<u32>(3u)) << vec4<u32>(4u));
        let n = 8u * h + (w % 8u) / 4u + 2u * second;
        let d = q_d(row, nb, blk);
        let slo = d * f32(bitcast<i32>(q_byte(base + 48u, n) << 24u) >> 24u);
        let shi = d * f32(bitcast<i32>(q_byte(base + 48u, n + 4u) << 24u) >> 24u);
        return QUnit(slo * (vec4<f32>(l) - vec4<f32>(32.0)), shi * (vec4<f32>(hq) - vec4<f32>(32.0)));
    }
    let i = u / 8u;
    let dm = unpack2x16float(qword(base));
    let q = qword(base + select(4u, 12u, QFMT == 7u) + u);
    var l = (vec4<u32>(q) >> sh) & vec4<u32>(15u);
    var hq = (vec4<u32>(q) >> (sh + vec4<u32>(4u))) & vec4<u32>(15u);
    if (QFMT == 7u) {
        let qh = qword(base + 4u + u % 8u);
        l |= ((vec4<u32>(qh) >> (sh + vec4<u32>(2u * i))) & vec4<u32>(1u)) << vec4<u32>(4u);
        hq |= ((vec4<u32>(qh) >> (sh + vec4<u32>(2u * i + 1u))) & vec4<u32>(1u)) << vec4<u32>(4u);
    }
    let a = q_scale_min(base, 2u * i);
    let b = q_scale_min(base, 2u * i + 1u);
    return QUnit(dm.x * a.x * vec4<f32>(l) - vec4<f32>(dm.y * a.y), dm.x * b.x * vec4<f32>(hq) - vec4<f32>(dm.y * b.y));
}

// (d, m) of 32-weight block blk of the row at word `row` (nb blocks).
fn q_dm(row: u32, nb: u32, blk: u32) -> vec2<f32> {
    if (QFMT == 3u || QFMT == 5u) {
        return unpack2x16float(qword(row + blk * QBW));
    }
    let d = q_d(row, nb, blk);
    if (QFMT == 2u) {
        return vec2<f32>(d, -8.0 * d);
    }
    if (QFMT == 4u) {
        return vec2<f32>(d, -16.0 * d);
    }
    return vec2<f32>(d, 0.0);
}

// The 8 weights of unit u of block blk of the row at word `row` (nb blocks). 32-weight blocks:
// weights 4u .. 4u+3 (.lo) and 16+4u .. 16+4u+3 (.hi) of unit u (0..3); one quant word for the
// 4- and 5-bit formats (its low and high nibbles), two for Q8_0 (words u and u + 4 of the
// quants): the four units cover the block.
struct QUnit {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

fn q_unit(row: u32, nb: u32, blk: u32, u: u32) -> QUnit {
    if (QKQ) {
        return q_unit_k(row, nb, blk, u);
    }
    let base = row + blk * QBW;
    let dm = q_dm(row, nb, blk);
    var lo: vec4<f32>;
    var hi: vec4<f32>;
    if (QFMT == 1u) {
        let a = qword(base + u);
        let b = qword(base + 4u + u);
        let sh = vec4<u32>(24u, 16u, 8u, 0u);
        lo = vec4<f32>((bitcast<vec4<i32>>(vec4<u32>(a) << sh)) >> vec4<u32>(24u));
        hi = vec4<f32>((bitcast<vec4<i32>>(vec4<u32>(b) << sh)) >> vec4<u32>(24u));
    } else {
        let q = qword(base + QOFF + u);
        let sh = vec4<u32>(0u, 8u, 16u, 24u);
        var l = (vec4<u32>(q) >> sh) & vec4<u32>(15u);
        var h = (vec4<u32>(q) >> (sh + vec4<u32>(4u))) & vec4<u32>(15u);
        if (QFMT >= 4u) {
            let qh = qword(base + QOFF - 1u);
            let j = vec4<u32>(4u * u) + vec4<u32>(0u, 1u, 2u, 3u);
            l |= ((vec4<u32>(qh) >> j) & vec4<u32>(1u)) << vec4<u32>(4u);
            h |= ((vec4<u32>(qh) >> (j + vec4<u32>(16u))) & vec4<u32>(1u)) << vec4<u32>(4u);
        }
        lo = vec4<f32>(l);
        hi = vec4<f32>(h);
    }
    return QUnit(dm.x * lo + vec4<f32>(dm.y), dm.x * hi + vec4<f32>(dm.y));
}

// Weight j (0..255) of K-quant block blk of the row at word `row` (nb blocks), decoded alone
// (gguf::dequantize's order).
fn q_at_k(row: u32, nb: u32, blk: u32, j: u32) -> f32 {
    let base = row + blk * QBW;
    if (QFMT == 8u) {
        let h = j / 128u;
        let qq = (j % 128u) / 32u;  // q1..q4 of the CPU's loop
        let l = j % 32u;
        let nib = (q_byte(base, 64u * h + l + 32u * (qq % 2u)) >> (4u * (qq / 2u))) & 15u;
        let top = (q_byte(base + 32u, 32u * h + l) >> (2u * qq)) & 3u;
        let sc = f32(bitcast<i32>(q_byte(base + 48u, 8u * h + l / 16u + 2u * qq) << 24u) >> 24u);
        let d = q_d(row, nb, blk);
        return d * sc * (f32(nib | (top << 4u)) - 32.0);
    }
    let i = j / 64u;
    let s = (j % 64u) / 32u;
    let l = j % 32u;
    var n = (q_byte(base + select(4u, 12u, QFMT == 7u), 32u * i + l) >> (4u * s)) & 15u;
    if (QFMT == 7u) {
        n |= ((q_byte(base + 4u, l) >> (2u * i + s)) & 1u) << 4u;
    }
    let dm = unpack2x16float(qword(base));
    let sm = q_scale_min(base, 2u * i + s);
    return dm.x * sm.x * f32(n) - dm.y * sm.y;
}

// Weight k of row `row` of a matrix with rows of `cols` weights (a multiple of QB).
fn q_at(row: u32, k: u32, cols: u32) -> f32 {
    let nb = cols / QB;
    let start = row * q_row_words(nb);
    let blk = k / QB;
    if (QKQ) {
        return q_at_k(start, nb, blk, k % QB);
    }
    let base = start + blk * QBW;
    let j = k % 32u;
    let dm = q_dm(start, nb, blk);
    var q: f32;
    if (QFMT == 1u) {
        let word = qword(base + j / 4u);
        q = f32(bitcast<i32>(word << (24u - 8u * (j % 4u))) >> 24u);
    } else {
        let b = j % 16u;
        let word = qword(base + QOFF + b / 4u);
        var n = (word >> (8u * (b % 4u) + 4u * (j / 16u))) & 15u;
        if (QFMT >= 4u) {
            n |= ((qword(base + QOFF - 1u) >> j) & 1u) << 4u;
        }
        q = f32(n);
    }
    return dm.x * q + dm.y;
}
