/**
 * audit verify/checkpoint/tail/query/hash: for auditors. `verify` works offline on a log
 * directory (a copy is enough); the others talk to the audit sink (KEYSHARD_AUDIT_ADDR) with an
 * audit reader's certificate (KEYSHARD_AUDIT_CERT/KEY, or --tls-cert/--tls-key).
 */
import { Option, type Command } from 'commander';
import { readTls } from '@keyshard/rpc';
import { AuditReader, type StoredAuditEvent } from '@keyshard/audit-client/reader';
import { ALERT_OPERATION, cosignatureName, describeAge, fromCheckpointMsg, hmacValue, verifyLogDir, type CosignedCheckpoint, type VerifyResult } from '@keyshard/audit-log';
import { DEFAULT_MAX_AGE, cosignedFromFlags, heldCheckpoint, maxAge, trustFromFlags, type VerifyFlags } from '../audit-verify-flags.ts';
import { tlsFrom, withClient } from '../connection.ts';
import { UsageError, printJson } from '../output.ts';
import { collect, integer, oneOf, readFlagFile, timestamp } from '../parse.ts';

/**
 * One readable line per event: index, time, result, operation, principal, the component that
 * recorded it (`from <source>`: its certificate identity, checked by the sink), then what is set.
 * An alert of the sink reads `ALERT  <rule>: <summary>  from <sink>`, then its facts.
 */
export function describeEvent({ index, event: e }: StoredAuditEvent): string {
  const { rule, summary, ...details } = e.details ?? {};
  const isAlert = e.operation === ALERT_OPERATION && rule !== undefined;
  const from = `from ${e.source || '-'}`;
  const parts = isAlert
    ? [String(index).padStart(8), e.time, 'ALERT ', `${rule}: ${summary ?? ''}`, from]
    : [String(index).padStart(8), e.time, e.result.padEnd(6), e.operation, `by ${e.principal || '-'}`, from];
  if (e.key_id) parts.push(`key=${e.key_id}`);
  if (e.ceremony_id) parts.push(`ceremony=${e.ceremony_id}`);
  if (e.code) parts.push(`code=${e.code}`);
  if (e.request_id) parts.push(`req=${e.request_id}`);
  for (const [k, v] of Object.entries(isAlert ? details : e.details ?? {})) parts.push(`${k}=${v}`);
  return parts.join('  ');
}

/** One line per cosigned checkpoint: the witness(es) it names, its size, root and time. */
function describeCosigned(c: CosignedCheckpoint): string {
  const names = c.cosignatures.map((l) => cosignatureName(l) ?? '(not a signature line)').join(', ');
  return `${names}  tree size ${c.checkpoint.tree_size}  root ${c.checkpoint.root_hash}  time ${c.checkpoint.time}`;
}

/** `ok: …` with what vouched for the log, or `BAD index N: why` (`BAD: why` when no record is named). */
export function describeVerdict(r: VerifyResult, now = Date.now()): string {
  if (!r.ok) return `BAD${r.firstBadIndex !== undefined ? ` index ${r.firstBadIndex}` : ''}: ${r.reason}`;
  const parts = [`ok: ${r.records} records, root ${r.rootHash}`, `${r.checkpoints} stored checkpoints verified`];
  if (r.trusted.held !== undefined) parts.push(`the given checkpoint (size ${r.trusted.held}) contained`);
  if (r.witnesses.length)
    parts.push(`cosigned by ${r.witnesses.length} trusted witness(es) of ${r.witnessQuorum} required (${r.witnesses.map((w) => `${w.name.replace(/^keyshard\.dev\/witness\//, '')} at size ${w.treeSize}`).join(', ')})`);
  else parts.push(`no witness quorum required`);
  if (r.newest) parts.push(`${r.witnessQuorum > 0 ? 'witness quorum cosigned' : 'newest sink checkpoint'} ${describeAge(Math.max(0, now - Date.parse(r.newest.time)))} ago`);
  return parts.join(', ');
}

export function registerAudit(program: Command): void {
  const audit = program
    .command('audit')
    .description('the tamper-evident audit log: verify a copy offline, read it from the sink (KEYSHARD_AUDIT_ADDR, KEYSHARD_AUDIT_CERT/KEY)')
    .option('--audit-addr <host:port>', 'audit sink address (KEYSHARD_AUDIT_ADDR)')
    .option('--audit-server-id <cn>', 'the sink\'s certificate name (KEYSHARD_AUDIT_SERVER_ID, default audit-sink)');
  const withReader = async <T>(fn: (r: AuditReader) => Promise<T>): Promise<T> => {
    const flags = { ...program.opts(), ...audit.opts() } as { auditAddr?: string; auditServerId?: string; ca?: string; tlsCert?: string; tlsKey?: string };
    const address = flags.auditAddr ?? process.env.KEYSHARD_AUDIT_ADDR;
    if (!address) throw new UsageError('audit-addr is not set: pass --audit-addr or set KEYSHARD_AUDIT_ADDR');
    const serverId = flags.auditServerId ?? process.env.KEYSHARD_AUDIT_SERVER_ID;
    const reader = new AuditReader({ address, tls: readTls(tlsFrom(flags, 'KEYSHARD_AUDIT')), ...(serverId ? { serverId } : {}) });
    try {
      return await fn(reader);
    } finally {
      reader.close();
    }
  };
  const print = (json: boolean | undefined) => (e: StoredAuditEvent) =>
    process.stdout.write(`${json ? JSON.stringify({ index: e.index, event: e.event }) : describeEvent(e)}\n`);
  /** Prints the events; an empty result says so (on stderr with --json, whose stdout stays JSON lines). */
  const printAll = async (events: AsyncIterable<StoredAuditEvent>, json: boolean | undefined, none: string) => {
    let n = 0;
    for await (const e of events) {
      print(json)(e);
      n++;
    }
    if (n === 0 && none) (json ? process.stderr : process.stdout).write(`${none}\n`);
  };

  audit
    .command('verify <log-dir>')
    .description(
      'verify a log directory (the live one or a copy) against trust roots from outside it: every record, the Merkle tree, every checkpoint ' +
        "under the sink's keys, witness cosignatures up to a quorum, freshness; `ok …` or `BAD index N: why` (exit 1). No sink needed",
    )
    .option('--trust <file>', 'trust roots kept outside the log folder: JSON {sinkKeys, witnesses, witnessQuorum} (`keyshard dev` writes DIR/audit-trust.json)')
    .option('--sink-key <file>', "the sink's checkpoint public key, PEM (repeatable: every key that signed; adds to --trust)", collect)
    .option('--witness <vkey>', "a witness's verifier key, name+keyid+base64 (repeatable; adds to --trust)", collect)
    .option('--witness-quorum <n>', "distinct trusted witnesses that must have cosigned a checkpoint the log contains (default: the trust file's, else 1)", integer({ min: 0, max: 64 }))
    .option('--cosigned <file>', 'witness-cosigned checkpoints kept outside the folder (`keyshard audit checkpoint --cosigned --json`; JSON object, array or lines; repeatable)', collect)
    .option('--checkpoint <file>', 'a sink checkpoint kept elsewhere (`keyshard audit checkpoint --json`) that the log must contain')
    .option('--fetch', "also fetch the witnesses' latest cosigned checkpoints from the sink (KEYSHARD_AUDIT_ADDR; checked like --cosigned, through their signatures)")
    .addOption(
      new Option('--max-age <duration>', "the witness quorum's newest cosignatures of checkpoints the log contains may be at most this old (90s, 15m, 24h, 30d; with --witness-quorum 0 the sink's own checkpoint times, on the sink host's word), or none for an archived copy")
        .argParser(maxAge)
        .default(DEFAULT_MAX_AGE.seconds, DEFAULT_MAX_AGE.text),
    )
    .option('--json', 'print the result as JSON')
    .action(async (dir: string, opts: VerifyFlags & { json?: boolean; fetch?: boolean }) => {
      const trust = trustFromFlags(dir, opts);
      const cosigned = cosignedFromFlags(opts.cosigned ?? []);
      if (opts.fetch) cosigned.push({ source: 'fetched from the sink', items: await withReader((r) => r.cosignedCheckpoints()) });
      const checkpoint = opts.checkpoint ? heldCheckpoint(opts.checkpoint) : undefined;
      const r = verifyLogDir(dir, { trust, cosigned, ...(checkpoint ? { checkpoint } : {}), ...(opts.maxAge !== 'none' ? { maxAgeSeconds: opts.maxAge } : {}) });
      if (opts.json) printJson(r);
      else process.stdout.write(`${describeVerdict(r)}\n`);
      for (const n of opts.json ? [] : r.notes) process.stderr.write(`note: ${n}\n`);
      if (!r.ok) process.exitCode = 1;
    });

  audit
    .command('checkpoint')
    .description("the sink's current signed checkpoint (keep it: `audit verify --checkpoint` proves the log still contains it); with --cosigned, the latest one each witness cosigned")
    .option('--cosigned', 'the latest cosigned checkpoint of each witness (coordinator replica), as the sink publishes them')
    .option('--json', 'print JSON (with --cosigned: an array of cosigned checkpoints, what `audit verify --cosigned FILE` reads)')
    .action(async (opts: { cosigned?: boolean; json?: boolean }) => {
      if (opts.cosigned) {
        const all = await withReader((r) => r.cosignedCheckpoints());
        if (opts.json) return printJson(all);
        if (all.length === 0) return void process.stdout.write('no cosigned checkpoints published yet\n');
        process.stdout.write(`${all.map(describeCosigned).join('\n')}\n(signatures not checked here: \`keyshard audit verify --cosigned FILE\` with your trust file)\n`);
        return;
      }
      const c = await withReader((r) => r.checkpoint());
      if (opts.json) printJson(c);
      else process.stdout.write(`tree size ${c.tree_size}\nroot      ${c.root_hash}\ntime      ${c.time}\nkey id    ${c.key_id}\n`);
    });

  audit
    .command('witness')
    .description("the coordinator replicas as witnesses of the sink's checkpoints (asks a coordinator, KEYSHARD_ADDR, as an admin)")
    .command('reset')
    .description("after a witness alarm (rolled-back or forked sink): trust the sink's current log from now on, on every replica (audited)")
    .option('--confirm', "required: the sink's current log is accepted as it is, whatever history it lost")
    .option('--json', 'print JSON')
    .action(async (opts: { confirm?: boolean; json?: boolean }) => {
      if (!opts.confirm) throw new UsageError("--confirm is required: a reset makes every witness trust the sink's current log, history it lost included");
      const r = await withClient(program, (client) => client.resetWitnesses(true));
      if (opts.json) return printJson({ previous: r.previous ? fromCheckpointMsg(r.previous) : null, anchor: r.anchor ? fromCheckpointMsg(r.anchor) : null, previous_alarm: r.previous_alarm });
      process.stdout.write(
        `witnesses re-anchored on the sink's checkpoint of size ${r.anchor?.tree_size ?? 0} (root ${r.anchor?.root_hash ?? ''})\n` +
          `previous cosigned size ${r.previous?.tree_size ?? 0}${r.previous_alarm ? `; alarm was: ${r.previous_alarm}` : ''}\n`,
      );
    });

  audit
    .command('tail')
    .description('print the last events (each with who called and which component recorded it); with --follow, keep printing new ones')
    .option('-n, --lines <n>', 'how many of the last events to print first', integer({ min: 0 }), 20)
    .option('-f, --follow', 'keep the stream open')
    .option('--json', 'one JSON object a line')
    .action(async (opts: { lines: number; follow?: boolean; json?: boolean }) => {
      await withReader(async (r) => {
        const size = (await r.checkpoint()).tree_size;
        const stop = new AbortController();
        process.once('SIGINT', () => stop.abort());
        await printAll(r.tail(Math.max(0, size - opts.lines), { follow: opts.follow, signal: stop.signal }), opts.json, opts.follow ? '' : 'no events');
      });
    });

  audit
    .command('query')
    .description('events matching every given filter, oldest first (each with who called and which component recorded it)')
    .option('--from <time>', 'RFC 3339 start time (inclusive)', timestamp)
    .option('--to <time>', 'RFC 3339 end time (exclusive)', timestamp)
    .option('--principal <cn>', 'caller identity')
    .option('--key-id <id>', 'key id')
    .option('--operation <op>', 'e.g. keys.Decrypt')
    .option('--result <r>', 'ok | denied | error', oneOf('ok', 'denied', 'error'))
    .option('--limit <n>', 'at most this many events', integer({ min: 1 }))
    .option('--json', 'one JSON object a line')
    .action(async (opts: { from?: string; to?: string; principal?: string; keyId?: string; operation?: string; result?: string; limit?: number; json?: boolean }) => {
      const filter = { from_time: opts.from, to_time: opts.to, principal: opts.principal, key_id: opts.keyId, operation: opts.operation, result: opts.result };
      await withReader(async (r) => {
        await printAll(r.query(filter, { limit: opts.limit }), opts.json, 'no events match');
      });
    });

  audit
    .command('hash <value>')
    .description('the HMAC under which the sink stores a sensitive value, to search for it (asks the sink unless --key-file)')
    .option('--key-file <file>', "the sink's HMAC key file (hmacKeyFile in its config): compute offline")
    .option('--json', 'print JSON')
    .action(async (value: string, opts: { keyFile?: string; json?: boolean }) => {
      const hash = opts.keyFile
        ? hmacValue(Buffer.from(readFlagFile('--key-file', opts.keyFile).trim(), 'hex'), value)
        : await withReader((r) => r.hashValue(value));
      if (opts.json) printJson({ hash });
      else process.stdout.write(`${hash}\n`);
    });
}
