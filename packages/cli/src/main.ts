/** `keyshard`: the CLI for services' operators, custodians and restoring operators. */
import { Command } from 'commander';
import { fail } from './output.ts';
import { registerDev } from './commands/dev.ts';
import { registerCluster } from './commands/cluster.ts';
import { registerKeys } from './commands/keys.ts';
import { registerCustodian } from './commands/custodian.ts';
import { registerCrypto } from './commands/crypto.ts';
import { registerCeremonies } from './commands/ceremony.ts';
import { registerAudit } from './commands/audit.ts';
import { registerBackup } from './commands/backup.ts';

const program = new Command('keyshard')
  .description('keyshard: a distributed key-management service sealed by a custodian quorum')
  .option('--addr <host:port,...>', 'coordinator address, or several comma-separated replicas (KEYSHARD_ADDR)')
  .option('--ca <file>', 'CA certificate (KEYSHARD_CA)')
  .option('--tls-cert <file>', 'client certificate (KEYSHARD_CERT)')
  .option('--tls-key <file>', 'client private key (KEYSHARD_KEY)')
  .option('--coordinator-ids <id,...>', 'the coordinator replicas\' certificate names; default: any coordinator-<n> name (KEYSHARD_COORDINATOR_IDS)')
  .showHelpAfterError()
  .configureOutput({ outputError: (str, write) => write(str) });

registerDev(program);
registerCluster(program);
registerKeys(program);
registerCustodian(program);
registerCrypto(program);
registerCeremonies(program); // after registerKeys: adds `key destroy`
registerAudit(program);
registerBackup(program);

program.parseAsync(process.argv).catch(fail);
