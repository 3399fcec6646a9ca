/**
 * Request tokens (request-tokens.ts) on a real keyring over a real single-member etcd: a repeat
 * with the same parameters answers the recorded outcome and changes nothing; other parameters
 * are refused FAILED_PRECONDITION REQUEST_TOKEN_REUSED naming the token; concurrent attempts
 * apply once; the record is written in the change's own transaction; refused calls record
 * nothing; the leader's fenced sweep deletes expired records only.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestEtcd } from '@keyshard/devcluster/test-etcd';
import { isKeyshardError } from '@keyshard/errors';
import { paths, type Namespace } from '@keyshard/store';
import type { Keyring, KeyRecord } from './keyring.ts';
import { paramsHash, RequestTokens, TokenBinding, type TokenRecord } from './request-tokens.ts';
import { clusterSecrets, testKeyring, testReplica, type TestReplica } from './test-keys.ts';

const reason = (e: unknown) => (isKeyshardError(e) ? `${e.code}/${e.reason}` : String(e));

describe('request tokens (real etcd, no custodian)', { timeout: 60_000 }, () => {
  let etcd: TestEtcd;
  let ns: Namespace;
  let replica: TestReplica;
  let keyring: Keyring;
  let tokens: RequestTokens;
  let executed = 0;

  /** CreateKey as KeyService runs it: through the token store; a replay answers the recorded key. */
  const createKey = (request: { name: string; description?: string; request_token?: string }, principal = 'app') =>
    tokens.run(
      { principal, method: 'KeyService.CreateKey', request },
      () => (executed++, keyring.create({ name: request.name, description: request.description }, principal)),
      (r: TokenRecord) => ('key' in r.outcome ? r.outcome.key : assert.fail('a key outcome')),
    );
  const tokenCount = async () => (await ns.getAll().prefix(paths.requestTokensPrefix).keys()).length;

  before(async () => {
    etcd = await TestEtcd.start();
    ns = etcd.namespace('tokens');
    replica = testReplica(clusterSecrets());
    ({ keyring } = testKeyring(ns, replica));
    tokens = new RequestTokens(ns, replica.integrity, 60_000);
  });
  after(async () => {
    await keyring?.close();
    await etcd?.stop();
  });

  it('the same token with the same parameters answers the first outcome (same key, same version) and runs nothing', async () => {
    const first = await createKey({ name: 'tok-a', request_token: 'tok-1' });
    const before = executed;
    const again = await createKey({ name: 'tok-a', request_token: 'tok-1' });
    assert.equal(executed, before, 'the repeat did not run the change');
    assert.deepEqual([again.id, again.primaryVersion], [first.id, first.primaryVersion]);
    assert.deepEqual((await keyring.list(1000, '')).keys.filter((k) => k.name === 'tok-a').map((k) => k.id), [first.id]);
    // Without a token a repeat runs, and the name is taken.
    await assert.rejects(createKey({ name: 'tok-a' }), (e) => reason(e) === 'ALREADY_EXISTS/ALREADY_EXISTS');
  });

  it('the same token with other parameters is refused FAILED_PRECONDITION REQUEST_TOKEN_REUSED, naming the token', async () => {
    await createKey({ name: 'tok-b', request_token: 'tok-2' });
    const before = executed;
    await assert.rejects(createKey({ name: 'tok-b', description: 'other', request_token: 'tok-2' }), (e) => {
      assert.equal(reason(e), 'FAILED_PRECONDITION/REQUEST_TOKEN_REUSED');
      assert.match((e as Error).message, /"tok-2"/);
      assert.equal((e as { metadata?: Record<string, string> }).metadata?.request_token, 'tok-2');
      return true;
    });
    assert.equal(executed, before);
    // Tokens are per caller and method: another caller's same token is another call.
    const other = await createKey({ name: 'tok-b2', request_token: 'tok-2' }, 'someone-else');
    assert.equal(other.name, 'tok-b2');
  });

  it('a malformed token is refused INVALID_ARGUMENT before anything runs', async () => {
    for (const bad of ['a'.repeat(129), 'has space', 'ünï', 'a/b']) {
      await assert.rejects(createKey({ name: 'tok-bad', request_token: bad }), (e) => reason(e) === 'INVALID_ARGUMENT/INVALID_ARGUMENT', bad);
    }
    assert.equal((await keyring.list(1000, '')).keys.filter((k) => k.name === 'tok-bad').length, 0);
  });

  it('the record is written in the change\'s transaction: the token key and the key record share one etcd revision', async () => {
    const k = await createKey({ name: 'tok-c', request_token: 'tok-3' });
    const b = new TokenBinding('app', 'KeyService.CreateKey', 'tok-3', paramsHash({ name: 'tok-c', request_token: 'tok-3' }));
    const [tokenKv] = (await ns.get(b.path).exec()).kvs;
    const [keyKv] = (await ns.get(paths.key(k.id)).exec()).kvs;
    assert.ok(tokenKv && keyKv);
    assert.equal(tokenKv.mod_revision, keyKv.mod_revision);
    const r = replica.integrity.open<TokenRecord>(b.path, tokenKv.value);
    assert.deepEqual([r.principal, r.method, r.token, (r.outcome as { key: KeyRecord }).key.id], ['app', 'KeyService.CreateKey', 'tok-3', k.id]);
    assert.doesNotMatch(tokenKv.value.toString(), /material|wrapped/i, 'a key record holds no material');
  });

  it('attempts running at once apply once; every one answers the same key', async () => {
    const results = await Promise.all(Array.from({ length: 6 }, () => createKey({ name: 'tok-d', request_token: 'tok-4' })));
    assert.equal(new Set(results.map((k) => k.id)).size, 1);
    assert.equal((await keyring.list(1000, '')).keys.filter((k) => k.name === 'tok-d').length, 1);
  });

  it('an update repeated after another change answers its own outcome and does not apply again', async () => {
    const k = await keyring.create({ name: 'tok-e' }, 'app');
    const disable = () =>
      tokens.run(
        { principal: 'app', method: 'KeyService.DisableKey', request: { key: 'tok-e', request_token: 'tok-5' } },
        () => keyring.update(k.id, (cur) => ({ ...cur, state: 'KEY_STATE_DISABLED' })),
        (r) => (r.outcome as { key: KeyRecord }).key,
      );
    assert.equal((await disable()).state, 'KEY_STATE_DISABLED');
    await keyring.update(k.id, (cur) => ({ ...cur, state: 'KEY_STATE_ENABLED' })); // someone enables it again
    assert.equal((await disable()).state, 'KEY_STATE_DISABLED', 'the original outcome');
    assert.equal((await keyring.resolve(k.id)).state, 'KEY_STATE_ENABLED', 'not disabled a second time');
  });

  it('aliases: a repeated create answers the alias it made, a repeated delete succeeds again', async () => {
    const k = await keyring.create({ name: 'tok-f' }, 'app');
    const run = (method: string, token: string, fn: () => Promise<unknown>) =>
      tokens.run({ principal: 'app', method, request: { name: 'tok-alias', key: 'tok-f', request_token: token } }, fn, (r) => r.outcome);
    await run('KeyService.CreateAlias', 'tok-6', () => keyring.putAlias('tok-alias', k));
    assert.deepEqual(await run('KeyService.CreateAlias', 'tok-6', () => assert.fail('not run again')), { alias: { name: 'tok-alias', keyId: k.id } });
    await run('KeyService.DeleteAlias', 'tok-7', () => keyring.deleteAlias('tok-alias', k.id));
    assert.deepEqual(await run('KeyService.DeleteAlias', 'tok-7', () => assert.fail('not run again')), { deleted: true });
  });

  it('a refused call records nothing: its repeat is judged again', async () => {
    const n = await tokenCount();
    await assert.rejects(createKey({ name: 'tok-a', request_token: 'tok-8' }), (e) => reason(e) === 'ALREADY_EXISTS/ALREADY_EXISTS');
    assert.equal(await tokenCount(), n);
  });

  it('expiry: the leader sweep deletes records older than the window, only while its fence holds', async () => {
    await createKey({ name: 'tok-g', request_token: 'tok-9' });
    const n = await tokenCount();
    assert.ok(n >= 5);
    await ns.put('election/test').value('leader');
    const [election] = (await ns.get('election/test').exec()).kvs;
    const fence = { key: 'election/test', createRevision: election!.create_revision };
    assert.equal(await tokens.sweep(Date.now(), fence), 0, 'nothing is older than the window yet');
    assert.equal(await tokens.sweep(Date.now() + 61_000, { ...fence, createRevision: '1' }), 0, 'a deposed leader deletes nothing');
    assert.equal(await tokenCount(), n);
    assert.equal(await tokens.sweep(Date.now() + 61_000, fence), n);
    assert.equal(await tokenCount(), 0);
    // Expired and swept: the token is unknown again, so its repeat runs (and finds the name taken).
    await assert.rejects(createKey({ name: 'tok-g', request_token: 'tok-9' }), (e) => reason(e) === 'ALREADY_EXISTS/ALREADY_EXISTS');
  });

  it('the sweep reads the records page by page: thousands of expired ones go, a key just outside the prefix stays', async () => {
    const old = new Date(Date.now() - 2 * 86_400_000).toISOString();
    const total = 2_300; // more than two pages
    for (let i = 0; i < total; i += 100) {
      const tx = ns.if('none', 'Version', '==', 0);
      const puts = Array.from({ length: Math.min(100, total - i) }, (_, j) => ns.put(`${paths.requestTokensPrefix}bulk-${String(i + j).padStart(5, '0')}`).value(JSON.stringify({ at: old })));
      await tx.then(...puts).commit();
    }
    const outside = `${paths.requestTokensPrefix.slice(0, -1)}0stay`; // sorts right after the prefix's range
    await ns.put(outside).value(JSON.stringify({ at: old }));
    await ns.put('election/paged').value('leader');
    const [election] = (await ns.get('election/paged').exec()).kvs;
    assert.equal(await tokens.sweep(Date.now(), { key: 'election/paged', createRevision: election!.create_revision }), total);
    assert.equal(await tokenCount(), 0);
    assert.equal(await ns.get(outside).string(), JSON.stringify({ at: old }));
  });
});
