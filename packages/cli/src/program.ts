/**
 * The `keyshard` command tree, built without parsing (main.ts parses; program.spec.ts inspects
 * it). One exit-code convention for every command, in `keyshard --help`: 0 ok, 1 the server
 * refused (any gRPC error) or the operation failed, 2 usage — commander's own errors included.
 */
import { Command, type CommanderError } from 'commander';
import { registerDev } from './commands/dev.ts';
import { registerCluster } from './commands/cluster.ts';
import { registerKeys } from './commands/keys.ts';
import { registerCustodian } from './commands/custodian.ts';
import { registerCrypto } from './commands/crypto.ts';
import { registerCeremonies } from './commands/ceremony.ts';
import { registerAudit } from './commands/audit.ts';
import { registerBackup } from './commands/backup.ts';

export const EXIT = { OK: 0, REFUSED: 1, USAGE: 2 } as const;

export const EXIT_HELP = `
Exit status:
  0  ok
  1  the server refused (any gRPC error, shown on one line after "keyshard: "), a
     ceremony failed or expired, or a check failed (verify: invalid; audit verify: BAD)
  2  usage: unknown command or option, missing or malformed value (durations are 90s, 15m,
     24h, 30d or plain seconds; numbers are whole numbers), connection settings not set

Results go to stdout (every command that prints data takes --json), progress and errors to
stderr. Connection settings come from flags or KEYSHARD_* variables: \`. .keyshard/dev/env\`
sets them for a \`keyshard dev\` cluster.
`;

/**
 * `onExit` receives commander's exits (help, version, usage errors); subcommands inherit it,
 * so it is set before any is added. main.ts exits 0 or 2; tests throw.
 */
export function buildProgram(onExit: (e: CommanderError) => never, output: { writeOut?: (s: string) => void; writeErr?: (s: string) => void } = {}): Command {
  const program = new Command('keyshard')
    .description('keyshard: a distributed key-management service sealed by a custodian quorum')
    .option('--addr <host:port,...>', 'coordinator address, or several comma-separated replicas (KEYSHARD_ADDR)')
    .option('--ca <file>', 'CA certificate (KEYSHARD_CA)')
    .option('--tls-cert <file>', 'client certificate (KEYSHARD_CERT)')
    .option('--tls-key <file>', 'client private key (KEYSHARD_KEY)')
    .option('--coordinator-ids <id,...>', 'the coordinator replicas\' certificate names; default: any coordinator-<n> name (KEYSHARD_COORDINATOR_IDS)')
    .addHelpText('after', EXIT_HELP)
    .exitOverride(onExit)
    // One line, like the CLI's own errors: `keyshard: option '--ttl <duration>' argument 'x' is invalid. …`
    // (commander puts its "Did you mean …?" on a line of its own).
    .configureOutput({ ...output, outputError: (str, write) => write(`${str.trimEnd().replace(/^error: /, 'keyshard: ').replace(/\s*\n\s*/g, ' ')}\n`) });

  registerDev(program);
  registerCluster(program);
  registerKeys(program);
  registerCustodian(program);
  registerCrypto(program);
  registerCeremonies(program); // after registerKeys: adds `key destroy`
  registerAudit(program);
  registerBackup(program);
  return program;
}
