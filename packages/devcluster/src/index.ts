/**
 * A whole keyshard cluster on 127.0.0.1 from real parts: a single-member etcd (TLS, auto-
 * compaction on), one SoftHSM token and custodian process per custodian, the audit sink and
 * a coordinator. Used by `keyshard dev` and by the integration tests, so both exercise the
 * same wiring. Every process it starts it stops, by PID.
 */
import path from 'node:path';
import { KeyshardClient, CustodianOperatorClient, unsealAndWait, type Ceremony } from '@keyshard/client';
import {
  ADMIN, APP, AUDITOR, COORDINATOR, coordinatorId, operatorOf, prepareLayout, writeConfigs, writeEnvFile, type CoordinatorOverrides, type Layout,
} from './layout.ts';
import { ManagedProcess, nodeService } from './processes.ts';

export { ADMIN, APP, AUDITOR, COORDINATOR, coordinatorId, operatorOf, type CoordinatorOverrides, type Layout };
export { ManagedProcess, freePort, REPO_ROOT } from './processes.ts';
export { unsealAndWait } from '@keyshard/client';

export interface DevClusterOptions {
  dir: string;
  custodians?: number;
  threshold?: number;
  approvalPolicy?: 'auto' | 'manual';
  /** Coordinator replicas (default 1); on restart the saved layout decides. */
  coordinators?: number;
  /** Deep-merged into every coordinator's config (tests: small bounds, short periods). */
  coordinatorOverrides?: CoordinatorOverrides;
  progress?: (msg: string) => void;
}

export class DevCluster {
  readonly layout: Layout;
  readonly processes = new Map<string, ManagedProcess>();
  readonly envFile: string;
  #progress: (msg: string) => void;

  private constructor(layout: Layout, progress: (msg: string) => void) {
    this.layout = layout;
    this.#progress = progress;
    writeConfigs(layout);
    this.envFile = writeEnvFile(layout);
    const { plan } = layout;
    const peer = `http://127.0.0.1:${plan.ports.etcdPeer}`;
    const client = `https://127.0.0.1:${plan.ports.etcdClient}`;
    const etcdCert = layout.certs.etcd!;
    this.#add({
      name: 'etcd',
      command: 'etcd',
      args: [
        '--name', 'dev', '--data-dir', layout.etcdDir,
        '--listen-client-urls', client, '--advertise-client-urls', client,
        '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer,
        '--initial-cluster', `dev=${peer}`, '--initial-cluster-state', 'new',
        '--cert-file', etcdCert.cert, '--key-file', etcdCert.key, '--trusted-ca-file', etcdCert.ca, '--client-cert-auth',
        '--auto-compaction-mode', 'periodic', '--auto-compaction-retention', '1h',
        '--listen-metrics-urls', '',
      ],
      ready: /ready to serve client requests/,
    });
    this.#add({ name: 'audit-sink', ...nodeService('services/audit-sink/src/main.ts', layout.configFile('audit-sink')), ready: /"msg":"listening"/ });
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
    const layout = await prepareLayout(
      opts.dir,
      {
        custodians: opts.custodians ?? 5,
        threshold: opts.threshold ?? 3,
        approvalPolicy: opts.approvalPolicy ?? 'auto',
        coordinators: opts.coordinators ?? 1,
        coordinatorOverrides: opts.coordinatorOverrides,
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

  /** The first coordinator's address, or the named replica's. */
  get coordinatorAddress(): string {
    return this.coordinatorAddressOf(COORDINATOR);
  }

  coordinatorAddressOf(id: string): string {
    const i = this.coordinatorIds.indexOf(id);
    if (i < 0) throw new Error(`no coordinator ${id}`);
    return `127.0.0.1:${this.layout.plan.ports.coordinators[i]}`;
  }

  get etcdEndpoint(): string {
    return `https://127.0.0.1:${this.layout.plan.ports.etcdClient}`;
  }

  custodianAddress(id: string): string {
    return `127.0.0.1:${this.layout.plan.ports.custodians[this.custodianIds.indexOf(id)]}`;
  }

  process(name: string): ManagedProcess {
    const p = this.processes.get(name);
    if (!p) throw new Error(`no process ${name}`);
    return p;
  }

  /** Starts everything not running, in dependency order. */
  async start(only?: string[]): Promise<void> {
    const order = ['etcd', 'audit-sink', ...this.custodianIds, ...this.coordinatorIds];
    for (const name of order) {
      if (only && !only.includes(name)) continue;
      const p = this.process(name);
      if (p.running) continue;
      this.#progress(`starting ${name}`);
      await p.start();
    }
  }

  async stop(): Promise<void> {
    const order = [...this.coordinatorIds, ...this.custodianIds, 'audit-sink', 'etcd'];
    for (const name of order) await this.process(name).stop();
  }

  /** A client with the given principal's certificate (default: the admin), to one replica (default: the first). */
  client(principal = ADMIN, options: { timeoutMs?: number; coordinator?: string } = {}): KeyshardClient {
    const { coordinator = COORDINATOR, ...rest } = options;
    return new KeyshardClient({ address: this.coordinatorAddressOf(coordinator), tls: this.layout.certs[principal]!, ...rest });
  }

  operatorClient(custodianId: string): CustodianOperatorClient {
    return new CustodianOperatorClient({ address: this.custodianAddress(custodianId), tls: this.layout.certs[operatorOf(custodianId)]! });
  }

  /**
   * Inits if needed, then unseals: one ceremony through the first replica unseals every
   * registered replica. Resolves with that ceremony once every replica serves.
   */
  async bootstrap(): Promise<Ceremony | undefined> {
    const client = this.client();
    let ceremony: Ceremony | undefined;
    try {
      let status = await client.status();
      if (!status.initialized) {
        this.#progress(`init: ${this.layout.plan.custodians} shares, threshold ${this.layout.plan.threshold}`);
        await client.init(this.layout.plan.custodians, this.layout.plan.threshold);
        status = await client.status();
      }
      if (status.sealed) ceremony = await unsealAndWait(client, (c) => this.#progress(`unseal: approvals ${c.approved_by.length}/${c.threshold}`));
    } finally {
      client.close();
    }
    await this.waitUnsealed(this.coordinatorIds);
    return ceremony;
  }

  /**
   * Brings one (restarted) replica back: it joins its unsealed peers by itself (a join
   * ceremony); if no peer is unsealed, it is unsealed through a ceremony of its own.
   */
  async bootstrapReplica(id: string): Promise<void> {
    const peers = this.coordinatorIds.filter((c) => c !== id && this.process(c).running);
    const statuses = await Promise.all(peers.map((p) => this.#status(p).catch(() => undefined)));
    if (!statuses.some((s) => s && !s.sealed)) {
      const client = this.client(ADMIN, { coordinator: id });
      try {
        await unsealAndWait(client, (c) => this.#progress(`unseal ${id}: approvals ${c.approved_by.length}/${c.threshold}`));
      } finally {
        client.close();
      }
    }
    await this.waitUnsealed([id]);
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
