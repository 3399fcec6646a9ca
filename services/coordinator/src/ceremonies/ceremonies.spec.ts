/**
 * Unseal and approval ceremonies as modules (unseal-ceremony.ts, quorum-ceremonies.ts) on the
 * runner, against a real single-member etcd, with real keys and real share releases (HPKE over
 * RSA-OAEP, Ed25519 approvals). LABELLED FAKES: the custodians (they answer from their share
 * and approval key, as a custodian's HSM would, without PKCS#11), the cluster (its manifest and
 * openSeal), the replica directory, and the audit recorder. The real custodian, HSM and cluster
 * are in test/ha.test.ts, test/governance.test.ts and test/hsm-release.test.ts.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { ephemeralRecipientKey, oaepEncrypt, sealToEphemeral, splitRootKey, type Ceremony, type ShareManifest } from '@keyshard/crypto';
import { createLogger } from '@keyshard/config';
import type { AuditEventInput } from '@keyshard/audit-client';
import { Seal } from '../cluster/seal.ts';
import { RecordIntegrity } from '../cluster/record-integrity.ts';
import type { Cluster } from '../cluster/cluster.ts';
import { etcdForTests } from '../cluster/test-support.ts';
import type { CustodianLink, ReleaseResponse } from './custodian-link.ts';
import { EphemeralKeys } from './transport-key.ts';
import { CeremonyStore } from './ceremony-store.ts';
import { UnsealCeremonies } from './unseal-ceremony.ts';
import { QuorumCeremonies } from './quorum-ceremonies.ts';

const log = createLogger('ceremonies-spec', 'silent');
const ids = ['custodian-1', 'custodian-2', 'custodian-3'];
const local = etcdForTests();
let n = 0;

/** FAKE custodian: decides by `mode`; releases its share to every recipient like the real one (OAEP to the transport key, HPKE to the ephemeral key). */
class ReleasingCustodian {
  mode: 'approve' | 'deny' | 'pending' = 'approve';
  proposed: Ceremony[] = [];
  constructor(readonly id: string, private share: Uint8Array, private approvalKey: KeyObject) {}
  async propose(c: Ceremony): Promise<ReleaseResponse> {
    this.proposed.push(c);
    return this.#answer(c);
  }
  async release(id: string): Promise<ReleaseResponse> {
    return this.#answer(this.proposed.find((c) => c.id === id)!);
  }
  async #answer(c: Ceremony): Promise<ReleaseResponse> {
    const base = { ceremony_id: c.id, releases: [], approval_signature: Buffer.alloc(0), reason: '', succession: null };
    if (this.mode === 'pending') return { ...base, status: 'pending' };
    if (this.mode === 'deny') return { ...base, status: 'denied', reason: 'operator said no' };
    const releases = await Promise.all(
      c.recipients.map(async (r) => ({
        coordinator_id: r.coordinator_id,
        wrapped_share: await sealToEphemeral(r.ephemeral_public_key_pem, oaepEncrypt(r.public_key_pem, Buffer.from(this.share), 'sha1'), {
          ceremonyHash: c.hash, coordinatorId: r.coordinator_id, custodianId: this.id,
        }),
      })),
    );
    return { ...base, status: 'released', releases, approval_signature: sign(null, Buffer.from(c.hash, 'hex'), this.approvalKey) };
  }
}

async function world() {
  const keys = ids.map(() => generateKeyPairSync('ed25519'));
  const root = randomBytes(32);
  const split = await splitRootKey(root, 'c-1', ids.map((id, i) => ({ id, enrollmentPublicKeyPem: 'unused', approvalPublicKeyPem: keys[i]!.publicKey.export({ type: 'spki', format: 'pem' }).toString() })), 2);
  const manifest: ShareManifest = split.manifest;
  const custodians = ids.map((id, i) => new ReleasingCustodian(id, split.shares[i]!, keys[i]!.privateKey));
  const seal = new Seal();
  const opened: Buffer[] = [];
  // FAKE cluster: what the ceremonies ask of it.
  const cluster = {
    initialized: true,
    manifest,
    record: { clusterId: 'c-1', state: 'initialized', kekEpoch: 1, createdAt: '' },
    requireInitialized: () => ({ record: cluster.record, manifest }),
    load: async () => {},
    openSeal: async (r: Buffer) => {
      opened.push(Buffer.from(r));
      seal.open(r, new Map([[1, randomBytes(32)]]), seal.generation, randomBytes(32));
    },
  } as unknown as Cluster;
  const events: AuditEventInput[] = [];
  const audit = { record: async (e: AuditEventInput) => void events.push(e) }; // FAKE recorder
  const store = new CeremonyStore(local.etcd.namespace(`ceremonies-${++n}`), new RecordIntegrity(seal, () => {}));
  const replica = { coordinatorId: 'coordinator-1', ...ephemeralRecipientKey(), ephemeral: new EphemeralKeys() };
  // FAKE replica directory: this replica alone, registered sealed with its current ephemeral key.
  const replicas = {
    self: 'coordinator-1/instance',
    list: async () => [{ id: 'coordinator-1', publicKeyPem: replica.publicKeyPem, ephemeralPublicKeyPem: replica.ephemeral.currentPem, sealed: seal.sealed }],
    alive: async (driver: string) => driver === 'coordinator-1/instance',
    peerUnsealed: async () => false,
  };
  const links = custodians as unknown as CustodianLink[];
  return { root, manifest, custodians, seal, cluster, opened, events, audit, store, replica, replicas, links, log };
}

async function until<T>(what: string, f: () => T | undefined | false, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > deadline) assert.fail(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}


describe('unseal ceremony (module)', () => {
  it('t releases open the seal with the root the shares make; the ceremony is recorded COMPLETED and its ephemeral key retired', async () => {
    const w = await world();
    w.custodians[1]!.mode = 'pending';
    const unseal = new UnsealCeremonies({ ...w, oaepHash: 'sha1', ttlSeconds: 60, pollMs: 10 });
    const c = await unseal.start('admin');
    assert.equal((await unseal.start('admin')).id, c.id, 'a second StartUnseal returns the open one');
    await until('the seal to open', () => !w.seal.sealed);
    assert.deepEqual(w.opened, [w.root]);
    const stored = await until('the completed audit event', () => w.events.some((e) => e.operation === 'ceremony.unseal.completed') && unseal.current);
    assert.deepEqual([...stored.approved_by].sort(), ['custodian-1', 'custodian-3']);
    assert.equal((await w.store.read(c.id, 'unseal'))?.state, 'CEREMONY_STATE_COMPLETED');
    assert.equal(await w.store.lockHolder('unseal'), undefined);
    assert.ok(w.events.findIndex((e) => e.operation === 'ceremony.unseal.completing') < w.events.findIndex((e) => e.operation === 'ceremony.unseal.completed'));
    await until('the ephemeral key to be retired', () => w.replica.ephemeral.get(c.recipients[0]!.ephemeral_public_key_pem) === undefined);
  });

  it('below t (two denials): FAILED, the seal stays shut', async () => {
    const w = await world();
    w.custodians[0]!.mode = 'deny';
    w.custodians[2]!.mode = 'deny';
    const unseal = new UnsealCeremonies({ ...w, oaepHash: 'sha1', ttlSeconds: 60, pollMs: 10 });
    const c = await unseal.start('admin');
    await until('the ceremony to fail', () => unseal.current?.state === 'CEREMONY_STATE_FAILED');
    assert.equal(w.seal.sealed, true);
    assert.deepEqual(w.opened, []);
    assert.deepEqual([...c.denied_by].sort(), ['custodian-1', 'custodian-3']);
  });

  it('cancelled (an admin, through this or another replica): the driver stops and never opens the seal', async () => {
    const w = await world();
    for (const cu of w.custodians) cu.mode = 'pending';
    const unseal = new UnsealCeremonies({ ...w, oaepHash: 'sha1', ttlSeconds: 60, pollMs: 10 });
    const c = await unseal.start('admin');
    await until('a proposal', () => w.custodians[0]!.proposed.length > 0);
    // Another replica's CancelCeremony writes the record; this driver sees it at its next round.
    const other = new UnsealCeremonies({ ...w, oaepHash: 'sha1', ttlSeconds: 60, pollMs: 10 });
    await other.cancel(c.id, 'admin-2');
    for (const cu of w.custodians) cu.mode = 'approve';
    await until('the driver to stop', () => c.state === 'CEREMONY_STATE_CANCELLED');
    await new Promise((r) => setTimeout(r, 100)); // bounded observation: 10 poll rounds in which the seal must stay shut
    assert.equal(w.seal.sealed, true);
    assert.equal(c.error, 'cancelled by admin-2');
  });
});

describe('approval ceremony (module)', () => {
  it('t valid approvals run the operation once, with those approvals; one open per operation', async () => {
    const w = await world();
    w.seal.open(randomBytes(32), new Map([[1, randomBytes(32)]]), w.seal.generation, randomBytes(32));
    w.custodians[2]!.mode = 'pending';
    const executed: string[][] = [];
    const quorum = new QuorumCeremonies({ ...w, driver: w.replicas, ttlSeconds: 60, pollMs: 10 }, {
      'destroy-key': {
        prepare: async (p) => ({ key: p.key ?? '' }),
        execute: async (_c, approvals) => (executed.push(approvals.map((a) => a.custodianId)), { destroyed: 'yes' }),
      },
    });
    w.custodians[0]!.mode = 'pending';
    const c = await quorum.start('destroy-key', { key: 'k-1' }, 'admin');
    await assert.rejects(quorum.start('destroy-key', { key: 'k-2' }, 'admin'), /only one runs at a time/);
    await new Promise((r) => setTimeout(r, 100)); // bounded observation: with one approval nothing runs
    assert.deepEqual(executed, []);
    w.custodians[0]!.mode = 'approve';
    await until('the operation to run', () => executed.length > 0);
    assert.deepEqual(executed.map((a) => [...a].sort()), [['custodian-1', 'custodian-2']]);
    await until('completion', () => w.events.some((e) => e.operation === 'ceremony.destroy-key.completed' && e.details?.destroyed === 'yes'));
    assert.equal((await w.store.read(c.id, 'destroy-key'))?.state, 'CEREMONY_STATE_COMPLETED', 'recorded with its MAC, and it verifies');
    assert.equal(await w.store.lockHolder('destroy-key'), undefined);
  });
});
