// End-to-end test of the browser build: the demo page (wasm/www) in Debian's Chromium, headless,
// on its software WebGPU adapter (SwiftShader, exposed by --enable-unsafe-webgpu), driven by
// playwright-core. Greedy tokens from the page must equal the native runtime's tokens for the
// same prompt (examples/generate_ids.rs on whatever adapter wgpu finds natively: lavapipe in CI).
//
//   scripts/build-wasm.sh && (cd tests/browser && npm ci && npm test)
//
// The model: $PLT_TEST_MODEL, else models/plt2-shakespeare when present, else a random PLT-2
// model made by `plt init` (f16, window 8). $PLT_DEMO_SCREENSHOT=docs/demo.png also writes the
// screenshot there. $CHROMIUM overrides /usr/bin/chromium.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serve, DEFAULT_ALLOW } from '../../wasm/serve.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const WORK = path.join(ROOT, 'target', 'browser-test');
const PROMPT = process.env.PLT_TEST_PROMPT || 'ROMEO:\nBut soft, what light';
const MAX_TOKENS = Number(process.env.PLT_TEST_TOKENS || 16);
const SEED = 7;
// The cargo profile of the native binaries: release, as CI's `cargo test --release` builds it
// (PLT_CARGO_PROFILE=dev uses target/debug).
const DEV = process.env.PLT_CARGO_PROFILE === 'dev';
const BIN = path.join(ROOT, 'target', DEV ? 'debug' : 'release');
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--enable-unsafe-webgpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
  '--disable-features=Translate,OptimizationHints,MediaRouter',
];

let server;
let port;
let browser;
let page;
let modelDir; // relative to ROOT, with '/' separators
const logs = [];
// The paths of the requests the server got (the cache test reads them).
const requests = [];

function cargo(args) {
  execFileSync('cargo', args, { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
}

function hasModel(dir) {
  return ['config.json', 'model.safetensors', 'tokenizer.json'].every((f) => fs.existsSync(path.join(dir, f)));
}

// The native runtime's greedy ids for `mode` (of the test's model, or `model` under ROOT).
function nativeIds(mode, { model = modelDir, prompt = PROMPT, n = MAX_TOKENS } = {}) {
  const bin = path.join(BIN, 'examples', 'generate_ids');
  const args = ['--model', path.join(ROOT, model), '--prompt', prompt, '-n', String(n), '--seed', String(SEED), '--temperature', '0', '--mode', mode];
  const out = execFileSync(bin, args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  return JSON.parse(out.trim().split('\n').pop());
}

async function waitState(states, timeout = 180_000) {
  await page.waitForFunction((s) => window.pltDemo && s.includes(window.pltDemo.state), states, { timeout, polling: 100 });
  return page.evaluate(() => ({ ...window.pltDemo }));
}

async function generateInPage(mode, { prompt = PROMPT, n = MAX_TOKENS } = {}) {
  await page.fill('#prompt', prompt);
  await page.fill('#maxTokens', String(n));
  await page.fill('#temperature', '0');
  await page.fill('#topP', '1');
  // The native side samples with the library's defaults: no top-k, min-p or penalty.
  await page.fill('#topK', '0');
  await page.fill('#minP', '0');
  await page.fill('#repetitionPenalty', '1');
  await page.fill('#seed', String(SEED));
  await page.selectOption('#mode', mode);
  await page.click('#generate');
  const d = await waitState(['done', 'failed']);
  assert.equal(d.state, 'done', `generation failed in the page: ${d.error}\n${logs.join('\n')}`);
  return d.result;
}

// Pixels in `box` (CSS px of the screenshot) that differ clearly from white, counted in the page.
async function inkIn(png, box) {
  return page.evaluate(
    async ({ b64, box }) => {
      const img = new Image();
      img.src = `data:image/png;base64,${b64}`;
      await img.decode();
      const c = document.createElement('canvas');
      c.width = img.width;
      c.height = img.height;
      const g = c.getContext('2d');
      g.drawImage(img, 0, 0);
      const s = img.width / window.innerWidth;
      const d = g.getImageData(Math.floor(box.x * s), Math.floor(box.y * s), Math.ceil(box.width * s), Math.ceil(box.height * s)).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] < 3 * 160) n++;
      return n;
    },
    { b64: png.toString('base64'), box },
  );
}

before(async () => {
  const pkg = path.join(ROOT, 'wasm', 'www', 'pkg', 'plt_wasm_bg.wasm');
  assert.ok(fs.existsSync(pkg), `${pkg} is missing: run scripts/build-wasm.sh first`);
  fs.mkdirSync(WORK, { recursive: true });
  // The native side: the CLI (for `plt init`) and the ids example (already built by
  // `cargo test --release`, which builds the examples).
  cargo(['build', '--quiet', ...(DEV ? [] : ['--release']), '--bin', 'plt', '--example', 'generate_ids']);
  const chosen = process.env.PLT_TEST_MODEL ? path.resolve(process.env.PLT_TEST_MODEL) : path.join(ROOT, 'models', 'plt2-shakespeare');
  if (hasModel(chosen)) {
    let dir = chosen;
    if (!dir.startsWith(ROOT + path.sep)) {
      // The page can only fetch what the server serves (under the repository root).
      dir = path.join(WORK, 'model');
      fs.rmSync(dir, { recursive: true, force: true });
      fs.cpSync(chosen, dir, { recursive: true });
    }
    modelDir = path.relative(ROOT, dir).split(path.sep).join('/');
  } else {
    assert.ok(!process.env.PLT_TEST_MODEL, `PLT_TEST_MODEL=${process.env.PLT_TEST_MODEL} is not a model directory`);
    const dir = path.join(WORK, 'random-model');
    fs.rmSync(dir, { recursive: true, force: true });
    execFileSync(path.join(BIN, 'plt'), ['init', dir, '--loops', '2', '--window', '8', '--dtype', 'f16', '--seed', '11'], {
      cwd: ROOT,
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    modelDir = path.relative(ROOT, dir).split(path.sep).join('/');
  }
  console.log(`# model: ${modelDir}`);
  ({ server, port } = await serve(ROOT, 0, { allow: [...DEFAULT_ALLOW, path.relative(ROOT, WORK)], onRequest: (_, url) => requests.push(url) }));
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: CHROMIUM_ARGS,
  });
  page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  page.on('console', (m) => logs.push(`[console.${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`[pageerror] ${e.message}`));
});

after(async () => {
  await browser?.close();
  server?.close();
});

test('the page says so when WebGPU is missing', async () => {
  const p = await browser.newPage();
  await p.addInitScript(() => {
    delete Navigator.prototype.gpu;
  });
  await p.goto(`http://127.0.0.1:${port}/wasm/www/?autoload=0`);
  await p.waitForFunction(() => window.pltDemo && window.pltDemo.state === 'no-webgpu', null, { timeout: 30_000 });
  const msg = await p.textContent('#message');
  assert.match(msg, /WebGPU is not available/);
  assert.ok(await p.isVisible('#message'));
  await p.close();
});

test('the page says so when the model fails to load', async () => {
  const p = await browser.newPage();
  await p.goto(`http://127.0.0.1:${port}/wasm/www/?model=/target/browser-test/no-such-model/`);
  await p.waitForFunction(() => window.pltDemo && ['load-failed', 'no-adapter'].includes(window.pltDemo.state), null, { timeout: 120_000 });
  const state = await p.evaluate(() => window.pltDemo.state);
  assert.equal(state, 'load-failed', await p.textContent('#message'));
  assert.match(await p.textContent('#message'), /failed to load: config\.json: fetching .* gave HTTP 404/);
  await p.close();
});

let firstVisitMs = 0;

test('the page loads the model on the software WebGPU adapter', async () => {
  const t0 = Date.now();
  await page.goto(`http://127.0.0.1:${port}/wasm/www/?model=/${modelDir}/`);
  const d = await waitState(['ready', 'load-failed', 'no-webgpu', 'no-adapter']);
  firstVisitMs = Date.now() - t0;
  assert.equal(d.state, 'ready', `the model did not load: ${d.error}\n${logs.join('\n')}`);
  const adapter = await page.textContent('#adapter');
  console.log(`# browser adapter: ${adapter}`);
  assert.match(adapter, /BrowserWebGpu/);
  // SwiftShader is a software adapter: the page says what that means.
  assert.ok(await page.isVisible('#adapterHint'));
  assert.match(await page.textContent('#adapterHint'), /^a software adapter: /);
  console.log(`# browser kernels: ${d.info.kernels}`);
  assert.match(d.info.kernels, /^decode matmuls: \d+ lanes per output/);
  assert.equal(await page.getAttribute('#adapter', 'title'), d.info.kernels);
  assert.ok(d.info.numLoops >= 1);
  assert.ok(d.info.cache.enabled && d.info.cache.stored >= 3, `the files were cached: ${JSON.stringify(d.info.cache)}`);
});

test('a reload is served from the browser cache: no model request reaches the server', async () => {
  requests.length = 0;
  const t0 = Date.now();
  await page.reload();
  const d = await waitState(['ready', 'load-failed', 'no-webgpu', 'no-adapter']);
  const reloadMs = Date.now() - t0;
  assert.equal(d.state, 'ready', `${d.error}\n${logs.join('\n')}`);
  console.log(`# model ready: first visit ${firstVisitMs} ms, cached reload ${reloadMs} ms (page load to ready)`);
  assert.deepEqual(requests.filter((u) => u.startsWith(`/${modelDir}/`)), [], 'model requests on the reload');
  assert.ok(requests.length > 0, 'the page itself was requested');
  assert.ok(d.info.cache.hits >= 3 && d.info.cache.stored === 0, JSON.stringify(d.info.cache));
  assert.match(await page.textContent('#cacheNote'), /from the browser cache/);
  assert.match(await page.textContent('#cacheInfo'), /^Cache: [1-9]\d* files, [0-9.]+ MB$/);
});

test('chat.completions.create: OpenAI shapes, streamed or not, the session kept, errors naming the field, abort', async () => {
  const r = await page.evaluate(async (model) => {
    const { PltClient, modelUrls } = await import('./plt.js');
    const plt = new PltClient();
    const out = { errors: [] };
    try {
      await plt.load(modelUrls(model), { context: 256 });
      const messages = [{ role: 'user', content: 'Hello there' }];
      const greedy = { max_tokens: 8, temperature: 0, top_k: 0, min_p: 0, repetition_penalty: 1 };
      out.a = await plt.chat.completions.create({ messages, ...greedy });
      const reply = out.a.choices[0].message.content;
      // The same conversation again, streamed (the session held more: it starts over).
      const s = await plt.chat.completions.create({ messages, ...greedy, stream: true, stream_options: { include_usage: true } });
      out.chunks = [];
      for await (const c of s) out.chunks.push(c);
      // The conversation one exchange longer: only the new message is fed.
      out.c = await plt.chat.completions.create({ messages: [...messages, { role: 'assistant', content: reply }, { role: 'user', content: 'Who art thou?' }], ...greedy });
      const bad = [
        { messages: 'Hello' },
        { messages, n: 2 },
        { messages, temperature: -1 },
        { messages, max_tokens: 1.5 },
        { messages, logprobs: true },
        { messages, stop: [''] },
        { messages: [{ role: 'user', content: 1 }] },
        { messages: [{ role: 'robot', content: 'x' }] },
        { messages: [{ role: 'user', content: 'x' }, { role: 'assistant', content: 'y' }] },
        { messages: [] },
      ];
      for (const b of bad) {
        try {
          await plt.chat.completions.create(b);
          out.errors.push(null);
        } catch (e) {
          out.errors.push(e.message);
        }
      }
      const abort = new AbortController();
      const s2 = await plt.chat.completions.create({ messages, max_tokens: 200, temperature: 0, stream: true, signal: abort.signal });
      let n = 0;
      for await (const c of s2) {
        if (++n === 2) abort.abort();
        if (c.choices[0]?.finish_reason) out.aborted = c.choices[0].finish_reason;
      }
      out.abortedChunks = n;
    } finally {
      plt.terminate();
    }
    return out;
  }, `/${modelDir}/`);
  const a = r.a;
  assert.equal(a.object, 'chat.completion');
  assert.match(a.id, /^chatcmpl-/);
  assert.equal(a.choices.length, 1);
  assert.equal(a.choices[0].message.role, 'assistant');
  assert.equal(a.choices[0].message.content, a.plt.reply);
  assert.ok(['stop', 'length'].includes(a.choices[0].finish_reason));
  assert.equal(a.usage.completion_tokens, a.plt.tokens.length);
  assert.equal(a.usage.total_tokens, a.usage.prompt_tokens + a.usage.completion_tokens);
  assert.ok(a.usage.extra.decode_tokens_per_s >= 0 && a.usage.extra.prefill_tokens_per_s > 0);
  const chunks = r.chunks;
  assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk' && c.id === chunks[0].id));
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  const last = chunks[chunks.length - 1];
  assert.deepEqual(last.choices, [], 'the usage chunk has no choices');
  assert.equal(last.usage.completion_tokens, a.usage.completion_tokens);
  const fin = chunks[chunks.length - 2];
  assert.equal(fin.choices[0].finish_reason, a.choices[0].finish_reason);
  assert.deepEqual(fin.plt.tokens, a.plt.tokens, 'streamed or not, the same greedy tokens');
  assert.equal(fin.plt.restarted, true, 'a conversation other than the one held starts over');
  const streamed = chunks.map((c) => c.choices[0]?.delta.content || '').join('');
  assert.equal(streamed.trim(), a.choices[0].message.content);
  assert.equal(r.c.plt.restarted, false, 'a conversation that grew by one exchange is fed only its new message');
  assert.ok(r.c.usage.prompt_tokens < a.usage.prompt_tokens + a.usage.completion_tokens + 8, JSON.stringify(r.c.usage));
  const expect = [
    /^chat\.completions\.create: messages: expected an array/,
    /^chat\.completions\.create: n: only 1 choice/,
    /^chat\.completions\.create: temperature: expected a number from 0/,
    /^chat\.completions\.create: max_tokens: expected a whole number/,
    /^chat\.completions\.create: logprobs: not supported/,
    /^chat\.completions\.create: stop: expected a non-empty string/,
    /^chat\.completions\.create: messages\[0\]\.content: expected a string/,
    /^messages\[0\]\.role: expected system, user or assistant, got `robot`/,
    /^messages\[1\]\.role: the last message must be the user's, got `assistant`/,
    /^messages: empty/,
  ];
  for (const [i, re] of expect.entries()) assert.match(String(r.errors[i]), re);
  assert.equal(r.aborted, 'abort', 'an aborted stream ends with finish_reason abort');
  assert.ok(r.abortedChunks < 100, `the stream stopped after the abort (${r.abortedChunks} chunks)`);
});

// Fused last: the screenshot shows the PLT step.
for (const mode of ['sequential', 'vanilla', 'fused']) {
  test(`greedy tokens in the browser equal the native runtime's (${mode})`, async (t) => {
    const info = await page.evaluate(() => window.pltDemo.info);
    if (!info.modes.includes(mode)) {
      t.skip(`the model has no ${mode} mode`);
      return;
    }
    const native = nativeIds(mode);
    const web = await generateInPage(mode);
    console.log(`# ${mode}: native on ${native.adapter}: ${JSON.stringify(native.tokens)}`);
    console.log(`# ${mode}: browser (${web.tokensPerSecond.toFixed(1)} tok/s, ${web.msPerToken.toFixed(1)} ms/token): ${JSON.stringify(web.tokens)}`);
    assert.deepEqual(web.promptTokens, native.prompt_tokens, 'prompt ids');
    assert.ok(web.tokens.length > 0, 'no tokens generated');
    assert.deepEqual(web.tokens, native.tokens, 'generated ids');
    assert.equal(web.text, native.text);
    const shown = await page.textContent('#output');
    assert.equal(shown, PROMPT + web.text, 'the page shows the prompt and the generated text');
    assert.match(await page.textContent('#prefillTps'), /^[0-9.]+$/, 'prefill tokens/s is shown');
    // A model trained as PLT, run as a vanilla looped model: the page says what to expect.
    const hinted = await page.isVisible('#modeHint');
    assert.equal(hinted, mode === 'vanilla' && info.loopMode === 'parallel', `the vanilla hint is ${hinted ? 'shown' : 'hidden'} in ${mode} mode`);
  });
}

test('a screenshot of the page shows the output', async () => {
  const box = await page.locator('#output .gen').boundingBox();
  assert.ok(box && box.width > 0 && box.height > 0, 'the output is laid out');
  const vp = page.viewportSize();
  assert.ok(box.y + box.height <= vp.height, 'the output is on screen');
  const shot = await page.screenshot();
  const file = path.join(WORK, 'demo.png');
  fs.writeFileSync(file, shot);
  if (process.env.PLT_DEMO_SCREENSHOT) fs.writeFileSync(path.resolve(ROOT, process.env.PLT_DEMO_SCREENSHOT), shot);
  const text = await page.textContent('#output .gen');
  const ink = await inkIn(shot, box);
  console.log(`# screenshot ${file}: ${ink} dark pixels over the ${text.length} characters of output`);
  // Text renders as dark pixels; an empty or hidden output has none.
  assert.ok(text.trim().length > 0, 'the output is empty');
  assert.ok(ink > 50, `the screenshot shows no output text (${ink} dark pixels)`);
  const stats = await page.textContent('#tps');
  assert.match(stats, /^[0-9.]+$/, 'tokens/s is shown');
});

test('Stop cancels a running generation', async () => {
  await page.fill('#maxTokens', '400');
  await page.click('#generate');
  await page.waitForFunction(() => document.querySelector('#output .gen').textContent.length > 0, null, { timeout: 120_000 });
  await page.click('#stop');
  const d = await waitState(['done', 'failed']);
  assert.equal(d.state, 'done', d.error);
  assert.equal(d.result.finish, 'cancelled');
  assert.ok(d.result.generatedTokens < 400, `${d.result.generatedTokens} tokens`);
});

test('a 3-turn chat gives the native Chat turns, and regenerate and reset work', async () => {
  const turns = ['Hello there', 'Who art thou?', 'Farewell'];
  const args = ['--model', path.join(ROOT, modelDir), '-n', '8', '--temperature', '0', '--system', 'Speak in verse.', '--regenerate'];
  for (const m of turns) args.push('--chat', m);
  const out = execFileSync(path.join(BIN, 'examples', 'generate_ids'), args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const nativeRun = JSON.parse(out.trim().split('\n').pop());
  const native = nativeRun.turns;
  await page.click('#tabChat');
  assert.ok(await page.isVisible('#chatTab'));
  assert.ok(!(await page.isVisible('#prompt')), 'the completion prompt is on the other tab');
  for (const [k, v] of Object.entries({ maxTokens: '8', temperature: '0', topK: '0', topP: '1', minP: '0', repetitionPenalty: '1', seed: '1' })) await page.fill(`#${k}`, v);
  await page.selectOption('#mode', 'fused');
  await page.fill('#system', 'Speak in verse.');
  for (const [i, m] of turns.entries()) {
    await page.fill('#chatInput', m);
    await page.click('#send');
    const d = await waitState(['chat-done', 'failed', 'invalid-input']);
    assert.equal(d.state, 'chat-done', d.error);
    const r = d.chat.turns[i];
    console.log(`# chat turn ${i}: ${JSON.stringify(r.tokens)} ${JSON.stringify(r.reply)}`);
    assert.deepEqual(r.tokens, native[i].tokens, `turn ${i}: the page's tokens equal the native Chat's`);
    assert.equal(r.reply, native[i].reply);
    // (The first turn starts over: the session held the completion tab's text.)
    if (i > 0) assert.equal(r.restarted, false, `turn ${i}: the context is kept from turn to turn`);
    await page.evaluate(() => {
      window.pltDemo.state = 'idle';
    });
  }
  const log = () => page.$$eval('#chatLog .msg', (ms) => ms.map((m) => [m.classList.contains('user') ? 'user' : 'assistant', m.querySelector('.body').textContent]));
  assert.deepEqual(await log(), turns.flatMap((m, i) => [['user', m], ['assistant', native[i].reply]]));
  // Regenerate: the last exchange taken back and asked again, the session starting over from
  // the kept messages (a prefill of the whole conversation: the native run does the same).
  await page.evaluate(() => {
    window.pltDemo.state = 'idle';
  });
  await page.click('#regenerate');
  let d = await waitState(['chat-done', 'failed']);
  assert.equal(d.state, 'chat-done', d.error);
  assert.equal(d.chat.turns.length, 3);
  assert.deepEqual(d.chat.turns[2].tokens, nativeRun.regenerated.tokens);
  assert.equal(d.chat.turns[2].restarted, true);
  assert.equal((await log()).length, 6);
  // Reset: an empty transcript, and the next turn is the native first turn again.
  await page.click('#resetChat');
  await page.waitForFunction(() => document.querySelectorAll('#chatLog .msg').length === 0, null, { timeout: 30_000 });
  await page.evaluate(() => {
    window.pltDemo.state = 'idle';
  });
  await page.fill('#chatInput', turns[0]);
  await page.click('#send');
  d = await waitState(['chat-done', 'failed']);
  assert.equal(d.state, 'chat-done', d.error);
  assert.deepEqual(d.chat.turns[0].tokens, native[0].tokens);
  // A chat does not run as a vanilla looped model: the page says so, naming the field.
  const modes = await page.evaluate(() => window.pltDemo.info.modes);
  if (modes.includes('vanilla')) {
    await page.selectOption('#mode', 'vanilla');
    await page.fill('#chatInput', 'x');
    await page.click('#send');
    d = await waitState(['invalid-input', 'chat-done', 'failed']);
    assert.equal(d.state, 'invalid-input');
    assert.match(await page.textContent('#message'), /^Loop mode: /);
    await page.selectOption('#mode', 'fused');
  }
  await page.click('#tabCompletion');
  assert.ok(await page.isVisible('#prompt'));
});

test('the minimal example page (wasm/www/example.html) loads the model and streams two replies', async () => {
  const p = await browser.newPage();
  const errors = [];
  p.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  p.on('pageerror', (e) => errors.push(e.message));
  await p.goto(`http://127.0.0.1:${port}/wasm/www/example.html?model=/${modelDir}/`);
  await p.waitForFunction(() => /^(ready|could not)/.test(document.getElementById('status').textContent), null, { timeout: 180_000 });
  assert.match(await p.textContent('#status'), /^ready: /);
  for (let turn = 1; turn <= 2; turn++) {
    await p.click('button');
    await p.waitForFunction((n) => document.body.dataset.turns === String(n), turn, { timeout: 180_000 });
  }
  const out = await p.textContent('#out');
  assert.match(out, /^user: Hello there\nassistant: [^]*?\S[^]*\n\nuser: Hello there\nassistant: [^]*?\S[^]*\n\n$/, out);
  assert.match(await p.textContent('#status'), /^\d+ tokens at [0-9.]+ tokens\/s$/);
  assert.deepEqual(errors, []);
  await p.close();
});

test('loading, generating and chatting log no console errors', () => {
  // Everything above ran on `page`: the model's optional files all exist (no 404 probes), and
  // nothing failed in the page or the worker.
  const bad = logs.filter((l) => l.startsWith('[console.error]') || l.startsWith('[pageerror]'));
  assert.deepEqual(bad, [], logs.join('\n'));
});

test('after a lost WebGPU device the model is loaded again, the page says so, and it gives the same tokens', async () => {
  await page.evaluate(() => window.pltDemo.client.destroyDevice());
  const native = nativeIds('fused');
  const web = await generateInPage('fused');
  assert.match(web.recovered || '', /^the WebGPU device was lost \(.*\); the model was loaded again on a new device$/);
  assert.match(await page.textContent('#message'), /^Note: the WebGPU device was lost/);
  assert.deepEqual(web.tokens, native.tokens);
});

test('every bad form value gets a message naming the field', async () => {
  const context = await page.evaluate(() => window.pltDemo.info.context);
  assert.equal(await page.getAttribute('#maxTokens', 'max'), String(context), 'the field takes at most the context');
  assert.match(await page.textContent('label[for=maxTokens]'), new RegExp(`1 to ${context}`), 'the context limit is shown');
  const good = { maxTokens: '8', temperature: '0', topK: '0', topP: '1', minP: '0', repetitionPenalty: '1', repeatLastN: '64', seed: '1' };
  const bad = [
    ['maxTokens', 'Max tokens', ['1.5', '-3', '0', '', String(context + 1), '100000']],
    ['temperature', 'Temperature', ['-0.1', '6', '']],
    ['topK', 'Top-k', ['-1', '2.5', '']],
    ['topP', 'Top-p', ['0', '1.5', '-1']],
    ['minP', 'Min-p', ['-0.1', '1', '']],
    ['repetitionPenalty', 'Repetition penalty', ['0', '-1', '11']],
    ['repeatLastN', 'Repeat last n', ['-1', '1.5', '257']],
    ['seed', 'Seed', ['-1', '1.5', '']],
  ];
  for (const [id, label, values] of bad) {
    for (const v of values) {
      for (const [k, g] of Object.entries(good)) await page.fill(`#${k}`, g);
      await page.fill(`#${id}`, v);
      await page.evaluate(() => {
        window.pltDemo.state = 'idle';
      });
      await page.click('#generate');
      const d = await waitState(['invalid-input', 'done', 'failed'], 30_000);
      assert.equal(d.state, 'invalid-input', `${id} = ${JSON.stringify(v)} was accepted`);
      const msg = await page.textContent('#message');
      assert.ok(msg.startsWith(`${label}: `), `${id} = ${JSON.stringify(v)}: ${msg}`);
      assert.equal(await page.getAttribute(`#${id}`, 'aria-invalid'), 'true');
    }
  }
  // Good values again: it runs, and the marks are gone.
  for (const [k, g] of Object.entries(good)) await page.fill(`#${k}`, g);
  await page.click('#generate');
  const d = await waitState(['done', 'failed']);
  assert.equal(d.state, 'done', d.error);
  assert.equal(await page.getAttribute('#maxTokens', 'aria-invalid'), 'false');
});

test('a failed load keeps the model that was loaded', async () => {
  const before = await page.textContent('#modelInfo');
  await page.fill('#modelUrl', '/models/no-such-model/');
  await page.click('#loadUrl');
  const d = await waitState(['load-failed', 'ready']);
  assert.equal(d.state, 'load-failed');
  assert.match(await page.textContent('#message'), /config\.json: fetching .* gave HTTP 404 .*\(the previous model is still loaded\)/);
  assert.equal(await page.textContent('#modelInfo'), before);
  assert.equal(await page.isDisabled('#generate'), false, 'Generate stays available');
  await page.fill('#maxTokens', '4');
  await page.click('#generate');
  const g = await waitState(['done', 'failed']);
  assert.equal(g.state, 'done', g.error);
  assert.ok(g.result.generatedTokens > 0);
});

test('the page loads a model from local files', async () => {
  const dir = path.join(ROOT, modelDir);
  const files = fs.readdirSync(dir).filter((f) => /^(config|tokenizer|tokenizer_config|generation_config)\.json$|\.safetensors$/.test(f));
  await page.setInputFiles('#files', files.map((f) => path.join(dir, f)));
  await page.waitForFunction(() => window.pltDemo.state !== 'ready', null, { timeout: 10_000 }).catch(() => {});
  const d = await waitState(['ready', 'load-failed']);
  assert.equal(d.state, 'ready', d.error);
  assert.match(await page.textContent('#modelInfo'), /^model\.safetensors · /);
  // The same prompt ids as from the URL (tokenizer_config.json, when there is one, was read).
  const web = await generateInPage('fused');
  assert.deepEqual(web.promptTokens, nativeIds('fused').prompt_tokens);
});

// SmolLM2-135M-Instruct, a real pretrained model, from its Q4_1 GGUF served beside the page
// (the file `scripts/fetch-smollm2.sh` fetches; `cargo test` fetches it too): the tokenizer and
// chat template come from the GGUF metadata, the blocks stay quantised on the device, and the
// greedy tokens equal the native runtime's loading the same file the same way.
test('the page loads a GGUF file and gives the native tokens', async () => {
  const gguf = 'models/smollm2-135m-instruct-q4_1.gguf';
  execFileSync(path.join(ROOT, 'scripts', 'fetch-smollm2.sh'), [], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
  await page.fill('#modelUrl', `/${gguf}`);
  await page.click('#loadUrl');
  await page.waitForFunction(() => window.pltDemo.state !== 'ready', null, { timeout: 10_000 }).catch(() => {});
  const d = await waitState(['ready', 'load-failed'], 600_000);
  assert.equal(d.state, 'ready', `${d.error}\n${logs.join('\n')}`);
  assert.equal(d.info.numLoops, 1);
  assert.equal(d.info.vocabSize, 49152);
  const prompt = 'The capital of France is';
  const n = 4;
  const native = nativeIds('fused', { model: gguf, prompt, n });
  const web = await generateInPage('fused', { prompt, n });
  console.log(`# GGUF: native on ${native.adapter}: ${JSON.stringify(native.tokens)} ${JSON.stringify(native.text)}`);
  console.log(`# GGUF: browser (${web.tokensPerSecond.toFixed(2)} tok/s, prefill ${web.prefillMs.toFixed(0)} ms): ${JSON.stringify(web.tokens)} ${JSON.stringify(web.text)}`);
  assert.deepEqual(web.promptTokens, native.prompt_tokens, 'prompt ids');
  assert.deepEqual(web.tokens, native.tokens, 'greedy ids');
  assert.match(web.text, /Paris/);
  // The file was read a range at a time: never whole in wasm memory; and the device holds the
  // same weight bytes as natively (blocks kept quantised).
  const size = fs.statSync(path.join(ROOT, gguf)).size;
  console.log(`# GGUF: ${size} bytes; wasm memory after the load ${d.info.wasmMemoryBytes} bytes; weights on the GPU ${d.info.weightBytes} bytes (native ${native.weight_bytes})`);
  assert.ok(d.info.wasmMemoryBytes < size, `wasm memory ${d.info.wasmMemoryBytes} bytes, the file ${size}`);
  assert.equal(d.info.weightBytes, native.weight_bytes);
});

test("the cache can be cleared, and a full storage quota loads the model uncached with a message", async () => {
  // Still the GGUF from the test above: its files, and the first model's, are in the cache.
  await page.waitForFunction(() => /^Cache: [1-9]/.test(document.getElementById('cacheInfo').textContent), null, { timeout: 30_000 });
  await page.click('#clearCache');
  await page.waitForFunction(() => /^Cache: 0 files/.test(document.getElementById('cacheInfo').textContent), null, { timeout: 30_000 });
  assert.match(await page.textContent('#message'), /model cache was cleared \([1-9]\d* files/);
  const origin = `http://127.0.0.1:${port}`;
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: 64 * 1024 });
  try {
    await page.evaluate(() => {
      window.pltDemo.state = 'idle';
    });
    await page.fill('#modelUrl', `/${modelDir}/`);
    await page.click('#loadUrl');
    const d = await waitState(['ready', 'load-failed']);
    assert.equal(d.state, 'ready', d.error);
    assert.match(d.info.cache.error || '', /storage quota is full/, JSON.stringify(d.info.cache));
    assert.match(await page.textContent('#message'), /^Loaded, but the browser's storage quota is full/);
    const g = await generateInPage('fused', { n: 4 });
    assert.ok(g.generatedTokens > 0);
  } finally {
    await cdp.send('Storage.overrideQuotaForOrigin', { origin });
  }
});
