/**
 * Pinned peers (issue 14, "Also seen" and Build 4) against a real cluster: every link checks the
 * server it expects, not just the CA, and the audit client trusts only acknowledgements whose
 * checkpoint is signed by the sink's key and consistent with what it saw before.
 *
 * Each attack here succeeded before: a fake audit sink listening with the `app` certificate on
 * the sink's port answered the coordinator's Encrypt and CreateKey events (never stored) and the
 * custodians' ones; a fake custodian or coordinator with another certificate of the CA was
 * talked to as if genuine; acknowledgements were counted as stored whatever checkpoint they
 * carried. Now each fake is refused (UNAVAILABLE, naming what was expected and presented), crypto
 * calls wait in the coordinator's durable spool and reach the real sink once it is back, and
 * everything that must be audited first (CreateKey, custodian calls) is refused meanwhile.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createPrivateKey, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { APP, AUDITOR, DevCluster, REPO_ROOT } from '@keyshard/devcluster';
import { KeyshardClient, type CustodianOperatorClient } from '@keyshard/client';
import { AuditReader } from '@keyshard/audit-client/reader';
import { issueCert } from '@keyshard/pki';
import { keyshardProto, readTls, serverCredentials, type TlsMaterial } from '@keyshard/rpc';
import { connectEtcd } from '@keyshard/store';
import { FakeAuditSink } from '@keyshard/audit-client/testing';
import { refusalOf, rejectsWith, waitFor } from './support/grpc.ts';

const run = promisify(execFile);
const CLI = path.join(REPO_ROOT, 'packages/cli/bin/keyshard.js');
const KEY = 'pins';

describe('pinned peers: fake sinks, custodians and coordinators with other certificates of the CA', { timeout: 300_000 }, () => {
  let dir: string;
  let cluster: DevCluster;
  let admin: KeyshardClient;
  /** The key's user (the admin administers KEY; it does not use it). */
  let app: KeyshardClient;
  let reader: AuditReader;
  let sinkAddress: string;
  const servers: grpc.Server[] = [];
  const tlsOf = (name: string): TlsMaterial => readTls(cluster.layout.certs[name]!);
  const logOf = (name: string) => readFileSync(cluster.process(name).logFile, 'utf8');
  const operator = (id: string): CustodianOperatorClient => cluster.operatorClient(id);

  /** A certificate of the cluster CA that the dev PKI gives nobody: what a CA holder could mint. */
  const rogue = async (cn: string, profile: 'server' | 'component') => readTls(await issueCert(path.join(dir, 'pki'), cn, cn, profile));

  /** Whether the real sink stored an event of `operation` with this request id. */
  const stored = async (operation: string, requestId: string) => {
    for await (const e of reader.query({ operation })) if (e.event.request_id === requestId) return true;
    return undefined;
  };

  /**
   * Asserts that `call` is refused UNAVAILABLE with `why`, never answered. Channels that saw the
   * real server go away may first report that outage (grpc-js reconnect backoff): retried until
   * the refusal names `why`.
   */
  async function refused(call: () => Promise<unknown>, why: RegExp, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const outcome = await call().then(
        () => ({ ok: true as const }),
        (e: unknown) => ({ ok: false as const, e: refusalOf(e) }),
      );
      assert.ok(!outcome.ok, 'the call was answered');
      assert.equal(outcome.e.code, 'UNAVAILABLE', outcome.e.message);
      if (why.test(outcome.e.message)) return;
      if (Date.now() > deadline) assert.fail(`refused, but not because ${why}: ${outcome.e.message}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** Runs `fn` while `fake` listens on the audit sink's port instead of the real sink. */
  async function withFakeSink(fake: FakeAuditSink, tls: TlsMaterial, fn: () => Promise<void>): Promise<void> {
    await cluster.process('audit-sink').stop();
    await fake.listen(tls, sinkAddress);
    try {
      await fn();
    } finally {
      fake.close();
      await cluster.start(['audit-sink']);
    }
  }

  /** A gRPC server of `service` with `tls`, counting the calls it gets; resolves with its address. */
  async function fakeServer(service: 'CustodianService' | 'KeyService', tls: TlsMaterial, address = '127.0.0.1:0') {
    const calls: string[] = [];
    const server = new grpc.Server();
    const definition = keyshardProto()[service].service;
    const impl: grpc.UntypedServiceImplementation = {};
    for (const name of Object.keys(definition))
      impl[name] = (call: { request?: unknown }, cb?: grpc.sendUnaryData<unknown>) => {
        calls.push(name);
        if (name === 'GetIdentity') cb?.(null, { custodian_id: 'custodian-2', token_label: 'custodian-2', holds_shares_for: [], approval_policy: 'auto' });
        else if (name === 'Encrypt') cb?.(null, { ciphertext: Buffer.from('forged'), key_id: 'k', key_version: 1 });
        else cb?.(null, {});
      };
    server.addService(definition, impl);
    const port = await new Promise<number>((res, rej) => server.bindAsync(address, serverCredentials(tls), (e, p) => (e ? rej(e) : res(p))));
    servers.push(server);
    return { address: `127.0.0.1:${port}`, calls, close: () => server.forceShutdown() };
  }

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-pins-'));
    cluster = await DevCluster.create({ dir, custodians: 3, threshold: 2 });
    await cluster.start();
    await cluster.bootstrap();
    sinkAddress = `127.0.0.1:${cluster.layout.plan.ports.audit}`;
    admin = cluster.client();
    await admin.createKey(KEY, { policy: { encrypt: [APP], decrypt: [APP] } });
    app = cluster.client(APP);
    reader = new AuditReader({ address: sinkAddress, tls: tlsOf(AUDITOR), channelOptions: { 'grpc.max_reconnect_backoff_ms': 500 } });
    // Every custodian has had acknowledgements from the real sink: its audit client holds a verified checkpoint.
    for (const id of cluster.custodianIds) await operator(id).pending();
  });

  after(async () => {
    for (const s of servers) s.forceShutdown();
    reader?.close();
    admin?.close();
    app?.close();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const [label, cert, refusal] of [
    ['the app certificate (client-only)', () => Promise.resolve(tlsOf(APP)), /unsuitable certificate purpose|not for serverAuth/],
    ['a server certificate named rogue-sink', () => rogue('rogue-sink', 'server'), /expected the audit sink \(CN "audit-sink", extendedKeyUsage serverAuth\); the server presented CN "rogue-sink"/],
  ] as const) {
    it(`a fake audit sink with ${label} is refused by the coordinator and the custodians; crypto calls are kept until the real sink stores them`, async () => {
      const fake = new FakeAuditSink();
      const requestId = randomUUID();
      const refusedKey = `pins-refused-${randomUUID().slice(0, 8)}`;
      await withFakeSink(fake, await cert(), async () => {
        // Encrypt answers once its event is durable in the coordinator's spool (not at the fake).
        await app.encrypt(KEY, Buffer.from('spooled while the sink is a fake'), {}, { requestId });
        // CreateKey's intent must reach the sink before it runs: refused, nothing created.
        await refused(() => admin.createKey(refusedKey), refusal);
        // Custodian calls are audited before they answer: refused too.
        await refused(() => operator('custodian-1').pending(), refusal);
        assert.equal(fake.streams, 0, 'no producer opened an Append stream to the fake');
        assert.deepEqual(fake.events, [], 'the fake received no event');
      });
      await rejectsWith(admin.getKey(refusedKey), 'NOT_FOUND');
      // The spooled Encrypt event reaches the real sink once it is back: it was never dropped.
      assert.equal(await waitFor('the spooled Encrypt event in the real sink', () => stored('keys.Encrypt', requestId), 30_000), true);
      // The custodian's audit client reconnects to the real sink on its own backoff: it serves again once it has.
      await waitFor('custodian-1 audited by the real sink again', () => operator('custodian-1').pending().then(() => true, () => undefined), 30_000);
    });
  }

  it('a fake custodian with another certificate of the CA is refused by the coordinator and the custodian operator client', async () => {
    const address = cluster.custodianAddress('custodian-2');
    await cluster.process('custodian-2').stop();
    try {
      for (const [label, tls, why] of [
        ['custodian-1', tlsOf('custodian-1'), /expected custodian custodian-2 \(CN "custodian-2", extendedKeyUsage serverAuth\); the server presented CN "custodian-1"/],
        ['app', tlsOf(APP), /unsuitable certificate purpose|not for serverAuth/],
      ] as const) {
        const fake = await fakeServer('CustodianService', tls, address);
        try {
          const status = await admin.status();
          assert.equal(status.custodians.find((c) => c.id === 'custodian-2')?.reachable, false, `the ${label} fake does not pass for custodian-2`);
          // The operator's client expects the custodian its certificate is named for.
          const op = cluster.operatorClient('custodian-2');
          await refused(() => op.pending(), why);
          op.close();
          assert.deepEqual(fake.calls, [], `the ${label} fake got no call`);
        } finally {
          fake.close();
        }
      }
    } finally {
      await cluster.start(['custodian-2']);
    }
    await waitFor('custodian-2 reachable again', async () => ((await admin.status()).custodians.find((c) => c.id === 'custodian-2')?.reachable ? true : undefined));
  });

  it('a fake coordinator with another certificate of the CA is refused by the SDK and the CLI', async () => {
    const app = cluster.layout.certs[APP]!;
    for (const [label, tls, why] of [
      ['custodian-1', tlsOf('custodian-1'), /expected a coordinator replica \(CN matching .*\); the server presented CN "custodian-1"/],
      ['audit-sink', tlsOf('audit-sink'), /the server presented CN "audit-sink"/],
      // TLS refuses a client-only certificate before the identity is compared: the SDK sees only that the connection failed.
      ['app', tlsOf(APP), /unsuitable certificate purpose|not for serverAuth|no connection to 127\.0\.0\.1:\d+: it (failed|is failing)/],
    ] as const) {
      const fake = await fakeServer('KeyService', tls);
      const sdk = new KeyshardClient({ address: fake.address, tls: app, retry: { maxAttempts: 1 } });
      try {
        await rejectsWith(sdk.encrypt(KEY, Buffer.from('a secret the fake must never see'), {}, { timeoutMs: 3_000 }), 'UNAVAILABLE', why);
        const cli = await run(process.execPath, [CLI, 'key', 'list'], {
          env: { ...process.env, KEYSHARD_ADDR: fake.address, KEYSHARD_CA: app.ca, KEYSHARD_CERT: app.cert, KEYSHARD_KEY: app.key },
        }).then(
          () => 'succeeded',
          (e: { stderr: string }) => e.stderr,
        );
        assert.match(cli, /UNAVAILABLE/, `the CLI refuses the ${label} fake`);
        assert.deepEqual(fake.calls, [], `the ${label} fake got no call`);
      } finally {
        sdk.close();
        fake.close();
      }
    }
    // A replica-shaped name the CA never gave a coordinator passes the default pattern; the
    // configured ids (coordinatorIds / KEYSHARD_COORDINATOR_IDS) refuse it.
    const fake = await fakeServer('KeyService', await rogue('coordinator-9', 'component'));
    const pinned = new KeyshardClient({ address: fake.address, tls: app, coordinatorIds: cluster.layout.coordinatorIds, retry: { maxAttempts: 1 } });
    try {
      await rejectsWith(pinned.encrypt(KEY, Buffer.from('x'), {}, { timeoutMs: 3_000 }), 'UNAVAILABLE', /expected a coordinator replica \(CN "coordinator-1", .*presented CN "coordinator-9"/);
      assert.deepEqual(fake.calls, []);
    } finally {
      pinned.close();
      fake.close();
    }
    // The real replica still answers through the same pinned client settings.
    const genuine = cluster.client(APP);
    assert.equal((await genuine.encrypt(KEY, Buffer.from('ok'))).key_version, 1);
    genuine.close();
  });

  it("the coordinator's etcd client pins etcd by name (etcd.serverName): another component's certificate is refused", async () => {
    const tryAt = async (tls: TlsMaterial) => {
      const fake = await fakeServer('KeyService', tls); // any gRPC server: it is never asked anything etcd knows
      const etcd = connectEtcd({ endpoints: [`https://${fake.address}`], tls: tlsOf('coordinator-1'), serverName: 'etcd', callTimeoutMs: 3_000 });
      try {
        return await etcd.get('pins').string().then(() => 'answered', (e: Error) => e.message);
      } finally {
        etcd.close();
        fake.close();
      }
    };
    // Before: the name checked was `localhost`, which every dev certificate carries, and the fake was talked to.
    assert.match(await tryAt(tlsOf('custodian-1')), /altnames/, 'a custodian certificate does not pass for etcd');
    assert.match(await tryAt(tlsOf('audit-sink')), /altnames/, 'nor the sink');
    // etcd's own certificate passes the name check (the fake then has no etcd service to offer).
    assert.doesNotMatch(await tryAt(tlsOf('etcd')), /altnames/);
  });

  // Last: after these the producers distrust the sink until they are restarted.
  it('acknowledgements whose checkpoint is not signed by the sink key, or roll the log back, are refused, spooled and alerted', async () => {
    // The sink's own TLS certificate (a stolen TLS key) but not its checkpoint key.
    const noKey = new FakeAuditSink();
    const requestId = randomUUID();
    await withFakeSink(noKey, tlsOf('audit-sink'), async () => {
      await app.encrypt(KEY, Buffer.from('spooled, not acknowledged'), {}, { requestId });
      await refused(() => admin.createKey(`pins-nokey-${randomUUID().slice(0, 8)}`), /audit sink not trusted: checkpoint of size \d+: no public key with id/);
      await refused(() => operator('custodian-1').pending(), /audit sink not trusted/);
      assert.ok(noKey.events.length > 0, 'the fake passes TLS (it holds the sink certificate) and gets events');
    });
    for (const name of ['coordinator-1', 'custodian-1']) {
      const alert = logOf(name).split('\n').find((l) => l.includes('"alert":"audit_sink_checkpoint_rejected"'));
      assert.ok(alert, `${name} raised the alert`);
      assert.match(alert, /no public key with id/);
    }
    // The real sink is back, but what the fake acknowledged is not counted as stored and the
    // coordinator trusts nothing more until it is restarted: the Encrypt event stays spooled.
    await rejectsWith(admin.createKey(`pins-after-${randomUUID().slice(0, 8)}`), 'UNAVAILABLE', /not trusted/);
    assert.equal(await stored('keys.Encrypt', requestId), undefined, 'not shipped to a sink it no longer trusts');

    // The sink's TLS certificate and its real checkpoint key, over an older, shorter log.
    const rollback = new FakeAuditSink({ signingKey: createPrivateKey(readFileSync(cluster.layout.sinkCheckpointKey)) });
    await withFakeSink(rollback, tlsOf('audit-sink'), async () => {
      await refused(() => operator('custodian-3').pending(), /audit sink not trusted: the log was rolled back/);
    });
    assert.match(logOf('custodian-3'), /"alert":"audit_sink_checkpoint_rejected".*rolled back/);

    // A restart re-anchors on the real sink, and the spool ships what it kept.
    await cluster.process('coordinator-1').stop();
    await cluster.start(['coordinator-1']);
    assert.equal(await waitFor('the spooled Encrypt event in the real sink after restart', () => stored('keys.Encrypt', requestId), 30_000), true);
  });
});
