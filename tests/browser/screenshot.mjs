// Takes the README's screenshot of the demo: the page in headless Chromium (software WebGPU),
// one generation with the page's default sampling options, then a PNG.
//
//   node tests/browser/screenshot.mjs [--model models/plt2-shakespeare] [--out docs/demo.png]
//       [--prompt TEXT] [--tokens N] [--mode fused] [--chat MESSAGE]... [--system TEXT]
//
// Needs scripts/build-wasm.sh first. The model directory must be inside the repository (the
// page fetches it from the server, which serves the repository root).

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serve, DEFAULT_ALLOW } from '../../wasm/serve.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i > 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : dflt;
};
const model = path.relative(ROOT, path.resolve(arg('--model', path.join(ROOT, 'models', 'plt2-shakespeare')))).split(path.sep).join('/');
const out = path.resolve(arg('--out', path.join(ROOT, 'docs', 'demo.png')));
const prompt = arg('--prompt', 'ROMEO:\n');
const tokens = arg('--tokens', '120');
const mode = arg('--mode', 'fused');
// --chat MESSAGE (repeatable): the Chat tab with these turns instead of a completion.
const chat = process.argv.flatMap((a, i) => (a === '--chat' && process.argv[i + 1] ? [process.argv[i + 1]] : []));

const { server, port } = await serve(ROOT, 0, { allow: [...DEFAULT_ALLOW, path.dirname(model)] });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--enable-unsafe-webgpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 820 } });
  await page.goto(`http://127.0.0.1:${port}/wasm/www/?model=/${model}/`);
  await page.waitForFunction(() => ['ready', 'load-failed', 'no-webgpu', 'no-adapter'].includes(window.pltDemo?.state), null, { timeout: 300_000 });
  const state = await page.evaluate(() => window.pltDemo.state);
  if (state !== 'ready') throw new Error(`the page did not load the model: ${await page.textContent('#message')}`);
  await page.fill('#maxTokens', tokens);
  await page.selectOption('#mode', mode);
  if (chat.length) {
    await page.click('#tabChat');
    await page.fill('#system', arg('--system', ''));
    for (const m of chat) {
      await page.evaluate(() => (window.pltDemo.state = 'idle'));
      await page.fill('#chatInput', m);
      await page.click('#send');
      await page.waitForFunction(() => ['chat-done', 'failed', 'invalid-input'].includes(window.pltDemo.state), null, { timeout: 600_000 });
    }
  } else {
    await page.fill('#prompt', prompt);
    await page.click('#generate');
    await page.waitForFunction(() => ['done', 'failed'].includes(window.pltDemo.state), null, { timeout: 600_000 });
  }
  const failed = await page.evaluate(() => window.pltDemo.error);
  if (failed) throw new Error(failed);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  // The whole transcript and output in the picture, not a scrolled box.
  await page.addStyleTag({ content: '#chatLog, #output { max-height: none !important; }' });
  await page.screenshot({ path: out, fullPage: true });
  console.log(`wrote ${out}: ${chat.length ? await page.textContent('#chatLog') : await page.textContent('#output .gen')}`);
} finally {
  await browser.close();
  server.close();
}
