// The worker that owns the wasm module and the WebGPU device, so that parsing, uploading and
// generating never block the page. Spoken to by plt.js (PltClient) with messages
// {id, type, ...}; answers {id, type: 'result' | 'error' | 'progress' | 'token', ...}.

import init, { Model, adapterInfo } from './pkg/plt_wasm.js';

let ready = null;
let model = null;

function post(id, type, body = {}) {
  self.postMessage({ id, type, ...body });
}

// Bytes of one source: a URL (string), a Blob/File, an ArrayBuffer or a typed array.
async function bytesOf(name, src, id) {
  if (src == null) throw new Error(`${name}: no source given`);
  if (typeof src === 'string') {
    let res;
    try {
      res = await fetch(src);
    } catch (e) {
      throw new Error(`${name}: fetching ${src} failed (${e.message})`);
    }
    if (!res.ok) throw new Error(`${name}: fetching ${src} gave HTTP ${res.status} ${res.statusText}`);
    const total = Number(res.headers.get('Content-Length')) || 0;
    if (!res.body || !total) return new Uint8Array(await res.arrayBuffer());
    const out = new Uint8Array(total);
    const reader = res.body.getReader();
    let at = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (at + value.length > out.length) throw new Error(`${name}: more bytes than Content-Length`);
      out.set(value, at);
      at += value.length;
      post(id, 'progress', { stage: `downloading ${name}`, fraction: at / total });
    }
    return at === total ? out : out.subarray(0, at);
  }
  if (src instanceof Blob) return new Uint8Array(await src.arrayBuffer());
  if (src instanceof ArrayBuffer) return new Uint8Array(src);
  if (ArrayBuffer.isView(src)) return new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
  throw new Error(`${name}: expected a URL, a File/Blob or bytes`);
}

// What the browser says about its adapter (wgpu's adapter name is empty on the web backend).
async function browserAdapter() {
  try {
    const a = await navigator.gpu.requestAdapter();
    if (!a) return '';
    const i = a.info || {};
    const name = [i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(' ');
    return name + (i.isFallbackAdapter ? ', software fallback' : '');
  } catch {
    return '';
  }
}

async function describe(rust) {
  const js = await browserAdapter();
  return rust.trimStart().startsWith('(') && js ? `${js} ${rust.trim()}` : rust;
}

// Text of an optional file: null when it is not given or the server has none (404).
async function optionalText(name, src) {
  if (src == null) return null;
  if (typeof src === 'string') {
    let res;
    try {
      res = await fetch(src);
    } catch {
      return null;
    }
    if (res.status === 404) return null;
    if (!res.ok) throw new Error(`${name}: fetching ${src} gave HTTP ${res.status} ${res.statusText}`);
    return res.text();
  }
  return new TextDecoder().decode(await bytesOf(name, src));
}

async function handle(msg) {
  const { id, type } = msg;
  switch (type) {
    case 'adapter': {
      await ready;
      if (!('gpu' in navigator)) throw new Error('This browser has no WebGPU (navigator.gpu is missing).');
      return describe(model ? model.adapter() : await adapterInfo());
    }
    case 'load': {
      await ready;
      if (!('gpu' in navigator)) throw new Error('This browser has no WebGPU (navigator.gpu is missing).');
      const { sources, options } = msg;
      if (sources.gguf != null) {
        let bytes;
        try {
          bytes = await bytesOf('model.gguf', sources.gguf, id);
        } catch (e) {
          throw Object.assign(e instanceof Error ? e : new Error(String(e)), { modelKept: !!model });
        }
        if (model) {
          model.dispose();
          model.free();
          model = null;
        }
        model = await Model.loadGguf(bytes, options || {}, (stage, fraction) => post(id, 'progress', { stage, fraction }));
        const info = JSON.parse(model.infoJson());
        info.adapter = await describe(info.adapter);
        return info;
      }
      // Fetched together; a failure is reported for the first file in this order (config.json
      // first), whichever request happened to fail first.
      const settled = await Promise.allSettled([
        bytesOf('config.json', sources.config, id),
        bytesOf('model.safetensors', sources.weights, id),
        bytesOf('tokenizer.json', sources.tokenizer, id),
        optionalText('tokenizer_config.json', sources.tokenizerConfig),
        optionalText('generation_config.json', sources.generationConfig),
      ]);
      const failed = settled.find((r) => r.status === 'rejected');
      if (failed) {
        // Nothing was replaced: the model loaded before (if any) is still there.
        throw Object.assign(failed.reason instanceof Error ? failed.reason : new Error(String(failed.reason)), { modelKept: !!model });
      }
      const [config, weights, tokenizer, tokenizerConfig, generationConfig] = settled.map((r) => r.value);
      if (model) {
        model.dispose();
        model.free();
        model = null;
      }
      const opts = { ...(options || {}), tokenizerConfig, generationConfig };
      model = await Model.load(config, weights, tokenizer, opts, (stage, fraction) =>
        post(id, 'progress', { stage, fraction }),
      );
      const info = JSON.parse(model.infoJson());
      info.adapter = await describe(info.adapter);
      return info;
    }
    case 'encode': {
      if (!model) throw new Error('no model is loaded');
      return Array.from(model.encode(msg.prompt));
    }
    case 'generate': {
      if (!model) throw new Error('no model is loaded');
      const result = await model.generate(msg.prompt, msg.options || {}, (piece, ms) => {
        post(id, 'token', { piece, ms });
      });
      return result;
    }
    case 'chat': {
      if (!model) throw new Error('no model is loaded');
      return await model.chat(msg.message, msg.options || {}, (piece, ms) => {
        post(id, 'token', { piece, ms });
      });
    }
    case 'chatReset': {
      if (!model) throw new Error('no model is loaded');
      model.chatReset(msg.system || undefined);
      return true;
    }
    case 'chatUndo': {
      if (!model) throw new Error('no model is loaded');
      return model.chatUndo() ?? null;
    }
    case 'chatMessages': {
      if (!model) throw new Error('no model is loaded');
      return JSON.parse(model.chatMessagesJson());
    }
    case 'cancel': {
      if (model) model.cancel();
      return true;
    }
    default:
      throw new Error(`unknown request ${type}`);
  }
}

self.onmessage = (e) => {
  const msg = e.data;
  handle(msg).then(
    (value) => post(msg.id, 'result', { value }),
    (err) =>
      post(msg.id, 'error', {
        message: String(err && err.message ? err.message : err),
        // For a failed load: whether the previous model is still loaded.
        modelKept: msg.type === 'load' ? !!(err && err.modelKept) : undefined,
      }),
  );
};

ready = init().catch((e) => {
  throw new Error(`loading the wasm module failed: ${e.message || e}`);
});
