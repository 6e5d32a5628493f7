//! The human-readable forms of a report: markdown tables (always printed to stdout) and an SVG
//! plot of median decode latency against context length.

use super::args::{Dtype, KvDtype, Readback};
use super::report::{Mode, Pair, Record, Report, Skip};

/// Milliseconds: three significant digits below 100, whole numbers above.
pub(super) fn ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// Bytes in MiB: whole numbers from 100, else one or two decimals.
fn mib(b: u64) -> String {
    let m = b as f64 / (1u64 << 20) as f64;
    if m >= 100.0 {
        format!("{m:.0}")
    } else if m >= 1.0 {
        format!("{m:.1}")
    } else {
        format!("{m:.2}")
    }
}

/// Three significant digits.
pub(super) fn sig(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let d = (2 - x.abs().log10().floor() as i32).max(0) as usize;
    format!("{x:.d$}")
}

/// A ratio of two times or sizes.
pub(super) fn ratio(x: f64) -> String {
    format!("{x:.2}")
}

/// The markdown report: adapter, ratios, every record, skipped sessions.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let a = &r.adapter;
    let set = &r.settings;
    let bw = r.copy_bandwidth.gbps;
    s += &format!("## plt bench on {}\n\n", a.describe);
    let load = |l: Option<[f64; 3]>| l.map(|l| format!("{:.1}", l[0])).unwrap_or_else(|| "?".into());
    s += &format!(
        "Timer: wall clock per decode call (one submit, {} read back){}. Copy bandwidth {} GB/s \
         ({} MiB x {}; buffer copy {}, copy kernel {}). {} measured steps after {} warm-up per mode; \
         window left = {}; KV cache {}; {} CPUs, load average {} at the start and {} at the end; {:.0} s in all.\n\n",
        match set.readback {
            Readback::Logits => "logits",
            Readback::Ids => "token ids",
        },
        if a.timestamps { " and GPU timestamps" } else { " (no GPU timestamps on this adapter)" },
        sig(bw),
        r.copy_bandwidth.bytes >> 20,
        r.copy_bandwidth.copies,
        sig(r.copy_bandwidth.buffer_copy_gbps),
        sig(r.copy_bandwidth.shader_copy_gbps),
        set.steps,
        set.warmup,
        set.window,
        match set.kv_dtype {
            KvDtype::Same => "in the matrices' dtype",
            k => k.as_str(),
        },
        r.host.cpus,
        load(r.host.loadavg_start),
        load(r.host.loadavg_end),
        r.elapsed_s
    );
    let gpu = a.timestamps;
    s += "### Ratios (median decode step time)\n\n";
    s += "| model | dtype | L | B | T | PLT fused / non-looped | vanilla / PLT fused | sequential / fused | KV PLT / non-looped | KV vanilla / PLT |\n";
    s += "|---|---|---|---|---|---|---|---|---|---|\n";
    let pr = |p: &Pair| match p.gpu.filter(|_| gpu) {
        Some(g) => format!("{} (GPU {})", ratio(p.wall), ratio(g)),
        None => ratio(p.wall),
    };
    for x in &r.ratios {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            x.preset,
            x.dtype,
            x.loops,
            x.batch,
            x.context,
            pr(&x.plt_fused_over_nonlooped),
            pr(&x.vanilla_over_plt_fused),
            pr(&x.sequential_over_fused),
            ratio(x.kv_plt_over_nonlooped),
            ratio(x.kv_vanilla_over_plt)
        );
    }
    s += "\n### Decode steps\n\n";
    s += "| model | dtype | mode | L | B | T | passes | dispatches | median ms | p90 ms | GPU median ms | host ms to submit | prefill tok/s | KV MiB (spec) | KV alloc = spec | session MiB | bits/weight | weight MiB/step | weights GB/s | of copy bw |\n";
    s += "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for x in &r.results {
        let wg = x.weight_gbps_gpu.unwrap_or(x.weight_gbps_wall);
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {}% |\n",
            x.preset,
            x.dtype,
            x.mode,
            x.loops,
            x.batch,
            x.context,
            x.passes,
            x.dispatches,
            ms(x.wall_ms.median),
            ms(x.wall_ms.p90),
            x.gpu_ms.as_ref().map(|d| ms(d.median)).unwrap_or_else(|| "-".into()),
            x.host_ms.as_ref().map(|d| ms(d.median)).unwrap_or_else(|| "-".into()),
            x.prefill.tokens_per_s,
            mib(x.kv.spec_bytes),
            match x.kv.matches_spec {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "n/a",
            },
            mib(x.session_bytes),
            sig(x.bits_per_weight),
            mib(x.weight_bytes_per_step),
            sig(wg),
            sig(100.0 * wg / bw)
        );
    }
    // The matrices' device formats of each (size, dtype): a block format's fallbacks show here.
    let mut seen: Vec<(String, String)> = Vec::new();
    for m in &r.models {
        let k = (m.preset.clone(), m.dtype.to_string());
        if m.dtype.is_quantised() && !seen.contains(&k) {
            let f: Vec<String> = m.formats.iter().map(|(f, b)| format!("{f} {}", mib(*b))).collect();
            s += &format!("\nMatrices of {} {}: {} MiB, {} bits per weight ({}).\n", k.0, k.1, mib(m.weight_bytes), sig(m.bits_per_weight), f.join(" MiB, ") + " MiB");
            seen.push(k);
        }
    }
    if !r.skipped.is_empty() {
        // One row per (size, dtype, B, T, reason), naming the variants (or "all").
        let all = 1 + 2 * set.loops.len();
        let mut rows: Vec<(&Skip, Vec<String>)> = Vec::new();
        for k in &r.skipped {
            let same = |x: &Skip| x.preset == k.preset && x.dtype == k.dtype && x.batch == k.batch && x.context == k.context && x.reason == k.reason;
            match rows.iter_mut().find(|(x, _)| same(x)) {
                Some((_, v)) => v.push(k.model.to_string()),
                None => rows.push((k, vec![k.model.to_string()])),
            }
        }
        s += "\n### Skipped\n\n| model | dtype | variants | B | T | reason |\n|---|---|---|---|---|---|\n";
        for (k, v) in rows {
            let o = |v: Option<usize>| v.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
            let variants = if v.len() == all { "all".to_string() } else { v.join(", ") };
            s += &format!("| {} | {} | {} | {} | {} | {} |\n", k.preset, k.dtype, variants, o(k.batch), o(k.context), k.reason);
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// SVG

pub(super) fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// "Nice" tick step for a 0..max axis with about `n` ticks.
pub(super) fn tick_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(1e-12);
    let p = 10f64.powf(raw.log10().floor());
    let m = raw / p;
    p * if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    }
}

/// The plot: median decode latency against context length, one panel per (size, dtype, B), one
/// line per mode and L.
pub fn svg(r: &Report) -> String {
    let mut panels: Vec<(String, Dtype, usize)> = Vec::new();
    for x in &r.results {
        let k = (x.preset.clone(), x.dtype, x.batch);
        if !panels.contains(&k) {
            panels.push(k);
        }
    }
    let (pw, ph) = (360.0, 250.0);
    let (ml, mr, mt, mb) = (56.0, 12.0, 28.0, 40.0);
    let cols = panels.len().clamp(1, 3);
    let rows = panels.len().div_ceil(cols).max(1);
    let legend_h = 56.0;
    let (w, h) = (cols as f64 * pw + 20.0, rows as f64 * ph + legend_h + 40.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    s += &format!("<text x=\"10\" y=\"20\" font-size=\"14\">plt bench: median decode step (wall, ms) vs context length on {}</text>\n", esc(&r.adapter.describe));
    // Series: (mode, loops) in a fixed order.
    let mut series: Vec<(Mode, usize)> = Vec::new();
    for x in &r.results {
        let k = (x.mode, x.loops);
        if !series.contains(&k) {
            series.push(k);
        }
    }
    series.sort();
    let color = |m: Mode| match m {
        Mode::NonLooped => "#222222",
        Mode::PltFused => "#1f77b4",
        Mode::PltSequential => "#ff7f0e",
        Mode::Vanilla => "#d62728",
    };
    let dash = |l: usize| match l {
        1 | 2 => "",
        3 => "6,3",
        _ => "2,2",
    };
    let name = |m: Mode, l: usize| if m == Mode::NonLooped { "non-looped (L=1)".to_string() } else { format!("{m} L={l}") };
    // Legend.
    for (i, (m, l)) in series.iter().enumerate() {
        let (x, y) = (14.0 + (i % 4) as f64 * 180.0, 38.0 + (i / 4) as f64 * 16.0);
        s += &format!(
            "<line x1=\"{x}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{}\" stroke-width=\"2\" stroke-dasharray=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
            x + 24.0,
            color(*m),
            dash(*l),
            x + 30.0,
            y + 4.0,
            esc(&name(*m, *l))
        );
    }
    for (pi, (preset, dtype, b)) in panels.iter().enumerate() {
        let ox = 10.0 + (pi % cols) as f64 * pw;
        let oy = legend_h + 20.0 + (pi / cols) as f64 * ph;
        let recs: Vec<&Record> = r.results.iter().filter(|x| &x.preset == preset && x.dtype == *dtype && x.batch == *b).collect();
        let mut ctxs: Vec<usize> = recs.iter().map(|x| x.context).collect();
        ctxs.sort();
        ctxs.dedup();
        let (lo, hi) = ((ctxs[0] as f64).log2(), (ctxs[ctxs.len() - 1] as f64).log2());
        let (lo, hi) = if hi - lo < 1e-9 { (lo - 1.0, hi + 1.0) } else { (lo, hi) };
        let ymax_data = recs.iter().map(|x| x.wall_ms.median).fold(0.0, f64::max).max(1e-6);
        let step = tick_step(ymax_data, 5.0);
        let ymax = (ymax_data / step).ceil() * step;
        let (x0, x1, y0, y1) = (ox + ml, ox + pw - mr, oy + ph - mb, oy + mt);
        let px = |c: usize| x0 + ((c as f64).log2() - lo) / (hi - lo) * (x1 - x0);
        let py = |v: f64| y0 - v / ymax * (y0 - y1);
        s += &format!("<text x=\"{}\" y=\"{}\" font-size=\"12\" font-weight=\"bold\">{} {} B={}</text>\n", x0, oy + 16.0, esc(preset), dtype, b);
        s += &format!("<rect x=\"{x0}\" y=\"{y1}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>\n", x1 - x0, y0 - y1);
        let decimals = (-step.log10().floor()).max(0.0) as usize;
        let mut v = 0.0;
        while v <= ymax + 1e-9 {
            let y = py(v);
            s += &format!(
                "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{x1}\" y2=\"{y:.1}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.decimals$}</text>\n",
                x0 - 4.0,
                y + 4.0,
            );
            v += step;
        }
        for &c in &ctxs {
            s += &format!("<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{c}</text>\n", px(c), y0 + 14.0);
        }
        s += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">context length T</text>\n", (x0 + x1) / 2.0, y0 + 30.0);
        s += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 {} {})\">ms / step</text>\n", ox + 14.0, (y0 + y1) / 2.0, ox + 14.0, (y0 + y1) / 2.0);
        for (m, l) in &series {
            let mut pts: Vec<(usize, f64)> = recs.iter().filter(|x| x.mode == *m && x.loops == *l).map(|x| (x.context, x.wall_ms.median)).collect();
            if pts.is_empty() {
                continue;
            }
            pts.sort_by_key(|p| p.0);
            let path: Vec<String> = pts.iter().map(|&(c, v)| format!("{:.1},{:.1}", px(c), py(v))).collect();
            s += &format!(
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" stroke-dasharray=\"{}\"><title>{}</title></polyline>\n",
                path.join(" "),
                color(*m),
                dash(*l),
                esc(&name(*m, *l))
            );
            for &(c, v) in &pts {
                s += &format!("<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{}\"><title>{} T={c}: {} ms</title></circle>\n", px(c), py(v), color(*m), esc(&name(*m, *l)), ms(v));
            }
        }
    }
    s += "</svg>\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_steps_are_round() {
        assert_eq!(tick_step(10.0, 5.0), 2.0);
        assert_eq!(tick_step(0.7, 5.0), 0.2);
        assert_eq!(tick_step(1234.0, 5.0), 500.0);
    }

    #[test]
    fn number_formats() {
        assert_eq!((ms(123.4), ms(12.34), ms(1.234), ms(0.1234)), ("123".into(), "12.3".into(), "1.23".into(), "0.123".into()));
        assert_eq!((sig(17.24), sig(1.754), sig(0.0)), ("17.2".into(), "1.75".into(), "0".into()));
        assert_eq!(mib(3 << 20), "3.0");
    }
}
