/** `keyshard`: the CLI for services' operators, custodians and restoring operators. */
import { fail } from './output.ts';
import { buildProgram, EXIT } from './program.ts';

// commander's exits: help and version are 0, anything else it refuses is a usage error.
const program = buildProgram((e) => process.exit(e.exitCode === 0 ? EXIT.OK : EXIT.USAGE));
program.parseAsync(process.argv).catch(fail);
