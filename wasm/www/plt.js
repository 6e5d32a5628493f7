// The JS API of the PLT runtime in the browser. Everything runs in a module worker
// (worker.js), which holds the wasm module and the WebGPU device.
//
//   import { PltClient, hasWebGPU } from './plt.js';
//   const plt = new PltClient();
//   const info = await plt.load({ config: 'm/config.json', weights: 'm/model.safetensors',
//                                 tokenizer: 'm/tokenizer.json' },          // URLs, Files or bytes
//                               // (modelUrls('m/') also names the optional tokenizer_config.json
//                               //  and generation_config.json)
//                               { onProgress: (stage, f) => {}, context: 2048 });
//   const r = await plt.generate('To be', { maxTokens: 64, temperature: 0, seed: 1,
//                                           mode: 'fused' /* | 'sequential' | 'vanilla' */ },
//                                (piece, ms) => out.textContent += piece);
//   // r = {text, tokens, promptTokens, finish, prefillMs, decodeMs, tokensPerSecond, msPerToken, ...}
//   plt.cancel();                    // stops a running generation at its next token
//   await plt.adapter();             // "name (BrowserWebGpu, Cpu, ...)"
//   // OpenAI-shaped chat on the whole conversation (stream: true gives an async iterable):
//   const c = await plt.chat.completions.create({ messages: [{ role: 'user', content: 'Hi' }],
//                                                 max_tokens: 64 });
//   c.choices[0].message.content;  c.usage;  // {prompt_tokens, completion_tokens, ..., extra}
//
// Files loaded from URLs are cached in the browser (Cache API, keyed by their SHA-256):
// plt.cacheInfo(), plt.clearCache(); load(..., {cache: false}) skips the cache.

export function hasWebGPU() {
  return typeof navigator !== 'undefined' && 'gpu' in navigator;
}

/// The files of a model directory at `base`: config.json, model.safetensors and tokenizer.json,
/// and the optional tokenizer_config.json and generation_config.json (skipped when absent); or,
/// for a URL ending in .gguf, that one file ({gguf}).
export function modelUrls(base) {
  if (/\.gguf([?#].*)?$/i.test(base)) return { gguf: new URL(base, location.href).href };
  const b = new URL(base.endsWith('/') ? base : base + '/', location.href);
  const at = (f) => new URL(f, b).href;
  return {
    config: at('config.json'),
    weights: at('model.safetensors'),
    tokenizer: at('tokenizer.json'),
    tokenizerConfig: at('tokenizer_config.json'),
    generationConfig: at('generation_config.json'),
  };
}

export class PltClient {
  constructor(workerUrl = new URL('./worker.js', import.meta.url)) {
    this.worker = new Worker(workerUrl, { type: 'module' });
    this.next = 1;
    this.pending = new Map();
    this.worker.onmessage = (e) => this.#onMessage(e.data);
    this.created = 0;
    // `chat(message, options, onToken)` is one turn of the worker's conversation;
    // `chat.completions.create(request)` is the OpenAI-shaped call on a whole conversation.
    const chat = (message, options = {}, onToken = null) => this.#call({ type: 'chat', message, options }, { onToken });
    chat.completions = {
      create: (request) => {
        try {
          return this.#createChatCompletion(request);
        } catch (e) {
          return Promise.reject(e);
        }
      },
    };
    this.chat = chat;
    this.model = null; // the name of the loaded model (its URL or file name)
    this.worker.onerror = (e) => {
      const err = new Error(`the runtime's worker failed: ${e.message || 'it could not load (is wasm/www/pkg built? scripts/build-wasm.sh builds it)'}`);
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
  }

  #onMessage(m) {
    const p = this.pending.get(m.id);
    if (!p) return;
    if (m.type === 'progress') {
      const { stage, fraction, id: _, type: __, ...detail } = m;
      p.onProgress?.(stage, fraction, detail);
    }
    else if (m.type === 'token') p.onToken?.(m.piece, m.ms);
    else {
      this.pending.delete(m.id);
      if (m.type === 'result') p.resolve(m.value);
      else p.reject(Object.assign(new Error(m.message), m.modelKept !== undefined ? { modelKept: m.modelKept } : {}));
    }
  }

  #call(msg, handlers = {}) {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, ...handlers });
      this.worker.postMessage({ id, ...msg });
    });
  }

  /// The WebGPU adapter's description (opens a device when no model is loaded).
  adapter() {
    return this.#call({ type: 'adapter' });
  }

  /// Loads a model. `sources`: {config, weights, tokenizer, tokenizerConfig?, generationConfig?},
  /// each a URL, a File/Blob or bytes (the last two are optional: a 404 skips them); or {gguf}:
  /// one GGUF file (tokenizer and chat template from its metadata, blocks kept quantised).
  /// `options`: {context, dtype: 'f32'|'f16', onProgress(stage, fraction)}. Resolves to the
  /// model's description {adapter, layers, numLoops, window, parameters, modes, ...}.
  load(sources, options = {}) {
    const { onProgress, ...rest } = options;
    const abs = (s) => (typeof s === 'string' ? new URL(s, location.href).href : s);
    const src = {};
    if (sources.gguf != null) {
      src.gguf = abs(sources.gguf);
      const source = typeof sources.gguf === 'string' ? src.gguf : sources.gguf?.name || 'model.gguf';
      return this.#load(src, source, rest, onProgress);
    }
    for (const k of ['config', 'weights', 'tokenizer', 'tokenizerConfig', 'generationConfig']) src[k] = abs(sources[k]);
    const source = typeof sources.weights === 'string' ? src.weights : sources.weights?.name || 'model.safetensors';
    return this.#load(src, source, rest, onProgress);
  }

  async #load(sources, source, options, onProgress) {
    const info = await this.#call({ type: 'load', sources, options: { source, ...options } }, { onProgress });
    this.model = source.split('/').filter(Boolean).pop() || source;
    return info;
  }

  /// What the model cache holds: {available, files, bytes}.
  cacheInfo() {
    return this.#call({ type: 'cacheInfo' });
  }

  /// Empties the model cache; resolves to what it held ({available, files, bytes}).
  clearCache() {
    return this.#call({ type: 'clearCache' });
  }

  // ---- chat.completions.create: OpenAI's request and response shapes over `chatCompletion`.

  #createChatCompletion(request) {
    const { options, messages, stream, includeUsage, signal } = completionRequest(request);
    const id = `chatcmpl-${Date.now().toString(36)}-${++this.created}`;
    const created = Math.floor(Date.now() / 1000);
    const model = this.model || 'plt';
    const final = (r) => {
      const usage = completionUsage(r);
      return { finish_reason: finishReason(r.finish), usage, plt: r };
    };
    if (signal?.aborted) return Promise.reject(abortError(signal));
    const onAbort = () => this.cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    const done = () => signal?.removeEventListener('abort', onAbort);
    if (!stream) {
      return this.#call({ type: 'chatCompletion', messages, options }).then(
        (r) => {
          done();
          const f = final(r);
          return {
            id, object: 'chat.completion', created, model,
            choices: [{ index: 0, message: { role: 'assistant', content: r.reply }, finish_reason: f.finish_reason, logprobs: null }],
            usage: f.usage, plt: r,
          };
        },
        (e) => {
          done();
          throw e;
        },
      );
    }
    // Streamed: chunks are queued as the worker sends pieces and handed to the async iterator.
    const queue = [];
    let wake = null;
    let finished = false;
    let failure = null;
    const push = (chunk) => {
      queue.push(chunk);
      wake?.();
    };
    const chunk = (choices, extra = {}) => ({ id, object: 'chat.completion.chunk', created, model, choices, ...extra });
    let first = true;
    this.#call({ type: 'chatCompletion', messages, options }, {
      onToken: (piece) => {
        const delta = first ? { role: 'assistant', content: piece } : { content: piece };
        first = false;
        push(chunk([{ index: 0, delta, finish_reason: null, logprobs: null }]));
      },
    }).then(
      (r) => {
        const f = final(r);
        push(chunk([{ index: 0, delta: first ? { role: 'assistant', content: '' } : {}, finish_reason: f.finish_reason, logprobs: null }], { plt: r }));
        if (includeUsage) push(chunk([], { usage: f.usage }));
        finished = true;
        done();
        wake?.();
      },
      (e) => {
        failure = e;
        finished = true;
        done();
        wake?.();
      },
    );
    const client = this;
    return Promise.resolve({
      [Symbol.asyncIterator]() {
        return this;
      },
      async next() {
        for (;;) {
          if (queue.length) return { value: queue.shift(), done: false };
          if (failure) {
            const e = failure;
            failure = null;
            throw e;
          }
          if (finished) return { value: undefined, done: true };
          await new Promise((r) => (wake = r));
          wake = null;
        }
      },
      // A consumer that stops early (break in for await) stops the generation too.
      async return() {
        if (!finished) client.cancel();
        return { value: undefined, done: true };
      },
    });
  }

  /// Token ids of `prompt` as generate feeds them.
  encode(prompt) {
    return this.#call({ type: 'encode', prompt });
  }

  /// Generates from `prompt` in a fresh context. `onToken(piece, msSinceLastPiece)` streams
  /// the text. Options: {maxTokens, temperature, topK, topP, minP, repetitionPenalty,
  /// repeatLastN, seed, mode, stop, stopAtEos}.
  generate(prompt, options = {}, onToken = null) {
    return this.#call({ type: 'generate', prompt, options }, { onToken });
  }

  /// Starts the conversation over with `system` as its system prompt ('' for none).
  chatReset(system = '') {
    return this.#call({ type: 'chatReset', system });
  }

  /// Takes back the last exchange; resolves to the user's message (to ask again) or null.
  chatUndo() {
    return this.#call({ type: 'chatUndo' });
  }

  /// The conversation: [{role, content}, ...].
  chatMessages() {
    return this.#call({ type: 'chatMessages' });
  }

  /// Destroys the WebGPU device under the loaded model, as a driver reset would: the next call
  /// loads the model again on a new device and says so in its result (`recovered`). For
  /// testing what an application does then.
  destroyDevice() {
    return this.#call({ type: 'destroyDevice' });
  }

  /// Stops the running generation at its next token (its promise resolves with what it has).
  cancel() {
    return this.#call({ type: 'cancel' });
  }

  terminate() {
    this.worker.terminate();
  }
}

// The request fields of chat.completions.create the runtime takes, and their option names.
const COMPLETION_FIELDS = {
  messages: null, stream: null, stream_options: null, signal: null, model: null, n: null,
  max_tokens: 'maxTokens', max_completion_tokens: 'maxTokens', temperature: 'temperature',
  top_p: 'topP', top_k: 'topK', min_p: 'minP', repetition_penalty: 'repetitionPenalty',
  repeat_last_n: 'repeatLastN', seed: 'seed', stop: 'stop', mode: 'mode',
};

function fieldError(field, what) {
  return new TypeError(`chat.completions.create: ${field}: ${what}`);
}

/// Checks a chat.completions.create request and turns it into the worker's options.
function completionRequest(req) {
  if (req == null || typeof req !== 'object') throw fieldError('request', 'expected an object {messages, ...}');
  for (const k of Object.keys(req)) {
    if (!(k in COMPLETION_FIELDS) && req[k] !== undefined && req[k] !== null) {
      throw fieldError(k, 'not supported by this runtime (it takes ' + Object.keys(COMPLETION_FIELDS).join(', ') + ')');
    }
  }
  if (!Array.isArray(req.messages)) throw fieldError('messages', 'expected an array of {role, content}');
  const messages = req.messages.map((m, i) => {
    if (m == null || typeof m !== 'object') throw fieldError(`messages[${i}]`, 'expected an object {role, content}');
    if (typeof m.content !== 'string') throw fieldError(`messages[${i}].content`, 'expected a string (text content)');
    return { role: m.role, content: m.content };
  });
  if (req.n != null && req.n !== 1) throw fieldError('n', `only 1 choice is generated, got ${req.n}`);
  const options = {};
  const number = (k, { min = -Infinity, max = Infinity, whole = false } = {}) => {
    const v = req[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || (whole && !Number.isInteger(v)) || v < min || v > max) {
      throw fieldError(k, `expected ${whole ? 'a whole number' : 'a number'} from ${min} to ${max}, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const limits = {
    max_tokens: { min: 1, max: 1 << 30, whole: true },
    max_completion_tokens: { min: 1, max: 1 << 30, whole: true },
    temperature: { min: 0, max: 100 },
    top_p: { min: 0, max: 1 },
    top_k: { min: 0, max: 1 << 30, whole: true },
    min_p: { min: 0, max: 1 },
    repetition_penalty: { min: 0, max: 100 },
    repeat_last_n: { min: 0, max: 1 << 30, whole: true },
    seed: { min: 0, max: Number.MAX_SAFE_INTEGER, whole: true },
  };
  for (const [k, lim] of Object.entries(limits)) if (req[k] != null) options[COMPLETION_FIELDS[k]] = number(k, lim);
  if (req.stop != null) {
    const stop = typeof req.stop === 'string' ? [req.stop] : req.stop;
    if (!Array.isArray(stop) || stop.some((x) => typeof x !== 'string' || x === '')) throw fieldError('stop', 'expected a non-empty string or an array of them');
    options.stop = stop;
  }
  if (req.mode != null) {
    if (req.mode !== 'fused' && req.mode !== 'sequential') throw fieldError('mode', `a chat runs fused or sequential, got ${JSON.stringify(req.mode)}`);
    options.mode = req.mode;
  }
  if (req.signal != null && typeof req.signal.addEventListener !== 'function') throw fieldError('signal', 'expected an AbortSignal');
  return { options, messages, stream: !!req.stream, includeUsage: !!req.stream_options?.include_usage, signal: req.signal };
}

function abortError(signal) {
  return signal.reason instanceof Error ? signal.reason : new DOMException('the completion was aborted', 'AbortError');
}

/// OpenAI's finish_reason for the runtime's: the model's end or a stop string is 'stop', the
/// token budget or the context end 'length', a cancel 'abort'.
function finishReason(f) {
  if (f === 'eos' || f.startsWith('stop:')) return 'stop';
  if (f === 'cancelled') return 'abort';
  return 'length';
}

function completionUsage(r) {
  const s = (ms) => ms / 1000;
  return {
    prompt_tokens: r.promptTokenCount,
    completion_tokens: r.generatedTokens,
    total_tokens: r.promptTokenCount + r.generatedTokens,
    extra: {
      time_to_first_token_s: s(r.prefillMs),
      prefill_tokens_per_s: r.prefillMs > 0 ? r.promptTokenCount / s(r.prefillMs) : 0,
      decode_tokens_per_s: r.tokensPerSecond,
      time_per_output_token_s: s(r.msPerToken),
      e2e_latency_s: s(r.prefillMs + r.decodeMs),
    },
  };
}
