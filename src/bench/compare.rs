//! `plt bench compare`: reports of `plt bench` made on different machines or adapters, merged
//! into one table per (size, dtype) with a column group per report, and one bar chart.
//!
//! Reports are read as generic JSON, not as `Report`: files from newer versions may carry fields
//! this one does not know, and only the fields below are needed. Rows are matched by (preset,
//! dtype, mode, L, B, T). Settings that change what one decode step does (the PLT window, what a
//! step reads back, the KV-cache dtype, the shape behind a size name) must agree, or no row is
//! comparable; settings that only change how many steps are sampled, the prompt, the seed of the
//! random weights or the run's limits may differ and are listed under the header.

use super::args::{Dtype, KvDtype};
use super::render::{esc, ms, ratio, sig, tick_step};
use super::report::Mode;
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The report schema versions this reads.
const SCHEMAS: &[u64] = &[1];

/// Arguments of `plt bench compare`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CompareArgs {
    /// JSON reports written by `plt bench --json` (two or more): one column group each, in this
    /// order.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Write the markdown tables to this file instead of stdout.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Draw the median decode step of every row, one bar per report, as SVG.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Accept reports of runs that did not finish (`complete: false`).
    #[arg(long)]
    pub allow_incomplete: bool,
}

/// One report: its file (as given), the name of its column group, and the figures that do not
/// depend on the row.
#[derive(Clone, Debug)]
pub struct Column {
    pub file: String,
    pub label: String,
    /// `copy_bandwidth.gbps`: the machine's own yardstick for the fractions.
    pub copy_gbps: Option<f64>,
    pub timestamps: bool,
    /// "arch, N CPUs" of the host, where the report has them.
    pub host: String,
}

/// What a row is matched by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub preset: String,
    pub dtype: String,
    pub mode: String,
    pub loops: u64,
    pub batch: u64,
    pub context: u64,
}

/// One record's figures in one report.
#[derive(Clone, Debug)]
pub struct Cell {
    pub wall_ms: f64,
    pub gpu_ms: Option<f64>,
    /// B / median wall step time.
    pub tokens_per_s: f64,
    /// Weight bandwidth over the report's own copy bandwidth.
    pub fraction_of_copy_bw: Option<f64>,
}

#[derive(Clone, Debug)]
pub struct Row {
    pub key: Key,
    /// One per column; None where that report has no such record.
    pub cells: Vec<Option<Cell>>,
}

/// The three ratios of one report at one (size, dtype, L, B, T): (wall, gpu) each.
pub type Ratios = [(f64, Option<f64>); 3];

/// What a ratio is matched by: (preset, dtype, L, B, T).
type RatioKey = (String, String, u64, u64, u64);

#[derive(Clone, Debug)]
pub struct RatioRow {
    pub preset: String,
    pub dtype: String,
    pub loops: u64,
    pub batch: u64,
    pub context: u64,
    pub cells: Vec<Option<Ratios>>,
}

/// The merged reports.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub columns: Vec<Column>,
    /// Grouped by (preset, dtype) in the order first seen; within a group by B, T, mode, L.
    pub rows: Vec<Row>,
    pub ratios: Vec<RatioRow>,
    /// Settings that differ without making rows incomparable: (setting, value per column).
    pub differing: Vec<(String, Vec<String>)>,
}

/// Runs `plt bench compare`.
pub fn run(a: &CompareArgs) -> Result<()> {
    let mut inputs = Vec::new();
    for p in &a.files {
        inputs.push((p.display().to_string(), read_report(p)?));
    }
    let c = merge(inputs, a.allow_incomplete)?;
    let md = markdown(&c);
    match &a.markdown {
        Some(p) => write(p, &md)?,
        None => print!("{md}"),
    }
    if let Some(p) = &a.svg {
        write(p, &svg(&c))?;
    }
    Ok(())
}

fn write(p: &Path, text: &str) -> Result<()> {
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.to_path_buf(), source: e })?;
    }
    std::fs::write(p, text).map_err(|e| Error::Io { path: p.to_path_buf(), source: e })
}

/// The JSON of one file; read and parse errors name the path.
pub fn read_report(p: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(p).map_err(|e| Error::Io { path: p.to_path_buf(), source: e })?;
    serde_json::from_str(&text).map_err(|e| Error::Input(format!("{}: not JSON: {e}", p.display())))
}

fn bad(file: &str, msg: impl std::fmt::Display) -> Error {
    Error::Input(format!("{file}: {msg}"))
}

/// Checks that `v` is a bench report this version reads, finished unless `allow_incomplete`.
fn check(file: &str, v: &Value, allow_incomplete: bool) -> Result<()> {
    if !v.is_object() {
        return Err(bad(file, "not a plt bench report (not a JSON object)"));
    }
    let schema = v.get("schema").ok_or_else(|| bad(file, "not a plt bench report (no `schema`)"))?;
    match schema.as_u64() {
        Some(s) if SCHEMAS.contains(&s) => {}
        _ => return Err(bad(file, format!("`schema` {schema} is not a report version this plt reads (it reads {SCHEMAS:?})"))),
    }
    if !v.get("results").is_some_and(Value::is_array) {
        return Err(bad(file, "not a plt bench report (no `results` list)"));
    }
    if v.get("complete") == Some(&Value::Bool(false)) && !allow_incomplete {
        return Err(bad(file, "`complete` is false: the run did not finish (--allow-incomplete compares it anyway)"));
    }
    Ok(())
}

fn text(v: &Value) -> Option<&str> {
    v.as_str().map(str::trim).filter(|s| !s.is_empty())
}

/// The column name: adapter name and backend ("llvmpipe (gl)"); on a CPU backend also its
/// threads ("CPU AMD EPYC (cpu, 2 threads)"). Fields a report lacks are left out.
fn label(v: &Value, file: &str) -> String {
    let a = &v["adapter"];
    let name = text(&a["name"]).or_else(|| text(&a["describe"])).map(str::to_string).unwrap_or_else(|| {
        Path::new(file).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| file.to_string())
    });
    let mut tags: Vec<String> = Vec::new();
    for b in [&v["backend"], &a["backend"]] {
        if let Some(t) = text(b).map(str::to_lowercase) {
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
    }
    if tags.iter().any(|t| t == "cpu") {
        let threads = [&v["threads"], &a["threads"], &v["settings"]["threads"], &v["host"]["cpus"]].into_iter().find_map(Value::as_u64);
        if let Some(n) = threads {
            tags.push(format!("{n} thread{}", if n == 1 { "" } else { "s" }));
        }
    }
    if tags.is_empty() {
        name
    } else {
        format!("{name} ({})", tags.join(", "))
    }
}

fn host(v: &Value) -> String {
    let h = &v["host"];
    let mut p: Vec<String> = Vec::new();
    if let Some(a) = text(&h["arch"]) {
        p.push(a.to_string());
    }
    if let Some(n) = h["cpus"].as_u64() {
        p.push(format!("{n} CPUs"));
    }
    p.join(", ")
}

/// A required field of record `i` of `file`.
fn field<'a>(file: &str, i: usize, r: &'a Value, k: &str) -> Result<&'a Value> {
    match r.get(k) {
        Some(x) if !x.is_null() => Ok(x),
        _ => Err(bad(file, format!("results[{i}] has no `{k}`"))),
    }
}

fn str_field(file: &str, i: usize, r: &Value, k: &str) -> Result<String> {
    field(file, i, r, k)?.as_str().map(str::to_string).ok_or_else(|| bad(file, format!("results[{i}].{k} is not a string")))
}

fn u64_field(file: &str, i: usize, r: &Value, k: &str) -> Result<u64> {
    field(file, i, r, k)?.as_u64().ok_or_else(|| bad(file, format!("results[{i}].{k} is not a whole number")))
}

/// The records of one report, keyed; the first of duplicate keys wins.
fn records(file: &str, v: &Value, copy_gbps: Option<f64>) -> Result<Vec<(Key, Cell)>> {
    let mut out: Vec<(Key, Cell)> = Vec::new();
    for (i, r) in v["results"].as_array().into_iter().flatten().enumerate() {
        let key = Key {
            preset: str_field(file, i, r, "preset")?,
            dtype: str_field(file, i, r, "dtype")?,
            mode: str_field(file, i, r, "mode")?,
            loops: u64_field(file, i, r, "loops")?,
            batch: u64_field(file, i, r, "batch")?,
            context: u64_field(file, i, r, "context")?,
        };
        let wall_ms = field(file, i, r, "wall_ms")?["median"]
            .as_f64()
            .filter(|m| *m > 0.0)
            .ok_or_else(|| bad(file, format!("results[{i}].wall_ms.median is not a positive number")))?;
        let gpu_ms = r["gpu_ms"]["median"].as_f64();
        let fraction_of_copy_bw = r["fraction_of_copy_bw"].as_f64().or_else(|| {
            let gbps = r["weight_gbps_gpu"].as_f64().or_else(|| r["weight_gbps_wall"].as_f64())?;
            copy_gbps.filter(|b| *b > 0.0).map(|b| gbps / b)
        });
        let cell = Cell { wall_ms, gpu_ms, tokens_per_s: key.batch as f64 * 1000.0 / wall_ms, fraction_of_copy_bw };
        if !out.iter().any(|(k, _)| *k == key) {
            out.push((key, cell));
        }
    }
    Ok(out)
}

fn ratios_of(v: &Value) -> Vec<(RatioKey, Ratios)> {
    let mut out = Vec::new();
    for r in v["ratios"].as_array().into_iter().flatten() {
        let (Some(p), Some(d), Some(l), Some(b), Some(t)) = (r["preset"].as_str(), r["dtype"].as_str(), r["loops"].as_u64(), r["batch"].as_u64(), r["context"].as_u64()) else {
            continue;
        };
        let pair = |k: &str| r[k]["wall"].as_f64().map(|w| (w, r[k]["gpu"].as_f64()));
        let (Some(a), Some(b2), Some(c)) = (pair("plt_fused_over_nonlooped"), pair("vanilla_over_plt_fused"), pair("sequential_over_fused")) else {
            continue;
        };
        out.push(((p.to_string(), d.to_string(), l, b, t), [a, b2, c]));
    }
    out
}

/// A setting's value as shown in messages.
fn show(v: &Value) -> String {
    match v {
        Value::Null => "(absent)".into(),
        Value::String(s) => s.clone(),
        o => o.to_string(),
    }
}

/// "64 in a.json, 8 in b.json".
fn per_file(files: &[&str], vals: &[String]) -> String {
    files.iter().zip(vals).map(|(f, v)| format!("{v} in {f}")).collect::<Vec<_>>().join(", ")
}

/// Refuses reports whose settings make their steps different work (see the module comment).
fn check_settings(files: &[&str], reports: &[&Value], keys: &[Vec<Key>]) -> Result<Vec<(String, Vec<String>)>> {
    let set = |r: &Value, k: &str| r["settings"].get(k).cloned().unwrap_or(Value::Null);
    // Settings every decode step depends on.
    for (k, default, why) in [
        ("window", None, "the PLT window sets the attention and KV-cache work of every step"),
        ("readback", Some("ids"), "a step reads back the sampled token ids or the full logits"),
    ] {
        let vals: Vec<Value> = reports.iter().map(|r| set(r, k)).map(|v| if v.is_null() { default.map(Value::from).unwrap_or(v) } else { v }).collect();
        if vals.iter().any(|v| *v != vals[0]) {
            let shown: Vec<String> = vals.iter().map(show).collect();
            return Err(Error::Input(format!("settings.{k} differs ({}): the rows are not comparable, {why}", per_file(files, &shown))));
        }
    }
    // The KV dtype as each weight dtype resolves it (`same` is f32 for f32 matrices).
    let kv: Vec<String> = reports.iter().map(|r| show(&set(r, "kv_dtype")).replace("(absent)", "same")).collect();
    let mut dtypes: Vec<&str> = keys.iter().flatten().map(|k| k.dtype.as_str()).collect();
    dtypes.sort();
    dtypes.dedup();
    for d in dtypes {
        let Some(dt) = Dtype::parse(d) else { continue };
        let with: Vec<usize> = (0..reports.len()).filter(|&i| keys[i].iter().any(|k| k.dtype == d)).collect();
        let f16: Vec<Option<bool>> = with.iter().map(|&i| KvDtype::parse(&kv[i]).map(|k| k.is_f16(dt))).collect();
        if with.len() > 1 && f16.iter().any(|x| *x != f16[0]) {
            let fs: Vec<&str> = with.iter().map(|&i| files[i]).collect();
            let shown: Vec<String> = with.iter().map(|&i| kv[i].clone()).collect();
            return Err(Error::Input(format!(
                "settings.kv_dtype differs for {d} matrices ({}): the rows are not comparable, the KV cache's dtype sets the bytes every step reads",
                per_file(&fs, &shown)
            )));
        }
    }
    // A size name must stand for the same shape (`custom` is whatever the flags made it).
    let shape = |r: &Value, name: &str| -> Option<Value> {
        let s = r["settings"]["sizes"].as_array()?.iter().find(|s| s["name"] == name)?;
        let mut s = s.clone();
        s.as_object_mut()?.remove("name");
        Some(s)
    };
    let mut names: Vec<&str> = keys.iter().flatten().map(|k| k.preset.as_str()).collect();
    names.sort();
    names.dedup();
    for n in names {
        let with: Vec<usize> = (0..reports.len()).filter(|&i| keys[i].iter().any(|k| k.preset == n)).collect();
        let shapes: Vec<Option<Value>> = with.iter().map(|&i| shape(reports[i], n)).collect();
        let known: Vec<&Value> = shapes.iter().flatten().collect();
        if known.iter().any(|s| *s != known[0]) {
            let fs: Vec<&str> = with.iter().map(|&i| files[i]).collect();
            let shown: Vec<String> = shapes.iter().map(|s| s.as_ref().map(|s| s.to_string()).unwrap_or_else(|| "(absent)".into())).collect();
            return Err(Error::Input(format!("settings.sizes: `{n}` is a different model shape in each report ({})", per_file(&fs, &shown))));
        }
    }
    // Settings that change how a step is sampled or the run's limits, not the step: shown.
    let mut differing = Vec::new();
    for k in ["steps", "warmup", "prefill_chunk", "seed", "max_prefill_tokens", "time_limit_s", "copy_bytes", "profile"] {
        let vals: Vec<Value> = reports.iter().map(|r| set(r, k)).collect();
        if vals.iter().any(|v| *v != vals[0]) {
            differing.push((k.to_string(), vals.iter().map(show).collect()));
        }
    }
    Ok(differing)
}

fn mode_rank(m: &str) -> usize {
    Mode::ALL.iter().position(|x| x.as_str() == m).unwrap_or(Mode::ALL.len())
}

/// Merges `(file, JSON)` reports: checks each, checks that their settings make their rows
/// comparable, and matches the rows.
pub fn merge(inputs: Vec<(String, Value)>, allow_incomplete: bool) -> Result<Comparison> {
    if inputs.len() < 2 {
        return Err(Error::Input(format!("bench compare: needs two or more reports, got {}", inputs.len())));
    }
    let mut columns = Vec::new();
    let mut keyed = Vec::new();
    for (file, v) in &inputs {
        check(file, v, allow_incomplete)?;
        let copy_gbps = v["copy_bandwidth"]["gbps"].as_f64();
        keyed.push(records(file, v, copy_gbps)?);
        columns.push(Column {
            file: file.clone(),
            label: label(v, file),
            copy_gbps,
            timestamps: v["adapter"]["timestamps"].as_bool().unwrap_or(false),
            host: host(v),
        });
    }
    // Columns that would read the same: add the host where that tells them apart, else the file.
    let labels: Vec<String> = columns.iter().map(|c| c.label.clone()).collect();
    let with_host: Vec<String> = columns.iter().map(|c| format!("{} [{}]", c.label, c.host)).collect();
    for (i, c) in columns.iter_mut().enumerate() {
        if labels.iter().filter(|l| **l == labels[i]).count() > 1 {
            let host_tells = !c.host.is_empty() && with_host.iter().filter(|l| **l == with_host[i]).count() == 1;
            c.label = if host_tells { with_host[i].clone() } else { format!("{} [{}]", c.label, c.file) };
        }
    }
    let files: Vec<&str> = inputs.iter().map(|(f, _)| f.as_str()).collect();
    let reports: Vec<&Value> = inputs.iter().map(|(_, v)| v).collect();
    let keys: Vec<Vec<Key>> = keyed.iter().map(|k| k.iter().map(|(k, _)| k.clone()).collect()).collect();
    let differing = check_settings(&files, &reports, &keys)?;

    // Rows: every key of any report, grouped by (preset, dtype) in the order first seen.
    let mut groups: Vec<(String, String)> = Vec::new();
    let mut all: Vec<Key> = Vec::new();
    for k in keys.iter().flatten() {
        let g = (k.preset.clone(), k.dtype.clone());
        if !groups.contains(&g) {
            groups.push(g);
        }
        if !all.contains(k) {
            all.push(k.clone());
        }
    }
    let group = |k: &Key| groups.iter().position(|g| g.0 == k.preset && g.1 == k.dtype).unwrap_or(0);
    all.sort_by(|a, b| {
        (group(a), a.batch, a.context, mode_rank(&a.mode), &a.mode, a.loops).cmp(&(group(b), b.batch, b.context, mode_rank(&b.mode), &b.mode, b.loops))
    });
    let rows = all
        .into_iter()
        .map(|key| {
            let cells = keyed.iter().map(|recs| recs.iter().find(|(k, _)| *k == key).map(|(_, c)| c.clone())).collect();
            Row { key, cells }
        })
        .collect();

    let per: Vec<_> = reports.iter().map(|v| ratios_of(v)).collect();
    let mut rkeys: Vec<RatioKey> = Vec::new();
    for (k, _) in per.iter().flatten() {
        if !rkeys.contains(k) {
            rkeys.push(k.clone());
        }
    }
    let rgroup = |k: &RatioKey| groups.iter().position(|g| g.0 == k.0 && g.1 == k.1).unwrap_or(groups.len());
    rkeys.sort_by_key(|k| (rgroup(k), k.3, k.4, k.2));
    let ratios = rkeys
        .into_iter()
        .map(|k| RatioRow {
            cells: per.iter().map(|p| p.iter().find(|(x, _)| *x == k).map(|(_, r)| *r)).collect(),
            preset: k.0,
            dtype: k.1,
            loops: k.2,
            batch: k.3,
            context: k.4,
        })
        .collect();
    Ok(Comparison { columns, rows, ratios, differing })
}

const MISSING: &str = "—";

fn row_name(k: &Key) -> String {
    format!("{} L={} B={} T={}", k.mode, k.loops, k.batch, k.context)
}

/// The markdown: the reports, then per (size, dtype) the step table, the rows some reports lack,
/// and the ratios.
pub fn markdown(c: &Comparison) -> String {
    let n = c.columns.len();
    let mut s = String::from("## plt bench compare\n\n| | report | file | host | copy bw GB/s | GPU timestamps |\n|---|---|---|---|---|---|\n");
    for (i, col) in c.columns.iter().enumerate() {
        s += &format!(
            "| [{}] | {} | {} | {} | {} | {} |\n",
            i + 1,
            col.label,
            col.file,
            if col.host.is_empty() { MISSING } else { &col.host },
            col.copy_gbps.map(sig).unwrap_or_else(|| MISSING.into()),
            if col.timestamps { "yes" } else { "no" }
        );
    }
    s += "\nms: median wall time of one decode step (GPU median in parentheses where the adapter has timestamps); \
          tok/s: B / median wall step time; of copy bw: weight bytes per step / step time over that machine's own copy bandwidth.\n";
    for (k, vals) in &c.differing {
        let v: Vec<String> = vals.iter().enumerate().map(|(i, v)| format!("{v} in [{}]", i + 1)).collect();
        s += &format!("Differs, without changing what a step does: settings.{k} ({}).\n", v.join(", "));
    }
    let head = |names: &[&str]| {
        let mut h = String::new();
        for i in 1..=n {
            for x in names {
                h += &format!(" {x} [{i}] |");
            }
        }
        h
    };
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for r in &c.rows {
        if !groups.contains(&(&r.key.preset, &r.key.dtype)) {
            groups.push((&r.key.preset, &r.key.dtype));
        }
    }
    for (preset, dtype) in groups {
        s += &format!("\n### {preset} {dtype}\n\n| mode | L | B | T |{}\n|---|---|---|---|{}\n", head(&["ms", "tok/s", "of copy bw"]), "---|".repeat(3 * n));
        let mut missing = Vec::new();
        for r in c.rows.iter().filter(|r| r.key.preset == preset && r.key.dtype == dtype) {
            s += &format!("| {} | {} | {} | {} |", r.key.mode, r.key.loops, r.key.batch, r.key.context);
            for x in &r.cells {
                match x {
                    Some(x) => {
                        let t = match x.gpu_ms {
                            Some(g) => format!("{} (GPU {})", ms(x.wall_ms), ms(g)),
                            None => ms(x.wall_ms),
                        };
                        let f = x.fraction_of_copy_bw.map(|f| format!("{}%", sig(100.0 * f))).unwrap_or_else(|| MISSING.into());
                        s += &format!(" {t} | {} | {f} |", sig(x.tokens_per_s));
                    }
                    None => s += &format!(" {MISSING} | {MISSING} | {MISSING} |"),
                }
            }
            s += "\n";
            let absent: Vec<String> = r.cells.iter().enumerate().filter(|(_, x)| x.is_none()).map(|(i, _)| format!("[{}]", i + 1)).collect();
            if !absent.is_empty() {
                missing.push((r.key.batch, r.key.context, absent.join(", "), format!("{} L={}", r.key.mode, r.key.loops)));
            }
        }
        if !missing.is_empty() {
            // One entry per (B, T, reports lacking them), naming the modes; "every mode" where
            // that is every row of the (B, T).
            let mut parts: Vec<String> = Vec::new();
            let mut i = 0;
            while i < missing.len() {
                let (b, t, absent, _) = &missing[i];
                let same: Vec<&str> = missing[i..].iter().take_while(|m| (m.0, m.1, &m.2) == (*b, *t, absent)).map(|m| m.3.as_str()).collect();
                let of_bt = c.rows.iter().filter(|r| r.key.preset == preset && r.key.dtype == dtype && (r.key.batch, r.key.context) == (*b, *t)).count();
                let modes = if same.len() == of_bt && of_bt > 1 { "every mode".to_string() } else { same.join(", ") };
                parts.push(format!("B={b} T={t} {modes} (not in {absent})"));
                i += same.len();
            }
            s += &format!("\nRows only some reports have: {}.\n", parts.join("; "));
        }
        let rs: Vec<&RatioRow> = c.ratios.iter().filter(|r| r.preset == preset && r.dtype == dtype).collect();
        if !rs.is_empty() {
            s += &format!(
                "\n#### Ratios of median step times, {preset} {dtype}\n\n| L | B | T |{}\n|---|---|---|{}\n",
                head(&["PLT fused / non-looped", "vanilla / PLT fused", "sequential / fused"]),
                "---|".repeat(3 * n)
            );
            for r in rs {
                s += &format!("| {} | {} | {} |", r.loops, r.batch, r.context);
                for x in &r.cells {
                    match x {
                        Some(x) => {
                            for (w, g) in x {
                                match g {
                                    Some(g) => s += &format!(" {} (GPU {}) |", ratio(*w), ratio(*g)),
                                    None => s += &format!(" {} |", ratio(*w)),
                                }
                            }
                        }
                        None => s += &format!(" {MISSING} | {MISSING} | {MISSING} |"),
                    }
                }
                s += "\n";
            }
        }
    }
    s
}

/// Bar colours, one per report (repeating past eight).
const COLORS: [&str; 8] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];

/// The chart: one group of horizontal bars per row (size, dtype, mode, L, B, T), one bar per
/// report: the median wall step time. A log axis when the times span more than 30x (a GPU next
/// to a software adapter), else linear from 0.
pub fn svg(c: &Comparison) -> String {
    let n = c.columns.len();
    let vals: Vec<f64> = c.rows.iter().flat_map(|r| r.cells.iter().flatten().map(|x| x.wall_ms)).collect();
    let (lo, hi) = (vals.iter().copied().fold(f64::INFINITY, f64::min), vals.iter().copied().fold(0.0, f64::max));
    let log = !vals.is_empty() && hi / lo > 30.0;
    let (label_w, plot_w, bar_h, gap) = (250.0, 520.0, 11.0, 9.0);
    let legend_h = 18.0 * n as f64 + 8.0;
    let top = 34.0 + legend_h + 20.0;
    let group_h = n as f64 * bar_h + gap;
    let (w, h) = (label_w + plot_w + 80.0, top + c.rows.len() as f64 * group_h + 30.0);
    let x0 = label_w;
    // Axis: decades on a log axis, round steps on a linear one.
    let (amin, amax, ticks): (f64, f64, Vec<f64>) = if log {
        let (a, b) = (lo.log10().floor(), hi.log10().ceil());
        (a, b, (a as i32..=b as i32).map(|e| 10f64.powi(e)).collect())
    } else {
        let step = tick_step(hi.max(1e-6), 5.0);
        let top = (hi.max(1e-6) / step).ceil() * step;
        let k = (top / step).round() as usize;
        (0.0, top, (0..=k).map(|i| i as f64 * step).collect())
    };
    let px = |v: f64| {
        let t = if log { (v.max(1e-12).log10() - amin) / (amax - amin).max(1e-12) } else { v / amax.max(1e-12) };
        x0 + t.clamp(0.0, 1.0) * plot_w
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    s += &format!(
        "<text x=\"10\" y=\"20\" font-size=\"14\">plt bench compare: median decode step (wall, ms{})</text>\n",
        if log { ", log scale" } else { "" }
    );
    for (i, col) in c.columns.iter().enumerate() {
        let y = 34.0 + i as f64 * 18.0;
        s += &format!(
            "<rect x=\"14\" y=\"{y}\" width=\"14\" height=\"11\" fill=\"{}\"/><text x=\"34\" y=\"{}\">[{}] {}</text>\n",
            COLORS[i % COLORS.len()],
            y + 10.0,
            i + 1,
            esc(&format!("{} ({})", col.label, col.file))
        );
    }
    let y_end = top + c.rows.len() as f64 * group_h;
    for t in &ticks {
        let x = px(*t);
        s += &format!(
            "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{y_end}\" stroke=\"#ddd\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            top - 6.0,
            top - 10.0,
            if log { ms(*t) } else { sig(*t) }
        );
    }
    for (ri, r) in c.rows.iter().enumerate() {
        let gy = top + ri as f64 * group_h;
        let k = &r.key;
        s += "<g class=\"row\">";
        s += &format!(
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            x0 - 6.0,
            gy + n as f64 * bar_h / 2.0 + 4.0,
            esc(&format!("{} {} {}", k.preset, k.dtype, row_name(k)))
        );
        for (i, x) in r.cells.iter().enumerate() {
            let y = gy + i as f64 * bar_h;
            match x {
                Some(x) => {
                    let bw = (px(x.wall_ms) - x0).max(0.5);
                    s += &format!(
                        "<rect x=\"{x0}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"{}\" fill=\"{}\"><title>{}: {} ms</title></rect><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\">{}</text>",
                        bar_h - 1.0,
                        COLORS[i % COLORS.len()],
                        esc(&c.columns[i].label),
                        ms(x.wall_ms),
                        x0 + bw + 3.0,
                        y + bar_h - 2.0,
                        ms(x.wall_ms)
                    );
                }
                None => s += &format!("<text x=\"{}\" y=\"{:.1}\" font-size=\"9\">{MISSING}</text>", x0 + 3.0, y + bar_h - 2.0),
            }
        }
        s += "</g>\n";
    }
    s += &format!("<line x1=\"{x0}\" y1=\"{}\" x2=\"{x0}\" y2=\"{y_end}\" stroke=\"#666\"/>\n", top - 6.0);
    s += "</svg>\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A record as `plt bench` writes it (the fields this reads, and a few it does not).
    fn rec(mode: &str, loops: u64, batch: u64, context: u64, wall: f64, gpu: Option<f64>, gbps: f64) -> Value {
        json!({
            "preset": "micro", "dtype": "f32", "mode": mode, "loops": loops, "batch": batch, "context": context,
            "passes": loops, "rows": batch * loops, "positions": [context - 5, context - 1],
            "wall_ms": {"n": 2, "median": wall, "p90": wall, "mean": wall, "min": wall, "max": wall},
            "gpu_ms": gpu.map(|g| json!({"n": 2, "median": g, "p90": g, "mean": g, "min": g, "max": g})),
            "wall_samples_ms": [wall, wall], "weight_gbps_wall": gbps, "weight_gbps_gpu": null,
            "prefill": {"tokens": 10, "tokens_per_s": 100.0},
        })
    }

    /// A report of schema 1 with `results`, its ratios (fused / non-looped and so on from the
    /// medians, as `report::ratios` makes them) and `copy_bandwidth.gbps` = `copy`.
    fn report(name: &str, backend: &str, copy: f64, results: Vec<Value>) -> Value {
        let med = |m: &str, b: u64, t: u64| {
            results.iter().find(|r| r["mode"] == m && r["batch"] == b && r["context"] == t).map(|r| r["wall_ms"]["median"].as_f64().unwrap())
        };
        let mut ratios = Vec::new();
        for r in results.iter().filter(|r| r["mode"] == "plt-fused") {
            let (b, t) = (r["batch"].as_u64().unwrap(), r["context"].as_u64().unwrap());
            if let (Some(n), Some(f), Some(s), Some(v)) = (med("non-looped", b, t), med("plt-fused", b, t), med("plt-sequential", b, t), med("vanilla", b, t)) {
                ratios.push(json!({
                    "preset": "micro", "dtype": "f32", "loops": 2, "batch": b, "context": t,
                    "plt_fused_over_nonlooped": {"wall": f / n, "gpu": null},
                    "vanilla_over_plt_fused": {"wall": v / f, "gpu": null},
                    "sequential_over_fused": {"wall": s / f, "gpu": null},
                    "kv_plt_over_nonlooped": 1.5, "kv_vanilla_over_plt": 1.3,
                }));
            }
        }
        json!({
            "schema": 1, "plt_version": "0.1.0", "command": ["plt", "bench"], "complete": true, "elapsed_s": 2.0,
            "adapter": {"name": name, "backend": backend, "device_type": "Cpu", "describe": name, "software": true, "timestamps": false},
            "host": {"os": "linux", "arch": "x86_64", "cpus": 2},
            "settings": {
                "quick": true, "software": true,
                "sizes": [{"name": "micro", "vocab": 64, "hidden": 32, "ffn": 64, "layers": 1, "heads": 2, "kv_heads": 1, "head_dim": 16, "tied": false}],
                "loops": [2], "batch": [1, 2], "context": [16], "dtype": ["f32"], "window": 8, "steps": 2, "warmup": 1,
                "prefill_chunk": 128, "max_prefill_tokens": null, "time_limit_s": null, "copy_bytes": 4194304, "seed": 0,
                "readback": "ids", "kv_dtype": "same", "profile": false,
            },
            "copy_bandwidth": {"gbps": copy},
            "models": [], "results": results, "ratios": ratios, "skipped": [],
        })
    }

    fn full(scale: f64, gpu: bool) -> Vec<Value> {
        let g = |x: f64| if gpu { Some(0.5 * x * scale) } else { None };
        let mut v = Vec::new();
        for b in [1, 2] {
            v.push(rec("non-looped", 1, b, 16, 2.0 * scale, g(2.0), 1.0));
            v.push(rec("plt-fused", 2, b, 16, 2.5 * scale, g(2.5), 1.6));
            v.push(rec("plt-sequential", 2, b, 16, 4.0 * scale, g(4.0), 2.0));
            v.push(rec("vanilla", 2, b, 16, 5.0 * scale, g(5.0), 1.6));
        }
        v
    }

    fn two() -> Vec<(String, Value)> {
        let a = report("llvmpipe", "Gl", 10.0, full(1.0, false));
        // The CPU report lacks B = 2 and carries a top-level field this version does not know.
        let mut b = report("CPU AMD EPYC", "cpu", 20.0, full(0.5, true).into_iter().filter(|r| r["batch"] == 1).collect());
        b["backend"] = json!("cpu");
        b["results"][0]["fraction_of_copy_bw"] = json!(0.25);
        vec![("a.json".into(), a), ("b.json".into(), b)]
    }

    /// The cells of the markdown row that starts with `start`.
    fn row<'a>(md: &'a str, start: &str) -> Vec<&'a str> {
        let line = md.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("no row `{start}` in\n{md}"));
        line.trim_matches('|').split('|').map(str::trim).collect()
    }

    #[test]
    fn merged_table_puts_each_report_in_its_column() {
        let c = merge(two(), false).unwrap();
        assert_eq!(c.columns[0].label, "llvmpipe (gl)");
        assert_eq!(c.columns[1].label, "CPU AMD EPYC (cpu, 2 threads)");
        assert_eq!(c.rows.len(), 8);
        let md = markdown(&c);
        assert!(md.contains("| [1] | llvmpipe (gl) | a.json |") && md.contains("| [2] | CPU AMD EPYC (cpu, 2 threads) | b.json |"), "{md}");
        // mode, L, B, T, then ms / tok/s / of copy bw for [1] and for [2].
        let r = row(&md, "| non-looped | 1 | 1 | 16 |");
        assert_eq!(r[4..], ["2.00", "500", "10.0%", "1.00 (GPU 0.500)", "1000", "25.0%"], "{md}");
        let r = row(&md, "| vanilla | 2 | 1 | 16 |");
        // [2]'s fraction from its own copy bandwidth: 1.6 GB/s over 20.
        assert_eq!(r[4..], ["5.00", "200", "16.0%", "2.50 (GPU 1.25)", "400", "8.00%"], "{md}");
        // B = 2 only in [1]: dashes for [2], and a line naming the rows.
        let r = row(&md, "| plt-fused | 2 | 2 | 16 |");
        assert_eq!(r[4..], ["2.50", "800", "16.0%", "—", "—", "—"], "{md}");
        assert!(md.contains("Rows only some reports have: B=2 T=16 every mode (not in [2]).\n"), "{md}");
        assert!(!md.contains("B=1 T=16 every"), "{md}");
        // One row missing: named by its mode.
        let mut v = two();
        v[0].1["results"].as_array_mut().unwrap().remove(1);
        let md = markdown(&merge(v, false).unwrap());
        assert!(md.contains("Rows only some reports have: B=1 T=16 plt-fused L=2 (not in [1]); B=2 T=16 every mode (not in [2]).\n"), "{md}");
        // Ratios: fused / non-looped 1.25, vanilla / fused 2, sequential / fused 1.6 on both.
        let r = row(&md, "| 2 | 1 | 16 |");
        assert_eq!(r[3..], ["1.25", "2.00", "1.60", "1.25", "2.00", "1.60"], "{md}");
        let r = row(&md, "| 2 | 2 | 16 |");
        assert_eq!(r[3..], ["1.25", "2.00", "1.60", "—", "—", "—"], "{md}");
    }

    #[test]
    fn same_labels_are_told_apart() {
        let mut v = two();
        v[1].1 = v[0].1.clone();
        let c = merge(v.clone(), false).unwrap();
        assert_eq!((c.columns[0].label.as_str(), c.columns[1].label.as_str()), ("llvmpipe (gl) [a.json]", "llvmpipe (gl) [b.json]"));
        v[1].1["host"]["cpus"] = json!(16);
        let c = merge(v, false).unwrap();
        assert_eq!(c.columns[1].label, "llvmpipe (gl) [x86_64, 16 CPUs]");
    }

    fn err(v: Vec<(String, Value)>) -> String {
        match merge(v, false) {
            Ok(_) => panic!("merged"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn settings_that_change_a_step_are_refused() {
        for (k, val) in [("window", json!(64)), ("readback", json!("logits"))] {
            let mut v = two();
            v[1].1["settings"][k] = val;
            let e = err(v);
            assert!(e.contains(&format!("settings.{k}")) && e.contains("a.json") && e.contains("b.json"), "{e}");
        }
        // f32 matrices: `same` is an f32 cache, so f32 agrees and f16 does not.
        let mut v = two();
        v[1].1["settings"]["kv_dtype"] = json!("f32");
        assert!(merge(v.clone(), false).is_ok());
        v[1].1["settings"]["kv_dtype"] = json!("f16");
        let e = err(v);
        assert!(e.contains("settings.kv_dtype") && e.contains("f16 in b.json"), "{e}");
        let mut v = two();
        v[0].1["settings"]["sizes"][0]["hidden"] = json!(64);
        let e = err(v);
        assert!(e.contains("settings.sizes") && e.contains("`micro`"), "{e}");
        // Sample counts may differ; the markdown says so.
        let mut v = two();
        v[1].1["settings"]["steps"] = json!(12);
        let md = markdown(&merge(v, false).unwrap());
        assert!(md.contains("settings.steps (2 in [1], 12 in [2])"), "{md}");
    }

    #[test]
    fn non_reports_and_incomplete_ones_are_refused() {
        let one = |f: &dyn Fn(&mut Value)| {
            let mut v = two();
            f(&mut v[1].1);
            v
        };
        let e = err(one(&|v| {
            v.as_object_mut().unwrap().remove("schema");
        }));
        assert!(e.contains("b.json") && e.contains("`schema`"), "{e}");
        let e = err(one(&|v| {
            v.as_object_mut().unwrap().remove("results");
        }));
        assert!(e.contains("b.json") && e.contains("`results`"), "{e}");
        let e = err(one(&|v| v["schema"] = json!(2)));
        assert!(e.contains("b.json") && e.contains("`schema` 2"), "{e}");
        let e = err(one(&|v| *v = json!([1, 2])));
        assert!(e.contains("b.json") && e.contains("not a plt bench report"), "{e}");
        let e = err(one(&|v| v["results"][0].as_object_mut().unwrap().remove("mode").map(|_| ()).unwrap()));
        assert!(e.contains("b.json") && e.contains("results[0] has no `mode`"), "{e}");
        let v = one(&|v| v["complete"] = json!(false));
        let e = err(v.clone());
        assert!(e.contains("b.json") && e.contains("`complete` is false"), "{e}");
        assert!(merge(v, true).is_ok());
        let e = err(two().into_iter().take(1).collect());
        assert!(e.contains("two or more"), "{e}");
        let missing = std::env::temp_dir().join("plt-compare-no-such-report.json");
        let e = read_report(&missing).unwrap_err().to_string();
        assert!(e.contains("plt-compare-no-such-report.json"), "{e}");
    }

    /// Every tag closed in order.
    fn balanced(s: &str) -> bool {
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = s;
        while let Some(i) = rest.find('<') {
            let Some(j) = rest[i..].find('>') else { return false };
            let tag = &rest[i + 1..i + j];
            rest = &rest[i + j + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                if stack.pop() != Some(name.trim()) {
                    return false;
                }
            } else if !tag.ends_with('/') {
                stack.push(tag.split_whitespace().next().unwrap_or(""));
            }
        }
        stack.is_empty()
    }

    #[test]
    fn svg_has_a_bar_group_per_row() {
        let mut v = two();
        v[0].1["adapter"]["name"] = json!("a <b> & c");
        let c = merge(v, false).unwrap();
        let s = svg(&c);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(balanced(&s), "{s}");
        assert!(!balanced("<svg><g></svg></g>"));
        assert!(s.contains("a &lt;b&gt; &amp; c"));
        assert_eq!(s.matches("<g class=\"row\">").count(), c.rows.len());
        // 8 rows: 4 with two bars, 4 with one bar and a dash.
        assert_eq!(s.matches("<rect x=\"250\"").count(), 12);
        assert_eq!(s.matches(">—</text>").count(), 4);
        assert!(!s.contains("log scale"));
        // A 100x span gets a log axis.
        let mut v = two();
        for r in v[1].1["results"].as_array_mut().unwrap() {
            r["wall_ms"]["median"] = json!(r["wall_ms"]["median"].as_f64().unwrap() * 0.01);
        }
        assert!(svg(&merge(v, false).unwrap()).contains("log scale"));
    }
}
