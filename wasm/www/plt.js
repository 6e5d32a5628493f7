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
    this.worker.onerror = (e) => {
      const err = new Error(`the runtime's worker failed: ${e.message || 'it could not load (is wasm/www/pkg built? scripts/build-wasm.sh builds it)'}`);
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
  }

  #onMessage(m) {
    const p = this.pending.get(m.id);
    if (!p) return;
    if (m.type === 'progress') p.onProgress?.(m.stage, m.fraction);
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
      return this.#call({ type: 'load', sources: src, options: { source, ...rest } }, { onProgress });
    }
    for (const k of ['config', 'weights', 'tokenizer', 'tokenizerConfig', 'generationConfig']) src[k] = abs(sources[k]);
    const source = typeof sources.weights === 'string' ? src.weights : sources.weights?.name || 'model.safetensors';
    return this.#call({ type: 'load', sources: src, options: { source, ...rest } }, { onProgress });
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

  /// One chat turn: adds the user's `message` and streams the assistant's reply, with the
  /// model's chat template, on a session the turns share (context kept; when it fills, the
  /// oldest turns are dropped and the result says how many). Options as for generate (`mode`:
  /// fused or sequential). Resolves to {reply, text, tokens, finish, dropped, restarted,
  /// promptTokenCount, prefillMs, generatedTokens, decodeMs, tokensPerSecond, msPerToken}.
  chat(message, options = {}, onToken = null) {
    return this.#call({ type: 'chat', message, options }, { onToken });
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

  /// Stops the running generation at its next token (its promise resolves with what it has).
  cancel() {
    return this.#call({ type: 'cancel' });
  }

  terminate() {
    this.worker.terminate();
  }
}
