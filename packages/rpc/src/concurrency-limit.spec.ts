/** The concurrency limit alone, and inside unaryService on a real mutual-TLS server in process. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { issueCert } from '@keyshard/pki';
import { makeClient, unaryCall } from './client.ts';
import { ConcurrencyLimit } from './concurrency-limit.ts';
import { keyshardProto, type pb } from './proto.ts';
import { decodingSafe, unaryService, type CallOutcome, type CallReply } from './server.ts';
import { readTls, serverCredentials, serverOptions } from './tls.ts';

describe('ConcurrencyLimit', () => {
  it('admits up to max at once, refuses the next, admits again after a release', () => {
    const limit = new ConcurrencyLimit(2);
    assert.equal(limit.tryAcquire(), true);
    assert.equal(limit.tryAcquire(), true);
    assert.equal(limit.inFlight, 2);
    assert.equal(limit.tryAcquire(), false);
    assert.equal(limit.inFlight, 2, 'a refusal takes no place');
    limit.release();
    assert.equal(limit.tryAcquire(), true);
    limit.release();
    limit.release();
    assert.equal(limit.inFlight, 0);
    assert.throws(() => limit.release(), /without a matching tryAcquire/);
  });

  it('refuses a limit that is not a positive integer', () => {
    for (const bad of [0, -1, 1.5, Number.NaN, Infinity]) assert.throws(() => new ConcurrencyLimit(bad), RangeError);
  });
});

describe('unaryService with a concurrency limit', () => {
  let dir: string;
  let server: grpc.Server;
  let client: pb.KeyServiceClient;
  const limit = new ConcurrencyLimit(2);
  const outcomes: CallOutcome[] = [];
  const replies: CallReply[] = [];
  // Encrypt handlers wait here until the test lets them finish.
  let gate: { promise: Promise<void>; open: () => void };
  const newGate = () => {
    let open!: () => void;
    const promise = new Promise<void>((r) => (open = r));
    gate = { promise, open };
  };
  let started = 0;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-limit-'));
    const tls = readTls(await issueCert(dir, 'server'));
    const proto = keyshardProto();
    server = new grpc.Server(serverOptions());
    server.addService(
      decodingSafe(proto.KeyService.service),
      unaryService(
        proto.KeyService.service,
        {
          async Encrypt(req: { key: string }) {
            if (req.key === 'fail') throw new Error('handler failed');
            started++;
            await gate.promise;
            return { key_id: 'k', key_version: 1, ciphertext: Buffer.from('c') };
          },
        },
        { name: 'keys', limit, observer: (o) => void outcomes.push(o), onReply: (r) => replies.push(r) },
      ),
    );
    const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', serverCredentials(tls), (e, p) => (e ? reject(e) : resolve(p))));
    client = makeClient(proto.KeyService, `127.0.0.1:${port}`, tls);
  });

  after(() => {
    client?.close();
    server?.forceShutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  const encrypt = (key = 'k') => unaryCall(client, 'Encrypt', { key, plaintext: Buffer.from('p') });

  it('refuses calls beyond the limit at once with RESOURCE_EXHAUSTED while the admitted ones finish', async () => {
    newGate();
    const admitted = [encrypt(), encrypt()];
    while (started < 2) await new Promise((r) => setTimeout(r, 5));
    assert.equal(limit.inFlight, 2);
    const t0 = Date.now();
    const refused = await Promise.allSettled([encrypt(), encrypt(), encrypt()]);
    assert.ok(Date.now() - t0 < 2_000, 'refused at once, not queued behind the admitted calls');
    for (const r of refused) {
      assert.equal(r.status, 'rejected');
      const e = (r as PromiseRejectedResult).reason as grpc.ServiceError;
      assert.equal(e.code, grpc.status.RESOURCE_EXHAUSTED);
      assert.match(e.details, /keys service is at its limit of 2 concurrent calls/);
    }
    assert.equal(started, 2, 'no refused call reached its handler');
    gate.open();
    for (const r of await Promise.all(admitted)) assert.equal(r.key_id, 'k');
    assert.equal(limit.inFlight, 0, 'every place is given back');

    const shed = outcomes.filter((o) => o.shed);
    assert.equal(shed.length, 3, 'the observer learns which calls were shed');
    assert.ok(shed.every((o) => o.code === 'RESOURCE_EXHAUSTED' && o.ctx.method === 'keys.Encrypt' && o.ctx.principal === 'server'));
    assert.deepEqual(
      replies.map((r) => r.code).sort(),
      ['OK', 'OK', 'RESOURCE_EXHAUSTED', 'RESOURCE_EXHAUSTED', 'RESOURCE_EXHAUSTED'],
      'onReply sees every reply with its final status',
    );
  });

  it('admits new calls once the earlier ones are answered, and frees a place when the handler fails', async () => {
    newGate();
    gate.open();
    const results = await Promise.all(Array.from({ length: 6 }, () => encrypt().then(() => 'ok', (e: grpc.ServiceError) => grpc.status[e.code])));
    assert.ok(results.includes('ok'));
    assert.equal(limit.inFlight, 0);
    // Failing calls give their place back: more of them than the limit, then calls still succeed.
    for (let i = 0; i < 3; i++) await assert.rejects(encrypt('fail'), (e: grpc.ServiceError) => e.code === grpc.status.INTERNAL);
    assert.equal(limit.inFlight, 0);
    for (let i = 0; i < 5; i++) assert.equal((await encrypt()).key_id, 'k');
    // A method without a handler is refused before the limit (no place taken).
    await assert.rejects(unaryCall(client, 'Decrypt', { ciphertext: Buffer.from('x') }), (e: grpc.ServiceError) => e.code === grpc.status.UNIMPLEMENTED);
    assert.equal(limit.inFlight, 0);
  });
});
