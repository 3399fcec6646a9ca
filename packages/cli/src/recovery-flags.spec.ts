/** --recovery-public-key / --recovery-private-key / --transport-public-key: the wrong half, a non-RSA or a small key is a usage error (exit 2) naming the flag, never quoting the file. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { UsageError } from './output.ts';
import { readRecoveryPrivateKey, readRecoveryPublicKey, readTransportPublicKey } from './parse.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'keyshard-recovery-flags-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const file = (name: string, text: string) => {
  const p = path.join(dir, name);
  writeFileSync(p, text);
  return p;
};
const rsa = generateKeyPairSync('rsa', { modulusLength: 3072 });
const pub = file('pub.pem', rsa.publicKey.export({ type: 'spki', format: 'pem' }).toString());
const priv = file('priv.pem', rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
const small = generateKeyPairSync('rsa', { modulusLength: 2048 });
const smallPub = file('small.pub.pem', small.publicKey.export({ type: 'spki', format: 'pem' }).toString());
const smallPriv = file('small.pem', small.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const ecPub = file('ec.pub.pem', ec.publicKey.export({ type: 'spki', format: 'pem' }).toString());
const ecPriv = file('ec.pem', ec.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
const garbage = file('garbage.pem', 'not a key\n');

const usage = (f: () => unknown, flag: string, why: RegExp) =>
  assert.throws(f, (e) => {
    assert.ok(e instanceof UsageError, String(e));
    assert.ok(e.message.startsWith(`${flag} `), e.message);
    assert.match(e.message, why);
    assert.ok(!e.message.includes('\n') && !e.message.includes('KEY-----'), e.message);
    return true;
  });

describe('recovery key flags', () => {
  it('--recovery-public-key takes an RSA public key of >= 3072 bits only', () => {
    assert.match(readRecoveryPublicKey('--recovery-public-key', pub), /^-----BEGIN PUBLIC KEY-----/);
    usage(() => readRecoveryPublicKey('--recovery-public-key', priv), '--recovery-public-key', /is a private key/);
    usage(() => readRecoveryPublicKey('--recovery-public-key', smallPub), '--recovery-public-key', /at least 3072 bits \(got 2048\)/);
    usage(() => readRecoveryPublicKey('--recovery-public-key', ecPub), '--recovery-public-key', /RSA public key/);
    usage(() => readRecoveryPublicKey('--recovery-public-key', garbage), '--recovery-public-key', /not a public key PEM/);
    usage(() => readRecoveryPublicKey('--recovery-public-key', path.join(dir, 'missing')), '--recovery-public-key', /no such file/);
  });
  it('--recovery-private-key takes an RSA private key of >= 3072 bits only', () => {
    assert.match(readRecoveryPrivateKey('--recovery-private-key', priv), /^-----BEGIN PRIVATE KEY-----/);
    usage(() => readRecoveryPrivateKey('--recovery-private-key', pub), '--recovery-private-key', /holds a public key/);
    usage(() => readRecoveryPrivateKey('--recovery-private-key', smallPriv), '--recovery-private-key', /at least 3072 bits \(got 2048\)/);
    usage(() => readRecoveryPrivateKey('--recovery-private-key', ecPriv), '--recovery-private-key', /RSA private key/);
    usage(() => readRecoveryPrivateKey('--recovery-private-key', garbage), '--recovery-private-key', /not a private key PEM/);
  });
  it('--transport-public-key takes an RSA public key of 2048..8192 bits only: a private key never leaves this machine', () => {
    assert.match(readTransportPublicKey('--transport-public-key', smallPub), /^-----BEGIN PUBLIC KEY-----/);
    usage(() => readTransportPublicKey('--transport-public-key', smallPriv), '--transport-public-key', /is a private key/);
    usage(() => readTransportPublicKey('--transport-public-key', priv), '--transport-public-key', /is a private key/);
    usage(() => readTransportPublicKey('--transport-public-key', ecPub), '--transport-public-key', /RSA public key/);
    usage(() => readTransportPublicKey('--transport-public-key', garbage), '--transport-public-key', /not a public key PEM/);
  });
});
