// The TypeScript declarations of the browser API (wasm/www/plt.d.ts) compile, and usage.ts,
// which uses the API as wasm/README.md shows (and misuses it where marked), type-checks
// against them under --strict.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));

test('plt.d.ts type-checks the documented uses of the API', () => {
  const tsc = path.join(HERE, 'node_modules', 'typescript', 'bin', 'tsc');
  const args = [tsc, '--noEmit', '--strict', '--target', 'es2022', '--module', 'es2022', '--moduleResolution', 'bundler',
    '--lib', 'es2022,dom', path.join(HERE, 'usage.ts')];
  try {
    execFileSync(process.execPath, args, { encoding: 'utf8', stdio: 'pipe' });
  } catch (e) {
    assert.fail(`tsc failed:\n${e.stdout}${e.stderr}`);
  }
});
