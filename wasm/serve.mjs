// A small static file server for the demo (no dependencies) on 127.0.0.1.
//
//   node wasm/serve.mjs [--root DIR] [--port 8080] [--allow DIR]...
//
// Serves only what the page needs: the page and its wasm package (`wasm/www/`) and the models
// (`models/`) under ROOT, plus any directory given with --allow (relative to ROOT); `/` redirects
// to the page. Everything else, and any path with a dot-file or dot-directory component (`.git`),
// is 404. Only GET and HEAD; byte ranges (`Range: bytes=a-b`) for large model files. A malformed
// request gets a 4xx and the server goes on: no request can stop it.
//
// Also imported by tests/browser/*.test.mjs (`serve(root, port, { allow })` → {server, port}).
// WebGPU needs a secure context, which http://localhost and http://127.0.0.1 are.

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.txt': 'text/plain; charset=utf-8',
  '.md': 'text/plain; charset=utf-8',
};

/** The directories served by default, relative to the root. */
export const DEFAULT_ALLOW = ['wasm/www', 'models'];

const MAX_URL = 4096;

function plain(res, status, text) {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

/**
 * The file a request path names, or an HTTP status saying why there is none. `allow` holds the
 * absolute directories that may be served.
 */
function resolvePath(root, allow, url) {
  if (typeof url !== 'string' || url.length > MAX_URL) return { status: 414 };
  // Only origin-form paths ("/a/b"); absolute-form and authority-form targets are refused.
  if (!url.startsWith('/') || url.startsWith('//')) return { status: 400 };
  let rel;
  try {
    rel = decodeURIComponent(url.split(/[?#]/, 1)[0]);
  } catch {
    return { status: 400 };
  }
  if (rel.includes('\0') || rel.includes('\\')) return { status: 400 };
  const parts = rel.split('/').filter((p) => p !== '');
  if (parts.some((p) => p === '..' || p.startsWith('.'))) return { status: 404 };
  const file = path.join(root, ...parts);
  const inside = (dir) => file === dir || file.startsWith(dir + path.sep);
  if (!allow.some(inside)) return { status: 404 };
  return { file, rel, dir: rel.endsWith('/') };
}

/** Parses `bytes=a-b` (one range) against a size: {start, end} inclusive, null (whole), or false (unsatisfiable). */
function parseRange(header, size) {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null;
  let start;
  let end;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) return false;
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start > end || start >= size) return false;
  return { start, end };
}

function handle(root, allow, req, res) {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('Allow', 'GET, HEAD');
    plain(res, 405, 'only GET and HEAD\n');
    return;
  }
  if (req.url === '/') {
    res.writeHead(302, { Location: '/wasm/www/', 'Content-Length': 0 }).end();
    return;
  }
  const r = resolvePath(root, allow, req.url);
  if (r.status) {
    plain(res, r.status, r.status === 404 ? 'not found\n' : 'bad request\n');
    return;
  }
  fs.stat(r.file, (err, st) => {
    let file = r.file;
    if (!err && st.isDirectory()) {
      if (!r.dir) {
        // Redirect to the directory itself (the page resolves relative URLs against it).
        res.writeHead(301, { Location: encodeURI(r.rel + '/'), 'Content-Length': 0 }).end();
        return;
      }
      file = path.join(file, 'index.html');
      try {
        st = fs.statSync(file);
      } catch {
        st = null;
      }
    }
    if (err || !st || !st.isFile()) {
      plain(res, 404, 'not found\n');
      return;
    }
    const range = parseRange(req.headers.range, st.size);
    if (range === false) {
      res.writeHead(416, { 'Content-Range': `bytes */${st.size}`, 'Content-Length': 0 }).end();
      return;
    }
    const headers = {
      'Content-Type': TYPES[path.extname(file).toLowerCase()] || 'application/octet-stream',
      'Cache-Control': 'no-cache',
      'Accept-Ranges': 'bytes',
      'X-Content-Type-Options': 'nosniff',
    };
    const { start, end } = range || { start: 0, end: st.size - 1 };
    headers['Content-Length'] = st.size === 0 ? 0 : end - start + 1;
    if (range) headers['Content-Range'] = `bytes ${start}-${end}/${st.size}`;
    if (req.method === 'HEAD' || st.size === 0) {
      res.writeHead(range ? 206 : 200, headers).end();
      return;
    }
    const stream = fs.createReadStream(file, { start, end });
    stream.on('error', () => {
      // The file went away or cannot be read: a 500 if nothing was sent yet, else cut the reply.
      if (res.headersSent) res.destroy();
      else plain(res, 500, 'cannot read the file\n');
    });
    stream.once('open', () => {
      res.writeHead(range ? 206 : 200, headers);
      stream.pipe(res);
    });
    res.on('close', () => stream.destroy());
  });
}

/// Serves `allow` (directories relative to `root`) on `host:port` (0: any free port).
/// `onRequest(method, url)` sees each request first (tests count them).
export function serve(root, port = 0, { host = '127.0.0.1', allow = DEFAULT_ALLOW, onRequest = null } = {}) {
  root = path.resolve(root);
  const dirs = allow.map((d) => path.resolve(root, d));
  const server = http.createServer((req, res) => {
    try {
      onRequest?.(req.method, req.url);
      handle(root, dirs, req, res);
    } catch {
      plain(res, 500, 'internal error\n');
    }
  });
  // A request line or header node's parser refuses: answer 400 and close.
  server.on('clientError', (err, socket) => {
    if (socket.writable && !socket.destroyed) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    else socket.destroy();
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve({ server, port: server.address().port }));
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const arg = (name, dflt) => {
    const i = args.indexOf(name);
    return i >= 0 && args[i + 1] ? args[i + 1] : dflt;
  };
  const extra = args.flatMap((a, i) => (a === '--allow' && args[i + 1] ? [args[i + 1]] : []));
  const root = arg('--root', path.join(path.dirname(fileURLToPath(import.meta.url)), '..'));
  const port = Number(arg('--port', process.env.PORT || 8080));
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`serve: --port must be an integer from 0 to 65535, got ${arg('--port', process.env.PORT)}`);
    process.exit(2);
  }
  const allow = [...DEFAULT_ALLOW, ...extra];
  const { port: p } = await serve(root, port, { allow });
  console.log(`serving ${allow.map((d) => d + '/').join(', ')} of ${path.resolve(root)} on http://localhost:${p}/`);
  console.log(`demo: http://localhost:${p}/wasm/www/`);
}
