/**
 * The SDK's failover against a real cluster: a client given several coordinator addresses,
 * some of them dead (a free port nobody listens on), silent (accepts TCP, never finishes the TLS
 * handshake), hung (a second replica, SIGSTOPped with a call in flight) or cut by a
 * fault-injecting TCP proxy after a request went through. Idempotent calls always succeed on the
 * live replica; a state change is retried with its request token and applied once (a lost answer,
 * a replica hung with it in flight; a ceremony start whose answer is lost opens one ceremony);
 * deadlines hold.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ADMIN, APP, DevCluster, freePort, REPO_ROOT } from '@keyshard/devcluster';
import { KeyshardClient, KeyshardError, type ClientOptions, type Key } from '@keyshard/client';
import { waitFor } from './support/grpc.ts';

/** A TCP proxy to `target`. Once armed, the next connection to send data has its answers swallowed and is cut `holdMs` later. */
class CuttingProxy {
  readonly server: net.Server;
  readonly sockets = new Set<net.Socket>();
  armed = false;
  cuts = 0;

  constructor(target: number, holdMs = 200) {
    this.server = net.createServer((client) => {
      const upstream = net.connect(target, '127.0.0.1');
      this.sockets.add(client).add(upstream);
      let swallowing = false;
      client.on('data', (d) => {
        upstream.write(d);
        if (this.armed && !swallowing) {
          this.armed = false;
          swallowing = true;
          this.cuts += 1;
          setTimeout(() => (client.destroy(), upstream.destroy()), holdMs);
        }
      });
      upstream.on('data', (d) => swallowing || client.write(d));
      for (const s of [client, upstream]) {
        s.on('error', () => {});
        s.on('close', () => (this.sockets.delete(s), client.destroy(), upstream.destroy()));
      }
    });
  }

  listen(): Promise<string> {
    return new Promise((resolve) => this.server.listen(0, '127.0.0.1', () => resolve(`127.0.0.1:${(this.server.address() as net.AddressInfo).port}`)));
  }

  close(): void {
    for (const s of this.sockets) s.destroy();
    this.server.close();
  }
}

async function outcome<T>(p: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; err: KeyshardError }> {
  try {
    return { ok: true, value: await p };
  } catch (e) {
    assert.ok(e instanceof KeyshardError, `the SDK's typed error, not ${String(e)}`);
    return { ok: false, err: e };
  }
}

describe('SDK failover over several coordinator addresses', { timeout: 240_000 }, () => {
  let dir: string;
  let cluster: DevCluster;
  let app: KeyshardClient;
  let live: string;
  let dead: string;
  let dead2: string;
  let silent: net.Server;
  let silentAddress: string;
  const silentSockets = new Set<net.Socket>();
  const clients: KeyshardClient[] = [];
  const msg = Buffer.from('failover payload');

  const client = (address: string[], opts: Partial<ClientOptions> = {}) => {
    const c = new KeyshardClient({ address, tls: cluster.layout.certs[APP]!, ...opts });
    clients.push(c);
    return c;
  };
  const count = async (name: string) => (await app.listKeys(1000)).keys.filter((k) => k.name === name).length;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-failover-'));
    cluster = await DevCluster.create({ dir, custodians: 2, threshold: 2, coordinators: 2 });
    await cluster.start();
    await cluster.bootstrap();
    app = cluster.client(APP);
    live = cluster.coordinatorAddress;
    dead = `127.0.0.1:${await freePort()}`;
    dead2 = `127.0.0.1:${await freePort()}`;
    silent = net.createServer((s) => (silentSockets.add(s), s.on('error', () => {})));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    silentAddress = `127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
    await app.createKey('failover');
  });

  after(async () => {
    for (const c of clients) c.close();
    app?.close();
    for (const s of silentSockets) s.destroy();
    silent?.close();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('with a dead replica listed first, Encrypt, Decrypt and GetKey succeed every time', async () => {
    // Fresh clients, so that the dead address is the very first one tried.
    for (let i = 0; i < 5; i++) {
      const c = client([dead, live]);
      const e = await c.encrypt('failover', msg, { i: String(i) });
      assert.deepEqual((await c.decrypt(e.ciphertext, { i: String(i) })).plaintext, msg);
      assert.equal((await c.getKey('failover')).name, 'failover');
    }
    const c = client([dead, live]);
    for (let round = 0; round < 20; round++) {
      const calls = Array.from({ length: 16 }, async (_, i) => {
        const e = await c.encrypt('failover', msg, { i: String(i) });
        assert.deepEqual((await c.decrypt(e.ciphertext, { i: String(i) })).plaintext, msg);
        assert.equal((await c.getKey('failover')).name, 'failover');
      });
      await Promise.all(calls);
    }
  });

  it('a replica that never finishes the TLS handshake costs connectTimeoutMs, not the deadline', async () => {
    for (let i = 0; i < 3; i++) {
      const c = client([silentAddress, live], { timeoutMs: 5_000, retry: { connectTimeoutMs: 300 } });
      const t0 = Date.now();
      assert.equal((await c.getKey('failover')).name, 'failover');
      const k = await c.createKey(`failover-silent-${i}`);
      assert.equal(k.name, `failover-silent-${i}`);
      assert.ok(Date.now() - t0 < 3_000, `took ${Date.now() - t0} ms`);
      assert.equal(await count(`failover-silent-${i}`), 1);
    }
  });

  it('CreateKey through a dead-first list is sent once: it succeeds, and never creates two keys', async () => {
    for (let i = 0; i < 10; i++) {
      const name = `failover-create-${i}`;
      const r = await outcome(client([dead, live]).createKey(name));
      assert.ok(r.ok, `the dead replica provably never got the request, so CreateKey moved on: ${r.ok ? '' : r.err.message}`);
      assert.equal(await count(name), 1);
    }
  });

  /** The audit events (as the sink stored them). */
  const audited = () =>
    readFileSync(cluster.auditLogFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l).event as { operation: string; key_id?: string; ceremony_id?: string; details?: Record<string, string> });
  /** The audit events about key `keyId`. */
  const auditOf = (keyId: string) => audited().filter((e) => e.key_id === keyId);

  it('a CreateKey whose answer is lost (cut by a TCP proxy after the coordinator acted) is retried with its token: one key, and the caller gets it', async (t) => {
    // 1 s between the request and the cut: the coordinator creates the key, its answer is swallowed.
    const proxy = new CuttingProxy(Number(live.split(':')[1]), 1_000);
    const viaProxy = await proxy.listen();
    try {
      const c = client([viaProxy, live], { connections: 1 });
      // Two calls connect both replicas; round robin puts the next call on the proxy.
      await c.getKey('failover');
      await c.getKey('failover');
      proxy.armed = true;
      const r = await outcome(c.createKey('failover-cut', { description: 'lost answer' }));
      assert.equal(proxy.cuts, 1);
      assert.ok(r.ok, `retried with its request token: ${r.ok ? '' : r.err.message}`);
      assert.equal(r.value.name, 'failover-cut');
      assert.equal(await count('failover-cut'), 1, 'exactly one key');
      assert.equal((await app.getKey('failover-cut')).id, r.value.id, 'the caller got the key that exists');
      // The first attempt made it; the retry was answered its recorded outcome, audited as a replay.
      const events = await waitFor('the replayed CreateKey in the audit log', async () => {
        const es = auditOf(r.value.id).filter((e) => e.operation === 'keys.CreateKey');
        return es.length >= 2 ? es : undefined;
      });
      assert.deepEqual(events.map((e) => e.details?.replay ?? 'false').sort(), ['false', 'true']);
      t.diagnostic(`CreateKey events of the key: ${JSON.stringify(events.map((e) => e.details ?? {}))}`);

      // An idempotent call is retried the same way.
      const c2 = client([viaProxy, live], { connections: 1 });
      await c2.getKey('failover');
      await c2.getKey('failover');
      proxy.armed = true;
      const e = await c2.encrypt('failover', msg);
      assert.equal(proxy.cuts, 2);
      assert.deepEqual((await c2.decrypt(e.ciphertext)).plaintext, msg);
    } finally {
      proxy.close();
    }
  });

  it('a StartCeremony whose answer is lost is retried with its token: one ceremony, and the caller gets its id', async () => {
    const proxy = new CuttingProxy(Number(live.split(':')[1]), 1_000);
    const viaProxy = await proxy.listen();
    let id = '';
    // Ceremonies are an admin's.
    const admin = client([live], { tls: cluster.layout.certs[ADMIN]! });
    try {
      const c = client([viaProxy, live], { tls: cluster.layout.certs[ADMIN]! });
      // Two ceremony reads connect both replicas; round robin puts the next call on the proxy.
      await c.listCeremonies();
      await c.listCeremonies();
      proxy.armed = true;
      // A reshare to the same custodians and threshold: the dev custodians approve it at once, and it keeps the root.
      const r = await outcome(c.startCeremony('reshare'));
      assert.equal(proxy.cuts, 1);
      assert.ok(r.ok, `retried with its request token: ${r.ok ? '' : r.err.message}`);
      id = r.value.id;
      assert.equal(r.value.operation, 'reshare');
      const all = (await admin.listCeremonies(true)).ceremonies.filter((x) => x.operation === 'reshare');
      assert.deepEqual(all.map((x) => x.id), [id], 'exactly one ceremony, the one the caller got');
      // Opened once (one creation event); the retry answered it, audited as a replay.
      const events = await waitFor('the replayed StartCeremony in the audit log', async () => {
        const es = audited().filter((e) => e.ceremony_id === id && e.operation === 'ceremony.StartCeremony');
        return es.length >= 2 ? es : undefined;
      });
      assert.deepEqual(events.map((e) => e.details?.replay ?? 'false').sort(), ['false', 'true']);
      assert.equal(audited().filter((e) => e.ceremony_id === id && e.operation === 'ceremony.reshare.created').length, 1);
    } finally {
      proxy.close();
      // Ended (completed, or cancelled here) before the next test.
      if (id) await admin.cancelCeremony(id).catch(() => {});
      if (id) await waitFor('the reshare to end', async () => ((await admin.getCeremony(id)).state !== 'CEREMONY_STATE_OPEN' ? true : undefined));
    }
  });

  /** Runs `body` with a client whose next call goes to the second replica, hung (SIGSTOP) meanwhile; then resumes it and waits until it serves. */
  const withHungReplica = async (body: (c: KeyshardClient) => Promise<void>) => {
    const hungId = cluster.coordinatorIds[1]!;
    const hung = cluster.process(hungId);
    const c = client([cluster.coordinatorAddressOf(hungId), live], { timeoutMs: 60_000, connections: 1 });
    // Two calls connect both replicas; round robin puts the next call on the one about to hang.
    await c.getKey('failover');
    await c.getKey('failover');
    hung.pause();
    try {
      await body(c);
    } finally {
      hung.resume();
    }
    await cluster.waitUnsealed([hungId], 60_000);
  };

  it('a CreateKey in flight to a replica that hangs (SIGSTOP) succeeds on the other, once; the hung one, resumed, answers the recorded outcome', async (t) => {
    let made!: Key;
    await withHungReplica(async (c) => {
      const t0 = Date.now();
      made = await c.createKey('failover-hung');
      t.diagnostic(`CreateKey sent to the hung replica answered by the other after ${Date.now() - t0} ms`);
      assert.equal(made.name, 'failover-hung');
    });
    // The hung replica took the request in before it was stopped; resumed, it finds the token
    // recorded by the other replica and does not create a second key.
    const events = await waitFor('both replicas\' CreateKey outcomes in the audit log', async () => {
      const es = auditOf(made.id).filter((e) => e.operation === 'keys.CreateKey');
      return es.length >= 2 ? es : undefined;
    }).catch(() => auditOf(made.id).filter((e) => e.operation === 'keys.CreateKey'));
    t.diagnostic(`CreateKey events of the key: ${JSON.stringify(events.map((e) => e.details ?? {}))}`);
    assert.equal(await count('failover-hung'), 1, 'exactly one key');
    assert.ok(events.filter((e) => e.details?.replay !== 'true').length === 1, 'one CreateKey applied');
  });

  it('a replica that hangs (SIGSTOP) with calls in flight costs a keepalive timeout, not the deadline', async (t) => {
    await withHungReplica(async (c) => {
      const t0 = Date.now();
      assert.equal((await c.getKey('failover')).name, 'failover');
      const took = Date.now() - t0;
      t.diagnostic(`GetKey sent to the hung replica answered by the other after ${took} ms (deadline 60 s)`);
      // Keepalive: a PING within 2 s of the call, unanswered for 3 s, drops the connection.
      assert.ok(took >= 2_000, `it went to the hung replica and waited for keepalive (${took} ms)`);
      assert.ok(took < 15_000, `failed over after ${took} ms, not within a few seconds`);
      for (let i = 0; i < 5; i++) {
        const t1 = Date.now();
        const e = await c.encrypt('failover', msg, { i: String(i) });
        assert.deepEqual((await c.decrypt(e.ciphertext, { i: String(i) })).plaintext, msg);
        assert.ok(Date.now() - t1 < 15_000, `Encrypt and Decrypt took ${Date.now() - t1} ms with a replica hung`);
      }
    });
  });

  it('with every replica dead, calls fail within their deadline with UNAVAILABLE or DEADLINE_EXCEEDED', async (t) => {
    const cases: [string, string[], (c: KeyshardClient) => Promise<unknown>][] = [
      ['Encrypt, dead+dead', [dead, dead2], (c) => c.encrypt('failover', msg)],
      ['GetKey, dead+silent', [dead, silentAddress], (c) => c.getKey('failover')],
      ['CreateKey, dead+dead', [dead, dead2], (c) => c.createKey('failover-never')],
      ['CreateKey, silent+dead', [silentAddress, dead], (c) => c.createKey('failover-never')],
    ];
    for (const [what, addresses, call] of cases) {
      const c = client(addresses, { timeoutMs: 1_500, retry: { maxAttempts: 100, connectTimeoutMs: 400 } });
      const t0 = Date.now();
      const r = await outcome(call(c));
      const took = Date.now() - t0;
      assert.ok(!r.ok, what);
      assert.ok(['UNAVAILABLE', 'DEADLINE_EXCEEDED'].includes(r.err.code), `${what}: ${r.err.message}`);
      assert.ok(took <= 1_500 + 250, `${what}: took ${took} ms`);
      t.diagnostic(`${what}: ${r.err.code} after ${took} ms`);
    }
    // A per-call deadline overrides the client's default.
    const c = client([dead, dead2], { timeoutMs: 10_000, retry: { maxAttempts: 100 } });
    const t0 = Date.now();
    const r = await outcome(c.status({ deadline: Date.now() + 700 }));
    assert.ok(!r.ok && Date.now() - t0 <= 700 + 250, `took ${Date.now() - t0} ms`);
    assert.equal(await count('failover-never'), 0);
  });

  it('the CLI takes a comma-separated --addr list', async () => {
    const certs = cluster.layout.certs[APP]!;
    const bin = path.join(REPO_ROOT, 'packages/cli/bin/keyshard.js');
    const args = ['--addr', `${dead},${live}`, '--ca', certs.ca, '--tls-cert', certs.cert, '--tls-key', certs.key, 'encrypt', '--key', 'failover'];
    const out = await new Promise<string>((resolve, reject) => {
      const child = execFile(process.execPath, [bin, ...args], { cwd: REPO_ROOT }, (err, stdout, stderr) => (err ? reject(new Error(stderr)) : resolve(stdout)));
      child.stdin!.end('via the CLI');
    });
    assert.deepEqual((await app.decrypt(Buffer.from(out.trim(), 'base64'))).plaintext, Buffer.from('via the CLI'));
  });
});
