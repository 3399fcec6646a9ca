/**
 * audit verify/checkpoint/tail/query/hash: for auditors. `verify` works offline on a log
 * directory (a copy is enough); the others talk to the audit sink (KEYSHARD_AUDIT_ADDR) with an
 * audit reader's certificate (KEYSHARD_AUDIT_CERT/KEY, or --tls-cert/--tls-key).
 */
import type { Command } from 'commander';
import { readTls } from '@keyshard/rpc';
import { AuditReader, type StoredAuditEvent } from '@keyshard/audit-client/reader';
import { ALERT_OPERATION, hmacValue, readCheckpointJson, verifyLogDir } from '@keyshard/audit-log';
import { tlsFrom } from '../connection.ts';
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
    .description('recompute the Merkle tree of a log directory, check every checkpoint; name the first bad index (no sink needed)')
    .option('--checkpoint <file>', 'a checkpoint kept elsewhere (from `keyshard audit checkpoint --json`) that the log must contain')
    .option('--key <file>', 'trusted checkpoint public key (PEM file or directory; repeatable); default: <log-dir>/keys', collect)
    .option('--json', 'print the result as JSON')
    .action((dir: string, opts: { checkpoint?: string; key?: string[]; json?: boolean }) => {
      if (opts.checkpoint) readFlagFile('--checkpoint', opts.checkpoint); // a missing file is a usage error, not a BAD log
      const r = verifyLogDir(dir, { keys: opts.key, ...(opts.checkpoint ? { checkpoint: readCheckpointJson(opts.checkpoint) } : {}) });
      if (opts.json) printJson(r);
      else if (r.ok) process.stdout.write(`ok: ${r.records} records, root ${r.rootHash}, ${r.checkpoints} signed checkpoints verified${opts.checkpoint ? ' and the given checkpoint is contained' : ''}\n`);
      else process.stdout.write(`BAD${r.firstBadIndex !== undefined ? ` at index ${r.firstBadIndex}` : ''}: ${r.reason}\n`);
      for (const n of opts.json ? [] : r.notes) process.stderr.write(`note: ${n}\n`);
      if (!r.ok) process.exitCode = 1;
    });

  audit
    .command('checkpoint')
    .description("the sink's current signed checkpoint (keep it: `audit verify --checkpoint` proves the log still contains it)")
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const c = await withReader((r) => r.checkpoint());
      if (opts.json) printJson(c);
      else process.stdout.write(`tree size ${c.tree_size}\nroot      ${c.root_hash}\ntime      ${c.time}\nkey id    ${c.key_id}\n`);
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
