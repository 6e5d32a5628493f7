// The browser's numbers, measured in one run: time to the first token on a first visit and on a
// cached reload, and decode tokens/s in the page against native wgpu on the same adapter (the
// SwiftShader Vulkan driver that Debian's chromium package ships, which is what Chromium's
// software WebGPU adapter runs on).
//
//   scripts/build-wasm.sh && cargo build --release && (cd tests/browser && npm ci)
//   node tests/browser/bench.mjs [--model models/plt2-shakespeare/] [-n 64] [--runs 3]
//
// --model: a model directory or a .gguf file under the repository. Prints a markdown table.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serve, DEFAULT_ALLOW } from '../../wasm/serve.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const args = process.argv.slice(2);
const arg = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] ? args[i + 1] : dflt;
};
const MODEL = arg('--model', 'models/plt2-shakespeare/');
const N = Number(arg('-n', 64));
const RUNS = Number(arg('--runs', 3));
const PROMPT = arg('--prompt', 'ROMEO:');
const ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

if (!fs.existsSync(path.join(ROOT, MODEL))) throw new Error(`${MODEL}: no such model under ${ROOT}`);
if (!fs.existsSync(ICD)) throw new Error(`${ICD} is missing: apt-get install chromium`);

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return (s[(s.length - 1) >> 1] + s[s.length >> 1]) / 2;
};

// Native: `plt generate` on SwiftShader through Vulkan, greedy, the page's prompt and length.
function native() {
  const run = spawnSync(
    path.join(ROOT, 'target/release/plt'),
    ['generate', '--backend', 'gpu', '--model', path.join(ROOT, MODEL), '-n', String(N), '--temperature', '0', '--repeat-penalty', '1', PROMPT],
    { cwd: ROOT, encoding: 'utf8', env: { ...process.env, VK_ICD_FILENAMES: ICD, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR || '/tmp' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  if (run.status !== 0) throw new Error(`plt generate failed (${run.status}):\n${run.stderr}`);
  // The statistics line is on stderr.
  const out = run.stdout + run.stderr;
  const m = /(\d+) tokens, ([0-9.]+) tok\/s/.exec(out);
  if (!m) throw new Error(`no tok/s in plt generate's output:\n${out}`);
  return { tokens: Number(m[1]), tps: Number(m[2]) };
}

const { server, port } = await serve(ROOT, 0, { allow: DEFAULT_ALLOW });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--enable-unsafe-webgpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
});
try {
  const page = await browser.newPage();
  const url = `http://127.0.0.1:${port}/wasm/www/?model=/${MODEL}&prompt=${encodeURIComponent(PROMPT)}`;
  const settle = async () => {
    await page.waitForFunction(() => window.pltDemo && ['ready', 'load-failed', 'no-webgpu', 'no-adapter'].includes(window.pltDemo.state), null, { timeout: 900_000, polling: 50 });
    const d = await page.evaluate(() => ({ ...window.pltDemo, client: undefined }));
    if (d.state !== 'ready') throw new Error(`the page did not load the model: ${d.error}`);
    return d;
  };
  const generate = async (n) => {
    await page.evaluate(() => {
      window.pltDemo.state = 'idle';
    });
    for (const [k, v] of Object.entries({ maxTokens: n, temperature: 0, topK: 0, minP: 0, repetitionPenalty: 1, topP: 1 })) await page.fill(`#${k}`, String(v));
    await page.click('#generate');
    await page.waitForFunction(() => ['done', 'failed'].includes(window.pltDemo.state), null, { timeout: 900_000, polling: 50 });
    const r = await page.evaluate(() => ({ state: window.pltDemo.state, error: window.pltDemo.error, result: window.pltDemo.result }));
    if (r.state !== 'done') throw new Error(`generation failed: ${r.error}`);
    return r.result;
  };
  // Time to first token: from the navigation to the first token of a 1-token generation.
  const visit = async (go) => {
    const t0 = Date.now();
    await go();
    const d = await settle();
    const readyMs = Date.now() - t0;
    const r = await generate(1);
    return { readyMs, ttftMs: readyMs + r.prefillMs, cache: d.info.cache, info: d.info, stages: d.stages };
  };
  await page.evaluate(async () => {
    if ('caches' in self) await caches.delete('plt-models-v1');
  }).catch(() => {});
  const first = await visit(() => page.goto(url));
  const cached = await visit(() => page.reload());
  if (cached.cache.hits === 0) throw new Error(`the reload was not served from the cache: ${JSON.stringify(cached.cache)}`);
  const web = [];
  const nat = [];
  for (let i = 0; i < RUNS; i++) {
    web.push((await generate(N)).tokensPerSecond);
    nat.push(native().tps);
  }
  const w = median(web);
  const n = median(nat);
  const f = (x, d = 2) => x.toFixed(d);
  console.log(`model: ${MODEL} (${(first.info.parameters / 1e6).toFixed(1)}M parameters, ${(first.info.weightBytes / 1e6).toFixed(1)} MB on the GPU), adapter: ${first.info.adapter}`);
  console.log(`prompt ${JSON.stringify(PROMPT)}, ${N} tokens greedy, fused, median of ${RUNS} (page and native alternating)\n`);
  console.log('| | first visit | cached reload |');
  console.log('|---|---|---|');
  console.log(`| page load to model ready (s) | ${f(first.readyMs / 1000)} | ${f(cached.readyMs / 1000)} |`);
  console.log(`| to the first token (s) | ${f(first.ttftMs / 1000)} | ${f(cached.ttftMs / 1000)} |\n`);
  for (const [name, v] of [['first visit', first], ['cached reload', cached]]) {
    console.log(`${name}, the load's stages (s since the page started): ${v.stages.map(([t, s]) => `${(t / 1000).toFixed(2)} ${s}`).join(' · ')}`);
  }
  console.log('');
  console.log('| decode | tokens/s | runs |');
  console.log('|---|---|---|');
  console.log(`| page (WebGPU, SwiftShader) | ${f(w)} | ${web.map((x) => f(x)).join(', ')} |`);
  console.log(`| native wgpu (Vulkan, SwiftShader) | ${f(n)} | ${nat.map((x) => f(x)).join(', ')} |`);
  console.log(`| page / native | ${f(w / n)} | |`);
} finally {
  await browser.close();
  server.close();
}
