/**
 * `keyshard audit verify`'s trust roots come from its flags only: none given, one inside the log
 * folder, a private key, a quorum no witness list can meet — each a usage error (exit 2) naming
 * the flag, on one line, before anything is verified.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { InvalidArgumentError } from 'commander';
import { keyIdOf, trustFileText, vkeyOf, witnessName } from '@keyshard/audit-log';
import { UsageError } from './output.ts';
import { TRUST_ROOTS_NEEDED, cosignedFromFlags, heldCheckpoint, maxAge, trustFromFlags, type VerifyFlags } from './audit-verify-flags.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'keyshard-verify-flags-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const logDir = path.join(dir, 'audit');
mkdirSync(path.join(logDir, 'keys'), { recursive: true });
const file = (name: string, text: string) => {
  const p = path.join(dir, name);
  writeFileSync(p, text);
  return p;
};
const sink = generateKeyPairSync('ed25519');
const sinkPem = sink.publicKey.export({ type: 'spki', format: 'pem' }).toString();
const w = generateKeyPairSync('ed25519');
const vkey = vkeyOf(witnessName('coordinator-1'), w.publicKey);
const sinkKey = file('sink.pub.pem', sinkPem);
const trustFile = file('trust.json', trustFileText([sinkPem], [vkey], 1));
const flags = (f: Partial<VerifyFlags>): VerifyFlags => ({ maxAge: 86_400, ...f });

const usage = (f: () => unknown, start: string, why: RegExp) =>
  assert.throws(f, (e) => {
    assert.ok(e instanceof UsageError, String(e));
    assert.ok(e.message.startsWith(start), e.message);
    assert.match(e.message, why);
    assert.ok(!e.message.includes('\n') && !e.message.includes('KEY-----'), e.message);
    return true;
  });

describe('audit verify flags', () => {
  it('reads the trust file, or --sink-key with --witness; --witness-quorum overrides', () => {
    const t = trustFromFlags(logDir, flags({ trust: trustFile }));
    assert.deepEqual([[...t.sinkKeys.keys()], t.witnesses.map((x) => x.name), t.witnessQuorum], [[keyIdOf(sink.publicKey)], [witnessName('coordinator-1')], 1]);
    const f = trustFromFlags(logDir, flags({ sinkKey: [sinkKey], witness: [vkey], witnessQuorum: 0 }));
    assert.deepEqual([f.sinkKeys.size, f.witnesses.length, f.witnessQuorum], [1, 1, 0]);
    assert.equal(trustFromFlags(logDir, flags({ sinkKey: [sinkKey], witnessQuorum: 0 })).witnesses.length, 0);
  });

  it('without a trust root: a usage error naming the flags', () => {
    usage(() => trustFromFlags(logDir, flags({})), 'audit verify needs the trust roots', /--trust FILE.*--sink-key FILE.*--witness VKEY/);
    assert.match(TRUST_ROOTS_NEEDED, /outside the log folder/);
  });

  it('refuses a trust file or sink key inside the log folder, through a symlink too', () => {
    const inside = path.join(logDir, 'keys', 'planted.pem');
    writeFileSync(inside, sinkPem);
    usage(() => trustFromFlags(logDir, flags({ sinkKey: [inside], witnessQuorum: 0 })), `--sink-key ${inside} is inside the log folder`, /must come from outside/);
    const trustInside = path.join(logDir, 'trust.json');
    writeFileSync(trustInside, trustFileText([sinkPem], [vkey], 1));
    usage(() => trustFromFlags(logDir, flags({ trust: trustInside })), `--trust ${trustInside} is inside`, /outside/);
    const link = path.join(dir, 'link.pem');
    symlinkSync(inside, link);
    usage(() => trustFromFlags(logDir, flags({ sinkKey: [link], witnessQuorum: 0 })), `--sink-key ${link} is inside`, /outside/);
    usage(() => trustFromFlags(path.join(logDir, 'audit.log'), flags({ trust: trustInside })), '--trust', /inside the log folder/);
  });

  it('refuses a wrong trust root naming its flag', () => {
    const priv = file('sink.pem', sink.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
    usage(() => trustFromFlags(logDir, flags({ sinkKey: [priv], witnessQuorum: 0 })), `--sink-key ${priv}`, /never its private key/);
    usage(() => trustFromFlags(logDir, flags({ sinkKey: [path.join(dir, 'missing.pem')], witnessQuorum: 0 })), '--sink-key', /no such file/);
    usage(() => trustFromFlags(logDir, flags({ trust: file('bad-trust.json', '{"sinkKeys":[]}') })), '--trust', /sinkKeys is empty/);
    usage(() => trustFromFlags(logDir, flags({ sinkKey: [sinkKey], witness: ['x+y'] })), '--witness', /not a witness verifier key/);
    usage(() => trustFromFlags(logDir, flags({ sinkKey: [sinkKey] })), '--witness-quorum 1', /needs at least 1 witness keys, 0 given \(the default is 1: give --witness VKEY, or --witness-quorum 0/);
    usage(() => trustFromFlags(logDir, flags({ trust: trustFile, witnessQuorum: 2 })), '--witness-quorum 2', /needs at least 2/);
  });

  it('--max-age takes a duration or none; --cosigned and --checkpoint files are checked', () => {
    assert.equal(maxAge('24h'), 86_400);
    assert.equal(maxAge('none'), 'none');
    assert.throws(() => maxAge('0'), InvalidArgumentError);
    assert.throws(() => maxAge('1y'), /or none/);
    usage(() => cosignedFromFlags([file('c.json', '{nope')]), '--cosigned', /line 1 is not JSON/);
    usage(() => cosignedFromFlags([path.join(dir, 'none.json')]), '--cosigned', /no such file/);
    assert.deepEqual(cosignedFromFlags([file('empty.json', '[]')]), [{ source: `--cosigned ${path.join(dir, 'empty.json')}`, items: [] }]);
    usage(() => heldCheckpoint(file('cp.json', 'x')), '--checkpoint', /not JSON/);
    assert.equal(heldCheckpoint(file('cp2.json', '{"tree_size":"12","root_hash":"ab","time":"t","key_id":"k","signature":"s"}')).tree_size, 12);
  });
});
