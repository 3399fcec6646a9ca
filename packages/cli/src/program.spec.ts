/**
 * The command tree as a whole: one exit-code convention documented in `keyshard --help`,
 * commander's own refusals reported on one line naming the flag (main.ts turns them into exit
 * 2), and --json on every command that prints data.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CommanderError, type Command } from 'commander';
import { buildProgram, EXIT } from './program.ts';

/** Parses argv as main.ts would, without running any action's network call: returns what commander wrote and how it exited. */
async function parse(argv: string[]): Promise<{ err: string; out: string; exit?: CommanderError }> {
  let err = '';
  let out = '';
  const program = buildProgram((e) => { throw e; }, { writeErr: (s) => (err += s), writeOut: (s) => (out += s) });
  try {
    await program.parseAsync(['node', 'keyshard', ...argv]);
    return { err, out };
  } catch (e) {
    if (e instanceof CommanderError) return { err, out, exit: e };
    throw e;
  }
}

const leaves = (c: Command, prefix = ''): [string, Command][] =>
  c.commands.length === 0 ? [[prefix.trim(), c]] : c.commands.flatMap((s) => leaves(s, `${prefix} ${s.name()}`));

describe('keyshard command tree', () => {
  it('documents the exit codes in --help', async () => {
    const { out, exit } = await parse(['--help']);
    assert.equal(exit?.exitCode, EXIT.OK);
    assert.match(out, /Exit status:\n\s+0\s+ok\n\s+1\s+the server refused .*\n[\s\S]*\n\s+2\s+usage/);
  });

  it('every command that prints data takes --json', () => {
    const noData = new Set(['alias delete']); // prints only a confirmation
    const missing = leaves(buildProgram((e) => { throw e; }))
      .filter(([name, cmd]) => !noData.has(name) && !cmd.options.some((o) => o.long === '--json'))
      .map(([name]) => name);
    assert.deepEqual(missing, []);
  });

  for (const [argv, flag] of [
    [['key', 'create', 'k', '--rotation-period', '1x'], '--rotation-period'],
    [['key', 'create', 'k', '--rotation-period', 'abc'], '--rotation-period'],
    [['key', 'schedule-destroy', 'k', '--days', 'abc'], '--days'],
    [['key', 'rotation-policy', 'k', '--period', '1.5d'], '--period'],
    [['key', 'rotate', '--all-due', '--concurrency', '0'], '--concurrency'],
    [['unseal', '--ttl', '8d'], '--ttl'],
    [['restore', 'f', '--ttl', 'soon'], '--ttl'],
    [['audit', 'tail', '-n', 'ten'], '--lines'],
    [['key', 'create', 'k', '--type', 'rsa'], '--type'],
    [['key', 'create', 'k', '--grant', 'explode=app'], '--grant'],
    [['key', 'create', 'k', '--grant', 'app'], '--grant'],
    [['dev', '--etcd-members', '2'], '--etcd-members'],
  ] as const)
    it(`refuses ${argv.join(' ')} on one line naming ${flag}`, async () => {
      const { err, exit } = await parse([...argv]);
      assert.equal(exit?.code, 'commander.invalidArgument');
      assert.notEqual(exit?.exitCode, EXIT.OK);
      assert.match(err, new RegExp(`^keyshard: option '(-\\w, )?${flag}[^']*' argument '[^']*' is invalid\\. expected .+\\n$`));
    });

  it("reports commander's own refusals on one line", async () => {
    for (const argv of [['--bogus'], ['key', 'create'], ['nonsense'], ['key', 'create', 'k', '--label'], ['key', 'create', 'k', '--rotation-periods', '1d']]) {
      const { err, exit } = await parse(argv);
      assert.ok(exit && exit.exitCode !== EXIT.OK, argv.join(' '));
      assert.match(err, /^keyshard: [^\n]+\n$/, argv.join(' '));
    }
  });
});
