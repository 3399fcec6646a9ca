/**
 * A whole keyshard cluster on 127.0.0.1 from real parts: etcd with one member or three (TLS
 * client URLs, auto-compaction on, authentication on: deploy/etcd-auth.sh grants the cluster
 * prefix to the coordinators' certificate CNs and nothing to any other certificate, with the
 * dev PKI's `etcd-root` certificate as the operator's), one SoftHSM token and custodian process per custodian,
 * the audit sink and one or more coordinators. Used by `keyshard dev` and by the integration
 * tests, so both exercise the same wiring. Every process it starts it stops, by PID.
 *
 * Transport keys: each coordinator's key file is made before it first starts, and its public
 * key is enrolled into every custodian token by the dev SO (operator certificate + the dev SO
 * PIN in hsm/<custodian>/so-pin, through EnrollTransportKey — audited like a real officer's)
 * once the custodians run and before init or unseal; again for a restarted custodian whose
 * token lacks one (a replaced token) and for a coordinator whose key was just made.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { readTls } from '@keyshard/rpc';
import { connectEtcd } from '@keyshard/store';
import { KeyshardClient, CustodianOperatorClient, unsealAndWait, waitForCeremony, type Ceremony } from '@keyshard/client';
import {
  ADMIN, APP, appEnvFile, AUDITOR, COORDINATOR, coordinatorId, custodianEnvFile, ensureTransportKeys, ETCD_ROOT, etcdClientUrls, operatorOf, prepareLayout, transportPublicKeyPem, writeConfigs, writeEnvFile, writeTrustFile,
  type AuditRoute, type CoordinatorOverrides, type EtcdMember, type Layout,
} from './layout.ts';
import { ManagedProcess, nodeService, REPO_ROOT } from './processes.ts';

export { ADMIN, APP, appEnvFile, AUDITOR, COORDINATOR, coordinatorId, custodianEnvFile, ETCD_ROOT, operatorOf, transportPublicKeyPem, type AuditRoute, type CoordinatorOverrides, type EtcdMember, type Layout };
export { ManagedProcess, freePort, REPO_ROOT } from './processes.ts';
export { unsealAndWait } from '@keyshard/client';

const run = promisify(execFile);

export interface DevClusterOptions {
  dir: string;
  custodians?: number;
  threshold?: number;
  approvalPolicy?: 'auto' | 'manual';
  /** Coordinator replicas (default 1); on restart the saved layout decides. */
  coordinators?: number;
  /** etcd members, 1 (default) or 3; on restart the saved layout decides. */
  etcdMembers?: 1 | 3;
  /** Audit sink replicas, 1 (default), 3, 5 or 7; on restart the saved layout decides. */
  auditReplicas?: number;
  /** Deep-merged into every coordinator's config (tests: small bounds, short periods). */
  coordinatorOverrides?: CoordinatorOverrides;
  /** Deep-merged into the named replica's config after coordinatorOverrides (arrays replace). */
  replicaOverrides?: Record<string, CoordinatorOverrides>;
  /** The address a process dials to reach an audit sink replica (Layout.auditRoute; tests: TCP links to partition a replica). */
  auditRoute?: AuditRoute;
  progress?: (msg: string) => void;
}

export class DevCluster {
  readonly layout: Layout;
  readonly processes = new Map<string, ManagedProcess>();
  readonly envFile: string;
  /** DIR/audit-trust.json: sink key, witness vkeys, quorum (layout.ts writeTrustFile). */
  readonly trustFile: string;
  #progress: (msg: string) => void;
  /** deploy/etcd-auth.sh ran against this cluster's etcd since this object was made. */
  #etcdAuth = false;

  private constructor(layout: Layout, progress: (msg: string) => void) {
    this.layout = layout;
    this.#progress = progress;
    writeConfigs(layout);
    this.envFile = writeEnvFile(layout);
    this.trustFile = writeTrustFile(layout);
    const initialCluster = layout.etcdMembers.map((m) => `${m.memberName}=http://127.0.0.1:${m.peerPort}`).join(',');
    for (const m of layout.etcdMembers) this.#add(etcdSpec(layout, m, initialCluster));
    for (const id of layout.auditSinkIds) this.#add({ name: id, ...nodeService('services/audit-sink/src/main.ts', layout.configFile(id)), ready: /"msg":"listening"/ });
    for (const id of layout.custodianIds)
      this.#add({
        name: id,
        ...nodeService('services/custodian/src/main.ts', layout.configFile(id)),
        env: { SOFTHSM2_CONF: layout.softhsmConf[id] },
        ready: /"msg":"listening"/,
      });
    for (const id of layout.coordinatorIds)
      this.#add({ name: id, ...nodeService('services/coordinator/src/main.ts', layout.configFile(id)), ready: /"msg":"listening"/ });
  }

  #add(spec: ConstructorParameters<typeof ManagedProcess>[0]): void {
    this.processes.set(spec.name, new ManagedProcess(spec, this.layout.logDir));
  }

  static async create(opts: DevClusterOptions): Promise<DevCluster> {
    const progress = opts.progress ?? (() => {});
    if (![undefined, 1, 3].includes(opts.etcdMembers)) throw new Error('etcdMembers must be 1 or 3');
    if (![undefined, 1, 3, 5, 7].includes(opts.auditReplicas)) throw new Error('auditReplicas must be 1, 3, 5 or 7');
    const layout = await prepareLayout(
      opts.dir,
      {
        custodians: opts.custodians ?? 5,
        threshold: opts.threshold ?? 3,
        approvalPolicy: opts.approvalPolicy ?? 'auto',
        coordinators: opts.coordinators ?? 1,
        etcdMembers: opts.etcdMembers ?? 1,
        auditReplicas: opts.auditReplicas ?? 1,
        coordinatorOverrides: opts.coordinatorOverrides,
        replicaOverrides: opts.replicaOverrides,
        auditRoute: opts.auditRoute,
      },
      progress,
    );
    return new DevCluster(layout, progress);
  }

  get custodianIds(): string[] {
    return this.layout.custodianIds;
  }

  get coordinatorIds(): string[] {
    return this.layout.coordinatorIds;
  }

  /** The audit sink replicas' process names (= certificate CNs): `audit-sink` alone, or with `audit-sink-2`, … */
  get auditSinkIds(): string[] {
    return this.layout.auditSinkIds;
  }

  /**
   * The replica that leads the replicated audit log now (the last role line in each running
   * replica's log file naming itself leader), or undefined.
   */
  auditLeader(): string | undefined {
    if (this.auditSinkIds.length === 1) return this.process('audit-sink').running ? 'audit-sink' : undefined;
    let best: { id: string; term: number } | undefined;
    for (const id of this.auditSinkIds) {
      if (!this.process(id).running) continue;
      const lines = readFileSync(this.process(id).logFile, 'utf8').split('\n');
      for (let i = lines.length - 1; i >= 0; i--) {
        if (!lines[i]!.includes('"msg":"audit replica role"')) continue;
        const rec = JSON.parse(lines[i]!) as { role?: string; term?: number; pid?: number };
        if (rec.pid === this.process(id).pid && rec.role === 'leader' && (!best || (rec.term ?? 0) > best.term)) best = { id, term: rec.term ?? 0 };
        break;
      }
    }
    return best?.id;
  }

  /** Waits until a replica of the audit log leads (elections take one to two election timeouts). */
  async waitForAuditLeader(timeoutMs = 20_000): Promise<string> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const id = this.auditLeader();
      if (id) return id;
      if (Date.now() > until) throw new Error(`no audit sink replica became leader within ${timeoutMs} ms (see ${this.layout.logDir})`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** The first coordinator's address, or the named replica's. */
  get coordinatorAddress(): string {
    return this.coordinatorAddressOf(COORDINATOR);
  }

  coordinatorAddressOf(id: string): string {
    const i = this.coordinatorIds.indexOf(id);
    if (i < 0) throw new Error(`no coordinator ${id}`);
    return `127.0.0.1:${this.layout.plan.ports.coordinators[i]}`;
  }

  /** The first etcd member's client URL. */
  get etcdEndpoint(): string {
    return `https://127.0.0.1:${this.layout.plan.ports.etcdClient}`;
  }

  /** Every etcd member's client URL. */
  get etcdEndpoints(): string[] {
    return etcdClientUrls(this.layout);
  }

  /** The etcd members' process names: `etcd`, or `etcd-1`..`etcd-3`. */
  get etcdNames(): string[] {
    return this.layout.etcdMembers.map((m) => m.name);
  }

  /**
   * The process name of the etcd member that is raft leader, as the first running member that
   * knows one says (maintenance Status' leader id, matched by member name in MemberList).
   */
  async etcdLeader(): Promise<string> {
    const tls = readTls(this.layout.certs[COORDINATOR]!);
    for (const m of this.layout.etcdMembers) {
      if (!this.process(m.name).running) continue;
      const client = connectEtcd({ endpoints: [`https://127.0.0.1:${m.clientPort}`], tls, serverName: 'etcd', callTimeoutMs: 2_000 });
      try {
        const status = await client.maintenance.status();
        if (!status.leader || status.leader === '0') continue;
        const { members } = await client.cluster.memberList({});
        const name = members.find((x) => x.ID === status.leader)?.name;
        const leader = this.layout.etcdMembers.find((x) => x.memberName === name);
        if (leader) return leader.name;
      } catch {
        // this member cannot say (down, or no quorum): ask the next
      } finally {
        client.close();
      }
    }
    throw new Error('no running etcd member knows a leader');
  }

  custodianAddress(id: string): string {
    return `127.0.0.1:${this.layout.plan.ports.custodians[this.custodianIds.indexOf(id)]}`;
  }

  process(name: string): ManagedProcess {
    const p = this.processes.get(name);
    if (!p) throw new Error(`no process ${name}`);
    return p;
  }

  /**
   * Starts everything not running (or only the named processes), in dependency order. etcd
   * members start together: a new member is ready only once a quorum of them runs.
   */
  async start(only?: string[]): Promise<void> {
    const wanted = (name: string) => (!only || only.includes(name)) && !this.process(name).running;
    const starting = (name: string) => {
      this.#progress(`starting ${name}`);
      return this.process(name).start();
    };
    await Promise.all(this.etcdNames.filter(wanted).map(starting));
    if (!this.#etcdAuth && this.etcdNames.every((name) => this.process(name).running)) await this.#enableEtcdAuth();
    const custodians = this.custodianIds.filter(wanted);
    // Replicas start together (a majority must run to elect a leader); producers follow the leader.
    const sinks = this.auditSinkIds.filter(wanted);
    await Promise.all(sinks.map(starting));
    if (sinks.length > 0 && this.auditSinkIds.length > 1) await this.waitForAuditLeader();
    for (const name of custodians) await starting(name);
    const newKeys = await ensureTransportKeys(this.layout, this.coordinatorIds);
    // A coordinator with a new key needs it in every running token; a (re)started custodian, every coordinator's.
    const toEnroll = newKeys.length > 0 ? this.custodianIds.filter((id) => this.process(id).running) : custodians;
    for (const id of toEnroll) await this.enrollTransportKeys(id);
    for (const name of this.coordinatorIds) if (wanted(name)) await starting(name);
  }

  /**
   * The dev security officer enrolls every coordinator's transport public key into custodian
   * `id`'s token (EnrollTransportKey with the operator certificate and the dev SO PIN); keys
   * already enrolled are left alone. Returns how many were added.
   */
  async enrollTransportKeys(id: string, coordinators = this.coordinatorIds): Promise<number> {
    const op = this.operatorClient(id);
    try {
      const have = new Set((await op.listTrustedKeys()).keys.filter((k) => k.kind === 'transport').map((k) => `${k.name}\n${k.public_key_pem}`));
      const soPin = readFileSync(this.layout.soPinFile[id]!, 'utf8').trim();
      let added = 0;
      for (const c of coordinators) {
        const publicKeyPem = transportPublicKeyPem(this.layout, c);
        if (have.has(`${c}\n${publicKeyPem}`)) continue;
        this.#progress(`${id}: enrolling ${c}'s transport key`);
        await op.enrollTransportKey({ coordinatorId: c, publicKeyPem, soPin });
        added++;
      }
      return added;
    } finally {
      op.close();
    }
  }

  /**
   * What the etcd operator does once (deploy/etcd-auth.sh, idempotent, so also on a reused dir):
   * auth on, role keyshard-<cluster> on the cluster prefix for the coordinators' CNs only.
   */
  async #enableEtcdAuth(): Promise<void> {
    this.#progress('etcd auth: role on the cluster prefix for the coordinators');
    const args = ['--cluster', this.layout.plan.clusterName, '--root-user', ETCD_ROOT, ...this.coordinatorIds.flatMap((id) => ['--coordinator', id])];
    await run('sh', [path.join(REPO_ROOT, 'deploy/etcd-auth.sh'), ...args], { env: { ...process.env, ...this.etcdctlEnv(ETCD_ROOT) } });
    this.#etcdAuth = true;
  }

  /** etcdctl's environment for a principal's certificate, against every member. */
  etcdctlEnv(principal: string): Record<string, string> {
    const c = this.layout.certs[principal];
    if (!c) throw new Error(`no certificate ${principal}`);
    return { ETCDCTL_API: '3', ETCDCTL_ENDPOINTS: this.etcdEndpoints.join(','), ETCDCTL_CACERT: c.ca, ETCDCTL_CERT: c.cert, ETCDCTL_KEY: c.key };
  }

  /**
   * Runs `etcdctl <args>` with a principal's certificate (default: the etcd operator's). Resolves
   * with its stdout; rejects with an Error whose message is etcdctl's output without its JSON
   * retry-log lines (e.g. "Error: etcdserver: permission denied"); gives up after 20 s.
   */
  async etcdctl(args: string[], principal: string = ETCD_ROOT): Promise<string> {
    try {
      // A bound on the whole run: a watch etcd accepted would never end by itself.
      const { stdout } = await run('etcdctl', ['--dial-timeout=3s', '--command-timeout=10s', ...args], { env: { ...process.env, ...this.etcdctlEnv(principal) }, timeout: 20_000 });
      return stdout;
    } catch (e) {
      const { stdout = '', stderr = '' } = e as { stdout?: string; stderr?: string };
      const said = `${stdout}\n${stderr}`.split('\n').filter((l) => l.trim() && !l.startsWith('{')).join(' | ');
      throw new Error(said || (e as Error).message, { cause: e });
    }
  }

  async stop(): Promise<void> {
    const order = [...this.coordinatorIds, ...this.custodianIds];
    for (const name of order) await this.process(name).stop();
    await Promise.all(this.auditSinkIds.map((name) => this.process(name).stop()));
    await Promise.all(this.etcdNames.map((name) => this.process(name).stop()));
  }

  /** A client with the given principal's certificate (default: the admin), to one replica (default: the first). */
  client(principal = ADMIN, options: { timeoutMs?: number; coordinator?: string } = {}): KeyshardClient {
    const { coordinator = COORDINATOR, ...rest } = options;
    return new KeyshardClient({ address: this.coordinatorAddressOf(coordinator), tls: this.layout.certs[principal]!, coordinatorIds: this.layout.coordinatorIds, ...rest });
  }

  operatorClient(custodianId: string): CustodianOperatorClient {
    return new CustodianOperatorClient({ address: this.custodianAddress(custodianId), tls: this.layout.certs[operatorOf(custodianId)]!, custodianId });
  }

  /**
   * Inits if needed (unless `init: false`: a fresh cluster stays uninitialized, e.g. to restore a
   * backup into), then unseals: one ceremony through the first replica unseals every registered
   * replica. `onUnsealOpened` sees that ceremony as soon as it opens (manual approval prints what to
   * run); `timeoutMs` bounds the wait for it. Resolves with the ceremony once every replica serves.
   */
  async bootstrap(opts: { init?: boolean; onUnsealOpened?: (c: Ceremony) => void; timeoutMs?: number } = {}): Promise<Ceremony | undefined> {
    const client = this.client();
    let ceremony: Ceremony | undefined;
    try {
      let status = await client.status();
      if (!status.initialized) {
        if (opts.init === false) return undefined;
        this.#progress(`init: ${this.layout.plan.custodians} shares, threshold ${this.layout.plan.threshold}`);
        await client.init(this.layout.plan.custodians, this.layout.plan.threshold);
        status = await client.status();
      }
      if (status.sealed) {
        const opened = await client.startUnseal();
        opts.onUnsealOpened?.(opened);
        ceremony = await waitForCeremony(client, opened, (c) => this.#progress(`unseal: approvals ${Math.min(c.approved_by.length, c.threshold)}/${c.threshold}`), opts.timeoutMs ?? 60_000);
      }
    } finally {
      client.close();
    }
    await this.waitUnsealed(this.coordinatorIds);
    return ceremony;
  }

  /**
   * Brings one (restarted) replica back: it joins its unsealed peers by itself (a join
   * ceremony); if no peer is unsealed (or none is left to vouch for it), it is unsealed through a
   * ceremony of its own.
   */
  async bootstrapReplica(id: string, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const me = await this.#status(id).catch(() => undefined);
      if (me && !me.sealed) return;
      // A peer that seemed unsealed may turn out to hold a stale root (rotated through the restarted
      // replica) and seal itself when asked to vouch: with nobody left to vouch, unseal by ceremony.
      const peers = this.coordinatorIds.filter((c) => c !== id && this.process(c).running);
      const statuses = await Promise.all(peers.map((p) => this.#status(p).catch(() => undefined)));
      if (!statuses.some((s) => s && !s.sealed)) {
        const client = this.client(ADMIN, { coordinator: id });
        try {
          await unsealAndWait(client, (c) => this.#progress(`unseal ${id}: approvals ${c.approved_by.length}/${c.threshold}`));
        } catch (e) {
          // A peer that did not answer in time was unsealed after all, and the replica joined it meanwhile;
          // or the replica's own join was still open and failed: the next round decides again.
          if (Date.now() > deadline) throw e;
        } finally {
          client.close();
        }
      }
      if (Date.now() > deadline) throw new Error(`replica ${id} is still sealed after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  async #status(id: string) {
    const client = this.client(ADMIN, { coordinator: id, timeoutMs: 3_000 });
    try {
      return await client.status();
    } finally {
      client.close();
    }
  }

  /** Waits until every named replica reports itself unsealed. */
  async waitUnsealed(ids: string[], timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (const id of ids) {
      for (;;) {
        const s = await this.#status(id).catch(() => undefined);
        if (s && !s.sealed) break;
        if (Date.now() > deadline) throw new Error(`replica ${id} is still sealed after ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  get auditLogFile(): string {
    return path.join(this.layout.auditDir, 'audit.log');
  }
}

/** One etcd member: TLS client URL, plain peer URL, both on 127.0.0.1; auto-compaction as the brief asks. */
function etcdSpec(layout: Layout, m: EtcdMember, initialCluster: string): ConstructorParameters<typeof ManagedProcess>[0] {
  const peer = `http://127.0.0.1:${m.peerPort}`;
  const client = `https://127.0.0.1:${m.clientPort}`;
  const cert = layout.certs.etcd!;
  return {
    name: m.name,
    command: 'etcd',
    args: [
      '--name', m.memberName, '--data-dir', m.dataDir,
      '--listen-client-urls', client, '--advertise-client-urls', client,
      '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer,
      // Ignored once the data directory exists: a restarted member rejoins with what it has.
      '--initial-cluster', initialCluster, '--initial-cluster-state', 'new', '--initial-cluster-token', `keyshard-${layout.plan.clusterName}`,
      '--cert-file', cert.cert, '--key-file', cert.key, '--trusted-ca-file', cert.ca, '--client-cert-auth',
      '--auto-compaction-mode', 'periodic', '--auto-compaction-retention', '1h',
      '--listen-metrics-urls', '',
    ],
    ready: /ready to serve client requests/,
  };
}
