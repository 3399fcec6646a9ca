/**
 * Cluster initialisation and the step from a reconstructed root key to an open seal.
 *
 * Init invariants: the root key comes from the CSPRNG, is split t-of-n, and each share leaves
 * this process only encrypted to its custodian HSM's enrollment key (RSA-OAEP, RFC 8017), to be
 * unwrapped inside the token. The root key and the plaintext shares are zeroized before init
 * returns; the cluster stays sealed. Manifest, first KEK and the cluster record are written in
 * one etcd transaction (cluster-store.ts), so a crash leaves either no cluster or a complete
 * one; a crashed init is retried with the same cluster id and the custodians' shares replaced.
 * One init runs at a time, cluster-wide: the `initializing` record names the replica process
 * running it (`driver`), and another init is refused CEREMONY_IN_PROGRESS while that process is
 * registered and still at it (so a resent Init never delivers a second set of shares over the
 * first one's); an init that failed leaves the claim, and one whose process is gone is taken over.
 * A tokened Init records its answer in the commit (keys/request-tokens.ts): its repeat answers it.
 *
 * The record MAC key (record-integrity.ts) is derived from the root at init (deriveRootKey,
 * purpose `record-mac`) and stored beside the KEKs, wrapped under the root with its own AAD
 * (`keks/record-mac`): a root rotation re-wraps it like the KEKs, so records MAC'd before
 * stay valid, and backups carry it. The cluster record has no MAC of its own: at unseal its
 * cluster id must equal the MAC-checked manifest's, and its KEK epoch must unwrap (AAD).
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import {
  deriveRootKey, keyCheckValue, manifestFingerprint, newClusterId, oaepEncrypt, splitRootKey, zeroize, type OaepHash, type ShareManifest,
} from '@keyshard/crypto';
import { KeyshardError, failedPrecondition, invalidArgument, uninitializedError } from '@keyshard/errors';
import { paths } from '@keyshard/store';
import type { Approval, CustodianIdentity, CustodianLink } from '../ceremonies/custodian-link.ts';
import { kekRecord, recordMacKeyRecord, unwrapKekRecord, unwrapRecordMacKeyRecord, type ClusterRecord, type ClusterStore } from './cluster-store.ts';
import type { Seal } from './seal.ts';

export interface InitResult {
  clusterId: string;
  threshold: number;
  shares: number;
  custodianIds: string[];
  manifestFingerprint: string;
}

/** This replica process, as an init names it in its claim (replicas.ts `self`, `alive`). */
export interface InitDriver {
  self: string;
  alive(driver: string): Promise<boolean>;
}

export class Cluster {
  #store: ClusterStore;
  #initRunning = false;
  #links: CustodianLink[];
  #oaepHash: OaepHash;
  #seal: Seal;
  #reloads: Promise<void> = Promise.resolve();
  record: ClusterRecord | undefined;
  manifest: ShareManifest | undefined;

  /** The seal learns from this cluster whether it exists: a sealed replica of no cluster answers UNINITIALIZED. */
  constructor(store: ClusterStore, links: CustodianLink[], seal: Seal, oaepHash: OaepHash) {
    this.#store = store;
    this.#links = links;
    this.#seal = seal;
    this.#oaepHash = oaepHash;
    seal.followCluster(() => this.initialized);
  }

  get initialized(): boolean {
    return this.record?.state === 'initialized' && this.manifest !== undefined;
  }

  /** Throws FAILED_PRECONDITION, reason UNINITIALIZED, unless the cluster is initialised (as last read). */
  requireInitialized(): { record: ClusterRecord; manifest: ShareManifest } {
    if (!this.record || this.record.state !== 'initialized' || !this.manifest) throw uninitializedError();
    return { record: this.record, manifest: this.manifest };
  }

  async load(): Promise<void> {
    ({ record: this.record, manifest: this.manifest } = await this.#store.load());
  }

  /**
   * Reads the cluster again whenever its record changes in etcd (another replica's init,
   * restore or destroy-cluster), one read after another so the last one wins, so that every
   * replica, not only the one that made the change, knows whether the cluster exists. Returns
   * what stops following.
   */
  follow(): Promise<() => Promise<void>> {
    return this.#store.watchRecord(() => {
      this.#reloads = this.#reloads.then(() => this.load()).catch(() => {}); // etcd unreachable: the next change or Status reads again
    });
  }

  async init(shares: number, threshold: number, driver?: InitDriver): Promise<InitResult> {
    if (this.#initRunning) throw failedPrecondition('an init is in progress on this replica', { reason: 'CEREMONY_IN_PROGRESS' });
    this.#initRunning = true;
    try {
      return await this.#init(shares, threshold, driver);
    } finally {
      this.#initRunning = false;
    }
  }

  async #init(shares: number, threshold: number, driver?: InitDriver): Promise<InitResult> {
    await this.load();
    if (this.initialized) throw failedPrecondition('cluster is already initialized', { reason: 'ALREADY_INITIALIZED' });
    if (shares > this.#links.length)
      throw invalidArgument(`shares (${shares}) exceeds the ${this.#links.length} configured custodians`);
    // The first `shares` configured custodians hold the shares; the others can join through a reshare.
    const links = this.#links.slice(0, shares);
    // A retried init (a previous one crashed after claiming) replaces the shares it delivered.
    const retry = this.record?.state === 'initializing';
    const clusterId = await this.#claimClusterId(driver);
    const identities = await this.identities(links);
    const root = randomBytes(32);
    const kek = randomBytes(32);
    let macKey: Buffer | undefined;
    let split: Awaited<ReturnType<typeof splitRootKey>> | undefined;
    let committed = false;
    try {
      split = await splitRootKey(
        root,
        clusterId,
        identities.map((id, i) => ({
          id: links[i]!.id,
          enrollmentPublicKeyPem: id.enrollment_public_key_pem,
          approvalPublicKeyPem: id.approval_public_key_pem,
        })),
        threshold,
      );
      await this.deliver(links, identities, split, { clusterId, generation: 1, replace: retry });
      const record: ClusterRecord = { clusterId, state: 'initialized', kekEpoch: 1, createdAt: new Date().toISOString() };
      macKey = deriveRootKey(root, clusterId, 'record-mac', 32);
      const manifest = split.manifest;
      const result: InitResult = { clusterId, threshold, shares, custodianIds: manifest.custodians.map((c) => c.id), manifestFingerprint: manifestFingerprint(manifest) };
      committed = await this.#store.commitInit({ manifest, kek: kekRecord(root, clusterId, 1, kek), recordMacKey: recordMacKeyRecord(root, clusterId, macKey), record }, result);
      if (!committed) throw failedPrecondition('cluster was initialized concurrently', { reason: 'ALREADY_INITIALIZED' });
      this.record = record;
      this.manifest = manifest;
      return result;
    } finally {
      zeroize(root, kek, macKey, ...(split?.shares ?? []));
      // A failed init leaves its claim (the cluster id custodians may hold shares of) to the next init, on any replica.
      if (!committed && driver && this.record?.state === 'initializing' && this.record.driver === driver.self) {
        const { driver: _, ...left } = this.record;
        if (await this.#store.claim(left, this.record).catch(() => false)) this.record = left;
      }
    }
  }

  /** The custodians' identities, checked: each is who the configuration says, no token twice. */
  async identities(links: CustodianLink[]): Promise<CustodianIdentity[]> {
    const identities = await Promise.all(links.map((l) => l.identity()));
    identities.forEach((id, i) => {
      if (id.custodian_id !== links[i]!.id) throw failedPrecondition(`custodian at ${links[i]!.address} says it is ${id.custodian_id}, expected ${links[i]!.id}`);
    });
    if (new Set(identities.map((id) => id.enrollment_public_key_pem)).size !== identities.length)
      throw failedPrecondition('two custodians present the same enrollment key: they would hold one token, lowering the quorum');
    return identities;
  }

  /**
   * Delivers each share of `split` to its custodian, encrypted to that custodian HSM's
   * enrollment key (RSA-OAEP, RFC 8017), with the set's peers and threshold; a later set
   * (reshare / rotate-root) with the quorum's approvals of its ceremony, which custodians check.
   */
  async deliver(
    links: CustodianLink[],
    identities: { enrollment_public_key_pem: string }[],
    split: { manifest: ShareManifest; shares: Uint8Array[] },
    opts: { clusterId: string; generation: number; replace: boolean; ceremonyId?: string; approvals?: Approval[] },
  ): Promise<void> {
    const peers = split.manifest.custodians.map((c) => ({ id: c.id, approvalPublicKeyPem: c.approvalPublicKeyPem }));
    const vouchPublicKeyPem = split.manifest.vouchPublicKeyPem ?? '';
    await Promise.all(
      links.map((link, i) => {
        const share = Buffer.from(split.shares[i]!.buffer, split.shares[i]!.byteOffset, split.shares[i]!.byteLength); // a view, not a copy
        const sealedShare = oaepEncrypt(identities[i]!.enrollment_public_key_pem, share, this.#oaepHash);
        return link.deliverShare({ ...opts, encryptedShare: sealedShare, x: split.manifest.custodians[i]!.x, threshold: split.manifest.threshold, peers, vouchPublicKeyPem });
      }),
    );
  }

  /**
   * Reuses the id of a crashed or failed init, or records a new one; concurrent inits race on
   * etcd. An init still running in another live replica process is not taken over.
   */
  async #claimClusterId(driver?: InitDriver): Promise<string> {
    const held = this.record;
    if (held?.state === 'initializing') {
      if (held.driver && held.driver !== driver?.self && (await driver?.alive(held.driver)))
        throw failedPrecondition(`an init is in progress (run by ${held.driver}); its cluster id is ${held.clusterId}`, { reason: 'CEREMONY_IN_PROGRESS' });
      if (driver && held.driver !== driver.self) {
        const mine: ClusterRecord = { ...held, driver: driver.self };
        if (!(await this.#store.claim(mine, held))) throw failedPrecondition('another init is in progress', { reason: 'CEREMONY_IN_PROGRESS' });
        this.record = mine;
      }
      return held.clusterId;
    }
    const record: ClusterRecord = { clusterId: newClusterId(), state: 'initializing', kekEpoch: 0, createdAt: new Date().toISOString(), driver: driver?.self };
    if (!(await this.#store.claim(record))) throw failedPrecondition('another init is in progress', { reason: 'CEREMONY_IN_PROGRESS' });
    this.record = record;
    return record.clusterId;
  }

  /**
   * A copy of the root key this replica holds (the caller zeroizes it), checked now against the
   * manifest in etcd. Another replica may have rotated the root since this one unsealed (its
   * KEKs stay valid, so crypto goes on, but its root is stale): splitting or deriving from a
   * stale root would lose every key. Then this replica seals itself (it rejoins through the
   * custodians by the join policy) and the operation is refused.
   */
  async currentRoot(): Promise<Buffer> {
    const { manifest } = await this.#store.manifest();
    const root = this.#seal.rootCopy();
    const held = Buffer.from(keyCheckValue(root), 'hex');
    const recorded = Buffer.from(manifest?.kcv ?? '', 'hex');
    if (held.length !== recorded.length || !timingSafeEqual(held, recorded)) {
      zeroize(root);
      this.#seal.seal();
      throw failedPrecondition('this replica held a stale root key (the root was rotated through another replica): it has sealed itself and rejoins through the custodians; retry', { reason: 'SEALED' });
    }
    this.manifest = manifest;
    return root;
  }

  /**
   * Opens the seal with a root key that passed the manifest checks: every KEK and the record MAC
   * key must unwrap, and the cluster record must name the manifest's cluster.
   */
  async openSeal(root: Buffer, generation: number): Promise<void> {
    const keks = new Map<number, Buffer>();
    let macKey: Buffer | undefined;
    try {
      const { record, manifest } = this.requireInitialized();
      if (record.clusterId !== manifest.clusterId)
        throw failedPrecondition(`record ${paths.cluster} failed its integrity check (altered outside keyshard?): it names cluster ${record.clusterId}, the share manifest ${manifest.clusterId}`, { reason: 'INTEGRITY_FAILURE' });
      const wrapped = await this.#store.wrappedKeys();
      for (const k of wrapped.keks) keks.set(k.epoch, unwrapKekRecord(root, record.clusterId, k));
      if (wrapped.recordMacKey) macKey = unwrapRecordMacKeyRecord(root, record.clusterId, wrapped.recordMacKey);
      if (!keks.has(record.kekEpoch)) throw new KeyshardError('INTERNAL', `KEK epoch ${record.kekEpoch} is missing`);
      if (!macKey)
        throw failedPrecondition(`${paths.recordMacKey} is missing: the cluster was initialised before record MACs (or restored from such a backup); initialise it again`);
    } catch (e) {
      zeroize(root, macKey, ...keks.values());
      throw e;
    }
    this.#seal.open(root, keks, generation, macKey);
  }
}
