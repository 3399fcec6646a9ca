// The worker module of block-worker.spec.ts: what it does is chosen by its data.
import { KeyshardError } from '@keyshard/errors';
import { serveBlockWorker } from './block-worker.ts';

await serveBlockWorker<{ mode: 'echo' | 'refuse' | 'crash' | 'hoard' }>(import.meta.url, async ({ mode }, side) => {
  if (mode === 'refuse') throw new KeyshardError('FAILED_PRECONDITION', 'refused on purpose');
  if (mode === 'crash') throw new Error('a secret-bearing message that must not cross');
  if (mode === 'hoard') {
    const kept: number[][] = [];
    for (;;) kept.push(new Array(1 << 16).fill(kept.length)); // retained: past any heap cap
  }
  let bytes = 0;
  for await (const b of side.received()) {
    bytes += b.length;
    side.progress(bytes);
    await side.send(Buffer.from(b.toString('utf8').toUpperCase()));
  }
  side.end();
  return bytes;
});
