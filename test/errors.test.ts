/**
 * One error vocabulary (issue 16), against a real cluster of two coordinator replicas, etcd,
 * SoftHSM custodians and the audit sink: every refusal reaches the SDK as a typed KeyshardError
 * whose reason comes from the status details (google.rpc.ErrorInfo), and the CLI prints that
 * reason. Uninitialized is never reported as sealed — before init, and after destroy-cluster on
 * the replica that did not drive it too — and the SDK still moves an idempotent call off a
 * sealed replica, by its reason.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ADMIN, APP, DevCluster } from '@keyshard/devcluster';
import {
  CeremonyNotFoundError, InvalidCiphertextError, KeyDisabledError, KeyNotFoundError, KeyshardClient, PermissionDeniedError, SealedError, UninitializedError,
  WrongContextError, WrongKeyUsageError,
} from '@keyshard/client';
import { keyshard, readEnvFile } from './support/cli.ts';
import { waitFor } from './support/grpc.ts';

describe('error reasons end to end', { timeout: 300_000 }, () => {
  let dir: string;
  let cluster: DevCluster;
  let admin: KeyshardClient;
  let env: Record<string, string>;
  const clients: KeyshardClient[] = [];
  const [A, B] = ['coordinator-1', 'coordinator-2'];

  /** A client of the given replicas (their ids), as `principal`. */
  const clientOf = (ids: string[], principal = ADMIN) => {
    const c = new KeyshardClient({ address: ids.map((id) => cluster.coordinatorAddressOf(id)), tls: cluster.layout.certs[principal]!, coordinatorIds: cluster.layout.coordinatorIds, timeoutMs: 10_000 });
    clients.push(c);
    return c;
  };
  /** The CLI against one replica. */
  const cli = (id: string, args: string[], input?: string) => keyshard(args, { ...env, KEYSHARD_ADDR: cluster.coordinatorAddressOf(id) }, input);
  /** The CLI as the service principal app, which uses the keys (the admin administers them). */
  const appCli = (id: string, args: string[], input?: string) =>
    keyshard(args, { ...env, KEYSHARD_ADDR: cluster.coordinatorAddressOf(id), KEYSHARD_CERT: cluster.layout.certs[APP]!.cert, KEYSHARD_KEY: cluster.layout.certs[APP]!.key }, input);

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-errors-'));
    cluster = await DevCluster.create({
      dir, custodians: 3, threshold: 2, coordinators: 2,
      coordinatorOverrides: { custodianPollMs: 100 },
      // B never asks to join by itself: restarted, it stays sealed while A serves (the failover case).
      replicaOverrides: { [B]: { joinCheckSeconds: 3600 } },
    });
    await cluster.start();
    env = readEnvFile(cluster.envFile);
    admin = clientOf([A]);
  });

  after(async () => {
    for (const c of clients) c.close();
    await cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('before init: every replica answers UNINITIALIZED, not SEALED; status and the CLI say so', async () => {
    for (const id of [A, B]) {
      const e = await clientOf([id]).encrypt('k', Buffer.from('x')).catch((x: unknown) => x);
      assert.ok(e instanceof UninitializedError, `${id}: ${String(e)}`);
      assert.deepEqual([e.code, e.grpcCode, e.reason], ['FAILED_PRECONDITION', 9, 'UNINITIALIZED']);
      assert.ok(e.requestId, 'the server echoed the request id');
    }
    const s = await admin.status();
    assert.deepEqual([s.initialized, s.sealed], [false, true]);
    const shownA = (await cli(A, ['status'])).stdout;
    assert.match(shownA, /state\s+uninitialized/);
    assert.match(shownA, /^replica\s+\S+\s+\S+\s+uninitialized/m, 'replica lines say uninitialized too');
    assert.doesNotMatch(shownA, /\bsealed\b/, 'nothing calls an uninitialized cluster sealed');
    const refused = await cli(B, ['encrypt', '--key', 'k'], 'x');
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /^keyshard: UNINITIALIZED: .*keyshard init.*\n$/);
    const json = await cli(B, ['key', 'list', '--json']);
    assert.equal(json.code, 1);
    const parsed = JSON.parse(json.stderr) as Record<string, string>;
    assert.deepEqual([parsed.code, parsed.reason], ['FAILED_PRECONDITION', 'UNINITIALIZED']);
    assert.match(parsed.message!, /not initialized/);
  });

  it('key and ciphertext refusals carry their reason', async () => {
    await cluster.bootstrap();
    const app = clientOf([A], APP); // makes and uses the keys
    await app.createKey('docs');
    await app.createKey('signer', { type: 'ed25519' });
    const { ciphertext } = await app.encrypt('docs', Buffer.from('hello'), { tenant: 'acme' });

    await assert.rejects(app.encrypt('nope', Buffer.from('x')), (e: unknown) => e instanceof KeyNotFoundError && e.reason === 'KEY_NOT_FOUND' && e.code === 'NOT_FOUND');
    await assert.rejects(app.decrypt(ciphertext, { tenant: 'evil' }), (e: unknown) => e instanceof WrongContextError && e.reason === 'WRONG_CONTEXT');
    await assert.rejects(app.decrypt(Buffer.from('not a ciphertext at all'), {}), (e: unknown) => e instanceof InvalidCiphertextError && e.reason === 'INVALID_CIPHERTEXT');
    await assert.rejects(app.encrypt('signer', Buffer.from('x')), (e: unknown) => e instanceof WrongKeyUsageError && e.reason === 'WRONG_KEY_USAGE');
    await assert.rejects(admin.decrypt(ciphertext, { tenant: 'acme' }), (e: unknown) => e instanceof PermissionDeniedError && e.reason === 'KEY_POLICY_DENIED');
    await assert.rejects(clientOf([A], 'auditor').decrypt(ciphertext, { tenant: 'acme' }), (e: unknown) => e instanceof PermissionDeniedError && e.reason === 'NOT_AUTHORIZED');
    await assert.rejects(admin.getCeremony('cer-nothing'), (e: unknown) => e instanceof CeremonyNotFoundError && e.reason === 'CEREMONY_NOT_FOUND');

    await admin.disableKey('docs');
    const disabled = await app.encrypt('docs', Buffer.from('x')).catch((x: unknown) => x);
    assert.ok(disabled instanceof KeyDisabledError, String(disabled));
    assert.equal(disabled.reason, 'KEY_DISABLED');
    assert.equal(disabled.metadata.state, 'KEY_STATE_DISABLED');
    assert.match((await appCli(A, ['encrypt', '--key', 'docs'], 'x')).stderr, /^keyshard: KEY_DISABLED: /);
    await admin.enableKey('docs');

    // A batch item's error has its reason too.
    const batch = await app.decryptBatch([{ ciphertext, context: { tenant: 'acme' } }, { ciphertext, context: { tenant: 'evil' } }]);
    assert.equal(batch.results[0]!.result!.plaintext.toString(), 'hello');
    assert.equal(batch.results[1]!.error!.reason, 'WRONG_CONTEXT');
  });

  it('a sealed replica answers SEALED; the SDK moves idempotent calls to the unsealed one', async () => {
    await cluster.process(B).stop();
    await cluster.start([B]); // comes back sealed and, by its override, does not ask to join
    await waitFor('B registered as sealed', async () => ((await admin.status()).replicas.some((r) => r.id === B && r.sealed) ? true : undefined));
    const onlyB = clientOf([B]);
    await assert.rejects(onlyB.encrypt('docs', Buffer.from('x')), (e: unknown) => e instanceof SealedError && e.reason === 'SEALED');
    assert.match((await cli(B, ['encrypt', '--key', 'docs'], 'x')).stderr, /^keyshard: SEALED: /);
    const both = clientOf([B, A], APP); // B first: the first call finds it sealed
    for (let i = 0; i < 5; i++) assert.equal((await both.encrypt('docs', Buffer.from(`m${i}`))).key_id, (await admin.getKey('docs')).id);
    // A state change carries a request token (issue 18), so on B's SEALED it moves to A, which
    // creates the key once; a state change without a working replica still gets SEALED, typed.
    const created = await clientOf([B, A]).createKey('once-only');
    assert.equal((await admin.getKey('once-only')).id, created.id);
    await assert.rejects(clientOf([B]).createKey('never'), (e: unknown) => e instanceof SealedError && e.reason === 'SEALED');
    await assert.rejects(admin.getKey('never'), KeyNotFoundError);
    await admin.seal();
    await cluster.bootstrap(); // one unseal ceremony unseals both replicas
  });

  it('after destroy-cluster every replica — also the one that did not drive it — answers UNINITIALIZED, and status says uninitialized', async () => {
    await admin.seal();
    await assert.rejects(clientOf([B]).encrypt('docs', Buffer.from('x')), SealedError);
    await cluster.bootstrap();
    const destroyed = await cli(A, ['destroy-cluster', '--wait']);
    assert.equal(destroyed.code, 0, destroyed.stderr);
    for (const id of [A, B]) {
      const c = clientOf([id]);
      // B learns of the erased cluster record through its watch, within moments (SEALED until then, nothing else).
      const e = await waitFor(`${id} to answer other than SEALED`, async () => {
        const err = await c.encrypt('docs', Buffer.from('x')).then(() => 'answered', (x: unknown) => x);
        return err instanceof SealedError ? undefined : err;
      }, 5_000);
      assert.ok(e instanceof UninitializedError, `${id}: ${String(e)}`);
      assert.equal(e.reason, 'UNINITIALIZED');
      const s = await c.status();
      assert.deepEqual([s.initialized, s.sealed], [false, true]);
    }
    await assert.rejects(admin.startUnseal(), UninitializedError);
    const shownB = (await cli(B, ['status'])).stdout;
    assert.match(shownB, /state\s+uninitialized/);
    assert.match(shownB, /^replica\s+\S+\s+\S+\s+uninitialized/m, 'replica lines say uninitialized too');
    assert.doesNotMatch(shownB, /\bsealed\b/, 'nothing calls an uninitialized cluster sealed');
    assert.match((await cli(B, ['encrypt', '--key', 'docs'], 'x')).stderr, /^keyshard: UNINITIALIZED: /);
  });
});
