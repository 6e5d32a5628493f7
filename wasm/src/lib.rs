//! The PLT runtime in the browser: a thin wasm-bindgen layer over the `plt` library.
//!
//! Everything that computes lives in the library (`Engine`, `TextSession`, `Generator`); this
//! crate only turns bytes from JavaScript into a model on a WebGPU device, JS option objects
//! into `GenerateOptions`, and each generated piece of text into a JS callback. The JS side
//! (`www/plt.js`) fetches the files and runs this in a worker.

// The library's API takes `Arc`s; on the web they are neither Send nor Sync (one thread).
#![allow(clippy::arc_with_non_send_sync)]
// A generation holds the model across its awaits on purpose: the page is one thread, and a
// second `generate` while one runs fails at `try_borrow_mut` with a message.
#![allow(clippy::await_holding_refcell_ref)]

use js_sys::{Function, Promise};
use plt::tokenizer::ChatMessage;
use plt::generate::{Chat, Engine, FinishReason, GenerateOptions, Generator, TextSession};
use plt::gpu::{Gpu, GpuOptions};
use plt::load::{ByteSource, Bytes, MemoryModel, ModelSource, Opener};
use plt::model::Schedule;
use plt::sampling::SamplerConfig;
use plt::{Config, Looping};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

fn js_err(e: impl std::fmt::Display) -> JsValue {
    JsError::new(&e.to_string()).into()
}

/// Milliseconds from a monotonic clock where there is one (`performance.now()` in pages and
/// workers), else `Date.now()`.
fn now_ms() -> f64 {
    let perf = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("performance")).ok();
    if let Some(p) = perf.filter(|p| p.is_object()) {
        if let Ok(f) = js_sys::Reflect::get(&p, &JsValue::from_str("now")).and_then(|f| f.dyn_into::<Function>()) {
            if let Some(t) = f.call0(&p).ok().and_then(|v| v.as_f64()) {
                return t;
            }
        }
    }
    js_sys::Date::now()
}

/// Opens the WebGPU device and describes its adapter ("name (BrowserWebGpu, type, driver)").
/// Fails with a message when the browser has no WebGPU or no adapter.
#[wasm_bindgen(js_name = adapterInfo)]
pub fn adapter_info() -> Promise {
    future_to_promise(async move {
        let gpu = Gpu::new(&GpuOptions::default()).await.map_err(js_err)?;
        Ok(JsValue::from_str(&gpu.describe()))
    })
}

/// Options of `Model.load` (all optional).
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct LoadOpts {
    /// Session context length (default: min(2048, the model's max_position_embeddings)).
    context: Option<usize>,
    /// Device storage of the matrices: "f32" or "f16" (default: as stored).
    dtype: Option<String>,
    /// A name for messages (e.g. the URL the weights came from).
    source: Option<String>,
    /// Text of the directory's generation_config.json and tokenizer_config.json, when it has
    /// them (they set BOS/EOS, `add_bos_token` and the chat template).
    generation_config: Option<String>,
    tokenizer_config: Option<String>,
}

/// Options of `Model.generate` (all optional; defaults are greedy decoding of 64 tokens).
#[derive(Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct GenOpts {
    max_tokens: usize,
    temperature: f32,
    top_k: usize,
    top_p: f32,
    min_p: f32,
    repetition_penalty: f32,
    repeat_last_n: usize,
    seed: u64,
    /// "fused" (PLT: all loops in one pass), "sequential" (PLT: one pass per loop) or
    /// "vanilla" (the same weights as a vanilla looped model, PLT-SPEC s6).
    mode: String,
    stop: Vec<String>,
    stop_at_eos: bool,
}

impl Default for GenOpts {
    fn default() -> Self {
        let s = SamplerConfig::default();
        GenOpts {
            max_tokens: 64,
            temperature: s.temperature,
            top_k: s.top_k,
            top_p: s.top_p,
            min_p: s.min_p,
            repetition_penalty: s.repetition_penalty,
            repeat_last_n: s.repeat_last_n,
            seed: s.seed,
            mode: "fused".into(),
            stop: Vec::new(),
            stop_at_eos: true,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenResult {
    text: String,
    /// The prompt's token ids as fed (BOS included when the model adds one).
    prompt_tokens: Vec<u32>,
    /// Generated token ids.
    tokens: Vec<u32>,
    finish: String,
    mode: String,
    prompt_token_count: usize,
    /// Prefill of the prompt and the first token (ms).
    prefill_ms: f64,
    generated_tokens: usize,
    /// From the first generated token to the last (ms).
    decode_ms: f64,
    tokens_per_second: f64,
    ms_per_token: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChatResult {
    /// The reply as kept in the conversation (trimmed).
    reply: String,
    text: String,
    tokens: Vec<u32>,
    finish: String,
    mode: String,
    /// Oldest messages dropped to make room for this turn.
    dropped: usize,
    /// The session started over from the messages (after dropping, or after a cut reply).
    restarted: bool,
    prompt_token_count: usize,
    prefill_ms: f64,
    generated_tokens: usize,
    decode_ms: f64,
    tokens_per_second: f64,
    ms_per_token: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ModelInfo {
    adapter: String,
    /// The adapter-dependent kernel choices (`Gpu::kernel_summary`).
    kernels: String,
    source: String,
    layers: usize,
    hidden_size: usize,
    vocab_size: usize,
    num_loops: usize,
    loop_mode: String,
    window: usize,
    parameters: usize,
    weight_bytes: u64,
    context: usize,
    modes: Vec<String>,
}

struct Inner {
    engine: Arc<Engine>,
    session: TextSession,
    /// The conversation of `chat` turns, on `session` (which `generate` also uses: it then
    /// tells the chat, whose next turn starts over from its messages).
    chat: Chat,
    /// The same weights as a vanilla looped model, built on first use (PLT models only).
    vanilla: Option<TextSession>,
    /// The vanilla config and the model's files (kept as fetched), to build `vanilla`.
    vanilla_src: Option<(Config, ModelSource)>,
    dtype: Option<plt::DType>,
    context: usize,
}

/// A model on the browser's WebGPU device, with one text session per loop mode.
#[wasm_bindgen]
pub struct Model {
    inner: Rc<RefCell<Option<Inner>>>,
    cancel: Arc<AtomicBool>,
    info: String,
}

#[wasm_bindgen]
impl Model {
    /// Loads a model from the bytes of config.json and tokenizer.json and model.safetensors (a
    /// `Blob`, read a range at a time in a worker, or bytes in a `Uint8Array`: never whole in
    /// wasm memory).
    /// `options`: `{context, dtype, source, tokenizerConfig, generationConfig}`;
    /// `on_progress(stage, fraction)` is called while parsing and uploading. Resolves to a
    /// `Model`.
    pub fn load(config: &[u8], weights: JsValue, tokenizer_json: &[u8], options: JsValue, on_progress: Option<Function>) -> Promise {
        let (config, tok) = (config.to_vec(), tokenizer_json.to_vec());
        future_to_promise(async move {
            let opts = load_opts(options)?;
            let source = opts.source.clone().unwrap_or_else(|| "model.safetensors".into());
            let weights = js_opener(weights, "model.safetensors")?;
            // The files as fetched; the tokenizer's special tokens, BOS rule and chat template
            // follow the same rules as a native model directory (`Tokenizer::for_model`).
            let src = ModelSource::Memory(MemoryModel {
                name: source.clone(),
                config: Bytes::from(config),
                safetensors: weights.into(),
                tokenizer: Some(Bytes::from(tok)),
                generation_config: opts.generation_config.clone().map(|t| Bytes::from(t.into_bytes())),
                tokenizer_config: opts.tokenizer_config.clone().map(|t| Bytes::from(t.into_bytes())),
            });
            Model::from_source(src, source, opts, on_progress).await
        })
    }

    /// Loads a model from the bytes of one GGUF file (its tokenizer and chat template from its
    /// metadata; block formats kept quantised on the device). `options`: `{context, dtype,
    /// source}`; otherwise as `load`.
    #[wasm_bindgen(js_name = loadGguf)]
    pub fn load_gguf(file: JsValue, options: JsValue, on_progress: Option<Function>) -> Promise {
        future_to_promise(async move {
            let opts = load_opts(options)?;
            let source = opts.source.clone().unwrap_or_else(|| "model.gguf".into());
            let src = ModelSource::GgufFile { name: source.clone(), file: js_opener(file, "model.gguf")? };
            Model::from_source(src, source, opts, on_progress).await
        })
    }

    #[wasm_bindgen(js_name = infoJson)]
    pub fn info_json(&self) -> String {
        self.info.clone()
    }

    /// The adapter's description.
    pub fn adapter(&self) -> String {
        self.inner.borrow().as_ref().map(|i| i.engine.describe()).unwrap_or_default()
    }

    /// Token ids of `prompt` as `generate` feeds them (BOS included when the model adds one).
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>, JsValue> {
        let g = self.inner.try_borrow().map_err(|_| js_err("the model is busy"))?;
        let inner = g.as_ref().ok_or_else(|| js_err("the model was freed"))?;
        inner.engine.tokenizer().and_then(|t| t.encode(prompt, true)).map_err(js_err)
    }

    /// Stops a running generation at its next token.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Generates from `prompt` (a fresh context each call). `options`: `{maxTokens, temperature,
    /// topK, topP, minP, repetitionPenalty, repeatLastN, seed, mode, stop, stopAtEos}`.
    /// `on_token(piece, elapsedMs)` receives each piece of text as it is decoded; returning
    /// `false` stops. Resolves to `{text, promptTokens, tokens, finish, mode, promptTokenCount,
    /// prefillMs, generatedTokens, decodeMs, tokensPerSecond, msPerToken}`.
    pub fn generate(&self, prompt: String, options: JsValue, on_token: Option<Function>) -> Promise {
        let inner = self.inner.clone();
        let cancel = self.cancel.clone();
        future_to_promise(async move {
            let o: GenOpts = if options.is_undefined() || options.is_null() {
                GenOpts::default()
            } else {
                serde_wasm_bindgen::from_value(options).map_err(js_err)?
            };
            let mut guard = inner.try_borrow_mut().map_err(|_| js_err("a generation is already running"))?;
            let inner = guard.as_mut().ok_or_else(|| js_err("the model was freed"))?;
            let (schedule, vanilla) = match o.mode.as_str() {
                "fused" | "parallel" | "" => (Schedule::Fused, false),
                "sequential" => (Schedule::Sequential, false),
                "vanilla" => (Schedule::Fused, true),
                m => return Err(js_err(format!("mode: expected fused, sequential or vanilla, got `{m}`"))),
            };
            if !vanilla {
                inner.chat.session_lost();
            }
            let ts = if let (true, Some((vc, src))) = (vanilla, inner.vanilla_src.as_ref()) {
                if inner.vanilla.is_none() {
                    let model = plt::load::open_with_config(src, vc.clone()).map_err(js_err)?;
                    let gpu = inner.engine.gpu().ok_or_else(|| js_err("the vanilla model runs on the GPU"))?.clone();
                    let e = Engine::from_model(gpu, model, inner.dtype, &inner.engine.source, &mut |_, _| {}).map_err(js_err)?;
                    inner.vanilla = Some(TextSession::new(Arc::new(e), inner.context).map_err(js_err)?);
                }
                inner.vanilla.as_mut().expect("built")
            } else {
                &mut inner.session
            };
            ts.reset().map_err(js_err)?;
            cancel.store(false, Ordering::Relaxed);
            let opts = gen_options(&o, schedule, &cancel);
            let prompt_ids = ts.encode_prompt(&prompt).map_err(js_err)?;
            let t0 = now_ms();
            let mut g = Generator::start(ts, &prompt_ids, opts).await.map_err(js_err)?;
            let t1 = now_ms();
            let mut last = t1;
            while let Some(piece) = g.next_piece().await.map_err(js_err)? {
                let now = now_ms();
                if let Some(cb) = &on_token {
                    let r = cb.call2(&JsValue::NULL, &JsValue::from_str(&piece), &JsValue::from_f64(now - last));
                    if matches!(r, Ok(v) if v == JsValue::FALSE) {
                        g.cancel();
                    }
                }
                last = now;
            }
            let gen = g.finish();
            let n = gen.tokens.len();
            // Wall time from the first token to the last, on the page's monotonic clock (the
            // library's `Timings` use Date.now(), which has a 1 ms step).
            let decode_ms = if n > 1 { last - t1 } else { 0.0 };
            let res = GenResult {
                text: gen.text,
                prompt_tokens: prompt_ids,
                tokens: gen.tokens,
                finish: finish_name(&gen.finish),
                mode: if vanilla { "vanilla".into() } else { format!("{schedule:?}").to_lowercase() },
                prompt_token_count: gen.timings.prompt_tokens,
                prefill_ms: t1 - t0,
                generated_tokens: n,
                decode_ms,
                tokens_per_second: rate(n, decode_ms).0,
                ms_per_token: rate(n, decode_ms).1,
            };
            gpu_check(&inner.engine)?;
            serde_wasm_bindgen::to_value(&res).map_err(js_err)
        })
    }

    /// One turn of the conversation: adds `user`'s message and generates the assistant's reply
    /// with the model's chat template, on the session the turns share (the context is kept from
    /// turn to turn; when the next message and room for the reply do not fit, the oldest turns
    /// are dropped and the conversation is fed again: `plt::generate::Chat`). `options` as for
    /// `generate` (`mode`: fused or sequential). Resolves to `{reply, text, tokens, finish,
    /// mode, dropped, restarted, promptTokenCount, prefillMs, generatedTokens, decodeMs,
    /// tokensPerSecond, msPerToken}`; `on_token` as for `generate`.
    pub fn chat(&self, user: String, options: JsValue, on_token: Option<Function>) -> Promise {
        self.turn(None, user, options, on_token)
    }

    /// A chat completion in the shape of OpenAI's `chat.completions`: `messages` is the whole
    /// conversation, `[{role, content}, ...]` (roles system, user, assistant), ending with the
    /// user's message to answer. The session keeps what it was fed: when `messages` extends
    /// the conversation of the previous call (its messages and the reply it gave), only the new
    /// message is fed; any other history (an edited message, a regenerated reply, another
    /// conversation) is fed again from the start. The context policy is `chat`'s, and so is the
    /// result.
    #[wasm_bindgen(js_name = chatCompletion)]
    pub fn chat_completion(&self, messages: JsValue, options: JsValue, on_token: Option<Function>) -> Promise {
        let parsed = chat_messages(messages);
        match parsed {
            Ok((history, user)) => self.turn(Some(history), user, options, on_token),
            Err(e) => Promise::reject(&e),
        }
    }
}

/// `[{role, content}, ...]` from JS: checked (each role system, user or assistant, each
/// content a string, the last message the user's), split into the history and the last message.
fn chat_messages(messages: JsValue) -> Result<(Vec<ChatMessage>, String), JsValue> {
    let arr: js_sys::Array = messages.dyn_into().map_err(|_| js_err("messages: expected an array of {role, content}"))?;
    let mut out = Vec::with_capacity(arr.length() as usize);
    for (i, m) in arr.iter().enumerate() {
        let field = |k: &str| -> Result<String, JsValue> {
            let v = js_sys::Reflect::get(&m, &JsValue::from_str(k)).map_err(|_| js_err(format!("messages[{i}]: expected an object {{role, content}}")))?;
            v.as_string().ok_or_else(|| js_err(format!("messages[{i}].{k}: expected a string")))
        };
        if !m.is_object() {
            return Err(js_err(format!("messages[{i}]: expected an object {{role, content}}")));
        }
        let role = field("role")?;
        if !matches!(role.as_str(), "system" | "user" | "assistant") {
            return Err(js_err(format!("messages[{i}].role: expected system, user or assistant, got `{}`", role.escape_debug())));
        }
        out.push(ChatMessage::new(&role, &field("content")?));
    }
    match out.pop() {
        Some(last) if last.role == "user" => Ok((out, last.content)),
        Some(last) => Err(js_err(format!("messages[{}].role: the last message must be the user's, got `{}`", out.len(), last.role))),
        None => Err(js_err("messages: empty; give at least the user's message")),
    }
}

impl Model {
    /// One chat turn: `user`'s message after `history` (None: after the conversation as kept).
    fn turn(&self, history: Option<Vec<ChatMessage>>, user: String, options: JsValue, on_token: Option<Function>) -> Promise {
        let inner = self.inner.clone();
        let cancel = self.cancel.clone();
        future_to_promise(async move {
            let o: GenOpts = if options.is_undefined() || options.is_null() {
                GenOpts::default()
            } else {
                serde_wasm_bindgen::from_value(options).map_err(js_err)?
            };
            let schedule = match o.mode.as_str() {
                "fused" | "parallel" | "" => Schedule::Fused,
                "sequential" => Schedule::Sequential,
                m => return Err(js_err(format!("mode: a chat runs fused or sequential, not `{m}`"))),
            };
            let mut guard = inner.try_borrow_mut().map_err(|_| js_err("a generation is already running"))?;
            let inner = guard.as_mut().ok_or_else(|| js_err("the model was freed"))?;
            cancel.store(false, Ordering::Relaxed);
            let opts = gen_options(&o, schedule, &cancel);
            let t0 = now_ms();
            let (mut first, mut last) = (None, t0);
            let mut on_text = |piece: &str| -> bool {
                let now = now_ms();
                first.get_or_insert(now);
                let go_on = match &on_token {
                    Some(cb) => !matches!(cb.call2(&JsValue::NULL, &JsValue::from_str(piece), &JsValue::from_f64(now - last)), Ok(v) if v == JsValue::FALSE),
                    None => true,
                };
                last = now;
                go_on
            };
            if let Some(h) = history {
                inner.chat.messages = h;
            }
            let turn = inner.chat.turn(&mut inner.session, &user, &opts, &mut on_text).await.map_err(js_err)?;
            let gen = turn.generation;
            let n = gen.tokens.len();
            let first = first.unwrap_or(last);
            let decode_ms = if n > 1 { last - first } else { 0.0 };
            let res = ChatResult {
                reply: turn.reply,
                text: gen.text,
                tokens: gen.tokens,
                finish: finish_name(&gen.finish),
                mode: format!("{schedule:?}").to_lowercase(),
                dropped: turn.dropped,
                restarted: turn.restarted,
                prompt_token_count: gen.timings.prompt_tokens,
                prefill_ms: first - t0,
                generated_tokens: n,
                decode_ms,
                tokens_per_second: rate(n, decode_ms).0,
                ms_per_token: rate(n, decode_ms).1,
            };
            gpu_check(&inner.engine)?;
            serde_wasm_bindgen::to_value(&res).map_err(js_err)
        })
    }
}

#[wasm_bindgen]
impl Model {
    /// Starts the conversation over, with `system` as its system prompt (none when empty).
    #[wasm_bindgen(js_name = chatReset)]
    pub fn chat_reset(&self, system: Option<String>) -> Result<(), JsValue> {
        let mut g = self.inner.try_borrow_mut().map_err(|_| js_err("the model is busy"))?;
        let inner = g.as_mut().ok_or_else(|| js_err("the model was freed"))?;
        inner.chat = Chat::new(system.as_deref());
        inner.session.reset().map_err(js_err)
    }

    /// Takes back the last exchange (the last user message and its reply) and returns the
    /// user's message, to ask it again; undefined when there is none.
    #[wasm_bindgen(js_name = chatUndo)]
    pub fn chat_undo(&self) -> Result<Option<String>, JsValue> {
        let mut g = self.inner.try_borrow_mut().map_err(|_| js_err("the model is busy"))?;
        let inner = g.as_mut().ok_or_else(|| js_err("the model was freed"))?;
        Ok(inner.chat.undo())
    }

    /// The conversation as JSON: `[{role, content}, ...]`.
    #[wasm_bindgen(js_name = chatMessagesJson)]
    pub fn chat_messages_json(&self) -> Result<String, JsValue> {
        let g = self.inner.try_borrow().map_err(|_| js_err("the model is busy"))?;
        let inner = g.as_ref().ok_or_else(|| js_err("the model was freed"))?;
        serde_json::to_string(&inner.chat.messages).map_err(js_err)
    }

    /// Why the WebGPU device was lost (destroyed, reset, or its driver failed), or undefined
    /// while it works. A lost device fails every call: the model must be loaded again.
    #[wasm_bindgen(js_name = deviceLost)]
    pub fn device_lost(&self) -> Option<String> {
        let g = self.inner.try_borrow().ok()?;
        let gpu = g.as_ref()?.engine.gpu()?.clone();
        if gpu.is_lost() {
            Some(gpu.check().err().map(|e| e.to_string()).unwrap_or_else(|| "device lost".into()))
        } else {
            None
        }
    }

    /// Destroys the WebGPU device, as a driver reset or a removed GPU would: for tests of what
    /// the caller does after a lost device. Does nothing while a generation runs.
    #[wasm_bindgen(js_name = destroyDevice)]
    pub fn destroy_device(&self) {
        if let Ok(g) = self.inner.try_borrow() {
            if let Some(gpu) = g.as_ref().and_then(|i| i.engine.gpu()) {
                gpu.device.destroy();
            }
        }
    }

    /// Releases the device buffers now (the object is unusable afterwards).
    pub fn dispose(&self) {
        if let Ok(mut g) = self.inner.try_borrow_mut() {
            g.take();
        }
    }
}

/// Decode tokens per second and ms per token of `n` tokens whose first-to-last took
/// `decode_ms` (the first token comes with the prefill).
fn rate(n: usize, decode_ms: f64) -> (f64, f64) {
    if n > 1 && decode_ms > 0.0 {
        ((n - 1) as f64 / (decode_ms / 1000.0), decode_ms / (n - 1) as f64)
    } else {
        (0.0, 0.0)
    }
}

/// The library's options for a generation from the JS ones.
fn gen_options(o: &GenOpts, schedule: Schedule, cancel: &Arc<AtomicBool>) -> GenerateOptions {
    GenerateOptions {
        max_tokens: o.max_tokens,
        sampler: SamplerConfig {
            temperature: o.temperature,
            top_k: o.top_k,
            top_p: o.top_p,
            min_p: o.min_p,
            repetition_penalty: o.repetition_penalty,
            repeat_last_n: o.repeat_last_n,
            seed: o.seed,
        },
        stop: o.stop.clone(),
        stop_at_eos: o.stop_at_eos,
        schedule,
        cancel: Some(cancel.clone()),
        ..GenerateOptions::default()
    }
}

fn finish_name(f: &FinishReason) -> String {
    match f {
        FinishReason::Eos => "eos".into(),
        FinishReason::Stop(s) => format!("stop:{s}"),
        FinishReason::MaxTokens => "max_tokens".into(),
        FinishReason::Cancelled => "cancelled".into(),
        FinishReason::ContextFull => "context_full".into(),
    }
}

fn gpu_check(e: &Engine) -> Result<(), JsValue> {
    e.gpu().map_or(Ok(()), |g| g.check()).map_err(js_err)
}

fn describe(e: &Engine, context: usize, vanilla: bool) -> String {
    let c = e.cfg();
    let mut modes = vec!["fused".to_string()];
    if c.num_loops > 1 {
        modes.push("sequential".into());
    }
    if vanilla {
        modes.push("vanilla".into());
    }
    let info = ModelInfo {
        adapter: e.describe(),
        kernels: e.gpu().map(|g| g.kernel_summary()).unwrap_or_default(),
        source: e.source.clone(),
        layers: c.num_hidden_layers,
        hidden_size: c.hidden_size,
        vocab_size: c.vocab_size,
        num_loops: c.num_loops,
        loop_mode: match c.looping {
            Looping::Plt => "parallel".into(),
            Looping::Vanilla => "vanilla".into(),
        },
        window: c.window_left + 1,
        parameters: c.num_params(),
        weight_bytes: e.weight_bytes(),
        context,
        modes,
    };
    serde_json::to_string(&info).unwrap_or_default()
}

/// A file from JS, read a range at a time: a `Blob` (a picked file, one from the cache or the
/// network) through `FileReaderSync` where there is one (in workers), else a `Uint8Array` or
/// `ArrayBuffer` in JS memory. Either way the file is never whole in wasm memory.
fn js_opener(file: JsValue, name: &str) -> Result<Opener, JsValue> {
    let has_sync_reader = js_sys::Reflect::has(&js_sys::global(), &JsValue::from_str("FileReaderSync")).unwrap_or(false);
    let name = name.to_string();
    if file.is_instance_of::<web_sys::Blob>() {
        if !has_sync_reader {
            return Err(js_err(format!("{name}: reading a Blob a range at a time needs FileReaderSync (a worker): pass its bytes instead, or load it in a worker")));
        }
        let blob: web_sys::Blob = file.unchecked_into();
        return Ok(Opener::new(move || {
            let reader = web_sys::FileReaderSync::new().map_err(|e| plt::Error::Input(format!("{name}: {}", js_text(&e))))?;
            Ok(Box::new(BlobSource { name: name.clone(), blob: blob.clone(), reader }) as Box<dyn ByteSource>)
        }));
    }
    let bytes = if file.is_instance_of::<js_sys::ArrayBuffer>() {
        js_sys::Uint8Array::new(&file)
    } else if file.is_instance_of::<js_sys::Uint8Array>() {
        file.unchecked_into()
    } else {
        return Err(js_err(format!("{name}: expected a Blob/File, a Uint8Array or an ArrayBuffer")));
    };
    Ok(Opener::new(move || Ok(Box::new(ArraySource { name: name.clone(), bytes: bytes.clone() }) as Box<dyn ByteSource>)))
}

fn js_text(v: &JsValue) -> String {
    v.as_string()
        .or_else(|| v.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())))
        .unwrap_or_else(|| format!("{v:?}"))
}

/// Checks that `offset..offset + len` lies in a file of `size` bytes.
fn in_file(name: &str, offset: u64, len: usize, size: u64) -> plt::Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(plt::Error::Input(format!("{name}: reading {len} bytes at offset {offset}, past the end of the file ({size} bytes)"))),
    }
}

/// A file in a `Blob`, read a range at a time with `FileReaderSync`.
struct BlobSource {
    name: String,
    blob: web_sys::Blob,
    reader: web_sys::FileReaderSync,
}

impl ByteSource for BlobSource {
    fn name(&self) -> &str {
        &self.name
    }
    fn size(&self) -> u64 {
        self.blob.size() as u64
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> plt::Result<()> {
        in_file(&self.name, offset, buf.len(), self.size())?;
        let fail = |e: JsValue| plt::Error::Input(format!("{}: reading bytes at offset {offset}: {}", self.name, js_text(&e)));
        let part = self.blob.slice_with_f64_and_f64(offset as f64, (offset + buf.len() as u64) as f64).map_err(fail)?;
        let got = self.reader.read_as_array_buffer(&part).map_err(fail)?;
        let got = js_sys::Uint8Array::new(got.as_ref());
        if got.length() as usize != buf.len() {
            return Err(plt::Error::Input(format!("{}: read {} bytes at offset {offset}, expected {}", self.name, got.length(), buf.len())));
        }
        got.copy_to(buf);
        Ok(())
    }
}

/// A file in a JS `Uint8Array`, copied into wasm memory a range at a time.
struct ArraySource {
    name: String,
    bytes: js_sys::Uint8Array,
}

impl ByteSource for ArraySource {
    fn name(&self) -> &str {
        &self.name
    }
    fn size(&self) -> u64 {
        self.bytes.length() as u64
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> plt::Result<()> {
        in_file(&self.name, offset, buf.len(), self.size())?;
        self.bytes.subarray(offset as u32, (offset + buf.len() as u64) as u32).copy_to(buf);
        Ok(())
    }
}

/// SHA-256 of a file fed in chunks (the browser's model cache keys files by it).
#[wasm_bindgen]
pub struct Sha256(sha2::Sha256);

#[wasm_bindgen]
impl Sha256 {
    #[wasm_bindgen(constructor)]
    pub fn new() -> Sha256 {
        use sha2::Digest;
        Sha256(sha2::Sha256::new())
    }

    pub fn update(&mut self, chunk: &[u8]) {
        use sha2::Digest;
        self.0.update(chunk);
    }

    /// The digest as lowercase hex.
    pub fn hex(&self) -> String {
        use sha2::Digest;
        self.0.clone().finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl Default for Sha256 {
    fn default() -> Self {
        Sha256::new()
    }
}

/// Bytes of this module's wasm memory (it only grows: after a load, the most the load used).
#[wasm_bindgen(js_name = wasmMemoryBytes)]
pub fn wasm_memory_bytes() -> f64 {
    let mem: js_sys::WebAssembly::Memory = wasm_bindgen::memory().unchecked_into();
    mem.buffer().unchecked_into::<js_sys::ArrayBuffer>().byte_length() as f64
}

fn load_opts(options: JsValue) -> Result<LoadOpts, JsValue> {
    if options.is_undefined() || options.is_null() {
        Ok(LoadOpts::default())
    } else {
        serde_wasm_bindgen::from_value(options).map_err(js_err)
    }
}

impl Model {
    /// Plans `src`, uploads it to the browser's device and starts its sessions.
    async fn from_source(src: ModelSource, source: String, opts: LoadOpts, on_progress: Option<Function>) -> Result<JsValue, JsValue> {
        let mut progress = |stage: &str, f: f32| {
            if let Some(cb) = &on_progress {
                let _ = cb.call2(&JsValue::NULL, &JsValue::from_str(stage), &JsValue::from_f64(f as f64));
            }
        };
        progress("parsing", 0.0);
        let model = plt::load::open(&src).map_err(js_err)?;
        let cfg = model.plan.cfg.clone();
        let dtype = match opts.dtype.as_deref() {
            None | Some("") => None,
            Some(s) => Some(plt::DType::parse(s).ok_or_else(|| js_err(format!("dtype: expected f32 or f16, got `{s}`")))?),
        };
        progress("parsing", 1.0);
        progress("opening the WebGPU device", 0.0);
        let gpu = Arc::new(Gpu::new(&GpuOptions::default()).await.map_err(js_err)?);
        let engine = Arc::new(Engine::from_model(gpu.clone(), model, dtype, &source, &mut progress).map_err(js_err)?);
        gpu.check().map_err(js_err)?;
        let context = opts.context.unwrap_or(2048).min(cfg.max_position_embeddings).max(2);
        progress("compiling the kernels", 0.0);
        let session = TextSession::new(engine.clone(), context).map_err(js_err)?;
        let vanilla_src = cfg.is_plt().then(|| {
            let mut vc = cfg.clone();
            vc.looping = Looping::Vanilla;
            (vc, src)
        });
        let info = describe(&engine, context, vanilla_src.is_some());
        let inner = Inner { engine, session, chat: Chat::new(None), vanilla: None, vanilla_src, dtype, context };
        Ok(Model { inner: Rc::new(RefCell::new(Some(inner))), cancel: Arc::new(AtomicBool::new(false)), info }.into())
    }
}
