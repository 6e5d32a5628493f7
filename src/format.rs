//! How a weight matrix is stored on the device (`WeightFormat`), chosen per tensor: f32 bits,
//! f16 pairs, GGUF's 32-weight quantised blocks kept quantised (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) or
//! its 256-weight K-quant super-blocks kept quantised (Q4_K, Q5_K, Q6_K). The kernels read every
//! format as `array<u32>` (no `shader-f16`), so a row of blocks whose size is not a multiple of
//! 4 bytes is rearranged at load (`WeightFormat::repack`): the blocks' bodies (the block without
//! its f16 scale d) one after another, then the row's d values, two to a word (block 2i in the
//! low half), the last word padded when the row has an odd number of blocks. The device then
//! reads exactly the file's bytes per weight (Q8_0 34 bytes per 32 weights, 1.0625 bytes per
//! weight; no per-block padding):
//!
//! | format | file block | device body (u32 words)                              | d apart |
//! |--------|------------|------------------------------------------------------|---------|
//! | Q8_0   | 34 B       | 8: 32 int8 (byte j = q_j)                            | yes     |
//! | Q4_0   | 18 B       | 4: 16 bytes of nibbles                               | yes     |
//! | Q4_1   | 20 B       | 5: [d | m] then 16 bytes of nibbles (the file's)     | no      |
//! | Q5_0   | 22 B       | 5: qh (bit j = 5th bit of q_j), 16 nibble bytes      | yes     |
//! | Q5_1   | 24 B       | 6: [d | m], qh, 16 nibble bytes (the file's)         | no      |
//! | Q4_K   | 144 B      | 36: [d | dmin], 12 scale bytes, 128 nibbles (file's) | no      |
//! | Q5_K   | 176 B      | 44: [d | dmin], 12 scale bytes, 32 qh, 128 nibbles   | no      |
//! | Q6_K   | 210 B      | 52: 128 ql, 64 qh, 16 int8 scales                    | yes     |
//!
//! Nibble bytes of the 32-weight formats as in GGUF: weight j < 16 is the low nibble of byte j,
//! weight j >= 16 the high nibble of byte j - 16. The K-quant super-blocks keep GGUF's element
//! order (`gguf::dequantize`): Q4_K/Q5_K weight 64i + l (l < 32) is the low nibble of qs[32i + l]
//! with scale/min pair 2i, weight 64i + 32 + l its high nibble with pair 2i + 1 (6-bit pairs
//! packed as ggml's `get_scale_min_k4`; Q5_K's 5th bit is bit 2i (2i + 1) of qh[l]),
//! w = d sc q - dmin m; Q6_K half h (128 weights): weights l, l + 32, l + 64, l + 96 (l < 32) take the low
//! nibble of ql[64h + l], of ql[64h + l + 32], the high nibble of ql[64h + l], of ql[64h + l + 32],
//! and bits 0-1, 2-3, 4-5, 6-7 of qh[32h + l] as their top two bits, with int8 scales
//! sc[8h + l/16 + 0, 2, 4, 6], w = d sc (q - 32). A matrix [N, K] is N rows of `row_bytes(K)`
//! (K/B blocks, B = 32 or 256, `WeightFormat::block`), row after row, so the fused
//! buffers (q/k/v rows concatenated, gate/up rows interleaved) and GGUF's q/k row
//! un-permutation move whole rows, as they move rows of f32 values. The WGSL decoder of this
//! layout is shaders/quant.wgsl.

use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use crate::weights::DType;

/// The storage of one matrix on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)] // ggml's names
pub enum WeightFormat {
    F32,
    F16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4_K,
    Q5_K,
    Q6_K,
}

/// Weights per quantised block of the 32-weight formats.
pub const QBLOCK: usize = 32;
/// Weights per K-quant super-block.
pub const KBLOCK: usize = 256;

impl WeightFormat {
    /// Every format, floats first.
    pub const ALL: [WeightFormat; 10] = [
        WeightFormat::F32,
        WeightFormat::F16,
        WeightFormat::Q8_0,
        WeightFormat::Q4_0,
        WeightFormat::Q4_1,
        WeightFormat::Q5_0,
        WeightFormat::Q5_1,
        WeightFormat::Q4_K,
        WeightFormat::Q5_K,
        WeightFormat::Q6_K,
    ];
    /// The quantised formats.
    pub const QUANTISED: [WeightFormat; 8] = [
        WeightFormat::Q8_0,
        WeightFormat::Q4_0,
        WeightFormat::Q4_1,
        WeightFormat::Q5_0,
        WeightFormat::Q5_1,
        WeightFormat::Q4_K,
        WeightFormat::Q5_K,
        WeightFormat::Q6_K,
    ];

    /// The float format of a dtype (BF16 is stored as F32).
    pub fn float(dtype: DType) -> WeightFormat {
        if dtype == DType::F16 {
            WeightFormat::F16
        } else {
            WeightFormat::F32
        }
    }

    /// The format that keeps a file's ggml type resident, if there is one.
    pub fn of_ggml(ty: GgmlType) -> Option<WeightFormat> {
        Some(match ty {
            GgmlType::Q8_0 => WeightFormat::Q8_0,
            GgmlType::Q4_0 => WeightFormat::Q4_0,
            GgmlType::Q4_1 => WeightFormat::Q4_1,
            GgmlType::Q5_0 => WeightFormat::Q5_0,
            GgmlType::Q5_1 => WeightFormat::Q5_1,
            GgmlType::Q4_K => WeightFormat::Q4_K,
            GgmlType::Q5_K => WeightFormat::Q5_K,
            GgmlType::Q6_K => WeightFormat::Q6_K,
            _ => return None,
        })
    }

    /// The ggml type whose blocks a quantised format holds.
    pub fn ggml(self) -> GgmlType {
        match self {
            WeightFormat::F32 => GgmlType::F32,
            WeightFormat::F16 => GgmlType::F16,
            WeightFormat::Q8_0 => GgmlType::Q8_0,
            WeightFormat::Q4_0 => GgmlType::Q4_0,
            WeightFormat::Q4_1 => GgmlType::Q4_1,
            WeightFormat::Q5_0 => GgmlType::Q5_0,
            WeightFormat::Q5_1 => GgmlType::Q5_1,
            WeightFormat::Q4_K => GgmlType::Q4_K,
            WeightFormat::Q5_K => GgmlType::Q5_K,
            WeightFormat::Q6_K => GgmlType::Q6_K,
        }
    }

    pub fn is_quantised(self) -> bool {
        !matches!(self, WeightFormat::F32 | WeightFormat::F16)
    }

    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "F32",
            WeightFormat::F16 => "F16",
            WeightFormat::Q8_0 => "Q8_0",
            WeightFormat::Q4_0 => "Q4_0",
            WeightFormat::Q4_1 => "Q4_1",
            WeightFormat::Q5_0 => "Q5_0",
            WeightFormat::Q5_1 => "Q5_1",
            WeightFormat::Q4_K => "Q4_K",
            WeightFormat::Q5_K => "Q5_K",
            WeightFormat::Q6_K => "Q6_K",
        }
    }

    /// The `QFMT` define of shaders/quant.wgsl (0: a float format).
    pub fn qfmt(self) -> usize {
        match self {
            WeightFormat::F32 | WeightFormat::F16 => 0,
            WeightFormat::Q8_0 => 1,
            WeightFormat::Q4_0 => 2,
            WeightFormat::Q4_1 => 3,
            WeightFormat::Q5_0 => 4,
            WeightFormat::Q5_1 => 5,
            WeightFormat::Q4_K => 6,
            WeightFormat::Q5_K => 7,
            WeightFormat::Q6_K => 8,
        }
    }

    /// Weights per quantised block (1 for the float formats).
    pub fn block(self) -> usize {
        match self {
            WeightFormat::F32 | WeightFormat::F16 => 1,
            WeightFormat::Q4_K | WeightFormat::Q5_K | WeightFormat::Q6_K => KBLOCK,
            _ => QBLOCK,
        }
    }

    /// Bytes of one block in a GGUF file (quantised formats).
    fn file_block(self) -> usize {
        match self {
            WeightFormat::Q8_0 => 34,
            WeightFormat::Q4_0 => 18,
            WeightFormat::Q4_1 => 20,
            WeightFormat::Q5_0 => 22,
            WeightFormat::Q5_1 => 24,
            WeightFormat::Q4_K => 144,
            WeightFormat::Q5_K => 176,
            WeightFormat::Q6_K => 210,
            _ => 0,
        }
    }

    /// Bytes of one block's body on the device (quantised formats): the file's block, less the
    /// f16 scale `d` for the formats whose blocks are not whole words (`scales_apart`).
    pub fn record_bytes(self) -> usize {
        match self {
            WeightFormat::Q8_0 => 32,
            WeightFormat::Q4_0 => 16,
            WeightFormat::Q4_1 => 20,
            WeightFormat::Q5_0 => 20,
            WeightFormat::Q5_1 => 24,
            WeightFormat::Q4_K => 144,
            WeightFormat::Q5_K => 176,
            WeightFormat::Q6_K => 208,
            _ => 0,
        }
    }

    /// Whether a row keeps its blocks' f16 scales apart, after the bodies (Q8_0, Q4_0, Q5_0,
    /// Q6_K: blocks of 34, 18, 22 and 210 bytes, which are not whole words).
    pub fn scales_apart(self) -> bool {
        matches!(self, WeightFormat::Q8_0 | WeightFormat::Q4_0 | WeightFormat::Q5_0 | WeightFormat::Q6_K)
    }

    /// Device bytes of `elems` weights: exact for the float formats, and for the quantised
    /// ones where rows hold an even number of blocks (then the file's bytes); `row_bytes` is
    /// exact for every row length.
    pub fn bytes(self, elems: usize) -> u64 {
        match self {
            WeightFormat::F32 => 4 * elems as u64,
            WeightFormat::F16 => 2 * elems as u64,
            q => (elems / q.block() * q.file_block()) as u64,
        }
    }

    /// Device bytes of one row of `cols` weights: for a quantised format, the blocks' bodies,
    /// then (`scales_apart`) their f16 scales two to a word.
    pub fn row_bytes(self, cols: usize) -> usize {
        if !self.is_quantised() {
            return self.bytes(cols) as usize;
        }
        let nb = cols / self.block();
        nb * self.record_bytes() + if self.scales_apart() { nb.div_ceil(2) * 4 } else { 0 }
    }

    /// Whether a matrix with rows of `cols` can be held in this format.
    pub fn fits(self, cols: usize) -> bool {
        !self.is_quantised() || (cols > 0 && cols.is_multiple_of(self.block()))
    }

    /// GGUF rows of this format (`raw`: whole rows of `cols` weights) in the device layout,
    /// appended to `out` (`row_bytes` per row).
    pub fn repack(self, raw: &[u8], cols: usize, out: &mut Vec<u8>) -> Result<()> {
        let fb = self.file_block();
        if fb == 0 || !self.fits(cols) {
            return Err(Error::Input(format!("{} rows of {cols} weights are not whole {}-weight blocks", self.name(), self.block())));
        }
        let nb = cols / self.block();
        let row = nb * fb;
        if !raw.len().is_multiple_of(row) {
            return Err(Error::Input(format!("{} data of {} bytes is not whole rows of {} {}-byte blocks", self.name(), raw.len(), nb, fb)));
        }
        out.reserve(raw.len() / row * self.row_bytes(cols));
        for r in raw.chunks_exact(row) {
            if !self.scales_apart() {
                out.extend_from_slice(r); // already whole words
                continue;
            }
            // Bodies first, then the scales (d: the first two bytes, or Q6_K's last two).
            let d_at = if self == WeightFormat::Q6_K { fb - 2 } else { 0 };
            for b in r.chunks_exact(fb) {
                out.extend_from_slice(&b[..d_at]);
                out.extend_from_slice(&b[d_at + 2..]);
            }
            for b in r.chunks_exact(fb) {
                out.extend_from_slice(&b[d_at..d_at + 2]);
            }
            if nb % 2 == 1 {
                out.extend_from_slice(&[0, 0]);
            }
        }
        Ok(())
    }
}
