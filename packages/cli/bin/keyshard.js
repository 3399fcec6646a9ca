#!/usr/bin/env node
// The keyshard CLI: runs the compiled CLI (../dist/main.js, made by `npm run build`) with plain
// node. KEYSHARD_FROM_SOURCE=1 runs the TypeScript sources instead, in a child
// `node --conditions=keyshard-source --import tsx` (development; needs the dev dependencies).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

if (process.env.KEYSHARD_FROM_SOURCE === '1') {
  const main = fileURLToPath(new URL('../src/main.ts', import.meta.url));
  const child = spawn(process.execPath, ['--conditions=keyshard-source', '--import', 'tsx', main, ...process.argv.slice(2)], { stdio: 'inherit' });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => child.kill(sig));
  child.on('exit', (code, signal) => {
    if (signal === null) process.exit(code ?? 1);
    process.removeAllListeners(signal);
    process.kill(process.pid, signal);
  });
} else {
  const main = new URL('../dist/main.js', import.meta.url);
  if (!existsSync(main)) {
    process.stderr.write(`keyshard: ${fileURLToPath(main)} is missing: run \`npm run build\` in the keyshard repository first\n`);
    process.exit(1);
  }
  await import(main.href);
}
