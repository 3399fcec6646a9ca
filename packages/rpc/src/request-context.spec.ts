/**
 * Request ids across services: a call served by unaryService runs in its request context, and
 * the calls it makes (requestMetadata / unaryCall) carry the same x-request-id, through await
 * points and with many calls interleaved; outside a call a fresh id is sent.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { issueCert } from '@keyshard/pki';
import { makeClient, requestMetadata, unaryCall } from './client.ts';
import { keyshardProto, type pb } from './proto.ts';
import { currentRequestId, requestLogFields, runInCall, runOutsideCall } from './request-context.ts';
import { decodingSafe, unaryService, type CallContext } from './server.ts';
import { readTls, serverCredentials, serverOptions, type TlsMaterial } from './tls.ts';

describe('request context', () => {
  it('is the call a function runs in, across awaits and timers, and nothing outside', async () => {
    assert.equal(currentRequestId(), undefined);
    assert.deepEqual(requestLogFields(), {});
    await runInCall({ requestId: 'r-1', method: 'keys.Encrypt', principal: 'app' }, async () => {
      await new Promise((r) => setTimeout(r, 5));
      assert.equal(currentRequestId(), 'r-1');
      assert.deepEqual(requestLogFields(), { request_id: 'r-1' });
      assert.equal(requestMetadata().get('x-request-id')[0], 'r-1');
      assert.equal(requestMetadata('given').get('x-request-id')[0], 'given', 'an explicit id wins');
      runOutsideCall(() => assert.equal(currentRequestId(), undefined));
    });
    assert.equal(currentRequestId(), undefined);
    const fresh = requestMetadata().get('x-request-id')[0];
    assert.match(String(fresh), /^[0-9a-f-]{36}$/, 'outside a call: a fresh id');
  });

  it('keeps interleaved calls apart', async () => {
    const seen = await Promise.all(
      ['a', 'b', 'c'].map((id, i) =>
        runInCall({ requestId: id, method: 'm', principal: 'p' }, async () => {
          await new Promise((r) => setTimeout(r, 10 - i * 3));
          return currentRequestId();
        }),
      ),
    );
    assert.deepEqual(seen, ['a', 'b', 'c']);
  });
});

describe('request ids across two services', () => {
  let dir: string;
  let tls: TlsMaterial;
  const servers: grpc.Server[] = [];
  let front: pb.KeyServiceClient; // a client of the "coordinator"
  let backClient: pb.CustodianServiceClient; // the coordinator's client of the "custodian"
  const backSeen: string[] = [];
  const frontSeen: string[] = [];

  const listen = async (server: grpc.Server) => {
    servers.push(server);
    return new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', serverCredentials(tls), (e, p) => (e ? reject(e) : resolve(p))));
  };

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-rid-'));
    tls = readTls(await issueCert(dir, 'node'));
    const proto = keyshardProto();
    // The "custodian": records the request id of each call it serves.
    const back = new grpc.Server(serverOptions());
    back.addService(
      decodingSafe(proto.CustodianService.service),
      unaryService(proto.CustodianService.service, { async GetIdentity(_req: unknown, ctx: CallContext) { backSeen.push(ctx.requestId); return { custodian_id: ctx.requestId }; } }, { name: 'custodian' }),
    );
    backClient = makeClient(proto.CustodianService, `127.0.0.1:${await listen(back)}`, tls);
    // The "coordinator": Encrypt calls the custodian twice, after awaits, without passing any id.
    const frontServer = new grpc.Server(serverOptions());
    frontServer.addService(
      decodingSafe(proto.KeyService.service),
      unaryService(
        proto.KeyService.service,
        {
          async Encrypt(req: { key: string }, ctx: CallContext) {
            frontSeen.push(ctx.requestId);
            await new Promise((r) => setTimeout(r, Number(req.key) || 0));
            const first = await unaryCall(backClient, 'GetIdentity', {});
            const second = await unaryCall(backClient, 'GetIdentity', {});
            return { key_id: `${first.custodian_id} ${second.custodian_id}`, key_version: 1, ciphertext: Buffer.alloc(0) };
          },
        },
        { name: 'keys' },
      ),
    );
    front = makeClient(proto.KeyService, `127.0.0.1:${await listen(frontServer)}`, tls);
  });

  after(() => {
    front?.close();
    backClient?.close();
    for (const s of servers) s.forceShutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the id a service receives is the id of the calls it makes on the request’s behalf', async () => {
    const ids = ['req-one', 'req-two', 'req-three'];
    const answers = await Promise.all(
      ids.map((id, i) => unaryCall(front, 'Encrypt', { key: String(30 - i * 10), plaintext: Buffer.alloc(0) }, { requestId: id })),
    );
    assert.deepEqual(answers.map((a) => a.key_id), ids.map((id) => `${id} ${id}`));
    assert.deepEqual([...frontSeen].sort(), [...ids].sort());
    assert.deepEqual([...backSeen].sort(), [...ids, ...ids].sort());
  });

  it('a caller without an id gets a fresh one, carried the same way', async () => {
    const { key_id } = await unaryCall(front, 'Encrypt', { key: '0', plaintext: Buffer.alloc(0) });
    const [a, b] = key_id.split(' ');
    assert.match(a!, /^[0-9a-f-]{36}$/);
    assert.equal(a, b);
    assert.equal(frontSeen.at(-1), a);
  });
});
