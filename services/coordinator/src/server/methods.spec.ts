/**
 * The per-method policy the coordinator reads from the protos and the interceptor it drives (no
 * etcd, no process): the audit routing and intent sets main.ts builds are the ones the
 * coordinator has always used; while sealed every KeyService method is refused before its
 * handler reaches the domain, and the facts a handler answers reach its audit event.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { isKeyshardError, notFound } from '@keyshard/errors';
import { methodPolicies, type CallContext } from '@keyshard/rpc';
import { Seal } from '../cluster/seal.ts';
import type { Keyring } from '../keys/keyring.ts';
import type { KeyOperations } from '../keys/key-operations.ts';
import { keyHandlers, type UsageOf } from './key-service.ts';
import { intercepted, SERVICES, SPOOLED_OPERATIONS, STATE_CHANGING_METHODS } from './methods.ts';

const ctx = (method: string): CallContext => ({ principal: 'app', requestId: 'r-1', method, deadline: Infinity, facts: {} });
const isSealed = (e: unknown) => isKeyshardError(e) && e.code === 'FAILED_PRECONDITION' && e.reason === 'SEALED';
const isUninitialized = (e: unknown) => isKeyshardError(e) && e.code === 'FAILED_PRECONDITION' && e.reason === 'UNINITIALIZED';

function openSeal(): Seal {
  const seal = new Seal();
  seal.open(randomBytes(32), new Map([[1, randomBytes(32)]]), seal.generation, randomBytes(32));
  return seal;
}

describe('method policy', () => {
  it('routes and records intent as main.ts did before the policy: the same spooled operations and state-changing methods', () => {
    const keys = ['Encrypt', 'Decrypt', 'ReEncrypt', 'EncryptBatch', 'DecryptBatch', 'GenerateDataKey', 'GenerateDataKeyWithoutPlaintext', 'Sign', 'Verify', 'Mac', 'VerifyMac', 'GetPublicKey', 'GetKey', 'ListKeys', 'ListAliases'];
    const lifecycle = ['CreateKey', 'UpdateKey', 'EnableKey', 'DisableKey', 'RotateKey', 'SetRotationPolicy', 'ScheduleKeyDestruction', 'CancelKeyDestruction', 'CreateAlias', 'UpdateAlias', 'DeleteAlias'];
    assert.deepEqual(SPOOLED_OPERATIONS, new Set([...keys, ...lifecycle].map((m) => `keys.${m}`).concat(['ceremony.Status', 'ceremony.GetCeremony'])));
    assert.deepEqual(STATE_CHANGING_METHODS, new Set([...lifecycle, 'Init', 'StartUnseal', 'Seal', 'StartCeremony', 'CancelCeremony', 'CreateBackup', 'Restore']));
  });

  it('gives each method name to one service only (the intent and log sets match on the bare name)', () => {
    const names = Object.values(SERVICES).flatMap((s) => [...methodPolicies(s).keys()]);
    assert.equal(new Set(names).size, names.length);
  });
});

describe('interceptor', () => {
  it('while sealed, refuses every KeyService method with FAILED_PRECONDITION, reason SEALED, before the domain is touched', async () => {
    const touched: string[] = [];
    const untouchable = <T>(what: string) => new Proxy({}, { get: (_, p) => void touched.push(`${what}.${String(p)}`) }) as T;
    const usageOf: UsageOf = async () => void touched.push('usage') as never;
    const handlers = intercepted('keys', keyHandlers(untouchable<Keyring>('keyring'), untouchable<KeyOperations>('ops'), usageOf), new Seal());
    assert.deepEqual(Object.keys(handlers).sort(), [...methodPolicies('KeyService').keys()].sort());
    for (const [method, handler] of Object.entries(handlers) as [string, (req: unknown, c: CallContext) => Promise<unknown>][])
      await assert.rejects(handler({ key: 'k', name: 'k', plaintext: Buffer.from('x'), items: [{}] }, ctx(`keys.${method}`)), isSealed, method);
    assert.deepEqual(touched, []);
  });

  it('while sealed with no cluster (never initialised, or destroyed), refuses with UNINITIALIZED instead of SEALED', async () => {
    const seal = new Seal();
    let initialized = false;
    seal.followCluster(() => initialized); // what Cluster tells its seal from the cluster record
    const handlers = intercepted('keys', { Encrypt: async () => ({ reply: {} }) }, seal);
    await assert.rejects(handlers.Encrypt!({ key: 'k', plaintext: Buffer.from('x'), context: {} }, ctx('keys.Encrypt')), isUninitialized);
    initialized = true;
    await assert.rejects(handlers.Encrypt!({ key: 'k', plaintext: Buffer.from('x'), context: {} }, ctx('keys.Encrypt')), isSealed);
  });

  it('serves a method declared seal "any" while sealed, and hands the facts a handler answers to the call', async () => {
    const c = ctx('ceremony.GetCeremony');
    const handlers = intercepted('ceremony', { GetCeremony: async () => ({ audit: { ceremonyId: 'c-1' }, reply: { id: 'c-1' } }) }, new Seal());
    assert.deepEqual(await handlers.GetCeremony!({ id: 'c-1' }, c), { id: 'c-1' });
    assert.deepEqual(c.facts, { ceremonyId: 'c-1' });
  });

  it('open: the facts stand even if the reply then fails (the change applied; only encoding it failed)', async () => {
    const c = ctx('keys.DisableKey');
    const handlers = intercepted('keys', { DisableKey: async () => ({ audit: { keyId: 'k_1' }, reply: Promise.reject(notFound('usage unreadable')) }) }, openSeal());
    await assert.rejects(handlers.DisableKey!({ key: 'k_1', request_token: '' }, c), /usage unreadable/);
    assert.deepEqual(c.facts, { keyId: 'k_1' });
  });

  it('refuses a handler for a method the service does not declare', () => {
    const undeclared = { Undeclared: async () => ({ reply: {} }) } as Parameters<typeof intercepted>[1];
    assert.throws(() => intercepted('keys', undeclared, openSeal()), /keys.Undeclared has a handler but is not a method of KeyService/);
  });
});
