//! Choosing the next token: greedy, temperature, top-k, top-p, min-p, repetition penalty and a
//! seed. The GPU kernel (`shaders/sample.wgsl`) runs this so that only the token id is read
//! back; `sample_cpu` here is its reference, with the same rules and the same random numbers.
//!
//! Rules, in order (Hugging Face's order):
//! 1. repetition penalty on the raw logits of each distinct token among the last
//!    `repeat_last_n` of the sequence: positive logits divided by it, negative ones multiplied;
//! 2. temperature 0 → argmax (lowest id on ties), done;
//! 3. z = logit / temperature; keep the top-k values (ties at the k-th value kept);
//! 4. top-p: the smallest top set (by value, ties together) holding at least p of the mass of
//!    what step 3 kept;
//! 5. min-p: keep z >= max z + ln(min_p), i.e. probability >= min_p * the top probability;
//! 6. draw u in [0, 1) from (seed, step, row), pick the first kept id (in id order) whose
//!    cumulative mass exceeds u * kept mass.

use crate::error::{Error, Result};

/// Most recent tokens the repetition penalty can look at (the GPU keeps this many per sequence).
pub const MAX_PENALTY_WINDOW: usize = 256;

#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// 0 = greedy.
    pub temperature: f32,
    /// 0 = off.
    pub top_k: usize,
    /// 1 = off; in (0, 1].
    pub top_p: f32,
    /// 0 = off; in [0, 1).
    pub min_p: f32,
    /// 1 = off; > 0.
    pub repetition_penalty: f32,
    /// How many recent tokens the penalty applies to (at most `MAX_PENALTY_WINDOW`).
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0, repetition_penalty: 1.0, repeat_last_n: 64, seed: 0 }
    }
}

impl SamplerConfig {
    pub fn greedy() -> Self {
        Self::default()
    }

    /// `Err` names the field that is wrong (`top_p`, ...) and its value.
    pub fn validate(&self) -> Result<()> {
        self.check().map_err(|(field, msg)| Error::Input(format!("{field}: {msg}")))
    }

    /// The first bad value: its field's name (as in this struct) and what is wrong with it;
    /// the CLI names its flag instead.
    pub fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(("temperature", format!("{} must be a finite number >= 0", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(("top_p", format!("{} must be in (0, 1]", self.top_p)));
        }
        if !(self.min_p >= 0.0 && self.min_p < 1.0) {
            return Err(("min_p", format!("{} must be in [0, 1)", self.min_p)));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(("repetition_penalty", format!("{} must be a finite number > 0", self.repetition_penalty)));
        }
        if self.repeat_last_n > MAX_PENALTY_WINDOW {
            return Err(("repeat_last_n", format!("{} is more than {MAX_PENALTY_WINDOW}", self.repeat_last_n)));
        }
        Ok(())
    }
}

/// A 32-bit hash (PCG output function), identical in `shaders/sample.wgsl`.
pub fn pcg(v: u32) -> u32 {
    let state = v.wrapping_mul(747796405).wrapping_add(2891336453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277803737);
    (word >> 22) ^ word
}

/// The uniform draw in [0, 1) for sequence row `row` at generation step `step`.
pub fn uniform(seed: u64, step: u32, row: u32) -> f32 {
    let s = pcg(seed as u32 ^ pcg((seed >> 32) as u32));
    let h = pcg(pcg(s.wrapping_add(step)).wrapping_add(row));
    (h >> 8) as f32 / 16_777_216.0
}

/// Keys that order like the floats they come from (for exact bisection on values).
pub fn order_key(x: f32) -> u32 {
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// The index of the largest value, the lowest one on ties (rule 2, the greedy choice); 0 for an
/// empty slice.
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// The reference sampler: the token for one row of logits. `history` is the sequence so far.
pub fn sample_cpu(logits: &[f32], history: &[u32], cfg: &SamplerConfig, step: u32, row: u32) -> u32 {
    let mut z: Vec<f32> = logits.to_vec();
    let recent = &history[history.len().saturating_sub(cfg.repeat_last_n.min(MAX_PENALTY_WINDOW))..];
    if cfg.repetition_penalty != 1.0 {
        let mut seen = std::collections::HashSet::new();
        for &t in recent {
            if (t as usize) < z.len() && seen.insert(t) {
                let v = z[t as usize];
                z[t as usize] = if v > 0.0 { v / cfg.repetition_penalty } else { v * cfg.repetition_penalty };
            }
        }
    }
    if cfg.temperature == 0.0 {
        return argmax(&z);
    }
    for v in z.iter_mut() {
        *v /= cfg.temperature;
    }
    let zmax = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let keys: Vec<u32> = z.iter().map(|&v| order_key(v)).collect();
    let mut tau = 0u32; // keep keys >= tau
    if cfg.top_k > 0 && cfg.top_k < z.len() {
        tau = bisect(|t| keys.iter().filter(|&&k| k >= t).count() as f64, cfg.top_k as f64);
    }
    let mass = |t: u32| -> f64 {
        z.iter().zip(&keys).filter(|(_, &k)| k >= t).map(|(&v, _)| ((v - zmax) as f64).exp()).sum()
    };
    if cfg.top_p < 1.0 {
        let need = cfg.top_p as f64 * mass(tau);
        tau = tau.max(bisect(|t| if t >= tau { mass(t) } else { f64::INFINITY }, need));
    }
    if cfg.min_p > 0.0 {
        tau = tau.max(order_key(zmax + cfg.min_p.ln()));
    }
    let total = mass(tau);
    let u = uniform(cfg.seed, step, row) as f64 * total;
    let mut acc = 0.0f64;
    let mut last = 0;
    for (i, (&v, &k)) in z.iter().zip(&keys).enumerate() {
        if k >= tau {
            acc += ((v - zmax) as f64).exp();
            last = i;
            if acc > u {
                return i as u32;
            }
        }
    }
    last as u32
}

/// The largest key t with f(t) >= need, for f non-increasing in t (32 halving steps).
fn bisect(f: impl Fn(u32) -> f64, need: f64) -> u32 {
    let mut t = 0u32;
    for bit in (0..32).rev() {
        let cand = t | (1 << bit);
        if f(cand) >= need {
            t = cand;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn softmax(z: &[f32]) -> Vec<f64> {
        let m = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let e: Vec<f64> = z.iter().map(|&v| (v as f64 - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|x| x / s).collect()
    }

    /// Frequencies over many seeded draws match the filtered, renormalised distribution.
    fn check_distribution(logits: &[f32], cfg: &SamplerConfig, want: &[f64]) {
        let n = 20000;
        let mut counts = vec![0usize; logits.len()];
        for step in 0..n {
            counts[sample_cpu(logits, &[], cfg, step, 0) as usize] += 1;
        }
        for (i, (&c, &p)) in counts.iter().zip(want).enumerate() {
            let f = c as f64 / n as f64;
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            assert!((f - p).abs() <= 5.0 * sd + 1e-9, "token {i}: frequency {f} vs probability {p} ({cfg:?})");
        }
    }

    #[test]
    fn distributions_follow_the_rules() {
        let logits = [2.0f32, 1.0, 0.5, 0.0, -1.0, 1.5];
        let t = SamplerConfig { temperature: 1.0, seed: 7, ..Default::default() };
        check_distribution(&logits, &t, &softmax(&logits));
        let hot = SamplerConfig { temperature: 2.0, ..t.clone() };
        check_distribution(&logits, &hot, &softmax(&logits.map(|x| x / 2.0)));
        // top-k 2 keeps tokens 0 and 5.
        let k = SamplerConfig { top_k: 2, ..t.clone() };
        let p = softmax(&[2.0, 1.5]);
        check_distribution(&logits, &k, &[p[0], 0.0, 0.0, 0.0, 0.0, p[1]]);
        // top-p 0.5: token 0 alone has ~0.39 of the mass, 0 and 5 together ~0.63.
        let tp = SamplerConfig { top_p: 0.5, ..t.clone() };
        check_distribution(&logits, &tp, &[p[0], 0.0, 0.0, 0.0, 0.0, p[1]]);
        // min-p 0.5: probability >= half the top one: logits >= 2 - ln 2 = 1.307: tokens 0, 5.
        let mp = SamplerConfig { min_p: 0.5, ..t.clone() };
        check_distribution(&logits, &mp, &[p[0], 0.0, 0.0, 0.0, 0.0, p[1]]);
    }

    #[test]
    fn greedy_and_penalty() {
        let logits = [1.0f32, 3.0, 2.9, -0.5];
        let g = SamplerConfig::greedy();
        assert_eq!(sample_cpu(&logits, &[], &g, 0, 0), 1);
        let pen = SamplerConfig { repetition_penalty: 1.5, ..g.clone() };
        // token 1 penalised: 3.0 / 1.5 = 2.0 < 2.9; repeated ids count once.
        assert_eq!(sample_cpu(&logits, &[1, 1, 1], &pen, 0, 0), 2);
        // negative logits are multiplied: -0.5 * 1.5 makes token 3 less likely, not more.
        assert_eq!(sample_cpu(&[-0.5f32, -0.6], &[0], &pen, 0, 0), 1);
        // outside the window the penalty does not apply.
        let short = SamplerConfig { repeat_last_n: 1, ..pen.clone() };
        assert_eq!(sample_cpu(&logits, &[1, 0], &short, 0, 0), 1);
        // ties: lowest id.
        assert_eq!(sample_cpu(&[1.0f32, 5.0, 5.0], &[], &g, 0, 0), 1);
    }

    #[test]
    fn seeded_draws_repeat_and_differ() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37 % 11) as f32) * 0.3).collect();
        let c = SamplerConfig { temperature: 1.0, seed: 42, ..Default::default() };
        let a: Vec<u32> = (0..20).map(|s| sample_cpu(&logits, &[], &c, s, 0)).collect();
        let b: Vec<u32> = (0..20).map(|s| sample_cpu(&logits, &[], &c, s, 0)).collect();
        assert_eq!(a, b);
        let c2 = SamplerConfig { seed: 43, ..c };
        let d: Vec<u32> = (0..20).map(|s| sample_cpu(&logits, &[], &c2, s, 0)).collect();
        assert_ne!(a, d);
    }

    #[test]
    fn bad_values_are_errors() {
        let ok = SamplerConfig::default();
        assert!(ok.validate().is_ok());
        for (c, word) in [
            (SamplerConfig { temperature: -1.0, ..ok.clone() }, "temperature"),
            (SamplerConfig { temperature: f32::NAN, ..ok.clone() }, "temperature"),
            (SamplerConfig { top_p: 0.0, ..ok.clone() }, "top_p"),
            (SamplerConfig { top_p: 1.5, ..ok.clone() }, "top_p"),
            (SamplerConfig { min_p: 1.0, ..ok.clone() }, "min_p"),
            (SamplerConfig { repetition_penalty: 0.0, ..ok.clone() }, "repetition_penalty"),
            (SamplerConfig { repeat_last_n: 10_000, ..ok.clone() }, "repeat_last_n"),
        ] {
            assert!(c.validate().unwrap_err().to_string().contains(word));
        }
    }

    #[test]
    fn order_keys_order_like_floats() {
        let xs = [-f32::MAX, -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, f32::MAX];
        for w in xs.windows(2) {
            assert!(order_key(w[0]) <= order_key(w[1]), "{w:?}");
        }
    }
}
