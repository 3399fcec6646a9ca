/** sign, verify, mac, datakey, reencrypt, alias: message on stdin, result on stdout. */
import type { Command } from 'commander';
import type { KeyshardClient } from '@keyshard/client';
import { withClient } from '../connection.ts';
import { parseContext, printJson, readStdin, UsageError } from '../output.ts';
import { collect, integer } from '../parse.ts';

function decodeArg(value: string, what: string): Buffer {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(value)) throw new UsageError(`${what} must be base64`);
  return Buffer.from(value, 'base64');
}

function out(bytes: Buffer, binary?: boolean): void {
  process.stdout.write(binary ? bytes : `${bytes.toString('base64')}\n`);
}

/** `valid` / `invalid` (exit 1 when invalid), or {"valid": …} with --json. */
function verdict(valid: boolean, json?: boolean): void {
  if (json) printJson({ valid });
  else process.stdout.write(valid ? 'valid\n' : 'invalid\n');
  if (!valid) process.exitCode = 1;
}

const JSON_FLAG = ['--json', 'print JSON'] as const;

export function registerCrypto(program: Command): void {
  const run = <T>(fn: (c: KeyshardClient) => Promise<T>) => withClient(program, fn);

  program
    .command('sign')
    .description('sign stdin (or a SHA-256 digest with --digest); prints the signature')
    .requiredOption('--key <key>', 'signing key')
    .option('--digest', 'stdin is a 32-byte SHA-256 digest (ECDSA keys)')
    .option('--binary', 'raw signature bytes instead of base64')
    .option('--json', 'print JSON: signature (base64), key id and version')
    .action(async (o: { key: string; digest?: boolean; binary?: boolean; json?: boolean }) => {
      const input = await readStdin();
      const r = await run((c) => c.sign(o.key, o.digest ? { digest: input } : { message: input }));
      if (o.json) printJson({ signature: r.signature, key_id: r.key_id, key_version: r.key_version });
      else out(r.signature, o.binary);
    });
  program
    .command('verify')
    .description('verify a signature over stdin; prints valid or invalid (exit 1 when invalid)')
    .requiredOption('--key <key>', 'signing key')
    .requiredOption('--signature <base64>', 'the signature')
    .option('--digest', 'stdin is a 32-byte SHA-256 digest')
    .option('--version <n>', 'key version (default: primary)', integer({ min: 1 }))
    .option(...JSON_FLAG)
    .action(async (o: { key: string; signature: string; digest?: boolean; version?: number; json?: boolean }) => {
      const input = await readStdin();
      const sig = decodeArg(o.signature, '--signature');
      const r = await run((c) => c.verify(o.key, o.digest ? { digest: input } : { message: input }, sig, o.version ?? 0));
      verdict(r.valid, o.json);
    });
  program
    .command('mac')
    .description('HMAC-SHA256 of stdin; with --verify, check a tag instead')
    .requiredOption('--key <key>', 'MAC key')
    .option('--verify <base64>', 'tag to verify')
    .option('--binary', 'raw tag bytes instead of base64')
    .option('--json', 'print JSON: the tag (base64) and key version, or {"valid": …}')
    .action(async (o: { key: string; verify?: string; binary?: boolean; json?: boolean }) => {
      const input = await readStdin();
      if (o.verify) {
        const r = await run((c) => c.verifyMac(o.key, input, decodeArg(o.verify!, '--verify')));
        return verdict(r.valid, o.json);
      }
      const r = await run((c) => c.mac(o.key, input));
      if (o.json) printJson({ mac: r.mac, key_version: r.key_version });
      else out(r.mac, o.binary);
    });
  program
    .command('datakey')
    .description('generate a data key: prints JSON with the plaintext (unless --no-plaintext) and wrapped copy, base64')
    .requiredOption('--key <key>', 'wrapping key')
    .option('--bytes <n>', 'data key length', integer({ min: 1, max: 1024 }), 32)
    .option('--context <k=v>', 'encryption context entry (repeatable)', collect)
    .option('--no-plaintext', 'return only the wrapped copy')
    .option('--json', 'print JSON (the only format)')
    .action(async (o: { key: string; bytes: number; context?: string[]; plaintext: boolean }) => {
      const ctx = parseContext(o.context);
      const r = await run((c) => (o.plaintext ? c.generateDataKey(o.key, o.bytes, ctx) : c.generateDataKeyWithoutPlaintext(o.key, o.bytes, ctx)));
      printJson({ key_id: r.key_id, key_version: r.key_version, ciphertext: r.ciphertext, ...(o.plaintext ? { plaintext: r.plaintext } : {}) });
    });
  program
    .command('reencrypt')
    .description('move a ciphertext (base64 on stdin) to the primary version or to another key, inside the service')
    .option('--context <k=v>', 'the source encryption context (repeatable)', collect)
    .option('--to-key <key>', 'destination key (default: the same key)')
    .option('--to-context <k=v>', 'the destination encryption context (repeatable)', collect)
    .option('--json', 'print JSON: ciphertext (base64), key id and version')
    .action(async (o: { context?: string[]; toKey?: string; toContext?: string[]; json?: boolean }) => {
      const text = (await readStdin()).toString('utf8').trim();
      const ct = decodeArg(text, 'stdin');
      const r = await run((c) => c.reEncrypt(ct, parseContext(o.context), o.toKey ?? '', parseContext(o.toContext ?? o.context)));
      if (o.json) printJson({ ciphertext: r.ciphertext, key_id: r.key_id, key_version: r.key_version });
      else out(r.ciphertext);
    });

  const alias = program.command('alias').description('key aliases (use them as alias/<name>)');
  const aliasLine = (a: { name: string; key_id: string }) => `alias/${a.name} -> ${a.key_id}`;
  for (const verb of ['create', 'update'] as const)
    alias
      .command(`${verb} <alias> <key>`)
      .description(verb === 'create' ? 'name a key: alias/<alias>' : 'point an alias at another key')
      .option(...JSON_FLAG)
      .action(async (name: string, key: string, o: { json?: boolean }) => {
        const a = await run((c) => (verb === 'create' ? c.createAlias(name, key) : c.updateAlias(name, key)));
        if (o.json) printJson(a);
        else process.stdout.write(`${aliasLine(a)}\n`);
      });
  alias
    .command('delete <alias>')
    .description('remove an alias (the key stays)')
    .action(async (name: string) => {
      await run((c) => c.deleteAlias(name));
      process.stdout.write(`deleted alias/${name}\n`);
    });
  alias
    .command('list')
    .description('every alias, or those of one key')
    .option('--key <key>', 'only aliases of this key')
    .option(...JSON_FLAG)
    .action(async (o: { key?: string; json?: boolean }) => {
      const { aliases } = await run((c) => c.listAliases(o.key ?? ''));
      if (o.json) printJson(aliases);
      else if (aliases.length === 0) process.stdout.write(o.key ? `no aliases of ${o.key}\n` : 'no aliases\n');
      else for (const a of aliases) process.stdout.write(`${aliasLine(a)}\n`);
    });
}
