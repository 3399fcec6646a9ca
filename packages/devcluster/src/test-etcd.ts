/**
 * TEST-ONLY: one real, single-member etcd on free 127.0.0.1 ports in a temporary directory,
 * plain HTTP, no auth — what module tests of the coordinator's persistence layers run against
 * (in the style of microsoft/etcd3's own tests: a real server, no fake of etcd). One per test
 * file: `before(() => start())`, `after(() => etcd.stop())`; stop removes the data directory.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { clusterNamespace, connectEtcd, type Etcd3, type Namespace } from '@keyshard/store';
import { ManagedProcess, freePort } from './processes.ts';

export class TestEtcd {
  readonly clientPort: number;
  readonly #dir: string;
  readonly #process: ManagedProcess;
  readonly #clients: Etcd3[] = [];

  private constructor(dir: string, clientPort: number, process: ManagedProcess) {
    this.#dir = dir;
    this.clientPort = clientPort;
    this.#process = process;
  }

  static async start(): Promise<TestEtcd> {
    const dir = mkdtempSync(path.join(tmpdir(), 'keyshard-test-etcd-'));
    const [clientPort, peerPort] = [await freePort(), await freePort()];
    const url = `http://127.0.0.1:${clientPort}`;
    const peer = `http://127.0.0.1:${peerPort}`;
    const process = new ManagedProcess(
      {
        name: 'etcd',
        command: 'etcd',
        args: [
          '--name', 'm1', '--data-dir', path.join(dir, 'etcd'), '--listen-client-urls', url, '--advertise-client-urls', url,
          '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `m1=${peer}`, '--listen-metrics-urls', '',
        ],
        ready: /ready to serve client requests/,
      },
      dir,
    );
    await process.start();
    return new TestEtcd(dir, clientPort, process);
  }

  /** A new client of this etcd (closed by stop), on its own port unless `port` says otherwise (a proxy's). */
  client(port = this.clientPort): Etcd3 {
    const c = connectEtcd({ endpoints: [`http://127.0.0.1:${port}`] });
    this.#clients.push(c);
    return c;
  }

  /** The keyshard namespace of `cluster` through a new client. */
  namespace(cluster: string, port?: number): Namespace {
    return clusterNamespace(this.client(port), cluster);
  }

  async stop(): Promise<void> {
    for (const c of this.#clients) c.close();
    await this.#process.stop();
    rmSync(this.#dir, { recursive: true, force: true });
  }
}
