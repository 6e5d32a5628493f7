// The demo page: loads a model through PltClient (worker + wasm + WebGPU) and streams text.
// Query parameters: ?model=URL-of-a-model-directory (default: the repo's default model),
// ?prompt=..., ?autoload=0 to wait for the user.
// Tests read `window.pltDemo` ({state, info, result, error, chat, client}).

import { PltClient, hasWebGPU, modelUrls } from './plt.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const DEFAULT_MODEL = '../../models/plt2-shakespeare/';

const demo = (window.pltDemo = { state: 'starting', info: null, result: null, error: null, chat: { turns: [] }, stages: [] });
let client = null;
let running = false;

function message(text, kind = 'error') {
  const m = $('message');
  m.className = text ? kind : '';
  m.textContent = text || '';
}

function fail(text) {
  demo.error = text;
  message(text, 'error');
}

const MB = 1e6;

function setProgress(stage, f, detail = {}) {
  // The load's stages with their times (ms since the page started), for the benchmark.
  const last = demo.stages[demo.stages.length - 1];
  if (!last || last[1] !== stage) demo.stages.push([Math.round(performance.now()), stage]);
  $('progressBox').hidden = false;
  $('progress').value = f;
  let text = `${stage} ${Math.round(f * 100)}%`;
  if (detail.total) {
    text = `${stage}: ${(detail.loaded / MB).toFixed(1)} of ${(detail.total / MB).toFixed(1)} MB`;
    if (detail.bytesPerSecond) text += ` at ${(detail.bytesPerSecond / MB).toFixed(1)} MB/s`;
  }
  $('progressText').textContent = text;
}

/** Shows the adapter, and what a software one means. */
function showAdapter(text) {
  $('adapter').textContent = text;
  const software = /software|fallback|swiftshader|llvmpipe|lavapipe|\bwarp\b|\bCpu\b/i.test(text);
  demo.softwareAdapter = software;
  $('adapterHint').hidden = !software;
  $('adapterHint').textContent =
    'a software adapter: the GPU work runs on this CPU, at a few tokens per second. A browser with hardware WebGPU ' +
    '(in Chrome, chrome://gpu says "WebGPU: Hardware accelerated") runs the same page many times faster.';
}

/** Shows what the model cache holds. */
async function showCache() {
  try {
    const c = await client.cacheInfo();
    $('cacheInfo').textContent = c.available ? `Cache: ${c.files} files, ${(c.bytes / MB).toFixed(1)} MB` : 'Cache: not available in this browser';
    $('clearCache').disabled = !c.available || c.files === 0;
  } catch (e) {
    $('cacheInfo').textContent = `Cache: ${e.message}`;
  }
}

function fmt(x, digits = 1) {
  return Number.isFinite(x) ? x.toFixed(digits) : '–';
}

function setButtons() {
  $('generate').disabled = running || !demo.info;
  for (const id of ['send', 'regenerate', 'resetChat']) $(id).disabled = running || !demo.info;
  $('stop').disabled = !running;
  $('loadUrl').disabled = running;
  $('modelList').disabled = running;
  $('files').disabled = running;
}

async function load(sources, label) {
  const previous = demo.info ? { info: demo.info, text: $('modelInfo').textContent } : null;
  demo.state = 'loading';
  demo.info = null;
  setButtons();
  message(`Loading ${label}…`, 'info');
  $('modelInfo').textContent = 'loading…';
  $('cacheNote').textContent = '';
  try {
    const info = await client.load(sources, { onProgress: setProgress });
    demo.info = info;
    demo.stages.push([Math.round(performance.now()), 'ready']);
    showAdapter(info.adapter);
    $('adapter').title = info.kernels;
    const mb = (info.weightBytes / 1048576).toFixed(1);
    $('modelInfo').textContent =
      `${label} · ${(info.parameters / 1e6).toFixed(2)}M parameters · ${info.layers} layers × ` +
      `${info.numLoops} loops (${info.loopMode}, window ${info.window}) · ${mb} MiB on the GPU · context ${info.context}`;
    // Prompt and generated tokens share the context: the field's range says so.
    $('maxTokens').max = String(info.context);
    $('maxTokensLimit').textContent = `(1 to ${info.context})`;
    const mode = $('mode');
    for (const o of mode.options) o.disabled = !info.modes.includes(o.value);
    if (mode.selectedOptions[0]?.disabled) mode.value = 'fused';
    modeHint();
    chatReset();
    const c = info.cache;
    if (c.error) message(`Loaded, but ${c.error}.`, 'info');
    else message('');
    $('cacheNote').textContent = !c.enabled ? '' : c.hits > 0 && c.stored === 0 ? ' · from the browser cache' : c.stored > 0 ? ' · now cached in the browser' : '';
    $('progressBox').hidden = true;
    demo.state = 'ready';
    showCache();
  } catch (e) {
    $('progressBox').hidden = true;
    if (previous && e.modelKept) {
      // The worker still holds the model loaded before: the page goes on with it.
      demo.info = previous.info;
      $('modelInfo').textContent = previous.text;
      fail(`The model failed to load: ${e.message} (the previous model is still loaded)`);
    } else {
      $('modelInfo').textContent = 'not loaded';
      fail(`The model failed to load: ${e.message}`);
    }
    demo.state = 'load-failed';
  }
  setButtons();
}

/**
 * The generation options from the form, each field checked: a bad value is an error naming the
 * field, the value and what the field takes (and the field is marked).
 */
function readOptions() {
  const context = demo.info ? demo.info.context : 4096;
  const field = (id, label, { min, max, whole = false, aboveMin = false }) => {
    const input = $(id);
    const raw = input.value.trim();
    const v = Number(raw);
    const ok = raw !== '' && Number.isFinite(v) && (!whole || Number.isInteger(v)) && (aboveMin ? v > min : v >= min) && v <= max;
    input.setAttribute('aria-invalid', String(!ok));
    if (!ok) {
      input.focus();
      const what = whole ? 'a whole number' : 'a number';
      const range = aboveMin ? `above ${min} and at most ${max}` : `from ${min} to ${max}`;
      throw new Error(`${label}: ${raw === '' ? 'empty' : `"${raw}"`} is not valid; enter ${what} ${range}.`);
    }
    return v;
  };
  return {
    maxTokens: field('maxTokens', 'Max tokens', { min: 1, max: context, whole: true }),
    temperature: field('temperature', 'Temperature', { min: 0, max: 5 }),
    topK: field('topK', 'Top-k', { min: 0, max: 1_000_000, whole: true }),
    topP: field('topP', 'Top-p', { min: 0, max: 1, aboveMin: true }),
    minP: field('minP', 'Min-p', { min: 0, max: 0.99 }),
    repetitionPenalty: field('repetitionPenalty', 'Repetition penalty', { min: 0, max: 10, aboveMin: true }),
    repeatLastN: field('repeatLastN', 'Repeat last n', { min: 0, max: 256, whole: true }),
    seed: field('seed', 'Seed', { min: 0, max: Number.MAX_SAFE_INTEGER, whole: true }),
    mode: $('mode').value,
  };
}

async function generate() {
  if (running || !demo.info) return;
  let options;
  try {
    options = readOptions();
  } catch (e) {
    fail(e.message);
    demo.state = 'invalid-input';
    return;
  }
  running = true;
  demo.state = 'generating';
  demo.result = null;
  demo.error = null;
  setButtons();
  message('');
  const prompt = $('prompt').value;
  const out = $('output');
  out.querySelector('.prompt').textContent = prompt;
  const gen = out.querySelector('.gen');
  gen.textContent = '';
  for (const id of ['tps', 'mspt', 'median', 'ttft', 'prefillTps', 'ntok', 'finish']) $(id).textContent = '–';
  const t0 = performance.now();
  const gaps = []; // ms between pieces of text (≈ one decode step each)
  let firstAt = 0;
  const median = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length ? (s[(s.length - 1) >> 1] + s[s.length >> 1]) / 2 : NaN;
  };
  try {
    const r = await client.generate(prompt, options, (piece, ms) => {
      gen.textContent += piece;
      out.scrollTop = out.scrollHeight;
      const now = performance.now();
      if (!firstAt) {
        firstAt = now;
        $('ttft').textContent = fmt(now - t0, 0);
      } else {
        gaps.push(ms);
        // Live numbers from pieces of text (≈ tokens); the exact ones replace them at the end.
        $('tps').textContent = fmt(gaps.length / ((now - firstAt) / 1000));
        $('mspt').textContent = fmt((now - firstAt) / gaps.length);
        $('median').textContent = fmt(median(gaps));
      }
      $('ntok').textContent = `… + ${gaps.length + 1}`;
    });
    demo.result = r;
    if (r.recovered) message(`Note: ${r.recovered}.`, 'info');
    gen.textContent = r.text;
    out.scrollTop = out.scrollHeight;
    $('tps').textContent = fmt(r.tokensPerSecond);
    $('mspt').textContent = fmt(r.msPerToken);
    // The last piece comes without a decode step after it: leave it out of the median.
    $('median').textContent = fmt(median(r.finish === 'max_tokens' ? gaps.slice(0, -1) : gaps));
    $('ttft').textContent = fmt(r.prefillMs, 0);
    $('prefillTps').textContent = fmt(r.promptTokenCount / (r.prefillMs / 1000));
    $('ntok').textContent = `${r.promptTokenCount} + ${r.generatedTokens}`;
    $('finish').textContent = `${r.finish.replace('_', ' ')}, ${r.mode}`;
    demo.state = 'done';
  } catch (e) {
    fail(`Generation failed: ${e.message}`);
    demo.state = 'failed';
  }
  running = false;
  setButtons();
}

// ---- Chat: the page keeps the conversation ({role, content} messages) and asks for each reply
// with chat.completions.create on the whole of it; the worker's session keeps what it was fed,
// so a conversation that grows by one message feeds only that message.

let chatMessages = []; // the conversation the page shows, without the system prompt

function addMessage(role, text) {
  const div = document.createElement('div');
  div.className = `msg ${role}`;
  const r = document.createElement('span');
  r.className = 'role';
  r.textContent = role;
  const body = document.createElement('span');
  body.className = 'body';
  body.textContent = text;
  div.append(r, body);
  $('chatLog').append(div);
  $('chatLog').scrollTop = $('chatLog').scrollHeight;
  return body;
}

function showTranscript() {
  $('chatLog').textContent = '';
  for (const m of chatMessages) addMessage(m.role, m.content);
}

function chatReset() {
  chatMessages = [];
  $('chatLog').textContent = '';
  $('chatStats').textContent = '';
  demo.chat = { turns: [] };
}

/** Asks for the reply to the conversation, which ends with the user's message. */
async function reply() {
  let options;
  try {
    options = readOptions();
    if (options.mode === 'vanilla') throw new Error('Loop mode: a chat runs PLT fused or PLT sequential, not vanilla.');
  } catch (e) {
    fail(e.message);
    demo.state = 'invalid-input';
    return false;
  }
  running = true;
  demo.state = 'chatting';
  demo.error = null;
  setButtons();
  message('');
  const system = $('system').value.trim();
  const messages = [...(system ? [{ role: 'system', content: system }] : []), ...chatMessages];
  const body = addMessage('assistant', '');
  try {
    const stream = await client.chat.completions.create({
      messages,
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: options.maxTokens,
      temperature: options.temperature,
      top_p: options.topP,
      top_k: options.topK,
      min_p: options.minP,
      repetition_penalty: options.repetitionPenalty,
      repeat_last_n: options.repeatLastN,
      seed: options.seed,
      mode: options.mode,
    });
    let r = null;
    let usage = null;
    for await (const chunk of stream) {
      const c = chunk.choices[0];
      if (c?.delta?.content) {
        body.textContent += c.delta.content;
        $('chatLog').scrollTop = $('chatLog').scrollHeight;
      }
      if (chunk.plt) r = chunk.plt;
      if (chunk.usage) usage = chunk.usage;
    }
    chatMessages.push({ role: 'assistant', content: r.reply });
    demo.chat.turns.push(r);
    if (r.recovered) message(`Note: ${r.recovered}.`, 'info');
    if (r.dropped > 0) {
      // The runtime dropped the oldest messages to fit the context: so does the transcript.
      chatMessages.splice(0, r.dropped);
      showTranscript();
      message(`The conversation was longer than the context (${demo.info.context} tokens): its ${r.dropped} oldest messages were dropped.`, 'info');
    } else {
      body.textContent = r.reply;
      if (r.finish === 'context_full') message('The reply reached the end of the context; the next message starts over from the kept messages.', 'info');
    }
    const x = usage.extra;
    $('chatStats').textContent =
      `${usage.prompt_tokens} tokens in, ${usage.completion_tokens} out · prefill ${fmt(x.prefill_tokens_per_s)} tokens/s · ` +
      `decode ${fmt(x.decode_tokens_per_s)} tokens/s · ${r.finish.replace('_', ' ')}`;
    demo.state = 'chat-done';
  } catch (e) {
    body.parentElement.remove();
    fail(`The chat failed: ${e.message}`);
    demo.state = 'failed';
  }
  running = false;
  setButtons();
  return true;
}

async function send(text) {
  if (running || !demo.info) return;
  if (!text.trim()) {
    fail('Message: empty; write something to send.');
    demo.state = 'invalid-input';
    return;
  }
  chatMessages.push({ role: 'user', content: text });
  addMessage('user', text);
  if (!(await reply()) || demo.state !== 'chat-done') {
    // Not answered: the message is taken back (its text returns to the input).
    chatMessages.pop();
    $('chatLog').lastElementChild?.remove();
    $('chatInput').value = text;
  }
}

function showTab(chat) {
  $('chatTab').hidden = !chat;
  $('completionPrompt').hidden = chat;
  $('completionOut').hidden = chat;
  $('generate').hidden = chat;
  $('tabChat').classList.toggle('active', chat);
  $('tabCompletion').classList.toggle('active', !chat);
  $('tabChat').setAttribute('aria-selected', String(chat));
  $('tabCompletion').setAttribute('aria-selected', String(!chat));
}

/** Says what the vanilla mode means for a model trained as PLT. */
function modeHint() {
  const hint = $('modeHint');
  const plt = demo.info && demo.info.loopMode !== 'vanilla';
  hint.hidden = !(plt && $('mode').value === 'vanilla');
  hint.textContent = 'this model was trained as PLT: run as a vanilla looped model its text is expected to be poor';
}

async function main() {
  $('modelUrl').value = params.get('model') || DEFAULT_MODEL;
  if (params.has('prompt')) $('prompt').value = params.get('prompt');
  if (!hasWebGPU()) {
    $('adapter').textContent = 'none';
    fail(
      'WebGPU is not available in this browser, so the model cannot run here. ' +
        'Use a recent Chrome, Edge or Chromium (in Chromium on Linux, start it with --enable-unsafe-webgpu), ' +
        'or Safari 26 / Firefox 141+, and open the page from http://localhost or https.',
    );
    demo.state = 'no-webgpu';
    return;
  }
  client = demo.client = new PltClient();
  $('generate').onclick = generate;
  $('tabChat').onclick = () => showTab(true);
  $('tabCompletion').onclick = () => showTab(false);
  $('send').onclick = () => {
    const text = $('chatInput').value;
    $('chatInput').value = '';
    send(text);
  };
  $('chatInput').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) $('send').click();
  });
  $('regenerate').onclick = async () => {
    if (running || !demo.info) return;
    const at = chatMessages.findLastIndex((m) => m.role === 'user');
    if (at < 0) return;
    // The last user message asked again: what followed it is dropped.
    chatMessages.splice(at + 1);
    showTranscript();
    demo.chat.turns.pop();
    await reply();
  };
  $('resetChat').onclick = () => {
    if (running || !demo.info) return;
    chatReset();
    message('');
  };
  $('copyChat').onclick = async () => {
    const text = [...$('chatLog').querySelectorAll('.msg')]
      .map((m) => `${m.querySelector('.role').textContent}: ${m.querySelector('.body').textContent}`)
      .join('\n\n');
    try {
      await navigator.clipboard.writeText(text);
      message('The conversation was copied.', 'info');
    } catch {
      message('The browser refused the clipboard; select the conversation and copy it instead.', 'error');
    }
  };
  $('mode').onchange = modeHint;
  $('stop').onclick = () => client.cancel();
  $('loadUrl').onclick = () => {
    const base = $('modelUrl').value.trim();
    if (!base) {
      fail('Model URL: empty; enter the URL of a model directory or a .gguf file, or pick one from the list.');
      return;
    }
    load(modelUrls(base), base);
  };
  $('modelList').onchange = () => {
    const v = $('modelList').value;
    if (!v) return;
    $('modelUrl').value = v;
    $('loadUrl').click();
  };
  $('clearCache').onclick = async () => {
    const had = await client.clearCache();
    message(`The model cache was cleared (${had.files} files, ${(had.bytes / MB).toFixed(1)} MB).`, 'info');
    $('cacheNote').textContent = '';
    showCache();
  };
  $('files').onchange = () => {
    const files = [...$('files').files];
    const find = (re) => files.find((f) => re.test(f.name));
    const gguf = find(/\.gguf$/i);
    if (gguf) {
      load({ gguf }, gguf.name);
      return;
    }
    const sources = { config: find(/^config\.json$/i), weights: find(/\.safetensors$/i), tokenizer: find(/^tokenizer\.json$/i) };
    const missing = Object.entries(sources).filter(([, f]) => !f).map(([k]) => k);
    sources.tokenizerConfig = find(/^tokenizer_config\.json$/i);
    sources.generationConfig = find(/^generation_config\.json$/i);
    if (missing.length) {
      fail(`Pick one .gguf file, or all three of config.json, model.safetensors and tokenizer.json (missing: ${missing.join(', ')}).`);
      return;
    }
    load(sources, sources.weights.name);
  };
  $('prompt').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) generate();
  });
  try {
    showAdapter(await client.adapter());
  } catch (e) {
    $('adapter').textContent = 'none';
    fail(`The runtime could not open a WebGPU device: ${e.message}`);
    demo.state = 'no-adapter';
    return;
  }
  demo.state = 'idle';
  showCache();
  if (params.get('autoload') !== '0') {
    const base = $('modelUrl').value.trim();
    await load(modelUrls(base), base);
  }
}

main().catch((e) => fail(`The page failed to start: ${e.message}`));
