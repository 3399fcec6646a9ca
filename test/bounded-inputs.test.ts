/**
 * Bounded inputs (issue 17, item 6) against a real cluster: a 1 MB string in a key field
 * (Encrypt, GetKey, CreateKey) or a context value is refused INVALID_ARGUMENT with a short
 * message (the input is never echoed whole), and the same client then still serves a normal
 * Encrypt promptly (the finding: a ~10 s stall of that caller's connection).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { APP, DevCluster } from '@keyshard/devcluster';
import type { KeyshardClient } from '@keyshard/client';
import { rejectsWith } from './support/grpc.ts';

describe('bounded inputs', { timeout: 240_000 }, () => {
  let dir: string;
  let cluster: DevCluster;
  let app: KeyshardClient;
  const msg = Buffer.from('pay 100 to alice');
  const huge = 'k'.repeat(1024 * 1024);

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-bounds-'));
    cluster = await DevCluster.create({ dir, custodians: 2, threshold: 2 });
    await cluster.start();
    await cluster.bootstrap();
    app = cluster.client(APP); // a key user: it makes and uses its key
    await app.createKey('bounded');
    await app.encrypt('bounded', msg); // warm: the connection is up before timing
  });

  after(async () => {
    app?.close();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const cases: [string, () => Promise<unknown>][] = [
    ['Encrypt key', () => app.encrypt(huge, msg)],
    ['GetKey key', () => app.getKey(huge)],
    ['CreateKey name', () => app.createKey(huge)],
    ['Encrypt context value', () => app.encrypt('bounded', msg, { tenant: huge })],
  ];
  for (const [what, call] of cases) {
    it(`${what}: 1 MB refused INVALID_ARGUMENT, short message; the client then serves an Encrypt within 1 s`, async () => {
      const t0 = performance.now();
      const r = await rejectsWith(call(), 'INVALID_ARGUMENT');
      const refusedMs = performance.now() - t0;
      assert.ok(r.message.length < 300, `message of ${r.message.length} characters: ${r.message.slice(0, 300)}`);
      const t1 = performance.now();
      const ok = await app.encrypt('bounded', msg);
      const nextMs = performance.now() - t1;
      assert.ok(ok.ciphertext.length > 0);
      assert.ok(nextMs < 1000, `the next Encrypt took ${Math.round(nextMs)} ms (refusal took ${Math.round(refusedMs)} ms)`);
    });
  }
});
