/**
 * Unseal and join ceremonies: from sealed coordinator replicas to open ones, with a custodian
 * quorum. Both run on the ceremony runner (runner.ts) as share-releasing ceremonies
 * (share-release.ts); this module decides who receives, who drives and who follows.
 *
 * Unseal: the replica that starts it (the driver) names every registered sealed replica as a
 * recipient (its transport key and its current ephemeral X25519 key). The driver proposes,
 * records progress in etcd and completes the ceremony; every other recipient (a follower, seeing
 * the ceremony through an etcd watch) fetches the same releases from the custodians and unseals
 * itself. One ceremony unseals them all; no replica ever receives the root key from another.
 * Join: a replica that is sealed while a peer is unsealed (it restarted) asks for itself
 * alone. An unsealed peer vouches for it (join-voucher.ts) and the joiner hands the vouch to
 * the custodians with its proposal; custodians under joinPolicy `auto` release only on a valid
 * vouch, under `manual` only on their operator's approval. With no vouch the custodians refuse
 * (an unseal ceremony is needed). A custodian's refusal is final for the ceremony.
 *
 * Invariants: one unseal ceremony is open at a time, and one join per replica (open.ts); the
 * completion is audited before the seal opens; the ephemeral key a ceremony named for this
 * replica is zeroized when the ceremony ends here (EphemeralKeys.retire). Unseal and join
 * records are written by sealed replicas, which hold no record MAC key: what they say is bound
 * by the ceremony hash the custodians sign, and the custodians check it before releasing.
 */
import { isExpired, MAX_JOIN_LIFETIME_MS, newCeremony, verifyVouch, zeroize, type Ceremony, type JoinVouch } from '@keyshard/crypto';
import { ceremonyNotFound, failedPrecondition } from '@keyshard/errors';
import type { JoinVoucher } from './join-voucher.ts';
import type { CeremonyStore } from './ceremony-store.ts';
import { cancelCeremony, driverAlive, openCeremony, requireTtl, type ReplicaDirectory } from './open.ts';
import { finishCeremony, runCeremony, type RunContext } from './runner.ts';
import { myEphemeralIn, recipientOf, shareKind, type ShareCeremonyDeps } from './share-release.ts';

type Role = RunContext['role'];

export interface UnsealDeps extends ShareCeremonyDeps {
  store: CeremonyStore;
  replicas: ReplicaDirectory & { peerUnsealed(): Promise<boolean> };
  /** Vouches for other replicas' joins while this one is unsealed. */
  voucher?: JoinVoucher;
  /** How long a joiner waits for a peer's vouch before it proposes without one (default 10 s). */
  vouchWaitMs?: number;
}

export class UnsealCeremonies {
  #d: UnsealDeps;
  #current: Ceremony | undefined;
  #active = new Set<string>(); // ceremonies this replica drives or follows
  #driving = new Set<string>(); // of those, the ones it drives
  #ended = new Set<string>(); // followed ceremonies cancelled or failed in etcd

  constructor(deps: UnsealDeps) {
    this.#d = deps;
  }

  /** The current or most recent unseal/join ceremony this replica took part in. */
  get current(): Ceremony | undefined {
    return this.#current;
  }

  /** A ceremony: live from memory if this replica drives it, otherwise as its driver last stored it. */
  async get(id: string): Promise<Ceremony> {
    if (this.#current?.id === id && this.#driving.has(id)) return this.#current;
    const stored = await this.#d.store.show(id);
    if (!stored) throw ceremonyNotFound(id);
    return stored;
  }

  /** Follows unseal/join ceremonies that name this replica (one ceremony unseals every replica). */
  async watch(): Promise<void> {
    await this.#d.store.watch((c) => {
      if (c.state !== 'CEREMONY_STATE_OPEN') {
        if (this.#active.has(c.id) && !this.#driving.has(c.id) && c.state !== 'CEREMONY_STATE_COMPLETED') this.#ended.add(c.id);
        return;
      }
      if (c.operation === 'join') this.#d.voucher?.consider(c);
      if (this.#active.has(c.id) || !this.#d.seal.sealed) return;
      if (c.operation !== 'unseal' && c.operation !== 'join') return;
      // Named with its transport key and an ephemeral key it still holds (not one an ended ceremony retired).
      const mine = myEphemeralIn(c, this.#d.replica);
      if (!mine || !this.#d.replica.ephemeral.get(mine)) return;
      this.#run(c, 'follower');
    });
  }

  async start(initiator: string, ttlSeconds = this.#d.ttlSeconds): Promise<Ceremony> {
    requireTtl(ttlSeconds, this.#d.ttlSeconds);
    this.#d.cluster.requireInitialized();
    if (!this.#d.seal.sealed) throw failedPrecondition('already unsealed', { reason: 'ALREADY_UNSEALED' });
    const current = this.#current;
    if (current?.state === 'CEREMONY_STATE_OPEN' && this.#driving.has(current.id)) {
      if (current.operation === 'unseal') return current;
      // A join of this replica's own is still open (e.g. waiting for a vouch no peer can give): an unseal supersedes it.
      await finishCeremony(current, 'CEREMONY_STATE_CANCELLED', 'superseded by an unseal ceremony', this.#recording());
    }
    // Every registered sealed replica receives the shares; this one always.
    const me = this.#d.replica;
    // A replica registered without an ephemeral key (an older version) cannot receive: it joins later.
    const others = (await this.#d.replicas.list()).filter((r) => r.sealed && r.id !== me.coordinatorId && r.ephemeralPublicKeyPem);
    const recipients = [
      recipientOf(me),
      ...others.map((r) => ({ coordinator_id: r.id, public_key_pem: r.publicKeyPem, ephemeral_public_key_pem: r.ephemeralPublicKeyPem! })),
    ];
    return this.#open('unseal', initiator, ttlSeconds, recipients);
  }

  /**
   * Asks the custodians to let this sealed replica join peers already unsealed in the current
   * seal epoch. Returns undefined when there is nothing to join or a ceremony is under way.
   */
  async joinIfPeersUnsealed(): Promise<Ceremony | undefined> {
    if (!this.#d.seal.sealed || !this.#d.cluster.initialized) return undefined;
    if (this.#active.size > 0) return undefined;
    if (!(await this.#d.replicas.peerUnsealed())) return undefined;
    const me = this.#d.replica;
    // Custodians refuse a join that would stay open longer than MAX_JOIN_LIFETIME_MS.
    const ttl = Math.min(this.#d.ttlSeconds, MAX_JOIN_LIFETIME_MS / 1000);
    return this.#open('join', me.coordinatorId, ttl, [recipientOf(me)]);
  }

  async #open(operation: 'unseal' | 'join', initiator: string, ttlSeconds: number, recipients: Ceremony['recipients']): Promise<Ceremony> {
    const { record, manifest } = this.#d.cluster.requireInitialized();
    const c = newCeremony({
      operation,
      // Custodians release their share of the current set.
      parameters: { generation: String(manifest.generation ?? 1) },
      clusterId: record.clusterId,
      initiator,
      ttlSeconds,
      threshold: manifest.threshold,
      recipients,
    });
    // Marked as driven here before it is visible in etcd, so this replica's own watch never follows it.
    this.#driving.add(c.id);
    this.#active.add(c.id);
    let opened: Ceremony | undefined;
    try {
      opened = await openCeremony(c, { recipients: c.recipients.map((r) => r.coordinator_id).join(',') }, {
        store: this.#d.store,
        audit: this.#d.audit,
        alive: async (held) => this.#driving.has(held.id) || (await driverAlive(held, this.#d.replicas)),
      });
    } finally {
      if (opened !== c) {
        this.#driving.delete(c.id);
        this.#active.delete(c.id);
      }
    }
    if (!opened) throw failedPrecondition(`another ${operation} ceremony is open`, { reason: 'CEREMONY_IN_PROGRESS' });
    if (opened === c) this.#run(c, 'driver');
    return opened;
  }

  #recording(role: Role = 'driver') {
    return { records: this.#d.store, audit: this.#d.audit, role };
  }

  #run(c: Ceremony, role: Role): void {
    this.#active.add(c.id);
    this.#current = c;
    const generation = this.#d.seal.generation;
    void this.#drive(c, generation, role).finally(() => {
      this.#active.delete(c.id);
      this.#driving.delete(c.id);
      this.#ended.delete(c.id);
      // Forward secrecy: the ceremony's ephemeral private key is gone once it ends here.
      this.#d.replica.ephemeral.retire(myEphemeralIn(c, this.#d.replica));
    });
  }

  /** CancelCeremony (admin) for an unseal or join ceremony, whichever replica drives it. */
  async cancel(id: string, principal: string): Promise<Ceremony> {
    return cancelCeremony(await this.get(id), principal, this.#recording());
  }

  /** Seal stops an unseal in progress: its ceremony is cancelled and will not open the seal. */
  async cancelCurrent(reason: string): Promise<void> {
    const c = this.#current;
    if (c?.state !== 'CEREMONY_STATE_OPEN' || !this.#driving.has(c.id)) return;
    await finishCeremony(c, 'CEREMONY_STATE_CANCELLED', reason, this.#recording());
  }

  async #drive(c: Ceremony, generation: number, role: Role): Promise<void> {
    const { cluster, replica, log } = this.#d;
    try {
      // A replica that started before the cluster was initialized (or resharded) reads the manifest now.
      if (role === 'follower') await cluster.load();
      const vouch = c.operation === 'join' && role === 'driver' ? await this.#awaitVouch(c) : undefined;
      const kind = shareKind({
        manifest: () => cluster.manifest!,
        replica,
        oaepHash: this.#d.oaepHash,
        details: { replica: replica.coordinatorId },
        use: async (done, root, accepted) => {
          const approvedBy = accepted.map((a) => a.custodianId);
          try {
            // The completion is on record before the seal opens: no unaudited unseal.
            await this.#d.audit.record({
              operation: `ceremony.${done.operation}.completing`, principal: done.initiator, ceremony_id: done.id, result: 'ok',
              details: { approved_by: approvedBy.join(','), replica: replica.coordinatorId },
            });
          } catch (e) {
            zeroize(root);
            throw e;
          }
          await cluster.openSeal(root, generation);
          log.info({ ceremonyId: done.id, operation: done.operation, approvedBy, role }, 'unsealed');
          return {};
        },
      });
      await runCeremony(c, kind, {
        ...this.#recording(role),
        links: this.#d.links,
        log,
        pollMs: this.#d.pollMs,
        refusalsFinal: true,
        vouch,
        abandoned: () => role === 'follower' && (this.#ended.has(c.id) || generation !== this.#d.seal.generation || !this.#d.seal.sealed),
      });
    } catch (e) {
      log.error({ ceremonyId: c.id, role, err: (e as Error).message }, `${c.operation} ceremony failed`);
    }
  }

  /**
   * The joiner waits for an unsealed peer's vouch (join-voucher.ts) that verifies against the
   * manifest's vouch key; after `vouchWaitMs` it proposes without one, and custodians under
   * joinPolicy auto refuse, saying an unseal ceremony is needed.
   */
  async #awaitVouch(c: Ceremony): Promise<JoinVouch | undefined> {
    const key = this.#d.cluster.manifest?.vouchPublicKeyPem;
    const deadline = Math.min(Date.now() + (this.#d.vouchWaitMs ?? 10_000), Date.parse(c.expires_at));
    while (c.state === 'CEREMONY_STATE_OPEN' && !isExpired(c)) {
      for (const s of await this.#d.store.vouches(c.id).catch(() => [])) {
        const v = { voucher: String(s.voucher), seal_epoch: Number(s.seal_epoch), not_after: String(s.not_after), signature: Buffer.from(String(s.signature), 'base64') };
        if (verifyVouch(c, v, key)) return v;
      }
      if (Date.now() >= deadline) break;
      await new Promise((r) => setTimeout(r, this.#d.pollMs));
    }
    this.#d.log.warn({ ceremonyId: c.id }, 'no unsealed replica vouched for this join; proposing without a vouch');
    return undefined;
  }
}
