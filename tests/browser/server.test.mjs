// The demo server (wasm/serve.mjs) against hostile requests: it serves only the page, its wasm
// package and the models, answers every malformed request with a 4xx, and keeps answering.
// Needs only node (no browser): node --test server.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { serve } from '../../wasm/serve.mjs';

let root;
let server;
let port;

before(async () => {
  // A root shaped like the repository: the page, a model, and files that must not be served.
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'plt-serve-'));
  const put = (rel, text) => {
    fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    fs.writeFileSync(path.join(root, rel), text);
  };
  put('wasm/www/index.html', '<!doctype html><p>page</p>');
  put('wasm/www/pkg/plt_wasm_bg.wasm', 'wasm');
  put('models/m/config.json', '{"x": 1}');
  put('models/m/model.safetensors', Buffer.alloc(1000, 7));
  put('.git/config', 'secret');
  put('.env', 'secret');
  put('Cargo.toml', 'secret');
  put('src/main.rs', 'secret');
  put('models/.hidden/config.json', 'secret');
  ({ server, port } = await serve(root, 0));
});

after(() => {
  server.close();
  fs.rmSync(root, { recursive: true, force: true });
});

/** Sends raw bytes, returns the whole reply as text (the server closes or 0.4 s pass). */
function raw(bytes) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    s.on('data', (d) => {
      got += d.toString('latin1');
    });
    s.on('error', () => resolve(got));
    s.on('close', () => resolve(got));
    s.setTimeout(400, () => {
      s.destroy();
      resolve(got);
    });
    s.write(bytes);
  });
}

const status = (reply) => Number((/^HTTP\/1\.1 (\d{3})/.exec(reply) || [])[1]);
const get = (target, extra = '') => raw(`GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${extra}\r\n`);

test('serves the page, its package and models, with byte ranges', async () => {
  let r = await get('/wasm/www/');
  assert.equal(status(r), 200);
  assert.match(r, /<p>page<\/p>/);
  assert.equal(status(await get('/wasm/www/pkg/plt_wasm_bg.wasm')), 200);
  r = await get('/models/m/config.json');
  assert.equal(status(r), 200);
  assert.match(r, /application\/json/);
  r = await get('/models/m/model.safetensors', 'Range: bytes=10-19\r\n');
  assert.equal(status(r), 206);
  assert.match(r, /Content-Range: bytes 10-19\/1000/);
  assert.match(r, /Content-Length: 10\r\n/);
  assert.equal(status(await get('/models/m/model.safetensors', 'Range: bytes=5000-\r\n')), 416);
  assert.equal(status(await get('/')), 302);
  assert.equal(status(await get('/wasm/www')), 301);
});

test('never serves files outside the page and the models', async () => {
  const refused = [
    '/.git/config',
    '/.env',
    '/Cargo.toml',
    '/src/main.rs',
    '/models/.hidden/config.json',
    '/wasm/www/../../Cargo.toml',
    '/wasm/www/%2e%2e/%2e%2e/Cargo.toml',
    '/wasm/www/..%2f..%2fCargo.toml',
    '/models/%2e%67it/config',
    '/wasm/www/%2e%2e%5c%2e%2e%5cCargo.toml',
    '/%2e%2e/%2e%2e/etc/passwd',
    '/models/m/..%2f..%2f.git%2fconfig',
  ];
  for (const p of refused) {
    const r = await get(p);
    assert.ok([400, 403, 404].includes(status(r)), `${p}: got ${status(r)}`);
    assert.doesNotMatch(r, /secret/, p);
  }
});

test('malformed requests get a 4xx and the server keeps answering', async () => {
  const hostile = [
    'GET /%00 HTTP/1.1\r\nHost: x\r\n\r\n',
    'GET /wasm/www/%00index.html HTTP/1.1\r\nHost: x\r\n\r\n',
    'GET /%E0%A4%A HTTP/1.1\r\nHost: x\r\n\r\n',
    'GET /%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n',
    'GET http://evil.example/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n',
    'GET //etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n',
    'GET * HTTP/1.1\r\nHost: x\r\n\r\n',
    `GET /${'a'.repeat(20000)} HTTP/1.1\r\nHost: x\r\n\r\n`,
    'POST /wasm/www/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n',
    'DELETE /models/m/config.json HTTP/1.1\r\nHost: x\r\n\r\n',
    'GARBAGE\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n',
    '\u0000\u0001\u0002\r\n\r\n',
    'GET /models/m/model.safetensors HTTP/1.1\r\nHost: x\r\nRange: bytes=-0\r\n\r\n',
    'GET /models/m/model.safetensors HTTP/1.1\r\nHost: x\r\nRange: bytes=99999999999999999999-\r\n\r\n',
  ];
  for (const h of hostile) {
    const r = await raw(h);
    const s = status(r);
    assert.ok(s >= 400 && s < 500, `${JSON.stringify(h.slice(0, 60))}: got ${JSON.stringify(r.slice(0, 80))}`);
    // Still alive.
    assert.equal(status(await get('/wasm/www/')), 200, `not answering after ${JSON.stringify(h.slice(0, 60))}`);
  }
});
