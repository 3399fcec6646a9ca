/** key create/list/show, encrypt, decrypt. */
import type { Command } from 'commander';
import type { Key } from '@keyshard/client';
import { coordinatorClient } from '../connection.ts';
import { parseContext, printJson, readStdin, UsageError } from '../output.ts';

function keyLine(k: Key): string {
  return `${k.id}  ${k.name.padEnd(24)} ${k.type.padEnd(12)} v${k.primary_version}  ${k.state.replace('KEY_STATE_', '').toLowerCase()}`;
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function registerKeys(program: Command): void {
  const key = program.command('key').description('manage keys');
  key
    .command('create <name>')
    .description('create a key; prints its id')
    .option('--type <type>', 'key type', 'aes256-gcm')
    .option('--description <text>', 'description')
    .action(async (name: string, opts: { type: string; description?: string }) => {
      const client = coordinatorClient(program.opts());
      const k = await client.createKey(name, { type: opts.type, description: opts.description });
      client.close();
      process.stdout.write(`${k.id}\n`);
    });
  key
    .command('list')
    .description('list keys')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const client = coordinatorClient(program.opts());
      const all: Key[] = [];
      let token = '';
      do {
        const page = await client.listKeys(1000, token);
        all.push(...page.keys);
        token = page.next_page_token;
      } while (token);
      client.close();
      if (opts.json) printJson(all);
      else for (const k of all) process.stdout.write(`${keyLine(k)}\n`);
    });
  key
    .command('show <key>')
    .description('show a key (id or name)')
    .action(async (ref: string) => {
      const client = coordinatorClient(program.opts());
      const k = await client.getKey(ref);
      client.close();
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
      const client = coordinatorClient(program.opts());
      const r = await client.encrypt(opts.key, plaintext, context);
      client.close();
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
      const client = coordinatorClient(program.opts());
      const r = await client.decrypt(ciphertext, context);
      client.close();
      process.stdout.write(r.plaintext);
    });
}
