/** sign, verify, mac, datakey, reencrypt, alias: message on stdin, result on stdout. */
import type { Command } from 'commander';
import type { KeyshardClient } from '@keyshard/client';
import { withClient } from '../connection.ts';
import { parseContext, printJson, readStdin, UsageError } from '../output.ts';

const collect = (v: string, prev: string[] = []) => [...prev, v];

function decodeArg(value: string, what: string): Buffer {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(value)) throw new UsageError(`${what} must be base64`);
  return Buffer.from(value, 'base64');
}

function out(bytes: Buffer, binary?: boolean): void {
  process.stdout.write(binary ? bytes : `${bytes.toString('base64')}\n`);
}

export function registerCrypto(program: Command): void {
  const run = <T>(fn: (c: KeyshardClient) => Promise<T>) => withClient(program, fn);

  program
    .command('sign')
    .description('sign stdin (or a SHA-256 digest with --digest); prints the signature')
    .requiredOption('--key <key>', 'signing key')
    .option('--digest', 'stdin is a 32-byte SHA-256 digest (ECDSA keys)')
    .option('--binary', 'raw signature bytes instead of base64')
    .action(async (o: { key: string; digest?: boolean; binary?: boolean }) => {
      const input = await readStdin();
      const r = await run((c) => c.sign(o.key, o.digest ? { digest: input } : { message: input }));
      out(r.signature, o.binary);
    });
  program
    .command('verify')
    .description('verify a signature over stdin; prints valid or invalid (exit 1 when invalid)')
    .requiredOption('--key <key>', 'signing key')
    .requiredOption('--signature <base64>', 'the signature')
    .option('--digest', 'stdin is a 32-byte SHA-256 digest')
    .option('--version <n>', 'key version (default: primary)', (v) => Number.parseInt(v, 10))
    .action(async (o: { key: string; signature: string; digest?: boolean; version?: number }) => {
      const input = await readStdin();
      const sig = decodeArg(o.signature, '--signature');
      const r = await run((c) => c.verify(o.key, o.digest ? { digest: input } : { message: input }, sig, o.version ?? 0));
      process.stdout.write(r.valid ? 'valid\n' : 'invalid\n');
      if (!r.valid) process.exitCode = 1;
    });
  program
    .command('mac')
    .description('HMAC-SHA256 of stdin; with --verify, check a tag instead')
    .requiredOption('--key <key>', 'MAC key')
    .option('--verify <base64>', 'tag to verify')
    .option('--binary', 'raw tag bytes instead of base64')
    .action(async (o: { key: string; verify?: string; binary?: boolean }) => {
      const input = await readStdin();
      if (o.verify) {
        const r = await run((c) => c.verifyMac(o.key, input, decodeArg(o.verify!, '--verify')));
        process.stdout.write(r.valid ? 'valid\n' : 'invalid\n');
        if (!r.valid) process.exitCode = 1;
        return;
      }
      out((await run((c) => c.mac(o.key, input))).mac, o.binary);
    });
  program
    .command('datakey')
    .description('generate a data key: prints JSON with the plaintext (unless --no-plaintext) and wrapped copy, base64')
    .requiredOption('--key <key>', 'wrapping key')
    .option('--bytes <n>', 'data key length', (v) => Number.parseInt(v, 10), 32)
    .option('--context <k=v>', 'encryption context entry (repeatable)', collect)
    .option('--no-plaintext', 'return only the wrapped copy')
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
    .action(async (o: { context?: string[]; toKey?: string; toContext?: string[] }) => {
      const text = (await readStdin()).toString('utf8').trim();
      const ct = decodeArg(text, 'stdin');
      const r = await run((c) => c.reEncrypt(ct, parseContext(o.context), o.toKey ?? '', parseContext(o.toContext ?? o.context)));
      out(r.ciphertext);
    });

  const alias = program.command('alias').description('key aliases (use them as alias/<name>)');
  alias.command('create <alias> <key>').action(async (name: string, key: string) => {
    const a = await run((c) => c.createAlias(name, key));
    process.stdout.write(`alias/${a.name} -> ${a.key_id}\n`);
  });
  alias.command('update <alias> <key>').action(async (name: string, key: string) => {
    const a = await run((c) => c.updateAlias(name, key));
    process.stdout.write(`alias/${a.name} -> ${a.key_id}\n`);
  });
  alias.command('delete <alias>').action(async (name: string) => {
    await run((c) => c.deleteAlias(name));
    process.stdout.write(`deleted alias/${name}\n`);
  });
  alias
    .command('list')
    .option('--key <key>', 'only aliases of this key')
    .action(async (o: { key?: string }) => {
      const { aliases } = await run((c) => c.listAliases(o.key ?? ''));
      for (const a of aliases) process.stdout.write(`alias/${a.name} -> ${a.key_id}\n`);
    });
}
