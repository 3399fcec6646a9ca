/** key create/list/show, encrypt, decrypt. */
import type { Command } from 'commander';
import type { Key } from '@keyshard/client';
import { withClient } from '../connection.ts';
import { parseContext, printJson, progressBar, readStdin, UsageError } from '../output.ts';

function keyLine(k: Key): string {
  return `${k.id}  ${k.name.padEnd(24)} ${k.type.padEnd(12)} v${k.primary_version}  ${k.state.replace('KEY_STATE_', '').toLowerCase()}`;
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function registerKeys(program: Command): void {
  const key = program.command('key').description('manage keys');
  key
    .command('create <name>')
    .description('create a key; prints its id')
    .option('--type <type>', 'aes256-gcm | chacha20-poly1305 | hmac-sha256 | ed25519 | ecdsa-p256 | ecdsa-secp256k1', 'aes256-gcm')
    .option('--description <text>', 'description')
    .option('--rotation-period <seconds>', 'rotate automatically every this many seconds', (v) => Number.parseInt(v, 10))
    .action(async (name: string, opts: { type: string; description?: string; rotationPeriod?: number }) => {
      const k = await withClient(program, (c) => c.createKey(name, { type: opts.type, description: opts.description, rotationPeriodSeconds: opts.rotationPeriod }));
      process.stdout.write(`${k.id}\n`);
    });
  key
    .command('rotate [key]')
    .description('add a version and make it primary; --all-due rotates every key whose scheduled rotation is due')
    .option('--all-due', 'rotate every enabled key whose rotation period has elapsed (each at most once, like the leader sweep)')
    .option('--concurrency <n>', 'rotations in flight with --all-due', (v) => Number.parseInt(v, 10), 16)
    .action(async (ref: string | undefined, opts: { allDue?: boolean; concurrency: number }) => {
      if (!!opts.allDue === !!ref) throw new UsageError('give either a key or --all-due');
      if (!opts.allDue) {
        const k = await withClient(program, (c) => c.rotateKey(ref!));
        process.stdout.write(`${keyLine(k)}\n`);
        return;
      }
      if (!(opts.concurrency >= 1 && opts.concurrency <= 256)) throw new UsageError('--concurrency must be between 1 and 256');
      await withClient(program, async (c) => {
        const now = Date.now();
        const due: Key[] = [];
        let token = '';
        do {
          const page = await c.listKeys(1000, token);
          for (const k of page.keys)
            if (k.state === 'KEY_STATE_ENABLED' && k.rotation && k.rotation.period_seconds > 0 && Date.parse(k.rotation.next_rotation_at) <= now) due.push(k);
          token = page.next_page_token;
        } while (token);
        const bar = progressBar('rotating due keys', due.length);
        let rotated = 0;
        let next = 0;
        const worker = async () => {
          while (next < due.length) {
            const k = due[next++]!;
            // only_if_due: if the leader's sweep got there first, nothing is rotated twice.
            const r = await c.rotateKey(k.id, { onlyIfDue: true });
            if (r.primary_version > k.primary_version) rotated++;
            bar.tick();
          }
        };
        await Promise.all(Array.from({ length: Math.min(opts.concurrency, due.length) }, worker));
        bar.done(`${rotated} rotated, ${due.length - rotated} already rotated by the schedule, of ${due.length} due`);
      });
    });
  for (const [verb, what] of [
    ['disable', 'allow nothing but metadata reads'],
    ['enable', 'enable a disabled key'],
    ['cancel-destroy', 'cancel a scheduled destruction (the key becomes disabled)'],
  ] as const)
    key
      .command(`${verb} <key>`)
      .description(what)
      .action(async (ref: string) => {
        const k = await withClient(program, (c) =>
          verb === 'disable' ? c.disableKey(ref) : verb === 'enable' ? c.enableKey(ref) : c.cancelKeyDestruction(ref),
        );
        process.stdout.write(`${keyLine(k)}\n`);
      });
  key
    .command('schedule-destroy <key>')
    .description('schedule destruction after a waiting period (the final destruction needs a custodian quorum)')
    .option('--days <n>', 'waiting period in days (default 30)', (v) => Number(v))
    .option('--seconds <n>', 'waiting period in seconds (test clusters)', (v) => Number.parseInt(v, 10))
    .action(async (ref: string, opts: { days?: number; seconds?: number }) => {
      const seconds = opts.seconds ?? (opts.days !== undefined ? Math.round(opts.days * 86_400) : 0);
      const k = await withClient(program, (c) => c.scheduleKeyDestruction(ref, seconds));
      process.stdout.write(`${keyLine(k)}  destruction at ${k.destruction_at}\n`);
    });
  key
    .command('versions <key>')
    .description("list a key's versions")
    .action(async (ref: string) => {
      const k = await withClient(program, (c) => c.getKey(ref));
      for (const v of k.versions)
        process.stdout.write(
          `v${v.version}  created ${v.created_at}  encryptions ≤${v.encryptions}  last used ${v.last_used_at || 'never'}` +
            `${v.version === k.primary_version ? '  primary' : ''}${v.version < k.min_decryption_version ? '  retired' : ''}\n`,
        );
    });
  key
    .command('public <key>')
    .description('print the public key of a signing key')
    .option('--format <format>', 'pem | jwk', 'pem')
    .option('--version <n>', 'key version (default: primary)', (v) => Number.parseInt(v, 10))
    .action(async (ref: string, opts: { format: string; version?: number }) => {
      if (opts.format !== 'pem' && opts.format !== 'jwk') throw new UsageError('--format must be pem or jwk');
      const r = await withClient(program, (c) => c.getPublicKey(ref, opts.version ?? 0));
      process.stdout.write(opts.format === 'pem' ? r.pem : `${r.jwk}\n`);
    });
  const policy = key.command('policy').description("a key's access policy");
  policy
    .command('get <key>')
    .action(async (ref: string) => {
      const k = await withClient(program, (c) => c.getKey(ref));
      printJson(Object.fromEntries(Object.entries(k.policy?.grants ?? {}).map(([op, l]) => [op, l.principals])));
    });
  policy
    .command('set <key> <grants...>')
    .description('replace the policy: op=principal[,principal] ... (ops: encrypt decrypt sign verify mac generate_data_key rotate admin)')
    .action(async (ref: string, grants: string[]) => {
      const parsed = Object.fromEntries(grants.map((g) => {
        const [op, list] = g.split('=');
        if (!op || list === undefined) throw new UsageError(`expected op=principal[,principal], got ${JSON.stringify(g)}`);
        return [op, list.split(',').filter(Boolean)];
      }));
      await withClient(program, (c) => c.updateKey(ref, { policy: parsed }));
      process.stdout.write('policy updated\n');
    });
  key
    .command('list')
    .description('list keys')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const all: Key[] = [];
      await withClient(program, async (client) => {
        let token = '';
        do {
          const page = await client.listKeys(1000, token);
          all.push(...page.keys);
          token = page.next_page_token;
        } while (token);
      });
      if (opts.json) printJson(all);
      else for (const k of all) process.stdout.write(`${keyLine(k)}\n`);
    });
  key
    .command('show <key>')
    .description('show a key (id or name)')
    .action(async (ref: string) => {
      const k = await withClient(program, (client) => client.getKey(ref));
      printJson(k);
    });

  program
    .command('encrypt')
    .description('encrypt stdin; writes the ciphertext (base64) to stdout')
    .requiredOption('--key <key>', 'key id or name')
    .option('--context <k=v>', 'encryption context entry (repeatable); required again to decrypt', collect)
    .option('--binary', 'write raw ciphertext bytes instead of base64')
    .action(async (opts: { key: string; context?: string[]; binary?: boolean }) => {
      const context = parseContext(opts.context);
      const plaintext = await readStdin();
      const r = await withClient(program, (client) => client.encrypt(opts.key, plaintext, context));
      process.stdout.write(opts.binary ? r.ciphertext : `${r.ciphertext.toString('base64')}\n`);
    });

  program
    .command('decrypt')
    .description('decrypt a ciphertext (base64) from stdin; writes the plaintext to stdout')
    .option('--context <k=v>', 'encryption context entry (repeatable)', collect)
    .option('--binary', 'read raw ciphertext bytes instead of base64')
    .action(async (opts: { context?: string[]; binary?: boolean }) => {
      const context = parseContext(opts.context);
      const input = await readStdin();
      const text = input.toString('utf8').trim();
      if (!opts.binary && !/^[A-Za-z0-9+/]+={0,2}$/.test(text)) throw new UsageError('stdin is not base64 (use --binary for raw bytes)');
      const ciphertext = opts.binary ? input : Buffer.from(text, 'base64');
      const r = await withClient(program, (client) => client.decrypt(ciphertext, context));
      process.stdout.write(r.plaintext);
    });
}
