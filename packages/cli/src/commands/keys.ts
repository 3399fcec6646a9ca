/** key create/update/list/show/rotate/rotation-policy/…, encrypt, decrypt. */
import type { Command } from 'commander';
import type { Key } from '@keyshard/client';
import { withClient } from '../connection.ts';
import { parseContext, printJson, progressBar, readStdin, UsageError } from '../output.ts';
import { InvalidArgumentError } from 'commander';
import { collect, describeSeconds, duration, integer, keyValue, oneOf, parseGrant, POLICY_OPERATIONS } from '../parse.ts';

export const KEY_TYPES = ['aes256-gcm', 'chacha20-poly1305', 'hmac-sha256', 'ed25519', 'ecdsa-p256', 'ecdsa-secp256k1'];

function keyLine(k: Key): string {
  const period = Number(k.rotation?.period_seconds ?? 0);
  const labels = Object.entries(k.labels ?? {}).map(([n, v]) => `${n}=${v}`).join(',');
  return (
    `${k.id}  ${k.name.padEnd(24)} ${k.type.padEnd(12)} v${k.primary_version}  ${k.state.replace('KEY_STATE_', '').toLowerCase()}` +
    `${period > 0 ? `  rotates every ${describeSeconds(period)}` : ''}${labels ? `  ${labels}` : ''}`
  );
}

/** A key as one line, or with --json as the whole record. */
function printKey(k: Key, json?: boolean, suffix = ''): void {
  if (json) printJson(k);
  else process.stdout.write(`${keyLine(k)}${suffix}\n`);
}

const JSON_FLAG = ['--json', 'print JSON'] as const;

/** `encrypt=app decrypt=app,billing`, or `(none)`. */
const describeGrants = (grants: Record<string, string[]>) =>
  Object.entries(grants).map(([op, principals]) => `${op}=${principals.join(',') || '(nobody)'}`).join(' ') || '(none)';

export function registerKeys(program: Command): void {
  const key = program.command('key').description('manage keys');
  key
    .command('create <name>')
    .description(
      'create a key; prints its id (--json: the key). Without --grant only its creator uses it (a cluster admin who creates it ' +
        'only administers it: name the users with --grant; nobody may grant itself a use)',
    )
    .option('--type <type>', KEY_TYPES.join(' | '), oneOf(...KEY_TYPES), 'aes256-gcm')
    .option('--grant <op=principal[,principal]>', `the key's policy, one operation per flag (repeatable): ${POLICY_OPERATIONS.join(' ')}`, parseGrant)
    .option('--description <text>', 'description')
    .option('--label <name=value>', 'a label (repeatable)', keyValue('--label name'))
    .option('--rotation-period <duration>', 'rotate automatically every 90s, 15m, 24h, 30d or N seconds', duration())
    .option(...JSON_FLAG)
    .action(async (name: string, opts: { type: string; description?: string; label?: Record<string, string>; rotationPeriod?: number; grant?: Record<string, string[]>; json?: boolean }) => {
      const k = await withClient(program, (c) =>
        c.createKey(name, { type: opts.type, description: opts.description, labels: opts.label, rotationPeriodSeconds: opts.rotationPeriod, policy: opts.grant }),
      );
      if (opts.json) printJson(k);
      else process.stdout.write(`${k.id}\n`);
    });
  key
    .command('update <key>')
    .description("change a key's description, labels or oldest decryptable version")
    .option('--description <text>', 'new description')
    .option('--label <name=value>', 'set a label (repeatable); other labels are kept', keyValue('--label name'))
    .option('--remove-label <name>', 'remove a label (repeatable)', collect)
    .option('--min-decryption-version <n>', 'versions below this no longer decrypt', integer({ min: 1 }))
    .option(...JSON_FLAG)
    .action(async (ref: string, opts: { description?: string; label?: Record<string, string>; removeLabel?: string[]; minDecryptionVersion?: number; json?: boolean }) => {
      if (opts.description === undefined && !opts.label && !opts.removeLabel && opts.minDecryptionVersion === undefined)
        throw new UsageError('nothing to change: give --description, --label, --remove-label or --min-decryption-version');
      const k = await withClient(program, async (c) => {
        let labels: Record<string, string> | undefined;
        if (opts.label || opts.removeLabel) {
          const cur = (await c.getKey(ref)).labels ?? {};
          labels = { ...cur, ...opts.label };
          for (const n of opts.removeLabel ?? []) delete labels[n];
          // UpdateKey reads an empty label map as "unchanged": the last label cannot be removed this way.
          if (Object.keys(labels).length === 0) throw new UsageError(`cannot remove every label of ${ref}: UpdateKey keeps the labels when it is given none`);
        }
        return c.updateKey(ref, { description: opts.description, labels, minDecryptionVersion: opts.minDecryptionVersion });
      });
      printKey(k, opts.json);
    });
  key
    .command('rotation-policy <key>')
    .description("set or turn off a key's scheduled rotation (the next rotation is one period from now)")
    .option('--period <duration>', 'rotate every 90s, 15m, 24h, 30d or N seconds', duration())
    .option('--off', 'no scheduled rotation')
    .option(...JSON_FLAG)
    .action(async (ref: string, opts: { period?: number; off?: boolean; json?: boolean }) => {
      if ((opts.period === undefined) === !opts.off) throw new UsageError('give either --period <duration> or --off');
      const k = await withClient(program, (c) => c.setRotationPolicy(ref, opts.off ? 0 : opts.period!));
      printKey(k, opts.json, opts.json || !k.rotation?.next_rotation_at ? '' : `  next rotation ${k.rotation.next_rotation_at}`);
    });
  key
    .command('rotate [key]')
    .description('add a version and make it primary; --all-due rotates every key whose scheduled rotation is due')
    .option('--all-due', 'rotate every enabled key whose rotation period has elapsed (each at most once, like the leader sweep)')
    .option('--concurrency <n>', 'rotations in flight with --all-due', integer({ min: 1, max: 256 }), 16)
    .option(...JSON_FLAG)
    .action(async (ref: string | undefined, opts: { allDue?: boolean; concurrency: number; json?: boolean }) => {
      if (!!opts.allDue === !!ref) throw new UsageError('give either a key or --all-due');
      if (!opts.allDue) return printKey(await withClient(program, (c) => c.rotateKey(ref!)), opts.json);
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
        if (opts.json) printJson({ due: due.length, rotated, already_rotated: due.length - rotated });
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
      .option(...JSON_FLAG)
      .action(async (ref: string, opts: { json?: boolean }) => {
        const k = await withClient(program, (c) =>
          verb === 'disable' ? c.disableKey(ref) : verb === 'enable' ? c.enableKey(ref) : c.cancelKeyDestruction(ref),
        );
        printKey(k, opts.json);
      });
  key
    .command('schedule-destroy <key>')
    .description('schedule destruction after a waiting period (the final destruction needs a custodian quorum)')
    .option('--days <n>', 'waiting period in days (default: the cluster\'s, 30 days unless configured)', integer({ min: 1, max: 36_500 }))
    .option('--seconds <n>', 'waiting period in seconds (test clusters)', integer({ min: 1 }))
    .option(...JSON_FLAG)
    .action(async (ref: string, opts: { days?: number; seconds?: number; json?: boolean }) => {
      if (opts.days !== undefined && opts.seconds !== undefined) throw new UsageError('give --days or --seconds, not both');
      const seconds = opts.seconds ?? (opts.days !== undefined ? opts.days * 86_400 : 0);
      const k = await withClient(program, (c) => c.scheduleKeyDestruction(ref, seconds));
      printKey(k, opts.json, `  destruction at ${k.destruction_at}`);
    });
  key
    .command('versions <key>')
    .description("list a key's versions")
    .option(...JSON_FLAG)
    .action(async (ref: string, opts: { json?: boolean }) => {
      const k = await withClient(program, (c) => c.getKey(ref));
      if (opts.json) return printJson(k.versions);
      // Usage statistics are shown only to the key's administrators (keys.proto Key.caller_administers).
      const usage = (v: Key['versions'][number]) =>
        k.caller_administers ? `  encryptions ≤${v.encryptions}  last used ${v.last_used_at || 'never'}` : '  usage shown to its administrators only';
      for (const v of k.versions)
        process.stdout.write(
          `v${v.version}  created ${v.created_at}${usage(v)}` +
            `${v.version === k.primary_version ? '  primary' : ''}${v.version < k.min_decryption_version ? '  retired' : ''}\n`,
        );
    });
  key
    .command('public <key>')
    .description('print the public key of a signing key')
    .option('--format <format>', 'pem | jwk', oneOf('pem', 'jwk'), 'pem')
    .option('--version <n>', 'key version (default: primary)', integer({ min: 1 }))
    .option('--json', 'print JSON: the PEM, the JWK and the version')
    .action(async (ref: string, opts: { format: string; version?: number; json?: boolean }) => {
      const r = await withClient(program, (c) => c.getPublicKey(ref, opts.version ?? 0));
      if (opts.json) printJson({ key_version: r.key_version, pem: r.pem, jwk: JSON.parse(r.jwk) as unknown });
      else process.stdout.write(opts.format === 'pem' ? r.pem : `${r.jwk}\n`);
    });
  const policy = key
    .command('policy')
    .description(
      "a key's access policy. Use (encrypt decrypt sign verify mac generate_data_key) and administration (rotate, admin) are separate: " +
        'cluster admins administer every key and use only what a policy names them for; nobody may grant itself a use',
    );
  policy
    .command('get <key>')
    .description('the policy as JSON: operation -> principals ({} is the default: the creator uses the key). Shown only to who administers the key')
    .option('--json', 'print JSON (the only format)')
    .action(async (ref: string) => {
      const k = await withClient(program, (c) => c.getKey(ref));
      if (!k.caller_administers) throw new Error(`you do not administer key ${k.name}: only its administrators see its policy`);
      printJson(Object.fromEntries(Object.entries(k.policy?.grants ?? {}).map(([op, l]) => [op, l.principals])));
    });
  policy
    .command('set <key> <grants...>')
    .description(
      `replace the policy: op=principal[,principal] ... (ops: ${POLICY_OPERATIONS.join(' ')}). ` +
        'A change that names you for a use you do not hold is refused (separation of duties: another administrator makes it)',
    )
    .option('--json', 'print the key as JSON')
    .action(async (ref: string, grants: string[], opts: { json?: boolean }) => {
      let parsed: Record<string, string[]> = {};
      for (const g of grants) {
        try {
          parsed = parseGrant(g, parsed);
        } catch (e) {
          throw new UsageError(e instanceof InvalidArgumentError ? e.message : String(e));
        }
      }
      const k = await withClient(program, (c) => c.updateKey(ref, { policy: parsed }));
      if (opts.json) printJson(k);
      else process.stdout.write(`policy of ${k.name} updated: ${describeGrants(parsed)}\n`);
    });
  key
    .command('list')
    .description('list keys')
    .option('--label <name=value>', 'only keys with this label (repeatable: all of them)', keyValue('--label name'))
    .option(...JSON_FLAG)
    .action(async (opts: { label?: Record<string, string>; json?: boolean }) => {
      const all: Key[] = [];
      await withClient(program, async (client) => {
        let token = '';
        do {
          const page = await client.listKeys(1000, token);
          all.push(...page.keys);
          token = page.next_page_token;
        } while (token);
      });
      const shown = all.filter((k) => Object.entries(opts.label ?? {}).every(([n, v]) => k.labels?.[n] === v));
      if (opts.json) printJson(shown);
      else if (shown.length === 0) process.stdout.write(all.length ? 'no keys with these labels\n' : 'no keys\n');
      else for (const k of shown) process.stdout.write(`${keyLine(k)}\n`);
    });
  key
    .command('show <key>')
    .description("show a key (id, name or alias/<name>) as JSON; its policy and usage statistics only if you administer it (caller_administers)")
    .option('--json', 'print JSON (the only format)')
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
    .option('--json', 'print JSON: ciphertext (base64), key id and version')
    .action(async (opts: { key: string; context?: string[]; binary?: boolean; json?: boolean }) => {
      const context = parseContext(opts.context);
      const plaintext = await readStdin();
      const r = await withClient(program, (client) => client.encrypt(opts.key, plaintext, context));
      if (opts.json) printJson({ ciphertext: r.ciphertext, key_id: r.key_id, key_version: r.key_version });
      else process.stdout.write(opts.binary ? r.ciphertext : `${r.ciphertext.toString('base64')}\n`);
    });

  program
    .command('decrypt')
    .description('decrypt a ciphertext (base64) from stdin; writes the plaintext to stdout')
    .option('--context <k=v>', 'encryption context entry (repeatable)', collect)
    .option('--binary', 'read raw ciphertext bytes instead of base64')
    .option('--json', 'print JSON: plaintext (base64), key id and version')
    .action(async (opts: { context?: string[]; binary?: boolean; json?: boolean }) => {
      const context = parseContext(opts.context);
      const input = await readStdin();
      const text = input.toString('utf8').trim();
      if (!opts.binary && !/^[A-Za-z0-9+/]+={0,2}$/.test(text)) throw new UsageError('stdin is not base64 (use --binary for raw bytes)');
      const ciphertext = opts.binary ? input : Buffer.from(text, 'base64');
      const r = await withClient(program, (client) => client.decrypt(ciphertext, context));
      if (opts.json) printJson({ plaintext: r.plaintext, key_id: r.key_id, key_version: r.key_version });
      else process.stdout.write(r.plaintext);
    });
}
