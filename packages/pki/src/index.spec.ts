/**
 * Dev PKI profiles (RFC 5280 §4.2.1.12 extendedKeyUsage): principals get client-only
 * certificates, components the usages they need, server-capable ones a DNS name equal to their
 * CN; a certificate issued before profiles (serverAuth + clientAuth for everyone) is issued again.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { issueCert } from './index.ts';

const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const cert = (file: string) => new X509Certificate(readFileSync(file));

describe('dev PKI profiles', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-pki-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('client: clientAuth only, no server names; server and component: serverAuth, DNS:<cn>', async () => {
    const app = cert((await issueCert(dir, 'app', 'app', 'client')).cert);
    assert.deepEqual(app.keyUsage, [CLIENT_AUTH]);
    assert.equal(app.subjectAltName, undefined);
    const etcd = cert((await issueCert(dir, 'etcd', 'etcd', 'server')).cert);
    assert.deepEqual(etcd.keyUsage, [SERVER_AUTH]);
    assert.equal(etcd.subjectAltName, 'IP Address:127.0.0.1, DNS:localhost, DNS:etcd');
    const sink = cert((await issueCert(dir, 'audit-sink')).cert);
    assert.deepEqual([...sink.keyUsage].sort(), [SERVER_AUTH, CLIENT_AUTH].sort(), 'component is the default');
    assert.match(sink.subjectAltName!, /DNS:audit-sink/);
    assert.ok(sink.checkIssued(new X509Certificate(readFileSync(path.join(dir, 'ca.pem')))));
  });

  it('keeps a certificate of the right profile and re-issues one of another profile', async () => {
    const files = await issueCert(dir, 'admin', 'admin', 'client');
    const first = readFileSync(files.cert, 'utf8');
    await issueCert(dir, 'admin', 'admin', 'client');
    assert.equal(readFileSync(files.cert, 'utf8'), first, 'same profile: kept');
    // As every certificate was before profiles: both usages, server names.
    await issueCert(dir, 'old-admin', 'admin', 'component');
    writeFileSync(files.cert, readFileSync(path.join(dir, 'old-admin.pem')));
    writeFileSync(files.key, readFileSync(path.join(dir, 'old-admin-key.pem')));
    assert.deepEqual([...cert(files.cert).keyUsage].sort(), [SERVER_AUTH, CLIENT_AUTH].sort());
    await issueCert(dir, 'admin', 'admin', 'client');
    assert.deepEqual(cert(files.cert).keyUsage, [CLIENT_AUTH], 're-issued client-only');
    assert.equal(cert(files.cert).subject, 'CN=admin');
  });

  it('names no DNS SAN a CN cannot be', async () => {
    const c = cert((await issueCert(dir, 'odd', 'odd_name:1', 'component')).cert);
    assert.equal(c.subjectAltName, 'IP Address:127.0.0.1, DNS:localhost');
  });
});
