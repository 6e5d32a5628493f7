// The worker that owns the wasm module and the WebGPU device, so that parsing, uploading and
// generating never block the page. Spoken to by plt.js (PltClient) with messages
// {id, type, ...}; answers {id, type: 'result' | 'error' | 'progress' | 'token', ...}.

import init, { Model, Sha256, adapterInfo, wasmMemoryBytes } from './pkg/plt_wasm.js';

let ready = null;
let model = null;
// The sources and options of the loaded model, to load it again after a lost device.
let loaded = null;

function post(id, type, body = {}) {
  self.postMessage({ id, type, ...body });
}

// ---- The model cache: files fetched from URLs are kept in the browser's Cache API, keyed by
// the SHA-256 of their bytes (an index maps each URL to its hash and size; two URLs with the
// same bytes share one copy), so a second visit loads without the network. A cached file is
// checked against its hash when read (a damaged copy is dropped and fetched again). A full
// storage quota, or a browser without the Cache API, only means nothing is cached.

const CACHE_NAME = 'plt-models-v1';
const cacheKey = (what) => new URL(`/.plt-cache/${what}`, self.location.origin).href;
const indexKey = (url) => cacheKey(`index?url=${encodeURIComponent(url)}`);
const blobKey = (sha) => cacheKey(`sha256/${sha}`);

async function openCache() {
  try {
    return 'caches' in self ? await caches.open(CACHE_NAME) : null;
  } catch {
    return null; // e.g. an opaque origin, or storage disabled
  }
}

async function sha256(bytes) {
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(d, (b) => b.toString(16).padStart(2, '0')).join('');
}

// Bytes a Blob is read by at a time (hashing, checking).
const BLOB_CHUNK = 8 << 20;

// SHA-256 of a Blob, read a chunk at a time (never whole in memory).
function sha256Blob(blob) {
  const h = new Sha256();
  const reader = new FileReaderSync();
  try {
    for (let at = 0; at < blob.size; at += BLOB_CHUNK) h.update(new Uint8Array(reader.readAsArrayBuffer(blob.slice(at, at + BLOB_CHUNK))));
    return h.hex();
  } finally {
    h.free();
  }
}

// What one load did with the cache: reported in the model's description (`info.cache`).
class CacheReport {
  constructor(enabled) {
    this.enabled = enabled;
    this.hits = 0;
    this.stored = 0;
    this.bytesFromCache = 0;
    this.error = null;
    // Files fetched in this load, written to the cache once the model has loaded (a file the
    // runtime refused is not kept).
    this.pending = [];
  }
}

// A cached file: {bytes} (or {blob}, with `asBlob`) or {missing: true} (an optional file the
// server did not have), or null when it is not cached (or its copy was damaged).
async function fromCache(cache, url, asBlob) {
  const idx = await cache.match(indexKey(url));
  if (!idx) return null;
  let meta;
  try {
    meta = await idx.json();
  } catch {
    meta = null;
  }
  if (meta && meta.missing) return { missing: true };
  const hit = meta && typeof meta.sha256 === 'string' ? await cache.match(blobKey(meta.sha256)) : null;
  if (hit && asBlob) {
    const blob = await hit.blob();
    if (blob.size === meta.size && sha256Blob(blob) === meta.sha256) return { blob };
  } else if (hit) {
    const bytes = new Uint8Array(await hit.arrayBuffer());
    if (bytes.length === meta.size && (await sha256(bytes)) === meta.sha256) return { bytes };
  }
  await cache.delete(indexKey(url));
  if (meta && typeof meta.sha256 === 'string') await cache.delete(blobKey(meta.sha256));
  return null;
}

// Writes one fetched file (`file`: {bytes} or {blob, sha256}, or null for a missing optional
// file) under `url`.
async function toCache(cache, url, file, report) {
  if (report.error) return; // the quota was already reached in this load
  try {
    const body = file?.blob ?? file?.bytes;
    const meta = { url, size: body == null ? 0 : body.size ?? body.length, missing: body == null, stored: new Date().toISOString() };
    if (body != null) {
      meta.sha256 = file.sha256 ?? (await sha256(file.bytes));
      const key = blobKey(meta.sha256);
      if (!(await cache.match(key))) {
        await cache.put(key, new Response(body, { headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(meta.size) } }));
      }
    }
    await cache.put(indexKey(url), new Response(JSON.stringify(meta), { headers: { 'Content-Type': 'application/json' } }));
    report.stored++;
  } catch (e) {
    report.error =
      e && e.name === 'QuotaExceededError'
        ? "the browser's storage quota is full, so the model was not cached (it loads from the network each time; clearing the cache or site data makes room)"
        : `the model could not be cached (${e && e.message ? e.message : e})`;
  }
}

/// What the cache holds: {files, bytes} (bytes of the distinct cached files).
async function cacheInfo() {
  const cache = await openCache();
  if (!cache) return { available: false, files: 0, bytes: 0 };
  let files = 0;
  let bytes = 0;
  for (const req of await cache.keys()) {
    if (!req.url.includes('/.plt-cache/sha256/')) continue;
    const r = await cache.match(req);
    files++;
    bytes += Number(r?.headers.get('Content-Length')) || 0;
  }
  return { available: true, files, bytes };
}

// Streams a response's body, posting progress (bytes, total, rate) at most every 100 ms: into
// one buffer of its announced size ({bytes}), or, with `asBlob`, into a Blob hashed as it
// comes ({blob, sha256}: the pieces are let go once the Blob holds them).
async function readBody(name, res, id, asBlob) {
  const total = Number(res.headers.get('Content-Length')) || 0;
  if (!res.body || (!total && !asBlob)) return { bytes: new Uint8Array(await res.arrayBuffer()) };
  const out = asBlob ? null : new Uint8Array(total);
  const parts = [];
  const hash = asBlob ? new Sha256() : null;
  const reader = res.body.getReader();
  const t0 = performance.now();
  let at = 0;
  let posted = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (total && at + value.length > total) {
        reader.cancel();
        throw new Error(`${name}: the server sent more bytes than its Content-Length (${total})`);
      }
      if (asBlob) {
        hash.update(value);
        parts.push(value);
      } else {
        out.set(value, at);
      }
      at += value.length;
      const now = performance.now();
      if (now - posted >= 100 || at === total) {
        posted = now;
        const s = (now - t0) / 1000;
        post(id, 'progress', { stage: `downloading ${name}`, fraction: total ? at / total : 0, loaded: at, total, bytesPerSecond: s > 0 ? at / s : 0 });
      }
    }
    if (total && at !== total) throw new Error(`${name}: the download ended after ${at} of its ${total} bytes`);
    if (asBlob) return { blob: new Blob(parts), sha256: hash.hex() };
    return { bytes: out };
  } finally {
    hash?.free();
  }
}

// One source: a URL (string; through the cache unless `cache` is null), a Blob/File, an
// ArrayBuffer or a typed array. Gives its bytes (a Uint8Array), or with `asBlob` a Blob where
// it has one (a File, a cached or downloaded file), read later a range at a time. `optional`:
// a URL the server does not have (404) gives null.
async function fileOf(name, src, id, { cache = null, report = null, optional = false, asBlob = false } = {}) {
  if (src == null) {
    if (optional) return null;
    throw new Error(`${name}: no source given`);
  }
  if (typeof src === 'string') {
    if (cache) {
      const hit = await fromCache(cache, src, asBlob);
      if (hit) {
        report.hits++;
        if (hit.missing) return null;
        const size = hit.blob ? hit.blob.size : hit.bytes.length;
        report.bytesFromCache += size;
        post(id, 'progress', { stage: `${name} from the browser cache`, fraction: 1, loaded: size, total: size, cached: true });
        return hit.blob ?? hit.bytes;
      }
    }
    let res;
    try {
      res = await fetch(src);
    } catch (e) {
      if (optional) return null;
      throw new Error(`${name}: fetching ${src} failed (${e.message})`);
    }
    if (optional && res.status === 404) {
      if (cache) report.pending.push([src, null]);
      return null;
    }
    if (!res.ok) throw new Error(`${name}: fetching ${src} gave HTTP ${res.status} ${res.statusText}`);
    const file = await readBody(name, res, id, asBlob);
    if (cache) report.pending.push([src, file]);
    return file.blob ?? file.bytes;
  }
  if (src instanceof Blob) return asBlob ? src : new Uint8Array(await src.arrayBuffer());
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

// Fetches (or reads from the cache) a model's files and loads it, replacing the model loaded
// before only once every file is here: a failed fetch keeps the previous model (`modelKept`).
async function load(id, sources, options) {
  const { cache: useCache = true, ...rest } = options;
  const cache = useCache ? await openCache() : null;
  const report = new CacheReport(!!cache);
  const kept = (e) => Object.assign(e instanceof Error ? e : new Error(String(e)), { modelKept: !!model });
  const progress = (stage, fraction) => post(id, 'progress', { stage, fraction });
  let files;
  try {
    if (sources.gguf != null) {
      // Kept as a Blob where there is one: the runtime reads it a range at a time.
      files = { gguf: await fileOf('model.gguf', sources.gguf, id, { cache, report, asBlob: true }) };
    } else {
      // Fetched together; a failure is reported for the first file in this order (config.json
      // first), whichever request happened to fail first.
      const at = { cache, report };
      const settled = await Promise.allSettled([
        fileOf('config.json', sources.config, id, at),
        // Kept as a Blob where there is one: the runtime reads it a range at a time.
        fileOf('model.safetensors', sources.weights, id, { ...at, asBlob: true }),
        fileOf('tokenizer.json', sources.tokenizer, id, at),
        fileOf('tokenizer_config.json', sources.tokenizerConfig, id, { ...at, optional: true }),
        fileOf('generation_config.json', sources.generationConfig, id, { ...at, optional: true }),
      ]);
      const failed = settled.find((r) => r.status === 'rejected');
      if (failed) throw failed.reason;
      const [config, weights, tokenizer, tokenizerConfig, generationConfig] = settled.map((r) => r.value);
      const text = (b) => (b == null ? null : new TextDecoder().decode(b));
      files = { config, weights, tokenizer, tokenizerConfig: text(tokenizerConfig), generationConfig: text(generationConfig) };
    }
  } catch (e) {
    // Nothing was replaced: the model loaded before (if any) is still there.
    throw kept(e);
  }
  if (model) {
    model.dispose();
    model.free();
    model = null;
  }
  if (files.gguf) {
    model = await Model.loadGguf(files.gguf, rest, progress);
  } else {
    const { tokenizerConfig, generationConfig } = files;
    model = await Model.load(files.config, files.weights, files.tokenizer, { ...rest, tokenizerConfig, generationConfig }, progress);
  }
  loaded = { sources, options };
  for (const [url, file] of report.pending) await toCache(cache, url, file, report);
  report.pending = [];
  const info = JSON.parse(model.infoJson());
  info.adapter = await describe(info.adapter);
  info.wasmMemoryBytes = wasmMemoryBytes();
  const { enabled, hits, stored, bytesFromCache, error } = report;
  info.cache = { enabled, hits, stored, bytesFromCache, error };
  return info;
}

// After a lost WebGPU device (a driver reset, a removed GPU, the browser reclaiming it) every
// call on the model fails: the model is loaded again on a new device (from the cache, for
// URLs) and the reason is returned, to be told to the user.
async function reloadIfLost(id) {
  const why = model?.deviceLost();
  if (!why) return null;
  post(id, 'progress', { stage: 'the WebGPU device was lost: loading the model again', fraction: 0 });
  model.free();
  model = null;
  await load(id, loaded.sources, loaded.options);
  return `the WebGPU device was lost (${why}); the model was loaded again on a new device`;
}

// Runs `run()` on the model, recovering from a lost device: before the call (the result says
// so in `recovered`) or during it (the error says so; the model is loaded again).
async function onModel(id, run) {
  if (!model) throw new Error('no model is loaded');
  const before = await reloadIfLost(id);
  let value;
  try {
    value = await run();
  } catch (e) {
    const after = await reloadIfLost(id).catch((e2) => `the WebGPU device was lost, and loading the model again failed (${e2.message || e2})`);
    if (after) throw new Error(`${e && e.message ? e.message : e}: ${after}; run it again`);
    throw e;
  }
  if (before && value && typeof value === 'object') value.recovered = before;
  return value;
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
      return load(id, msg.sources, msg.options || {});
    }
    case 'cacheInfo':
      return cacheInfo();
    case 'clearCache': {
      const had = await cacheInfo();
      if ('caches' in self) await caches.delete(CACHE_NAME);
      return had;
    }
    case 'encode': {
      if (!model) throw new Error('no model is loaded');
      return Array.from(model.encode(msg.prompt));
    }
    case 'generate':
      return onModel(id, () => model.generate(msg.prompt, msg.options || {}, (piece, ms) => post(id, 'token', { piece, ms })));
    case 'chat':
      return onModel(id, () => model.chat(msg.message, msg.options || {}, (piece, ms) => post(id, 'token', { piece, ms })));
    case 'chatCompletion':
      return onModel(id, () => model.chatCompletion(msg.messages, msg.options || {}, (piece, ms) => post(id, 'token', { piece, ms })));
    case 'destroyDevice': {
      if (!model) throw new Error('no model is loaded');
      model.destroyDevice();
      return true;
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
