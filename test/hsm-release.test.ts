/**
 * HSM-enforced share release against a real dev cluster (issue 14, attack 3 and its "Bad input"):
 * a holder of a custodian token's user PIN cannot get the share out of the token — C_WrapKey to
 * an RSA key they import or an AES key they generate is refused by SoftHSM (the share is
 * CKA_WRAP_WITH_TRUSTED), also after C_CopyObject / C_SetAttributeValue attempts; a recipient
 * whose transport key the custodian's security officer did not enroll gets nothing; enrolling
 * with a wrong SO PIN is refused (PERMISSION_DENIED "SO login failed", the PIN never echoed) and
 * audited; a rotation enrolls the new key and revokes the old.
 * The same attacks against the template used before this change succeed (packages/hsm/src/token.spec.ts).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DevCluster, operatorOf, transportPublicKeyPem } from '@keyshard/devcluster';
import { SOFTHSM_MODULE } from '@keyshard/hsm';
import { tryToExfiltrateShareForTest } from '../packages/hsm/src/testing.ts';
import { keyshardProto, makeClient, readTls, unaryCall } from '@keyshard/rpc';
import { newCeremony, newEphemeralKeyPair } from '@keyshard/crypto';
import { keyshard, readEnvFile } from './support/cli.ts';
import { rejectsWith } from './support/grpc.ts';

describe('HSM-enforced share release', { timeout: 300_000 }, () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'keyshard-hsm-release-'));
  let cluster: DevCluster;
  let clusterId: string;
  let env: Record<string, string>;
  const custodianEnv = (id: string) => {
    const cert = cluster.layout.certs[operatorOf(id)]!;
    return { ...env, KEYSHARD_CUSTODIAN_ADDR: cluster.custodianAddress(id), KEYSHARD_CUSTODIAN_CERT: cert.cert, KEYSHARD_CUSTODIAN_KEY: cert.key };
  };
  const auditEvents = () => readFileSync(cluster.auditLogFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l).event as Record<string, any>);

  before(async () => {
    cluster = await DevCluster.create({ dir, custodians: 3, threshold: 2 });
    await cluster.start();
    await cluster.bootstrap(); // init + unseal: releases go through the enrolled transport keys
    const client = cluster.client();
    clusterId = (await client.status()).cluster_id;
    client.close();
    env = readEnvFile(cluster.envFile);
  });

  after(async () => {
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("with a running custodian's token and its user PIN, no wrap-out, copy or re-flag gets the share", () => {
    // The attacker's own PKCS#11 application on the custodian host, with the token's user PIN.
    process.env.SOFTHSM2_CONF = cluster.layout.softhsmConf['custodian-1'];
    const cfg = { modulePath: SOFTHSM_MODULE, tokenLabel: 'custodian-1', pin: readFileSync(cluster.layout.pinFile['custodian-1']!, 'utf8').trim(), oaepHash: 'sha1' as const };
    const outcomes = tryToExfiltrateShareForTest(cfg, clusterId);
    assert.ok(outcomes.length >= 12, 'every attack was tried');
    for (const o of outcomes) {
      assert.match(o.outcome, /^refused CKR_/, `${o.attack}: ${o.outcome}`);
      assert.equal(o.share, undefined, o.attack);
    }
    const by = (re: RegExp) => outcomes.find((o) => re.test(o.attack))!.outcome;
    assert.equal(by(/imports$/), 'refused CKR_KEY_NOT_WRAPPABLE');
    assert.equal(by(/AES key the attacker generates/), 'refused CKR_KEY_NOT_WRAPPABLE');
    assert.equal(by(/^C_CopyObject \{"wrapWithTrusted":false\}/), 'refused CKR_ATTRIBUTE_READ_ONLY');
    assert.equal(by(/^C_SetAttributeValue \{"wrapWithTrusted":false\}/), 'refused CKR_ACTION_PROHIBITED');
    assert.equal(by(/^C_CreateObject of an RSA public key with CKA_TRUSTED/), 'refused CKR_ATTRIBUTE_READ_ONLY');
  });

  it('a recipient whose transport key is not enrolled gets no share: every custodian refuses, naming the coordinator', async () => {
    // A coordinator certificate, asking for the shares for itself but to a key of the caller's choosing.
    const attackerKey = generateKeyPairSync('rsa', { modulusLength: 3072 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const asCoordinator = (custodian: string) => makeClient(keyshardProto().CustodianService, cluster.custodianAddress(custodian), readTls(cluster.layout.certs['coordinator-1']!));
    const c = newCeremony({
      operation: 'unseal', clusterId, initiator: 'admin', ttlSeconds: 60, threshold: 2, parameters: { generation: '1' },
      recipients: [{ coordinator_id: 'coordinator-1', public_key_pem: attackerKey, ephemeral_public_key_pem: newEphemeralKeyPair().publicKeyPem }],
    });
    for (const id of cluster.custodianIds) {
      const link = asCoordinator(id);
      try {
        await rejectsWith(unaryCall(link, 'ProposeCeremony', { ceremony: c }), 'PERMISSION_DENIED', /coordinator coordinator-1 has no transport key enrolled/);
        // Nothing was recorded, nothing released.
        await rejectsWith(unaryCall(link, 'GetRelease', { id: c.id }), 'NOT_FOUND');
      } finally {
        link.close();
      }
    }
    const refusals = auditEvents().filter((e) => e.operation === 'custodian.ProposeCeremony' && e.code === 'PERMISSION_DENIED');
    assert.equal(new Set(refusals.map((e) => e.source)).size, 3, 'each custodian audited its refusal');
  });

  it('enrollment with a wrong SO PIN is refused and audited; the right PIN rotates a key (enroll new, revoke old)', async () => {
    const wrongPin = 'not-the-so-pin-7731';
    const wrongFile = path.join(dir, 'wrong-so-pin');
    writeFileSync(wrongFile, wrongPin, { mode: 0o600 });
    const rotated = generateKeyPairSync('rsa', { modulusLength: 3072 });
    const newKeyFile = path.join(dir, 'coordinator-1.new.pub.pem');
    writeFileSync(newKeyFile, rotated.publicKey.export({ type: 'spki', format: 'pem' }));
    const oldKeyFile = path.join(dir, 'coordinator-1.pub.pem');
    writeFileSync(oldKeyFile, transportPublicKeyPem(cluster.layout, 'coordinator-1'));
    const ce = custodianEnv('custodian-2');

    const refused = await keyshard(['custodian', 'enroll', '--coordinator', 'coordinator-1', '--transport-public-key', newKeyFile, '--so-pin-file', wrongFile], ce);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /NOT_AUTHORIZED: SO login failed/);
    assert.ok(!refused.stderr.includes(wrongPin) && !refused.stdout.includes(wrongPin), 'the PIN is never echoed');
    const denied = auditEvents().filter((e) => e.operation === 'custodian.EnrollTransportKey' && e.code === 'PERMISSION_DENIED');
    assert.equal(denied.length, 1, 'the refused enrollment is audited');
    assert.equal(denied[0]!.principal, operatorOf('custodian-2'));
    assert.equal(denied[0]!.details.coordinator_id, 'coordinator-1');
    assert.ok(!readFileSync(cluster.auditLogFile, 'utf8').includes(wrongPin), 'no PIN in the audit log');
    const listed = await keyshard(['custodian', 'trusted-keys', '--json'], ce);
    assert.equal(listed.code, 0, listed.stderr);
    assert.equal(JSON.parse(listed.stdout).keys.filter((k: { name: string }) => k.name === 'coordinator-1').length, 1, 'nothing enrolled');

    // A coordinator certificate may not enroll anything.
    const asCoordinator = makeClient(keyshardProto().CustodianService, cluster.custodianAddress('custodian-2'), readTls(cluster.layout.certs['coordinator-1']!));
    await rejectsWith(unaryCall(asCoordinator, 'EnrollTransportKey', { coordinator_id: 'coordinator-1', public_key_pem: readFileSync(newKeyFile, 'utf8'), so_pin: wrongPin }), 'PERMISSION_DENIED', /may not call EnrollTransportKey/);
    asCoordinator.close();
    // Unknown coordinator ids are refused before the SO logs in.
    const soPinFile = cluster.layout.soPinFile['custodian-2']!;
    const stranger = await keyshard(['custodian', 'enroll', '--coordinator', 'rogue', '--transport-public-key', newKeyFile, '--so-pin-file', soPinFile], ce);
    assert.match(stranger.stderr, /FAILED_PRECONDITION: coordinator rogue is not one this custodian serves/);

    // Rotation: the new key beside the old, then the old revoked.
    const enrolled = await keyshard(['custodian', 'enroll', '--coordinator', 'coordinator-1', '--transport-public-key', newKeyFile, '--so-pin-file', soPinFile, '--json'], ce);
    assert.equal(enrolled.code, 0, enrolled.stderr);
    assert.equal(JSON.parse(enrolled.stdout).already_enrolled, false);
    const revoked = await keyshard(['custodian', 'revoke', '--coordinator', 'coordinator-1', '--transport-public-key', oldKeyFile, '--so-pin-file', soPinFile, '--json'], ce);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.equal(JSON.parse(revoked.stdout).revoked, 1);
    const after = JSON.parse((await keyshard(['custodian', 'trusted-keys', '--json'], ce)).stdout).keys.filter((k: { name: string }) => k.name === 'coordinator-1');
    assert.deepEqual(after.map((k: { public_key_pem: string }) => k.public_key_pem), [readFileSync(newKeyFile, 'utf8')]);
    const ok = auditEvents().filter((e) => ['custodian.EnrollTransportKey', 'custodian.RevokeTransportKey'].includes(e.operation) && e.result === 'ok');
    assert.ok(ok.some((e) => e.operation === 'custodian.RevokeTransportKey' && e.details.revoked === '1'));

    // custodian-2 no longer releases to coordinator-1's old key; custodian-3 still does.
    const withOldKey = newCeremony({
      operation: 'unseal', clusterId, initiator: 'admin', ttlSeconds: 60, threshold: 2, parameters: { generation: '1' },
      recipients: [{ coordinator_id: 'coordinator-1', public_key_pem: readFileSync(oldKeyFile, 'utf8'), ephemeral_public_key_pem: newEphemeralKeyPair().publicKeyPem }],
    });
    const link = (id: string) => makeClient(keyshardProto().CustodianService, cluster.custodianAddress(id), readTls(cluster.layout.certs['coordinator-1']!));
    const c2 = link('custodian-2');
    const c3 = link('custodian-3');
    try {
      await rejectsWith(unaryCall(c2, 'ProposeCeremony', { ceremony: withOldKey }), 'PERMISSION_DENIED', /coordinator coordinator-1 has no transport key enrolled/);
      const released = await unaryCall(c3, 'ProposeCeremony', { ceremony: withOldKey });
      assert.equal(released.status, 'released');
      assert.equal(released.releases.length, 1);
    } finally {
      c2.close();
      c3.close();
    }
    // Put the real key back (the SO enrolls it again) for whatever runs next.
    assert.equal(await cluster.enrollTransportKeys('custodian-2'), 1);
  });
});
