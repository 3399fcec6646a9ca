/**
 * The ~10 s stall of issue 17: an error echoing 1 MB of caller input went into the trailers
 * (grpc-message, and again in grpc-status-details-bin); node's HTTP/2 client (nghttp2's HPACK
 * decoder) refuses a header block that large and ends the whole connection with
 * COMPRESSION_ERROR, and grpc-js leaves the call waiting for its deadline. toServiceError clips
 * message and metadata (boundedError), so any error reaches the caller at once and the
 * connection keeps serving. The control sends the same error unclipped and sees the call fail
 * to complete: what the clipping prevents.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { KeyshardError, MAX_QUOTED } from '@keyshard/errors';
import { keyshardProto } from './proto.ts';
import { MAX_ERROR_MESSAGE, MAX_ERROR_METADATA, boundedError, toServiceError } from './server.ts';
import { errorInfoOf } from './status-details.ts';

const huge = 'k'.repeat(1024 * 1024);

describe('error size', () => {
  let server: grpc.Server;
  let client: InstanceType<ReturnType<typeof keyshardProto>['KeyService']>;

  before(async () => {
    const proto = keyshardProto();
    server = new grpc.Server();
    const fail = (clipped: boolean) => {
      const e = new KeyshardError('NOT_FOUND', `key ${huge} not found`, { metadata: Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`k${i}`, huge])) });
      if (clipped) return toServiceError(e, 'rid-1');
      const metadata = new grpc.Metadata();
      metadata.set('x-echo', huge);
      return { code: grpc.status.NOT_FOUND, details: e.message, metadata };
    };
    server.addService(proto.KeyService.service, {
      GetKey: (call: grpc.ServerUnaryCall<{ key: string }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        if (call.request.key === 'huge') return cb(fail(true));
        if (call.request.key === 'unclipped') return cb(fail(false));
        cb(null, { id: 'k_1', name: call.request.key });
      },
    } as unknown as grpc.UntypedServiceImplementation);
    const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
    client = new proto.KeyService(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  });

  after(() => {
    client?.close();
    server?.forceShutdown();
  });

  const getKey = (key: string, ms = 2_000) =>
    new Promise<{ err: grpc.ServiceError | null; elapsed: number }>((resolve) => {
      const t0 = performance.now();
      client.GetKey({ key }, { deadline: Date.now() + ms }, (err) => resolve({ err, elapsed: performance.now() - t0 }));
    });

  it('boundedError clips the message to MAX_ERROR_MESSAGE and metadata to MAX_ERROR_METADATA entries of MAX_QUOTED characters', () => {
    const b = boundedError(huge, { [huge]: 'a key that is not a key name is dropped', ...Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`k${i}`, huge])) });
    assert.ok(b.message.length <= MAX_ERROR_MESSAGE + 1);
    assert.equal(Object.keys(b.metadata).length, MAX_ERROR_METADATA);
    assert.ok(!(huge in b.metadata));
    for (const [k, v] of Object.entries(b.metadata)) assert.ok(/^k\d+$/.test(k) && v.length <= MAX_QUOTED + 1, `${k.length} ${v.length}`);
    assert.deepEqual(boundedError('short', { a: 'b' }), { message: 'short', metadata: { a: 'b' } });
  });

  it('an error built from 1 MB of input reaches the caller at once, clipped, and the connection keeps serving', async () => {
    assert.equal((await getKey('warm')).err, null);
    const { err, elapsed } = await getKey('huge');
    assert.equal(err?.code, grpc.status.NOT_FOUND, String(err?.details).slice(0, 200));
    assert.ok(elapsed < 500, `the refusal took ${Math.round(elapsed)} ms`);
    assert.ok(err!.details.length <= MAX_ERROR_MESSAGE + 1, `details of ${err!.details.length} characters`);
    const info = errorInfoOf(err!);
    assert.equal(Object.keys(info?.metadata ?? {}).length, MAX_ERROR_METADATA);
    const next = await getKey('after');
    assert.equal(next.err, null);
    assert.ok(next.elapsed < 500, `the next call took ${Math.round(next.elapsed)} ms`);
  });

  // Last: it breaks the connection (grpc-js 1.14 then also lets the next calls on it wait out
  // their deadlines, which is how the finding saw a ~10 s stall of that caller).
  it('control: the same error unclipped never reaches the caller (the connection is torn down) — what the clipping prevents', async () => {
    const { err, elapsed } = await getKey('unclipped', 1_500);
    assert.notEqual(err?.code, grpc.status.NOT_FOUND, 'an unclipped 1 MB trailer arrived: the control no longer shows the failure');
    assert.ok(elapsed >= 1_000 || err?.code === grpc.status.UNAVAILABLE || err?.code === grpc.status.INTERNAL, `${err?.code} after ${Math.round(elapsed)} ms`);
  });
});
