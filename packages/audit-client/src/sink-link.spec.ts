/** The audit sink pin in producers' configs: validated at start-up with messages naming the field and file. */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigError, parseConfig, z } from '@keyshard/config';
import { keyIdOf } from '@keyshard/audit-log';
import { auditSinkPinFields, sinkCheckpointKeys } from './sink-link.ts';

describe('audit sink pin config', () => {
  let dir: string;
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const schema = z.object({ audit: z.object({ address: z.string(), ...auditSinkPinFields }) });

  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'keyshard-sink-pin-'));
    writeFileSync(path.join(dir, 'sink.pub'), publicKey.export({ type: 'spki', format: 'pem' }));
    writeFileSync(path.join(dir, 'sink.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
    writeFileSync(path.join(dir, 'rsa.pub'), generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('needs at least one checkpoint public key and defaults the sink id to audit-sink', () => {
    assert.throws(() => parseConfig(schema, { audit: { address: 'sink:7300' } }), /audit\.checkpointPublicKeys/);
    assert.throws(() => parseConfig(schema, { audit: { address: 'sink:7300', checkpointPublicKeys: [] } }), /audit sink checkpoint public key/);
    const cfg = parseConfig(schema, { audit: { address: 'sink:7300', checkpointPublicKeys: ['k.pub'] } });
    assert.equal(cfg.audit.serverId, 'audit-sink');
  });

  it('loads Ed25519 public keys by id; refuses a missing file, a private key and another key type', () => {
    assert.deepEqual([...sinkCheckpointKeys([path.join(dir, 'sink.pub')]).keys()], [keyIdOf(publicKey)]);
    const refuses = (file: string, why: RegExp) =>
      assert.throws(() => sinkCheckpointKeys([path.join(dir, file)]), (e: unknown) => e instanceof ConfigError && /audit\.checkpointPublicKeys/.test(e.message) && why.test(e.message));
    refuses('missing.pub', /cannot read .*missing\.pub: ENOENT/);
    refuses('sink.pem', /not a PEM public key .*never its private key/);
    refuses('rsa.pub', /checkpoint keys are Ed25519/);
  });
});
