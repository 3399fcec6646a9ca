/**
 * Request tokens of ceremony starts and Init (keys/request-tokens.ts) over a real single-member
 * etcd (TestEtcd): a start repeated with its token answers the SAME ceremony and opens no
 * second one; the token is recorded in the transaction that creates the ceremony and takes its
 * lock; other parameters are refused REQUEST_TOKEN_REUSED; attempts at once open one ceremony;
 * a start made while sealed (unseal) records its token without a record MAC; Init's commit
 * records its answer the same way. No custodians; the audit recorder is a LABELLED FAKE.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { newCeremony, type Ceremony } from '@keyshard/crypto';
import { failedPrecondition, isKeyshardError } from '@keyshard/errors';
import { paths, type Namespace } from '@keyshard/store';
import type { AuditEventInput } from '@keyshard/audit-client';
import { ClusterStore, kekRecord, recordMacKeyRecord, type ClusterRecord } from '../cluster/cluster-store.ts';
import { etcdForTests, unsealed } from '../cluster/test-support.ts';
import { paramsHash, RequestTokens, TokenBinding, type InitOutcome, type TokenRecord } from '../keys/request-tokens.ts';
import { CeremonyStore } from './ceremony-store.ts';
import { openCeremony } from './open.ts';

const local = etcdForTests();
let n = 0;
const reason = (e: unknown) => (isKeyshardError(e) ? `${e.code}/${e.reason}` : String(e));

function fresh() {
  const ns: Namespace = local.etcd.namespace(`cer-tokens-${++n}`);
  const { integrity } = unsealed();
  const store = new CeremonyStore(ns, integrity);
  const tokens = new RequestTokens(ns, integrity, 60_000);
  const audited: AuditEventInput[] = [];
  let opened = 0;
  /** StartCeremony as the coordinator runs it (quorum-ceremonies.ts start, ceremony-service.ts replay). */
  const start = (request: { operation: string; parameters: Record<string, string>; ttl_seconds?: number; request_token?: string }, macked = true) =>
    tokens.run(
      { principal: 'admin', method: 'CeremonyService.StartCeremony', request, macked },
      async () => {
        opened++;
        const c = newCeremony({
          operation: request.operation, parameters: request.parameters, clusterId: 'c-1', initiator: 'admin', ttlSeconds: request.ttl_seconds ?? 60, threshold: 2,
          recipients: request.operation === 'unseal' ? [{ coordinator_id: 'coordinator-1', public_key_pem: 'pem', ephemeral_public_key_pem: 'eph' }] : [],
        });
        const o = await openCeremony(c, {}, { store, audit: { record: async (e: AuditEventInput) => void audited.push(e) } as never, alive: async () => true });
        if (o !== c) throw failedPrecondition(`another ${request.operation} ceremony is open`, { reason: 'CEREMONY_IN_PROGRESS' });
        return c;
      },
      async (r: TokenRecord) => {
        assert.ok('ceremony' in r.outcome, 'a ceremony outcome');
        return (await store.peek(r.outcome.ceremony.id, r.outcome.ceremony.operation))!;
      },
    );
  const ceremonies = async () => Object.keys(await ns.getAll().prefix(paths.ceremoniesPrefix).strings()).length;
  return { ns, store, tokens, integrity, start, ceremonies, audited, opened: () => opened };
}

const rotate = (token?: string, ttl = 60) => ({ operation: 'rotate-root', parameters: { driver: 'coordinator-1/abc' }, ttl_seconds: ttl, request_token: token });

describe('ceremony starts with request tokens (real etcd)', () => {
  it('a repeated start answers the same ceremony, opens nothing and audits no second creation; without a token a repeat is refused', async () => {
    const f = fresh();
    const first = await f.start(rotate('cer-1'));
    const again = await f.start(rotate('cer-1'));
    assert.equal(again.id, first.id, 'the same ceremony id');
    assert.equal(again.state, 'CEREMONY_STATE_OPEN');
    assert.equal(f.opened(), 1, 'the repeat ran nothing');
    assert.equal(await f.ceremonies(), 1);
    assert.equal(f.audited.filter((e) => e.operation === 'ceremony.rotate-root.created').length, 1);
    await assert.rejects(f.start(rotate()), (e) => reason(e) === 'FAILED_PRECONDITION/CEREMONY_IN_PROGRESS');
    await assert.rejects(f.start(rotate('cer-other')), (e) => reason(e) === 'FAILED_PRECONDITION/CEREMONY_IN_PROGRESS', 'a new token is a new start');
  });

  it('the token is recorded in the transaction that creates the ceremony and takes its lock (one revision), MAC\'d, naming the ceremony', async () => {
    const f = fresh();
    const c = await f.start(rotate('cer-2'));
    const b = new TokenBinding('admin', 'CeremonyService.StartCeremony', 'cer-2', paramsHash(rotate('cer-2')));
    const [tokenKv] = (await f.ns.get(b.path).exec()).kvs;
    const [cerKv] = (await f.ns.get(paths.ceremony(c.id)).exec()).kvs;
    const [lockKv] = (await f.ns.get(paths.ceremonyLock('rotate-root')).exec()).kvs;
    assert.ok(tokenKv && cerKv && lockKv);
    assert.deepEqual([tokenKv.mod_revision, lockKv.mod_revision], [cerKv.mod_revision, cerKv.mod_revision]);
    const r = f.integrity.open<TokenRecord>(b.path, tokenKv.value);
    assert.deepEqual(r.outcome, { ceremony: { id: c.id, operation: 'rotate-root' } });
  });

  it('the same token with other parameters is refused FAILED_PRECONDITION REQUEST_TOKEN_REUSED naming it; a refused start records nothing', async () => {
    const f = fresh();
    await f.start(rotate('cer-3'));
    await assert.rejects(f.start(rotate('cer-3', 120)), (e) => {
      assert.equal(reason(e), 'FAILED_PRECONDITION/REQUEST_TOKEN_REUSED');
      assert.match((e as Error).message, /"cer-3"/);
      return true;
    });
    const tokensBefore = (await f.ns.getAll().prefix(paths.requestTokensPrefix).keys()).length;
    await assert.rejects(f.start(rotate('cer-4')), (e) => reason(e) === 'FAILED_PRECONDITION/CEREMONY_IN_PROGRESS');
    assert.equal((await f.ns.getAll().prefix(paths.requestTokensPrefix).keys()).length, tokensBefore);
  });

  it('attempts at once open one ceremony, and every one answers it', async () => {
    const f = fresh();
    const all = await Promise.all(Array.from({ length: 5 }, () => f.start(rotate('cer-5'))));
    assert.equal(new Set(all.map((c) => c.id)).size, 1);
    assert.equal(await f.ceremonies(), 1);
  });

  it('an unseal start (a sealed replica: no MAC key) records its token without a record MAC; the repeat reads it so', async () => {
    const f = fresh();
    const req = { operation: 'unseal', parameters: { generation: '1' }, ttl_seconds: 60, request_token: 'cer-6' };
    const c = await f.start(req, false);
    const b = new TokenBinding('admin', 'CeremonyService.StartCeremony', 'cer-6', paramsHash(req), false);
    const stored = JSON.parse((await f.ns.get(b.path).string())!) as TokenRecord & { mac?: string };
    assert.equal(stored.mac, undefined);
    assert.deepEqual(stored.outcome, { ceremony: { id: c.id, operation: 'unseal' } });
    assert.equal((await f.start(req, false)).id, c.id);
    // A request that expects a MAC'd record (an approval operation's) refuses an unMAC'd one.
    await assert.rejects(f.start(req, true), (e) => reason(e) === 'FAILED_PRECONDITION/INTEGRITY_FAILURE');
  });

  it('Init: the commit records the token with the answer in its own transaction; a concurrent commit finds the manifest', async () => {
    const f = fresh();
    const clusters = new ClusterStore(f.ns, f.integrity);
    const record: ClusterRecord = { clusterId: 'c-init', state: 'initialized', kekEpoch: 1, createdAt: new Date().toISOString() };
    const root = randomBytes(32);
    const init = { manifest: { clusterId: 'c-init', threshold: 2, custodians: [] } as never, kek: kekRecord(root, 'c-init', 1, randomBytes(32)), recordMacKey: recordMacKeyRecord(root, 'c-init', randomBytes(32)), record };
    const outcome: InitOutcome = { clusterId: 'c-init', threshold: 2, shares: 3, custodianIds: ['a', 'b', 'c'], manifestFingerprint: 'fp' };
    const request = { shares: 3, threshold: 2, request_token: 'init-1' };
    const call = { principal: 'admin', method: 'CeremonyService.Init', request, macked: false };
    let commits = 0;
    const initOnce = () => f.tokens.run(call, async () => (commits++, (await clusters.commitInit(init, outcome)) ? outcome : assert.fail('committed')), (r) => ('init' in r.outcome ? r.outcome.init : assert.fail('an init outcome')));
    assert.deepEqual(await initOnce(), outcome);
    assert.deepEqual(await initOnce(), outcome, 'the repeat answers the recorded cluster');
    assert.equal(commits, 1);
    const b = new TokenBinding('admin', 'CeremonyService.Init', 'init-1', paramsHash(request), false);
    const [tokenKv] = (await f.ns.get(b.path).exec()).kvs;
    const [manifestKv] = (await f.ns.get(paths.manifest).exec()).kvs;
    assert.equal(tokenKv?.mod_revision, manifestKv?.mod_revision);
    assert.equal(await clusters.commitInit(init, outcome), false, 'a second init finds the manifest');
  });

  it('an init claim is replaced only while it is what the taker read (ClusterStore.claim with replacing)', async () => {
    const f = fresh();
    const clusters = new ClusterStore(f.ns, f.integrity);
    const a: ClusterRecord = { clusterId: 'c-claim', state: 'initializing', kekEpoch: 0, createdAt: new Date().toISOString(), driver: 'coordinator-1/a' };
    assert.equal(await clusters.claim(a), true);
    const b = { ...a, driver: 'coordinator-2/b' };
    const c = { ...a, driver: 'coordinator-3/c' };
    const taken = await Promise.all([clusters.claim(b, a), clusters.claim(c, a)]);
    assert.deepEqual(taken.filter(Boolean).length, 1, 'one taker wins');
    assert.equal(await clusters.claim({ ...a, driver: 'x' }, a), false, 'a stale view takes nothing');
  });
});
