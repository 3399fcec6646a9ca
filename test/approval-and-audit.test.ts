/**
 * Custodians with the `manual` policy: nothing is released until an operator approves with
 * `keyshard custodian approve`; a denial is recorded with its reason. And with the audit sink
 * down, crypto calls continue through the coordinator's durable spool while admin operations
 * and ceremonies are refused (fail closed).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { APP, DevCluster, REPO_ROOT, operatorOf } from '@keyshard/devcluster';
import type { KeyshardClient } from '@keyshard/client';
import { observeFor, rejectsWith, waitFor } from './support/grpc.ts';

const run = promisify(execFile);

describe('manual approval and fail-closed audit', { timeout: 240_000 }, () => {
  let dir: string;
  let cluster: DevCluster;
  let client: KeyshardClient;
  /** The key's user; the admin (`client`) runs the ceremonies. */
  let user: KeyshardClient;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-approval-'));
    cluster = await DevCluster.create({ dir, custodians: 3, threshold: 2, approvalPolicy: 'manual' });
    await cluster.start();
    client = cluster.client();
    user = cluster.client(APP);
    await client.init(3, 2);
  });

  after(async () => {
    client?.close();
    user?.close();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  function operatorCli(custodianId: string, args: string[]) {
    const certs = cluster.layout.certs[operatorOf(custodianId)]!;
    return run(process.execPath, [path.join(REPO_ROOT, 'packages/cli/bin/keyshard.js'), 'custodian', ...args], {
      env: {
        ...process.env,
        KEYSHARD_CUSTODIAN_ADDR: cluster.custodianAddress(custodianId),
        KEYSHARD_CA: certs.ca,
        KEYSHARD_CUSTODIAN_CERT: certs.cert,
        KEYSHARD_CUSTODIAN_KEY: certs.key,
      },
    });
  }

  it('a seal cancels an unseal ceremony in progress; approving it later opens nothing', async () => {
    const c = await client.startUnseal();
    await waitFor('the proposal to reach custodian-1', async () => ((await operatorCli('custodian-1', ['pending'])).stdout.includes(c.id) ? true : undefined));
    await client.seal();
    assert.equal((await client.getCeremony(c.id)).state, 'CEREMONY_STATE_CANCELLED');
    await operatorCli('custodian-1', ['approve', c.id]);
    await waitFor('custodian-2 to see it', async () => ((await operatorCli('custodian-2', ['pending'])).stdout.includes(c.id) ? true : undefined)).catch(() => undefined);
    await operatorCli('custodian-2', ['approve', c.id]).catch(() => undefined);
    // Nothing to wait for: a cancelled ceremony is no longer polled. Watched for 1 s (the
    // coordinator polls custodians every 50 ms) that the approvals release nothing.
    await observeFor('the cancelled ceremony, approved afterwards: the replica stays sealed and the ceremony counts no approval', 1_000, async () => {
      assert.equal((await client.status()).sealed, true);
      assert.equal((await client.getCeremony(c.id)).approved_by.length, 0);
    });
  });

  it('nothing is released until operators approve; a denial is recorded with its reason', async () => {
    let c = await client.startUnseal();
    const pending = await waitFor('the proposal to reach custodian-1', async () => {
      const { stdout } = await operatorCli('custodian-1', ['pending']);
      return stdout.includes(c.id) ? stdout : undefined;
    });
    assert.match(pending, /unseal\s+by admin/);
    const shown = JSON.parse((await operatorCli('custodian-1', ['show', c.id])).stdout);
    assert.equal(shown.hash, c.hash);
    assert.equal(shown.cluster_id, c.cluster_id);
    assert.deepEqual(shown.recipients.map((r: { coordinator_id: string }) => r.coordinator_id), ['coordinator-1']);

    // Watched for 1 s (20 of the coordinator's 50 ms custodian polls) with no operator approving: nothing is released.
    await observeFor('the unseal proposal before any approval: open, no share released, still sealed', 1_000, async () => {
      c = await client.getCeremony(c.id);
      assert.equal(c.state, 'CEREMONY_STATE_OPEN');
      assert.equal(c.approved_by.length, 0, 'no share without approval');
      assert.equal((await client.status()).sealed, true);
    });

    await waitFor('custodian-3 to see it', async () => ((await operatorCli('custodian-3', ['pending'])).stdout.includes(c.id) ? true : undefined));
    assert.match((await operatorCli('custodian-3', ['deny', c.id, '--reason', 'not during the change freeze'])).stdout, /denied/);
    assert.match((await operatorCli('custodian-1', ['approve', c.id])).stdout, /released/);
    const again = await operatorCli('custodian-1', ['approve', c.id]).catch((e) => e);
    assert.match(again.stderr, /CEREMONY_CLOSED: .*already released/);

    c = await waitFor('custodian-1 accepted', async () => {
      const x = await client.getCeremony(c.id);
      return x.approved_by.includes('custodian-1') && x.denied_by.includes('custodian-3') ? x : undefined;
    });
    assert.equal(c.state, 'CEREMONY_STATE_OPEN', 'one approval of two is not enough');
    await operatorCli('custodian-2', ['approve', c.id]);
    c = await waitFor('completion', async () => {
      const x = await client.getCeremony(c.id);
      return x.state !== 'CEREMONY_STATE_OPEN' ? x : undefined;
    });
    assert.equal(c.state, 'CEREMONY_STATE_COMPLETED', c.error);
    assert.deepEqual([...c.approved_by].sort(), ['custodian-1', 'custodian-2']);
    const audit = readFileSync(cluster.auditLogFile, 'utf8');
    const lines = audit.split('\n');
    assert.ok(lines.some((l) => l.includes('"operation":"custodian.Deny"') && l.includes(`"ceremony_id":"${c.id}"`)));
    assert.ok(lines.some((l) => l.includes('"operation":"ceremony.unseal.denied"') && l.includes('"reason":"not during the change freeze"')));
  });

  it('an operator certificate of one custodian cannot approve on another', async () => {
    const certs = cluster.layout.certs[operatorOf('custodian-1')]!;
    const env = { ...process.env, KEYSHARD_CUSTODIAN_ADDR: cluster.custodianAddress('custodian-2'), KEYSHARD_CA: certs.ca, KEYSHARD_CUSTODIAN_CERT: certs.cert, KEYSHARD_CUSTODIAN_KEY: certs.key };
    const cli = [path.join(REPO_ROOT, 'packages/cli/bin/keyshard.js'), 'custodian'];
    // By default the operator's CLI expects the custodian its certificate is named for: it refuses custodian-2 itself.
    const pinned = await run(process.execPath, [...cli, 'pending'], { env }).catch((e) => e);
    assert.match(pinned.stderr, /UNAVAILABLE: .*server identity check failed at .*expected custodian custodian-1 .*presented CN "custodian-2"/);
    // Told to talk to custodian-2, it gets there, and custodian-2 refuses another custodian's operator.
    const res = await run(process.execPath, [...cli, '--custodian-server-id', 'custodian-2', 'pending'], { env }).catch((e) => e);
    assert.match(res.stderr, /NOT_AUTHORIZED/);
  });

  it('with the audit sink down: crypto calls go on through the durable spool, admin and ceremonies fail closed', async () => {
    await user.createKey('audited');
    const ct = (await user.encrypt('audited', Buffer.from('before the outage'))).ciphertext;
    await cluster.process('audit-sink').kill();
    const during = await user.encrypt('audited', Buffer.from('during the outage'), {}, { requestId: 'req-during-outage' });
    assert.equal((await user.decrypt(ct, {}, { requestId: 'req-decrypt-during-outage' })).plaintext.toString(), 'before the outage');
    await rejectsWith(user.createKey('unaudited'), 'UNAVAILABLE', 'AUDIT_UNAVAILABLE');
    await rejectsWith(client.seal(), 'UNAVAILABLE', 'AUDIT_UNAVAILABLE');
    await rejectsWith(client.startUnseal(), 'UNAVAILABLE', 'AUDIT_UNAVAILABLE');
    await cluster.start(['audit-sink']);
    assert.equal((await waitFor('status', () => client.status())).sealed, false, 'the unaudited seal did not happen');
    const { keys } = await client.listKeys();
    assert.deepEqual(keys.map((k) => k.name), ['audited'], 'the unaudited CreateKey did not happen');
    assert.equal((await user.decrypt(during.ciphertext)).plaintext.toString(), 'during the outage');
    // The spooled events reach the sink once it is back, each exactly once.
    const records = await waitFor('spooled events in the sink', async () => {
      const rs = readFileSync(cluster.auditLogFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l).event);
      return rs.some((e) => e.request_id === 'req-decrypt-during-outage') ? rs : undefined;
    });
    assert.equal(records.filter((e) => e.request_id === 'req-during-outage' && e.operation === 'keys.Encrypt').length, 1);
    assert.equal(new Set(records.map((e) => e.id)).size, records.length, 'no event stored twice');
  });
});
