/**
 * The SDK's typed errors: statuses become KeyshardErrors by their reason (status details),
 * falling back to the code; and end to end, a KeyshardClient against real in-process gRPC
 * servers (mutual TLS, @keyshard/rpc's unaryService) rejects with them while its replica pool
 * still moves an idempotent call off a sealed replica.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { invalidArgument, keyNotFound, sealedError, uninitializedError } from '@keyshard/errors';
import { issueCert } from '@keyshard/pki';
import { STATUS_DETAILS_KEY, decodingSafe, encodeStatusDetails, keyshardProto, readTls, serverCredentials, unaryService, type TlsMaterial } from '@keyshard/rpc';
import { statusError } from './call-policy.ts';
import {
  CeremonyNotFoundError, FailedPreconditionError, KeyNotFoundError, KeyshardError, NotFoundError, PermissionDeniedError, SealedError, UnavailableError,
  UninitializedError, WrongContextError, fromServiceError, toKeyshardError,
} from './errors.ts';
import { KeyshardClient, waitForCeremony, type Ceremony } from './index.ts';

/** A status as a keyshard server sends it: code, message, and the reason in the details. */
function status(code: grpc.status, message: string, reason?: string, metadata: Record<string, string> = {}, requestId?: string): grpc.ServiceError {
  const err = statusError(code, message);
  if (reason) err.metadata.set(STATUS_DETAILS_KEY, encodeStatusDetails(code, message, reason, metadata));
  if (requestId) err.metadata.set('x-request-id', requestId);
  return err;
}

describe('fromServiceError', () => {
  it('makes the class of the reason, with code, grpcCode, reason, metadata and the echoed request id', () => {
    const e = fromServiceError(status(grpc.status.FAILED_PRECONDITION, 'keyshard is sealed: a custodian quorum must unseal it', 'SEALED', {}, 'req-1'));
    assert.ok(e instanceof SealedError && e instanceof FailedPreconditionError && e instanceof KeyshardError && e instanceof Error);
    assert.deepEqual([e.name, e.code, e.grpcCode, e.reason, e.requestId, e.message], ['SealedError', 'FAILED_PRECONDITION', 9, 'SEALED', 'req-1', 'keyshard is sealed: a custodian quorum must unseal it']);
    const k = fromServiceError(status(grpc.status.NOT_FOUND, 'key nope not found', 'KEY_NOT_FOUND', { key: 'nope' }));
    assert.ok(k instanceof KeyNotFoundError && k instanceof NotFoundError);
    assert.deepEqual(k.metadata, { key: 'nope' });
    assert.ok(fromServiceError(status(grpc.status.FAILED_PRECONDITION, 'x', 'UNINITIALIZED')) instanceof UninitializedError);
    assert.ok(fromServiceError(status(grpc.status.INVALID_ARGUMENT, 'x', 'WRONG_CONTEXT')) instanceof WrongContextError);
    assert.ok(fromServiceError(status(grpc.status.NOT_FOUND, 'x', 'CEREMONY_NOT_FOUND')) instanceof CeremonyNotFoundError);
  });

  it('takes the code\'s default reason from a status without details (an older server, or grpc-js itself)', () => {
    const old = fromServiceError(status(grpc.status.FAILED_PRECONDITION, 'keyshard is sealed: a custodian quorum must unseal it'));
    assert.ok(old instanceof FailedPreconditionError && !(old instanceof SealedError), 'the words alone do not make it sealed');
    assert.equal(old.reason, 'FAILED_PRECONDITION');
    const denied = fromServiceError(status(grpc.status.PERMISSION_DENIED, 'app may not decrypt'));
    assert.deepEqual([denied instanceof PermissionDeniedError, denied.reason], [true, 'NOT_AUTHORIZED']);
    const down = fromServiceError(statusError(grpc.status.UNAVAILABLE, 'no connection to a:1'), 'mine');
    assert.deepEqual([down instanceof UnavailableError, down.reason, down.requestId], [true, 'UNAVAILABLE', 'mine']);
    const cancelled = fromServiceError(statusError(grpc.status.CANCELLED, 'the client was closed'));
    assert.deepEqual([cancelled.constructor, cancelled.code, cancelled.reason], [KeyshardError, 'CANCELLED', 'CANCELLED']);
  });

  it('keeps a reason it does not know (a newer server) with its code\'s class', () => {
    const e = fromServiceError(status(grpc.status.FAILED_PRECONDITION, 'x', 'SOMETHING_NEW'));
    assert.deepEqual([e.constructor, e.reason], [FailedPreconditionError, 'SOMETHING_NEW']);
  });

  it('leaves what is no status error alone', () => {
    const plain = new Error('no such method');
    assert.equal(toKeyshardError(plain), plain);
    const k = fromServiceError(status(grpc.status.NOT_FOUND, 'x', 'KEY_NOT_FOUND'));
    assert.equal(toKeyshardError(k), k);
  });
});

describe('waitForCeremony', () => {
  const client = {} as KeyshardClient; // never asked: the ceremony has ended already
  const ended = (state: Ceremony['state'], over: Partial<Ceremony> = {}) =>
    ({ id: 'cer-1', operation: 'unseal', state, approved_by: [], failures: [], denied_by: [], error: 'why', error_reason: '', ...over }) as unknown as Ceremony;

  it('rejects with the reason the ceremony gives, listing the refusals and denials in the metadata', async () => {
    const failed = ended('CEREMONY_STATE_FAILED', {
      error: 'only 1 valid shares can still be collected, 2 needed', error_reason: 'QUORUM_NOT_MET', denied_by: ['custodian-5'],
      failures: [{ custodian_id: 'custodian-2', reason: 'no transport key enrolled', error_reason: 'NOT_ENROLLED' }, { custodian_id: 'custodian-3', reason: 'another cluster', error_reason: 'WRONG_CLUSTER' }],
    });
    await assert.rejects(waitForCeremony(client, failed), (e: unknown) => {
      assert.ok(e instanceof FailedPreconditionError);
      assert.deepEqual([e.code, e.reason, e.message], ['FAILED_PRECONDITION', 'QUORUM_NOT_MET', 'unseal ceremony cer-1 failed: only 1 valid shares can still be collected, 2 needed']);
      assert.deepEqual(e.metadata, { ceremony_id: 'cer-1', state: 'CEREMONY_STATE_FAILED', failures: 'custodian-2=NOT_ENROLLED,custodian-3=WRONG_CLUSTER', denied_by: 'custodian-5' });
      return true;
    });
    const altered = ended('CEREMONY_STATE_FAILED', { error_reason: 'INTEGRITY_FAILURE' });
    await assert.rejects(waitForCeremony(client, altered), (e: unknown) => e instanceof FailedPreconditionError && e.reason === 'INTEGRITY_FAILURE');
  });

  it('from a server that records no reason: by the state, else the first refusal\'s, else CEREMONY_CLOSED', async () => {
    const refused = { failures: [{ custodian_id: 'custodian-4', reason: 'another cluster', error_reason: 'WRONG_CLUSTER' }] };
    for (const [state, over, reason] of [
      ['CEREMONY_STATE_EXPIRED', {}, 'CEREMONY_EXPIRED'],
      ['CEREMONY_STATE_CANCELLED', {}, 'CANCELLED'],
      ['CEREMONY_STATE_FAILED', refused, 'WRONG_CLUSTER'],
      ['CEREMONY_STATE_FAILED', {}, 'CEREMONY_CLOSED'],
    ] as const)
      await assert.rejects(waitForCeremony(client, ended(state, over)), (e: unknown) => e instanceof FailedPreconditionError && e.reason === reason && e.metadata.ceremony_id === 'cer-1' && /unseal ceremony cer-1/.test(e.message));
  });
});

describe('KeyshardClient rejects with typed errors (real servers in process)', () => {
  let dir: string;
  const tls: Record<string, TlsMaterial> = {};
  const servers: grpc.Server[] = [];
  const addresses: Record<string, string> = {};

  /** A KeyService whose every call fails as `refuse` says (or answers Sign when it returns undefined). */
  async function serve(cn: string, refuse: (method: string) => Error | undefined): Promise<string> {
    const def = keyshardProto().KeyService.service;
    const handlers = Object.fromEntries(
      Object.keys(def).map((m) => [
        m,
        async () => {
          const e = refuse(m);
          if (e) throw e;
          return { signature: Buffer.from(cn), key_id: 'k', key_version: 1 };
        },
      ]),
    );
    const server = new grpc.Server();
    server.addService(decodingSafe(def), unaryService(def, handlers, { name: 'keys' }));
    const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', serverCredentials(tls[cn]!), (e, p) => (e ? rej(e) : res(p))));
    servers.push(server);
    return `127.0.0.1:${port}`;
  }

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-sdk-errors-'));
    for (const [cn, profile] of [['coordinator-1', 'component'], ['coordinator-2', 'component'], ['app', 'client']] as const) tls[cn] = readTls(await issueCert(dir, cn, cn, profile));
    addresses.sealed = await serve('coordinator-1', () => sealedError());
    addresses.open = await serve('coordinator-2', (m) =>
      m === 'Decrypt' ? invalidArgument('ciphertext could not be authenticated', { reason: 'WRONG_CONTEXT' }) : m === 'GetKey' ? keyNotFound('nope') : m === 'Encrypt' ? uninitializedError() : undefined,
    );
  });

  after(() => {
    for (const s of servers) s.forceShutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  it('turns each refusal into its class, with the request id the call was sent with', async () => {
    const client = new KeyshardClient({ address: addresses.sealed!, tls: tls.app!, timeoutMs: 5_000 });
    try {
      const e = await client.encrypt('k', Buffer.from('x'), {}, { requestId: 'req-sealed' }).catch((x: unknown) => x);
      assert.ok(e instanceof SealedError, String(e));
      assert.deepEqual([e.code, e.grpcCode, e.reason, e.requestId], ['FAILED_PRECONDITION', 9, 'SEALED', 'req-sealed']);
    } finally {
      client.close();
    }
    const open = new KeyshardClient({ address: addresses.open!, tls: tls.app!, timeoutMs: 5_000 });
    try {
      await assert.rejects(open.decrypt(Buffer.from('ks'), { tenant: 'x' }), WrongContextError);
      await assert.rejects(open.getKey('nope'), (e: unknown) => e instanceof KeyNotFoundError && e.metadata.key === 'nope');
      await assert.rejects(open.encrypt('k', Buffer.from('x')), (e: unknown) => e instanceof UninitializedError && e.reason === 'UNINITIALIZED');
    } finally {
      open.close();
    }
  });

  it('still moves an idempotent key operation off a sealed replica (the pool judges the raw status)', async () => {
    const client = new KeyshardClient({ address: [addresses.sealed!, addresses.open!], tls: tls.app!, timeoutMs: 5_000 });
    try {
      for (let i = 0; i < 4; i++) assert.equal((await client.sign('k', { message: Buffer.from('m') })).signature.toString(), 'coordinator-2');
    } finally {
      client.close();
    }
    // A state change carries a request token (keys.proto), so it moves off the sealed replica too
    // (the first one picked) instead of handing the caller its SEALED refusal.
    const fresh = new KeyshardClient({ address: [addresses.sealed!, addresses.open!], tls: tls.app!, timeoutMs: 5_000 });
    try {
      await assert.doesNotReject(fresh.createKey('k'));
      // Without a working replica the caller gets the refusal, typed.
      const sealedOnly = new KeyshardClient({ address: [addresses.sealed!], tls: tls.app!, timeoutMs: 2_000 });
      try {
        await assert.rejects(sealedOnly.createKey('k'), SealedError);
      } finally {
        sealedOnly.close();
      }
    } finally {
      fresh.close();
    }
  });
});
