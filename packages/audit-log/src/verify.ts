/**
 * Offline verification of an audit log directory (a live one or a copy), trusting nothing in
 * it: the sink's public keys and the witnesses' keys come from the caller (trust.ts), never
 * from <dir>/keys, which whoever controls the folder can fill.
 *
 * What is checked:
 *  - every record (form, index, leaf hash, canonical bytes; record-format.ts) and the RFC 6962
 *    tree over them; event ids are unique;
 *  - every anchor, i.e. a signed tree head from anywhere: each line of checkpoints.log, the
 *    checkpoint held elsewhere (`--checkpoint`), the witness-cosigned checkpoints given
 *    (`--cosigned`) and those in <dir>/cosigned.log. An anchor counts only
 *    if its sink signature verifies under a trusted sink key; then the log must contain it: at
 *    least its tree_size records, whose root at that size is its root_hash (RFC 6962 §2.1; two
 *    anchors the log contains are consistent with each other by construction, RFC 9162 §2.1.4);
 *  - at least checkpoints.log holds one checkpoint (the sink writes one when it opens a log);
 *  - at least `witnessQuorum` distinct trusted witnesses cosigned (C2SP tlog-cosignature) a
 *    checkpoint the log contains;
 *  - no trusted time (a checkpoint's signed time, a trusted witness's cosignature time) is more
 *    than FUTURE_SKEW_MS ahead of this machine's clock (a checkpoint dated ahead would pass any
 *    later --max-age);
 *  - freshness (`maxAgeSeconds`), on witness cosignature times only: each trusted witness's
 *    newest cosignature of a checkpoint the log contains; the `witnessQuorum`-th newest of those
 *    must be at most `maxAgeSeconds` old. Never on the sink's own checkpoint times: the sink host
 *    holds the sink key, so after cutting the tail it can sign its shortened tree dated now and
 *    withhold the newer cosignatures (they reach auditors through it: cosigned.log,
 *    GetCosignedCheckpoints). Witnesses re-cosign their latest checkpoint with a fresh time at
 *    least every witnessRefreshSeconds even when the log is idle (as C2SP witnesses do), so a
 *    cosignature time that is fresh means "at that time this was the largest tree the witness
 *    had seen". With witnessQuorum 0 there is no witness time: freshness is measured on the
 *    sink's checkpoint times, and a note says that it rests on the sink host's word.
 *
 * Where a change is, is named as precisely as the evidence allows. A record whose bytes do not
 * match its own leaf is found exactly. A record changed together with its leaf (recomputed
 * leaves) is found only between two anchors: the largest one the log still contains and the
 * smallest one it does not (record lines carry no chained hash). firstBadIndex is then the
 * first index of that range and the reason gives the range; checkpoints are written every 10 s
 * and on each GetCheckpoint, so the range is a few seconds of events. Records missing from a cut
 * tail start at the log's record count. An anchor that does not verify under the trusted keys
 * (e.g. re-signed with a key planted in <dir>/keys) makes the first record it covers beyond the
 * trusted anchors bad. Failures that name no record (no checkpoint, too few witnesses, too old)
 * have no index.
 */
import fs from 'node:fs';
import path from 'node:path';
import { checkpointProblem, type SignedCheckpoint } from './checkpoint.ts';
import { verifyCosignedCheckpoint, type CosignedCheckpoint } from './cosignature.ts';
import { ACTIVE_LINK, CHECKPOINTS_FILE, COSIGNED_FILE, KEYS_DIR, listDirKeys, readCheckpointFile, readCosignedLog, scanSegments } from './log-dir.ts';
import { IdIndex } from './id-index.ts';
import { MerkleTree } from './merkle.ts';
import type { TrustRoots } from './trust.ts';

export interface VerifyOptions {
  /** The sink's public keys and the witnesses' keys, from outside the log directory. */
  trust: TrustRoots;
  /** A checkpoint obtained from the sink earlier and kept outside the log directory. */
  checkpoint?: SignedCheckpoint;
  /** Witness-cosigned checkpoints from outside the directory (a file, the sink), each list named by where it came from. */
  cosigned?: { source: string; items: CosignedCheckpoint[] }[];
  /** The newest trusted time may be at most this old; undefined: no limit. */
  maxAgeSeconds?: number;
  now?: Date;
}

export interface VerifyResult {
  ok: boolean;
  records: number;
  rootHash: string;
  /** Lines of checkpoints.log that verified under the trusted sink keys. */
  checkpoints: number;
  firstBadIndex?: number;
  /** When a change can only be bounded: the records [from, to) one of which changed. */
  badRange?: { from: number; to: number };
  reason?: string;
  /** Tree sizes of the trusted anchors the log contains. */
  trusted: { stored?: number; held?: number; cosigned: number[] };
  /** Trusted witnesses that cosigned a checkpoint the log contains: the largest such size, the newest cosignature time. */
  witnesses: { name: string; treeSize: number; time: string }[];
  witnessQuorum: number;
  /**
   * The time freshness was measured on, and what signed it: the witnessQuorum-th newest trusted
   * witness cosignature (with quorum 0, the newest sink-signed time).
   */
  newest?: { time: string; treeSize: number; source: string };
  notes: string[];
}

interface Anchor {
  size: number;
  root: string;
  source: string;
  /** Trusted times in ms: the checkpoint's own, and its trusted witnesses' cosignatures. */
  times: { ms: number; by: string }[];
  witnesses: { name: string; timestamp: number }[];
  kind: 'stored' | 'held' | 'cosigned';
}

interface Finding {
  index?: number;
  range?: { from: number; to: number };
  reason: string;
}

const FUTURE_SKEW_MS = 5 * 60_000;
/** Further failures reported as notes (an early edit fails every later checkpoint: thousands a day). */
const MAX_ALSO = 5;

/** The log directory a path names: the directory itself, or its audit.log link. */
export const logDirOf = (p: string): string => (path.basename(p) === ACTIVE_LINK ? path.dirname(p) : p);

export function verifyLogDir(dir: string, opts: VerifyOptions): VerifyResult {
  const dataDir = logDirOf(dir);
  const { trust } = opts;
  const now = (opts.now ?? new Date()).getTime();
  const findings: Finding[] = [];
  const notes: string[] = [];

  // 1. The records and their tree.
  const tree = new MerkleTree();
  const ids = new IdIndex();
  let dup: { index: number; first: number } | undefined;
  const scan = scanSegments(dataDir, (index, rec) => {
    if (!ids.add(rec.event.id, index)) dup ??= { index, first: ids.indexOf(rec.event.id)! };
    tree.appendLeafHash(rec.leaf);
  });
  const records = tree.size;
  if (scan.segments.length === 0) findings.push({ reason: `no segment files in ${path.join(dataDir, 'segments')}` });
  if (scan.bad) findings.push(scan.bad);
  if (dup) findings.push({ index: dup.index, reason: `duplicate event id (first stored at index ${dup.first})` });
  if (scan.tornBytes > 0) notes.push(`torn final line (${scan.tornBytes} bytes, never acknowledged; the sink cuts it on start)`);

  const dirKeys = listDirKeys(dataDir);
  for (const k of dirKeys) {
    if (k.problem) notes.push(`${KEYS_DIR}/${k.file} is not a sink public key (${k.problem})`);
    else if (!trust.sinkKeys.has(k.id!)) notes.push(`${KEYS_DIR}/${k.file} holds a key (id ${k.id}) not in the trust roots: ignored`);
  }
  const untrusted = (keyId: string) =>
    dirKeys.some((k) => k.id === keyId) ? ` (${KEYS_DIR}/ holds a key with that id: it is not in the trust roots)` : ' (a key no trust root names; after a key rotation give every key that signed)';

  // 2. The anchors: signed tree heads, each verified under the trusted keys.
  const anchors: Anchor[] = [];
  const unverified: { size: number; source: string; problem: string }[] = [];
  const sinkSigned = (c: SignedCheckpoint, source: string, kind: Anchor['kind'], witnesses: Anchor['witnesses'] = []): Anchor => ({
    size: c.tree_size,
    root: c.root_hash,
    source,
    kind,
    witnesses,
    times: [{ ms: Date.parse(c.time), by: `${source}, signed by the sink` }, ...witnesses.map((w) => ({ ms: w.timestamp * 1000, by: `${source}, cosigned by ${w.name}` }))],
  });
  const sinkProblem = (c: SignedCheckpoint) => {
    const p = checkpointProblem(c, trust.sinkKeys);
    return p?.startsWith('no public key with id') ? `signed with key id ${JSON.stringify(String(c.key_id).slice(0, 32))}${untrusted(c.key_id)}` : p;
  };

  const cps = readCheckpointFile(path.join(dataDir, CHECKPOINTS_FILE));
  let storedOk = 0;
  if (cps.bad) findings.push({ reason: `${CHECKPOINTS_FILE} line ${cps.bad.line}: ${cps.bad.reason}` });
  else if (cps.checkpoints.length === 0)
    findings.push({ reason: `no checkpoints: ${CHECKPOINTS_FILE} is ${fs.existsSync(path.join(dataDir, CHECKPOINTS_FILE)) ? 'empty' : 'missing'} (the sink writes one whenever it opens the log: it was deleted or emptied)` });
  for (const [i, c] of cps.checkpoints.entries()) {
    const source = `${CHECKPOINTS_FILE} line ${i + 1}`;
    const problem = sinkProblem(c);
    if (problem) unverified.push({ size: c.tree_size, source, problem });
    else {
      anchors.push(sinkSigned(c, source, 'stored'));
      storedOk += 1;
    }
  }
  if (cps.tornBytes > 0) notes.push(`${CHECKPOINTS_FILE} ends in a torn line (${cps.tornBytes} bytes): ignored`);

  if (opts.checkpoint) {
    const problem = sinkProblem(opts.checkpoint);
    if (problem) findings.push({ reason: `the given checkpoint (size ${opts.checkpoint.tree_size}) does not verify under the trusted sink keys: ${problem}` });
    else anchors.push(sinkSigned(opts.checkpoint, 'the given checkpoint', 'held'));
  }

  const cosignedLog = readCosignedLog(path.join(dataDir, COSIGNED_FILE));
  if (cosignedLog.bad) findings.push({ reason: `${COSIGNED_FILE} line ${cosignedLog.bad.line}: ${cosignedLog.bad.reason}` });
  if (cosignedLog.tornBytes > 0) notes.push(`${COSIGNED_FILE} ends in a torn line (${cosignedLog.tornBytes} bytes): ignored`);
  const sources = [...(opts.cosigned ?? []).map((s) => ({ ...s, inDir: false })), { source: COSIGNED_FILE, items: cosignedLog.items, inDir: true }];
  for (const { source, items, inDir } of sources) {
    for (const [i, c] of items.entries()) {
      const name = `${source} ${inDir ? 'line' : 'item'} ${i + 1}`;
      const problem = sinkProblem(c.checkpoint);
      if (problem) {
        // From the folder: a planted line, like a stored checkpoint; from the caller: a bad input.
        if (inDir) unverified.push({ size: c.checkpoint.tree_size, source: name, problem });
        else findings.push({ reason: `${name} (size ${c.checkpoint.tree_size}) does not verify under the trusted sink keys: ${problem}` });
        continue;
      }
      const v = verifyCosignedCheckpoint(c, trust.sinkKeys, trust.witnesses, 0);
      if (v.problem) {
        // The sink appends what appenders send it: a bad cosignature in the folder proves nothing either way.
        if (inDir) notes.push(`${name}: ${v.problem}: its cosignatures are ignored`);
        else findings.push({ reason: `${name} (size ${c.checkpoint.tree_size}): ${v.problem}` });
        anchors.push(sinkSigned(c.checkpoint, name, 'cosigned'));
        continue;
      }
      anchors.push(sinkSigned(c.checkpoint, name, 'cosigned', v.witnesses));
    }
  }

  // 3. Does the log contain each anchor? Where does it stop matching?
  const evaluable = (a: { size: number }) => !scan.bad || a.size <= records; // past a bad record, that record is the finding
  const matching: Anchor[] = [];
  const mismatching: Anchor[] = [];
  for (const a of anchors) {
    if (!evaluable(a)) continue;
    (a.size <= records && tree.root(a.size).toString('hex') === a.root ? matching : mismatching).push(a);
  }
  // Which anchors bound a change. Sink-signed ones (checkpoints.log, cosigned lines no trusted
  // witness signed) are as good as the sink key; the held checkpoint and witnessed ones are not
  // the sink's word alone. When a sink-signed anchor fails too, whoever changed the log could not
  // sign as the sink: every matching anchor bounds the change. When only held or witnessed ones
  // fail, the sink key signed the changed history as well (a fork): only they bound it.
  const level = (a: Anchor) => (a.kind === 'held' || a.witnesses.length > 0 ? 2 : 1);
  const changed = mismatching.filter((a) => a.size <= records);
  const minLevel = changed.length > 0 && changed.every((a) => level(a) === 2) ? 2 : 1;
  const below = (size: number, lvl = 1) =>
    matching.reduce((g, a) => (a.size < size && a.size > g.size && level(a) >= lvl ? a : g), { size: 0, source: '' } as { size: number; source: string });
  for (const u of unverified) {
    const size = Number.isSafeInteger(u.size) && u.size >= 0 ? u.size : 0;
    const covered = matching.find((m) => m.size >= size);
    const bad = `${u.source} (size ${u.size}) does not verify under the trusted sink keys: ${u.problem}`;
    if (covered) findings.push({ reason: `${bad}; ${covered.source} (size ${covered.size}) vouches for the records it claims` });
    else {
      // The first record it covers that no trusted anchor vouches for.
      const first = Math.min(below(size + 1).size, records);
      findings.push({ index: first, reason: `${bad}; records from ${first} on are vouched for by no trusted checkpoint` });
    }
  }

  for (const a of mismatching) {
    if (a.size > records) {
      findings.push({ index: records, range: { from: records, to: a.size }, reason: `${a.source} covers ${a.size} records, the log holds ${records}: records ${records}..${a.size - 1} were removed` });
      continue;
    }
    const g = below(a.size, minLevel);
    const fork = matching.find((m) => m.size >= a.size);
    const bound = g.size > 0 ? `; ${g.source} (size ${g.size}) matches the log` : '';
    const what =
      a.size - g.size === 1
        ? `record ${g.size} was changed: ${a.source} (size ${a.size}) has another root than the log's first ${a.size} records${bound}`
        : `a record in ${g.size}..${a.size - 1} was changed, removed or reordered: ${a.source} (size ${a.size}) has another root than the log's first ${a.size} records${bound} (the nearest trusted checkpoints bound the change; record lines carry no chained hash to narrow it further)`;
    findings.push({
      index: g.size,
      range: { from: g.size, to: a.size },
      reason: fork ? `${what}; yet ${fork.source} (size ${fork.size}) matches the log: the sink key signed two histories (a fork)` : what,
    });
  }
  // 4. Witnesses: distinct trusted names that cosigned a checkpoint the log contains; for each,
  // its newest such cosignature (what freshness is measured on) and the largest size it vouched.
  const vouched = new Map<string, { treeSize: number; ms: number; size: number; source: string }>();
  for (const a of matching)
    for (const w of a.witnesses) {
      const v = vouched.get(w.name);
      const ms = w.timestamp * 1000;
      const newer = !v || ms > v.ms;
      vouched.set(w.name, { treeSize: Math.max(v?.treeSize ?? 0, a.size), ms: newer ? ms : v.ms, size: newer ? a.size : v.size, source: newer ? a.source : v.source });
    }
  if (vouched.size < trust.witnessQuorum) {
    const given = (opts.cosigned ?? []).length > 0;
    findings.push({
      reason: `${vouched.size} of the ${trust.witnessQuorum} required trusted witnesses vouch for this log (a cosigned checkpoint it contains)${given ? '' : ': give the newest from outside the folder (--cosigned FILE from `keyshard audit checkpoint --cosigned --json`)'}`,
    });
  }
  if (trust.witnessQuorum > 0 && vouched.size >= trust.witnessQuorum && !(opts.cosigned ?? []).some((s) => s.items.length > 0))
    notes.push(`the witnesses' cosignatures came only from ${COSIGNED_FILE}, in the folder: whoever controls it can cut the tail and trim that file too; give the newest cosigned checkpoints from outside (--cosigned FILE)`);

  // 5. Times from the future: a checkpoint or cosignature dated ahead would pass any later --max-age.
  for (const a of anchors)
    for (const t of a.times)
      if (Number.isFinite(t.ms) && t.ms > now + FUTURE_SKEW_MS)
        findings.push({
          reason: `${t.by} is dated ${new Date(t.ms).toISOString()}, more than ${describeAge(FUTURE_SKEW_MS)} ahead of this machine's clock: a time from the future vouches for no freshness (a sink host can sign its tree dated ahead; or a signer's clock is wrong)`,
        });

  // 6. Freshness: on witness cosignature times only (see the header).
  let newest: { ms: number; by: string; size: number } | undefined;
  if (trust.witnessQuorum > 0) {
    const times = [...vouched].map(([name, v]) => ({ ms: v.ms, by: `${v.source}, cosigned by ${name}`, size: v.size })).sort((x, y) => y.ms - x.ms);
    newest = times[trust.witnessQuorum - 1]; // undefined when too few witnesses vouch: already a finding
  } else {
    for (const a of matching) for (const t of a.times) if (Number.isFinite(t.ms) && (!newest || t.ms > newest.ms)) newest = { ...t, size: a.size };
    notes.push(
      opts.maxAgeSeconds !== undefined
        ? "witness quorum 0: only the sink key vouches for the log, and the sink host holds that key; --max-age is measured on the sink's own checkpoint times, so freshness rests on the sink host's word (it can cut the tail and sign its shorter tree dated now)"
        : 'witness quorum 0: only the sink key vouches for the log, and the sink host holds that key',
    );
  }
  if (opts.maxAgeSeconds !== undefined && newest && now - newest.ms > opts.maxAgeSeconds * 1000) {
    const whose = trust.witnessQuorum > 0 ? `${trust.witnessQuorum === 1 ? 'the newest trusted witness cosignature' : `the oldest of the quorum's ${trust.witnessQuorum} freshest trusted witness cosignatures (one per witness)`}` : 'the newest checkpoint signed by the sink';
    findings.push({
      reason: `${whose} is ${describeAge(now - newest.ms)} old (size ${newest.size}, ${new Date(newest.ms).toISOString()}, ${newest.by}), more than the ${describeAge(opts.maxAgeSeconds * 1000)} allowed: records after it may be missing (witnesses re-cosign at least every minute, so an old newest cosignature means newer ones were withheld or the witnesses are down); verify against fresh cosigned checkpoints (--cosigned, --fetch) or raise --max-age`,
    });
  }

  const maxMatching = matching.reduce((m, a) => Math.max(m, a.size), 0);
  if (records > maxMatching && !scan.bad && matching.length > 0) notes.push(`records ${maxMatching}..${records - 1} are not yet covered by a trusted checkpoint`);

  // The first record named; else the first failure that names none. The others as notes.
  const indexed = findings.filter((f) => f.index !== undefined).sort((x, y) => x.index! - y.index!);
  const chosen = indexed[0] ?? findings[0];
  const others = [...indexed, ...findings.filter((f) => f.index === undefined)].filter((f) => f !== chosen);
  for (const f of others.slice(0, MAX_ALSO)) notes.push(`also: ${f.index !== undefined ? `index ${f.index}: ` : ''}${f.reason}`);
  if (others.length > MAX_ALSO) notes.push(`also: ${others.length - MAX_ALSO} more failures of the same log`);
  const sizes = (kind: Anchor['kind']) => matching.filter((a) => a.kind === kind).map((a) => a.size);
  // Not Math.max(...xs): a log stores a checkpoint every 10 s, and spreading ~10^5 arguments overflows the stack.
  const maxOf = (xs: number[]) => (xs.length ? xs.reduce((a, b) => (b > a ? b : a)) : undefined);
  const stored = maxOf(sizes('stored'));
  const held = maxOf(sizes('held'));
  return {
    ok: chosen === undefined,
    records,
    rootHash: tree.root().toString('hex'),
    checkpoints: storedOk,
    ...(chosen ? { ...(chosen.index !== undefined ? { firstBadIndex: chosen.index } : {}), ...(chosen.range && chosen.range.to - chosen.range.from > 1 ? { badRange: chosen.range } : {}), reason: chosen.reason } : {}),
    trusted: { ...(stored !== undefined ? { stored } : {}), ...(held !== undefined ? { held } : {}), cosigned: [...new Set(sizes('cosigned'))].sort((a, b) => a - b) },
    witnesses: [...vouched].map(([name, v]) => ({ name, treeSize: v.treeSize, time: new Date(v.ms).toISOString() })).sort((a, b) => a.name.localeCompare(b.name)),
    witnessQuorum: trust.witnessQuorum,
    ...(newest ? { newest: { time: new Date(newest.ms).toISOString(), treeSize: newest.size, source: newest.by } } : {}),
    notes,
  };
}

/** 90 s, 12 min, 3 h, 2 d: the largest whole unit. */
export function describeAge(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min`;
  if (s < 172_800) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86_400)} d`;
}
