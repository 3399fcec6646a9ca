/**
 * The offline verifier trusts nothing in the log folder (issue 17): real log directories are
 * written here with the log's own writer functions (record lines, signed checkpoints, cosigned
 * lines, as the sink writes them), then tampered with as an attacker who controls the folder
 * would — and, where it matters, as the sink host itself, who also holds the sink key. Each
 * tampering is BAD with the index of the first record it touched, or the reason no record is
 * vouched for.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { canonicalJson } from '@keyshard/crypto';
import { keyIdOf, signCheckpoint, type SignedCheckpoint } from './checkpoint.ts';
import { checkpointNote, cosign, parseVkey, vkeyOf, witnessName, type CosignedCheckpoint } from './cosignature.ts';
import { CHECKPOINTS_FILE, COSIGNED_FILE, KEYS_DIR, SEGMENT_DIR, checkpointLine, cosignedLine, segmentName } from './log-dir.ts';
import { MerkleTree, leafHash } from './merkle.ts';
import { encodeEntry, encodeRecords } from './record-format.ts';
import type { TrustRoots } from './trust.ts';
import { verifyLogDir, type VerifyOptions } from './verify.ts';

const root = mkdtempSync(path.join(os.tmpdir(), 'audit-verify-'));
after(() => rmSync(root, { recursive: true, force: true }));
let dirs = 0;

const pem = (k: KeyObject) => k.export({ type: 'spki', format: 'pem' }).toString();
const sinkPair = generateKeyPairSync('ed25519');
const SINK_ID = keyIdOf(sinkPair.publicKey);
const witnesses = ['coordinator-1', 'coordinator-2'].map((cn) => ({ name: witnessName(cn), ...generateKeyPairSync('ed25519') }));
const trust = (witnessQuorum = 1, sinkKey = sinkPair.publicKey): TrustRoots => ({
  sinkKeys: new Map([[keyIdOf(sinkKey), sinkKey]]),
  witnesses: witnesses.map((w) => parseVkey(vkeyOf(w.name, w.publicKey))),
  witnessQuorum,
});
const T0 = Date.parse('2026-12-06T10:00:00Z');
const NOW = new Date(T0 + 3600_000);

/** A log directory as the sink lays it out, written record by record; checkpoints and cosignatures on demand. */
class TestLog {
  readonly dir = path.join(root, `log-${++dirs}`);
  readonly events: Record<string, string>[] = [];
  readonly checkpoints: SignedCheckpoint[] = [];
  readonly cosigned: CosignedCheckpoint[] = [];

  constructor(private readonly signer = sinkPair.privateKey) {
    mkdirSync(path.join(this.dir, SEGMENT_DIR), { recursive: true });
    mkdirSync(path.join(this.dir, KEYS_DIR));
    writeFileSync(path.join(this.dir, KEYS_DIR, `${SINK_ID}.pem`), pem(sinkPair.publicKey));
    this.checkpoint(); // the sink writes a checkpoint of its (empty) tree when it opens a log
  }

  append(n: number): this {
    for (let i = 0; i < n; i++) {
      const k = this.events.length;
      this.events.push({ id: `e${k}`, time: new Date(T0 + k * 1000).toISOString(), operation: 'keys.Encrypt', principal: 'app', result: 'ok' });
    }
    this.rewrite();
    return this;
  }

  /** Writes the segment file from `events` with recomputed leaves (what an editor who knows the format does). */
  rewrite(events = this.events): void {
    writeFileSync(path.join(this.dir, SEGMENT_DIR, segmentName(0)), encodeRecords(0, events.map((e) => encodeEntry(e))));
  }

  tree(events = this.events): MerkleTree {
    const t = new MerkleTree();
    for (const e of events) t.appendLeafHash(leafHash(canonicalJson(e)));
    return t;
  }

  checkpoint(at = this.events.length, key = this.signer, keyId = SINK_ID): SignedCheckpoint {
    const c = signCheckpoint(key, keyId, at, this.tree().root(at), new Date(T0 + this.checkpoints.length * 10_000));
    this.checkpoints.push(c);
    appendFileSync(path.join(this.dir, CHECKPOINTS_FILE), checkpointLine(c));
    return c;
  }

  /** A witness's cosignature of the newest checkpoint, kept by the auditor and appended to cosigned.log as the sink does. */
  cosign(w: (typeof witnesses)[number], cp = this.checkpoints.at(-1)!, publish = true): CosignedCheckpoint {
    const note = checkpointNote(cp);
    const c = { checkpoint: cp, note, cosignatures: [cosign(w.privateKey, w.name, note, Math.floor(Date.parse(cp.time) / 1000) + 1)] };
    this.cosigned.push(c);
    if (publish) appendFileSync(path.join(this.dir, COSIGNED_FILE), cosignedLine(c));
    return c;
  }

  file(name: string): string {
    return path.join(this.dir, name);
  }

  /** Keeps the first `n` lines of a file of the folder. */
  trim(name: string, n: number): void {
    writeFileSync(this.file(name), readFileSync(this.file(name), 'utf8').split('\n').slice(0, n).map((l) => `${l}\n`).join(''));
  }
}

const held = (...items: CosignedCheckpoint[]) => [{ source: 'held.json', items }];
const verify = (log: TestLog, opts: Partial<VerifyOptions> = {}) => verifyLogDir(log.dir, { trust: trust(), now: NOW, maxAgeSeconds: 86_400, ...opts });
const bad = (r: ReturnType<typeof verifyLogDir>, index: number | undefined, reason: RegExp) => {
  assert.equal(r.ok, false, 'verified');
  assert.equal(r.firstBadIndex, index, r.reason);
  assert.match(r.reason ?? '', reason);
};

/** 40 records; stored checkpoints at 0, 10, 20, 21, 30, 40; both witnesses cosign 20 and 40. */
function goodLog(): { log: TestLog; newest: CosignedCheckpoint[] } {
  const log = new TestLog();
  log.append(10).checkpoint();
  log.append(10).checkpoint();
  log.cosign(witnesses[0]!);
  log.cosign(witnesses[1]!);
  log.append(1).checkpoint();
  log.append(9).checkpoint();
  log.append(10).checkpoint();
  return { log, newest: [log.cosign(witnesses[0]!), log.cosign(witnesses[1]!)] };
}

describe('verifyLogDir: trust only from outside the folder', () => {
  it('an untouched log verifies: every stored checkpoint, witnesses vouching, fresh', () => {
    const { log, newest } = goodLog();
    const r = verify(log, { cosigned: held(...newest), trust: trust(2) });
    assert.equal(r.ok, true, r.reason);
    assert.equal(r.records, 40);
    assert.equal(r.checkpoints, 6);
    assert.deepEqual(r.trusted, { stored: 40, cosigned: [20, 40] });
    assert.deepEqual(r.witnesses.map((w) => [w.name, w.treeSize]), witnesses.map((w) => [w.name, 40]));
    assert.equal(r.newest?.treeSize, 40);
    assert.deepEqual(r.notes, []);
  });

  it('an event stored twice (the same id): BAD at the second record, naming the first', () => {
    const log = new TestLog().append(5);
    log.events.push({ ...log.events[1]! });
    log.rewrite();
    log.checkpoint();
    bad(verify(log), 5, /duplicate event id \(first stored at index 1\)/);
  });

  it('a cut tail with checkpoints.log and cosigned.log trimmed: BAD at the first missing record, from the witnesses\' checkpoint held outside', () => {
    const { log, newest } = goodLog();
    log.rewrite(log.events.slice(0, 25));
    log.trim(CHECKPOINTS_FILE, 4); // sizes 0, 10, 20, 21
    log.trim(COSIGNED_FILE, 2); // the cosignatures of 20
    // As the issue found it: the folder alone, and a checkpoint held from before the cut, see nothing.
    const folderOnly = verify(log);
    assert.equal(folderOnly.ok, true, folderOnly.reason);
    assert.match(folderOnly.notes.join('\n'), /came only from cosigned\.log/);
    assert.equal(verify(log, { checkpoint: log.checkpoints[2] }).ok, true);
    bad(verify(log, { cosigned: held(newest[0]!) }), 25, /covers 40 records, the log holds 25: records 25\.\.39 were removed/);
  });

  it('a deleted or emptied checkpoints.log: BAD, no checkpoints', () => {
    const { log, newest } = goodLog();
    unlinkSync(log.file(CHECKPOINTS_FILE));
    bad(verify(log, { cosigned: held(...newest) }), undefined, /^no checkpoints: checkpoints\.log is missing/);
    writeFileSync(log.file(CHECKPOINTS_FILE), '');
    bad(verify(log, { cosigned: held(...newest) }), undefined, /^no checkpoints: checkpoints\.log is empty/);
  });

  it('a rewrite re-signed with a key planted in keys/: BAD at the first record its checkpoints cover beyond what trusted ones vouch for', () => {
    const { log, newest } = goodLog();
    const planted = generateKeyPairSync('ed25519');
    const plantedId = keyIdOf(planted.publicKey);
    log.events[15] = { ...log.events[15]!, principal: 'someone-else' };
    log.rewrite();
    writeFileSync(log.file(CHECKPOINTS_FILE), '');
    writeFileSync(log.file(COSIGNED_FILE), '');
    const sizes = log.checkpoints.map((c) => c.tree_size);
    for (const s of sizes) log.checkpoint(s, planted.privateKey, plantedId);
    writeFileSync(path.join(log.dir, KEYS_DIR, `${plantedId}.pem`), pem(planted.publicKey));
    // With no trusted checkpoint at all: from record 0.
    const r = verify(log, { trust: trust(0) });
    bad(r, 0, new RegExp(`checkpoints\\.log line 1 \\(size 0\\) does not verify under the trusted sink keys: signed with key id "${plantedId}" \\(keys/ holds a key with that id: it is not in the trust roots\\)`));
    assert.match(r.notes.join('\n'), new RegExp(`keys/${plantedId}\\.pem holds a key \\(id ${plantedId}\\) not in the trust roots: ignored`));
    // Witness-cosigned checkpoints held outside vouch for the first 10 records: the change is in 10..19.
    const at10 = log.cosign(witnesses[0]!, log.checkpoints[1], false);
    const w = verify(log, { cosigned: held(at10, log.cosigned[0]!, ...newest) });
    bad(w, 10, /^checkpoints\.log line 3 \(size 20\) does not verify under the trusted sink keys: .*; records from 10 on are vouched for by no trusted checkpoint/);
    assert.match(w.notes.join('\n'), /also: index 10: a record in 10\.\.19 was changed, removed or reordered: held\.json item 2 \(size 20\) has another root than the log's first 20 records; held\.json item 1 \(size 10\) matches the log/);
  });

  it('an edit with recomputed leaves: BAD at the edited record when checkpoints are on both sides of it, else the first of the bounded range', () => {
    const { log } = goodLog();
    log.events[20] = { ...log.events[20]!, result: 'denied' };
    log.rewrite();
    const exact = verify(log);
    bad(exact, 20, /^record 20 was changed: checkpoints\.log line 4 \(size 21\) has another root than the log's first 21 records; checkpoints\.log line 3 \(size 20\) matches the log/);
    assert.equal(exact.badRange, undefined);

    const { log: log2 } = goodLog();
    log2.events[33] = { ...log2.events[33]!, key_id: 'k' };
    log2.rewrite();
    const ranged = verify(log2);
    bad(ranged, 30, /^a record in 30\.\.39 was changed, removed or reordered: checkpoints\.log line 6 \(size 40\)/);
    assert.deepEqual(ranged.badRange, { from: 30, to: 40 });

    // An early edit fails every later checkpoint: the first is the verdict, a few more are notes.
    const { log: log3 } = goodLog();
    for (let i = 0; i < 12; i++) log3.append(1).checkpoint();
    log3.events[2] = { ...log3.events[2]!, key_id: 'k' };
    log3.rewrite();
    const early = verify(log3);
    bad(early, 0, /^a record in 0\.\.9 was changed/);
    const also = early.notes.filter((n) => n.startsWith('also: '));
    assert.equal(also.length, 6, also.join('\n'));
    assert.match(also.at(-1)!, /^also: \d+ more failures of the same log$/);
  });

  it('the sink host rewrites and re-signs with the real sink key: only the witnesses\' checkpoints show it, as a fork', () => {
    const { log, newest } = goodLog();
    log.events[25] = { ...log.events[25]!, operation: 'keys.Sign' };
    log.rewrite();
    writeFileSync(log.file(CHECKPOINTS_FILE), '');
    for (const s of [0, 10, 20, 21, 30, 40]) log.checkpoint(s);
    log.trim(COSIGNED_FILE, 2); // the witnesses' cosignatures of 40 would show it: gone too
    assert.equal(verify(log, { trust: trust(0) }).ok, true, 'the sink key alone vouches for the rewrite');
    const r = verify(log, { cosigned: held(...newest) });
    // The re-signed checkpoints in the folder match the rewrite: only the witnessed cosigned.log line of 20 bounds it.
    bad(r, 20, /^a record in 20\.\.39 was changed.*held\.json item 1 \(size 40\).*; cosigned\.log line 1 \(size 20\) matches the log.*yet checkpoints\.log line \d+ \(size 40\) matches the log: the sink key signed two histories \(a fork\)/);
  });

  it('needs a quorum of distinct trusted witnesses; a witness not trusted does not count, a forged cosignature given is BAD', () => {
    const { log, newest } = goodLog();
    writeFileSync(log.file(COSIGNED_FILE), '');
    bad(verify(log, { trust: trust(2), cosigned: held(newest[0]!) }), undefined, /^1 of the 2 required trusted witnesses vouch/);
    bad(verify(log), undefined, /^0 of the 1 required trusted witnesses vouch.*--cosigned FILE/);
    const stranger = generateKeyPairSync('ed25519');
    const note = newest[0]!.note;
    const strangers = { ...newest[0]!, cosignatures: [cosign(stranger.privateKey, witnessName('coordinator-9'), note, 1)] };
    bad(verify(log, { cosigned: held(strangers) }), undefined, /^0 of the 1 required/);
    const forged = { ...newest[0]!, cosignatures: [cosign(stranger.privateKey, witnesses[0]!.name, note, 1)] };
    // Same name, another key: its key id differs, so it is not the trusted witness's line at all.
    bad(verify(log, { cosigned: held(forged) }), undefined, /^0 of the 1 required/);
    const raw = Buffer.from(newest[0]!.cosignatures[0]!.split(' ')[2]!, 'base64');
    raw[20]! ^= 1;
    const flipped = { ...newest[0]!, cosignatures: [`\u2014 ${witnesses[0]!.name} ${raw.toString('base64')}`] };
    bad(verify(log, { cosigned: held(flipped) }), undefined, /^held\.json item 1 \(size 40\): cosignature of keyshard\.dev\/witness\/coordinator-1 does not verify/);
  });

  it('a cosigned.log in the folder is trusted only through signatures: a bad line is ignored, a torn one noted, garbage is BAD', () => {
    const { log, newest } = goodLog();
    const raw = Buffer.from(newest[1]!.cosignatures[0]!.split(' ')[2]!, 'base64');
    raw[30]! ^= 1;
    appendFileSync(log.file(COSIGNED_FILE), cosignedLine({ ...newest[1]!, cosignatures: [`\u2014 ${witnesses[1]!.name} ${raw.toString('base64')}`] }));
    appendFileSync(log.file(COSIGNED_FILE), '{"checkpoint":');
    const r = verify(log, { cosigned: held(newest[0]!) });
    assert.equal(r.ok, true, r.reason);
    assert.match(r.notes.join('\n'), /cosigned\.log line 5: cosignature of keyshard\.dev\/witness\/coordinator-2 does not verify: its cosignatures are ignored/);
    assert.match(r.notes.join('\n'), /cosigned\.log ends in a torn line/);
    writeFileSync(log.file(COSIGNED_FILE), 'garbage\n');
    bad(verify(log, { cosigned: held(newest[0]!) }), undefined, /^cosigned\.log line 1: /);
  });

  it('the newest trusted checkpoint older than --max-age is BAD; no limit for an archived copy', () => {
    const { log, newest } = goodLog();
    const later = new Date(T0 + 3 * 86_400_000);
    bad(verify(log, { cosigned: held(...newest), now: later }), undefined, /^the newest trusted witness cosignature is 2 d old \(size 40, .*cosigned by keyshard\.dev\/witness\/coordinator-\d\), more than the 24 h allowed/);
    assert.equal(verify(log, { cosigned: held(...newest), now: later, maxAgeSeconds: undefined }).ok, true);
  });

  it('ATTACK (sink host): a cut tail re-signed by the sink dated now (or 2099) passes no --max-age: freshness is on the witnesses\' cosignature times', () => {
    // Reproduced before the fix: 40 records, both witnesses cosigned 20 and 40; the sink host
    // cuts 20..39, trims checkpoints.log and cosigned.log, signs its cut tree dated "now" with
    // the sink key it holds, and withholds the newer cosignatures; 30 days later, quorum 2,
    // max-age 1 day: ok (the sink's fresh checkpoint was the newest trusted time).
    const { log } = goodLog();
    log.rewrite(log.events.slice(0, 20));
    log.trim(CHECKPOINTS_FILE, 3); // sizes 0, 10, 20
    log.trim(COSIGNED_FILE, 2); // the cosignatures of 20
    const later = new Date(T0 + 30 * 86_400_000);
    const fresh = signCheckpoint(sinkPair.privateKey, SINK_ID, 20, log.tree().root(20), later);
    appendFileSync(log.file(CHECKPOINTS_FILE), checkpointLine(fresh));
    const withheld = log.cosigned.slice(0, 2); // what the sink serves (GetCosignedCheckpoints): the cosignatures of 20
    bad(verify(log, { trust: trust(2), cosigned: held(...withheld), now: later }), undefined, /^the oldest of the quorum's 2 freshest trusted witness cosignatures \(one per witness\) is 29 d old \(size 20/);
    bad(verify(log, { trust: trust(1), now: later }), undefined, /^the newest trusted witness cosignature is 29 d old/);
    // Dated ahead instead (2099): BAD whatever the max-age.
    const future = signCheckpoint(sinkPair.privateKey, SINK_ID, 20, log.tree().root(20), new Date('2099-01-01T00:00:00Z'));
    appendFileSync(log.file(CHECKPOINTS_FILE), checkpointLine(future));
    bad(verify(log, { trust: trust(2), cosigned: held(...withheld), now: later, maxAgeSeconds: undefined }), undefined, /checkpoints\.log line 5, signed by the sink is dated 2099-01-01T00:00:00\.000Z, more than 5 min ahead/);
  });

  it('freshness needs the quorum: one witness cosigning fresh, the other withheld, is BAD under quorum 2; a witness time from the future is BAD', () => {
    const { log, newest } = goodLog();
    const later = new Date(T0 + 2 * 86_400_000);
    const refreshed = (w: (typeof witnesses)[number], at: Date) => {
      const cp = log.checkpoints.at(-1)!;
      return { checkpoint: cp, note: checkpointNote(cp), cosignatures: [cosign(w.privateKey, w.name, checkpointNote(cp), Math.floor(at.getTime() / 1000))] };
    };
    // A witness refresh (same tree, a fresh time) keeps an idle log fresh.
    assert.equal(verify(log, { trust: trust(2), cosigned: held(refreshed(witnesses[0]!, later), refreshed(witnesses[1]!, later)), now: later }).ok, true);
    bad(verify(log, { trust: trust(2), cosigned: held(refreshed(witnesses[0]!, later), newest[1]!), now: later }), undefined, /^the oldest of the quorum's 2 freshest trusted witness cosignatures \(one per witness\) is 47 h old/);
    assert.equal(verify(log, { trust: trust(1), cosigned: held(refreshed(witnesses[0]!, later), newest[1]!), now: later }).ok, true);
    bad(verify(log, { trust: trust(2), cosigned: held(refreshed(witnesses[0]!, new Date(later.getTime() + 3600_000)), newest[1]!), now: later }), undefined, /cosigned by keyshard\.dev\/witness\/coordinator-1 is dated .* ahead of this machine's clock/);
  });

  it('witness quorum 0: --max-age is measured on the sink\'s times, and the result says freshness rests on the sink host\'s word', () => {
    const { log } = goodLog();
    const r = verify(log, { trust: trust(0) });
    assert.equal(r.ok, true, r.reason);
    assert.match(r.notes.join('\n'), /witness quorum 0: .*freshness rests on the sink host's word/);
    bad(verify(log, { trust: trust(0), now: new Date(T0 + 3 * 86_400_000) }), undefined, /^the newest checkpoint signed by the sink is 2 d old/);
  });

  it('never takes a key from keys/: a log signed only by a key there does not verify, and the key is reported', () => {
    const { log, newest } = goodLog();
    const other = generateKeyPairSync('ed25519').publicKey;
    const r = verify(log, { cosigned: held(...newest), trust: trust(1, other) });
    bad(r, 0, new RegExp(`checkpoints\\.log line 1 \\(size 0\\) does not verify.*key id "${SINK_ID}" \\(keys/ holds a key with that id`));
    assert.match(r.notes.join('\n'), new RegExp(`keys/${SINK_ID}\\.pem holds a key .* not in the trust roots`));
  });

  it('a record changed without its leaf is found exactly, before any checkpoint is consulted', () => {
    const { log, newest } = goodLog();
    const seg = path.join(log.dir, SEGMENT_DIR, segmentName(0));
    writeFileSync(seg, readFileSync(seg, 'utf8').replace('"id":"e7"', '"id":"e7x"'));
    bad(verify(log, { cosigned: held(...newest) }), 7, /leaf hash does not match the event/);
  });
});
