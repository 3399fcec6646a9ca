/**
 * TEST-ONLY: what the coordinator's module tests share (they run against a real etcd, without
 * custodian processes or HSMs): one etcd per test file, a RecordIntegrity that collects what it
 * refuses, FAKE custodian links that hold their keys in memory and keep what they are sent, and
 * a poll for a condition.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { after, before } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { TestEtcd } from '@keyshard/devcluster/test-etcd';
import { combineShares, oaepDecrypt, type CustodianKeys, type ShareManifest } from '@keyshard/crypto';
import { createLogger } from '@keyshard/config';
import type { CustodianIdentity, CustodianLink } from '../ceremonies/custodian-link.ts';
import { RecordIntegrity, type IntegrityViolation } from './record-integrity.ts';
import { Seal } from './seal.ts';

export const quietLog = createLogger('module-test', 'silent');

/**
 * One real single-member etcd for the tests of the calling suite: started before them, stopped
 * after them, once whatever `stopAfter` was given (replicas, elections) has stopped.
 */
export function etcdForTests(): { readonly etcd: TestEtcd; stopAfter<T extends { stop(): Promise<unknown> }>(s: T): T } {
  let etcd: TestEtcd | undefined;
  const stoppable: { stop(): Promise<unknown> }[] = [];
  before(async () => {
    etcd = await TestEtcd.start();
  });
  after(async () => {
    await Promise.all(stoppable.map((s) => s.stop()));
    await etcd?.stop();
  });
  return {
    get etcd() {
      if (!etcd) throw new Error('etcd is not started yet');
      return etcd;
    },
    stopAfter: (s) => (stoppable.push(s), s),
  };
}

/** A RecordIntegrity over `seal` whose refusals land in `reports`. */
export function collectingIntegrity(seal: Seal): { integrity: RecordIntegrity; reports: IntegrityViolation[] } {
  const reports: IntegrityViolation[] = [];
  return { integrity: new RecordIntegrity(seal, (v) => reports.push(v)), reports };
}

/** A seal opened with random keys (KEK epoch 1) and `macKey` as record MAC key; with its collecting RecordIntegrity. */
export function unsealed(macKey: Buffer = randomBytes(32)) {
  const seal = new Seal();
  seal.open(randomBytes(32), new Map([[1, randomBytes(32)]]), seal.generation, Buffer.from(macKey));
  return { seal, ...collectingIntegrity(seal) };
}

/** Resolves once `condition` holds (polled every 50 ms); rejects naming `what` after `timeoutMs`. */
export async function until(what: string, condition: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await delay(50);
  }
}

/**
 * A FAKE custodian link: an RSA enrollment key and an Ed25519 approval key in memory, no token.
 * It decrypts each share delivered to it (as the HSM would unwrap it) and keeps it, with the
 * generation it belongs to; it records each destruction it is asked for.
 */
export class FakeCustodian {
  readonly address = 'in-memory';
  readonly delivered: { generation: number; share: Buffer; ceremonyId: string | undefined }[] = [];
  readonly destroyed: string[] = [];
  /** Runs before each delivery is kept (a test's way to act in the middle of a ceremony). */
  beforeDelivery: (() => Promise<void>) | undefined;
  // 1024 bits: a fake's key, quick to make; RSA-OAEP with SHA-256 still fits a share (the HSM's is 2048+).
  readonly #enrollment = generateKeyPairSync('rsa', { modulusLength: 1024 });
  readonly #approval = generateKeyPairSync('ed25519');

  constructor(readonly id: string) {}

  get keys(): CustodianKeys {
    return { id: this.id, enrollmentPublicKeyPem: this.#pem(this.#enrollment.publicKey), approvalPublicKeyPem: this.#pem(this.#approval.publicKey) };
  }

  /** This object where a CustodianLink is expected (it answers only what the cluster code asks). */
  get link(): CustodianLink {
    return this as unknown as CustodianLink;
  }

  async identity(): Promise<CustodianIdentity> {
    const k = this.keys;
    return {
      custodian_id: this.id, token_label: `fake-${this.id}`, enrollment_public_key_pem: k.enrollmentPublicKeyPem, approval_public_key_pem: k.approvalPublicKeyPem,
      oaep_hash: 'sha256', holds_shares_for: [], approval_policy: '',
    };
  }

  async deliverShare(d: { encryptedShare: Buffer; generation: number; ceremonyId?: string }): Promise<void> {
    await this.beforeDelivery?.();
    this.delivered.push({ generation: d.generation, share: oaepDecrypt(this.#enrollment.privateKey, d.encryptedShare, 'sha256'), ceremonyId: d.ceremonyId });
  }

  async destroyShare(_clusterId: string, ceremonyId: string): Promise<void> {
    this.destroyed.push(ceremonyId);
  }

  #pem(k: { export(o: { type: 'spki'; format: 'pem' }): string | Buffer }): string {
    return k.export({ type: 'spki', format: 'pem' }).toString();
  }
}

/** The root key that the shares of `manifest`'s generation held by `custodians` combine to (what an unseal reconstructs). */
export async function rootOf(manifest: ShareManifest, custodians: FakeCustodian[]): Promise<Buffer> {
  const generation = manifest.generation ?? 1;
  const accepted = custodians.flatMap((c) => {
    const d = c.delivered.filter((x) => x.generation === generation).at(-1);
    return d ? [{ custodianId: c.id, share: d.share }] : [];
  });
  return combineShares(manifest, accepted);
}
