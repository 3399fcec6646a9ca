/**
 * The rich error model end to end in process: a real grpc-js server (mutual TLS, unaryService)
 * refuses calls, and the client decodes the `grpc-status-details-bin` trailer into the reason
 * the domain gave — for domain refusals, unknown errors (INTERNAL, nothing leaked), the
 * concurrency limit (OVERLOADED), authorisation (NOT_AUTHORIZED) and undecodable requests.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { issueCert } from '@keyshard/pki';
import { keyNotFound, permissionDenied, sealedError } from '@keyshard/errors';
import { makeClient, unaryCall, unaryCallUnchecked } from './client.ts';
import { ConcurrencyLimit } from './concurrency-limit.ts';
import { keyshardProto } from './proto.ts';
import { decodingSafe, unaryService } from './server.ts';
import { ERROR_DOMAIN, STATUS_DETAILS_KEY, decodeStatusDetails, encodeStatusDetails, errorInfoOf, reasonOfStatus } from './status-details.ts';
import { readTls, serverCredentials, type TlsMaterial } from './tls.ts';

describe('status details (google.rpc.Status with ErrorInfo)', () => {
  it('round-trips code, message, reason and metadata', () => {
    const bytes = encodeStatusDetails(grpc.status.NOT_FOUND, 'key nope not found', 'KEY_NOT_FOUND', { key: 'nope' });
    assert.deepEqual(decodeStatusDetails(bytes), {
      code: grpc.status.NOT_FOUND,
      message: 'key nope not found',
      errorInfo: { reason: 'KEY_NOT_FOUND', domain: ERROR_DOMAIN, metadata: { key: 'nope' } },
    });
  });

  it('ignores what is not a keyshard ErrorInfo, and falls back to the code\'s reason without details', () => {
    assert.equal(decodeStatusDetails(Buffer.from([0xff, 0xff, 0xff])), undefined);
    const bare = { code: grpc.status.PERMISSION_DENIED, metadata: new grpc.Metadata() };
    assert.equal(errorInfoOf(bare), undefined);
    assert.equal(reasonOfStatus(bare), 'NOT_AUTHORIZED');
    assert.equal(reasonOfStatus({ code: grpc.status.CANCELLED }), 'CANCELLED');
    const garbage = new grpc.Metadata();
    garbage.set(STATUS_DETAILS_KEY, Buffer.from('not a status'));
    assert.equal(reasonOfStatus({ code: grpc.status.FAILED_PRECONDITION, metadata: garbage }), 'FAILED_PRECONDITION');
  });
});

describe('toServiceError on a real server', () => {
  let dir: string;
  let server: grpc.Server;
  let address: string;
  const tls: Record<string, TlsMaterial> = {};
  let release: () => void = () => {};
  const clients: grpc.Client[] = [];

  const client = (as = 'app') => {
    const c = makeClient(keyshardProto().KeyService, address, tls[as]!);
    clients.push(c);
    return c;
  };
  const refusal = async (p: Promise<unknown>): Promise<grpc.ServiceError> => {
    try {
      await p;
    } catch (e) {
      return e as grpc.ServiceError;
    }
    assert.fail('the call succeeded');
  };
  const details = (e: grpc.ServiceError) => decodeStatusDetails(e.metadata.get(STATUS_DETAILS_KEY)[0] as Buffer);

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-status-'));
    for (const [cn, profile] of [['coordinator-1', 'component'], ['app', 'client'], ['stranger', 'client']] as const) tls[cn] = readTls(await issueCert(dir, cn, cn, profile));
    const def = keyshardProto().KeyService.service;
    server = new grpc.Server();
    const blocked = new Promise<void>((r) => (release = r));
    server.addService(
      decodingSafe(def),
      unaryService(
        def,
        {
          Encrypt: async () => {
            throw sealedError();
          },
          GetKey: async (req: { key: string }) => {
            throw keyNotFound(req.key);
          },
          Decrypt: async () => {
            throw new Error('etcd at 10.0.0.7 said: password=hunter2');
          },
          Sign: async () => {
            await blocked;
            return {};
          },
          ListKeys: async () => ({ keys: [], next_page_token: '' }),
        },
        {
          name: 'keys',
          limit: new ConcurrencyLimit(1),
          authorize: (ctx) => {
            if (ctx.principal === 'stranger') throw permissionDenied(`${ctx.principal} may not use the key service`);
          },
        },
      ),
    );
    const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', serverCredentials(tls['coordinator-1']!), (e, p) => (e ? rej(e) : res(p))));
    address = `127.0.0.1:${port}`;
  });

  after(() => {
    release();
    for (const c of clients) c.close();
    server.forceShutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  it('sends a domain refusal\'s reason, message and metadata, and the request id', async () => {
    const sealed = await refusal(unaryCall(client(), 'Encrypt', { key: 'k', plaintext: Buffer.from('x') }, { requestId: 'req-42' }));
    assert.equal(sealed.code, grpc.status.FAILED_PRECONDITION);
    assert.deepEqual(details(sealed), {
      code: grpc.status.FAILED_PRECONDITION,
      message: sealed.details,
      errorInfo: { reason: 'SEALED', domain: 'keyshard.dev', metadata: {} },
    });
    assert.equal(sealed.metadata.get('x-request-id')[0], 'req-42');
    const missing = await refusal(unaryCall(client(), 'GetKey', { key: 'nope' }));
    assert.equal(missing.code, grpc.status.NOT_FOUND);
    assert.deepEqual(errorInfoOf(missing), { reason: 'KEY_NOT_FOUND', domain: 'keyshard.dev', metadata: { key: 'nope' } });
  });

  it('answers an unknown error INTERNAL, reason INTERNAL, with nothing of its message', async () => {
    const e = await refusal(unaryCall(client(), 'Decrypt', { ciphertext: Buffer.from('x') }));
    assert.equal(e.code, grpc.status.INTERNAL);
    assert.equal(e.details, 'internal error');
    assert.equal(reasonOfStatus(e), 'INTERNAL');
    assert.doesNotMatch(JSON.stringify(details(e)), /hunter2|10\.0\.0\.7/);
  });

  it('gives reasons to the refusals unaryService makes itself', async () => {
    assert.equal(reasonOfStatus(await refusal(unaryCall(client('stranger'), 'ListKeys', {}))), 'NOT_AUTHORIZED');
    assert.equal(reasonOfStatus(await refusal(unaryCall(client(), 'Verify', {}))), 'UNIMPLEMENTED');
    // An undecodable request: bytes that are no EncryptRequest.
    const Raw = grpc.makeGenericClientConstructor(
      {
        Encrypt: {
          path: '/keyshard.v1.KeyService/Encrypt', requestStream: false, responseStream: false,
          requestSerialize: (b: Buffer) => b, requestDeserialize: (b: Buffer) => b, responseSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b,
        },
      },
      'Raw',
    );
    const raw = makeClient(Raw, address, tls.app!);
    clients.push(raw);
    const undecodable = await refusal(unaryCallUnchecked(raw, 'Encrypt', Buffer.from([0xff, 0xff, 0xff, 0xff])));
    assert.deepEqual([undecodable.code, reasonOfStatus(undecodable)], [grpc.status.INVALID_ARGUMENT, 'INVALID_ARGUMENT']);
    // The concurrency limit (1): one Sign holds it, the next call is shed.
    const c = client();
    const held = unaryCall(c, 'Sign', {});
    let shed: grpc.ServiceError | undefined;
    for (let i = 0; i < 50 && !shed; i++) {
      const e = await refusal(unaryCall(c, 'ListKeys', {})).catch(() => undefined);
      if (e?.code === grpc.status.RESOURCE_EXHAUSTED) shed = e;
      else await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(shed, 'a call was shed while Sign held the limit');
    assert.equal(reasonOfStatus(shed), 'OVERLOADED');
    release();
    await held;
  });
});
