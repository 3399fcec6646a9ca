/**
 * Start-up configuration and logging shared by every service. Each service declares a zod
 * schema; `loadConfig` reads the JSON file named by `--config` (or KEYSHARD_CONFIG), validates
 * it once, and exits with a message naming every bad field. Nothing else reads process.env.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { pino, type Logger } from 'pino';

export { z };
export type { Logger };

export class ConfigError extends Error {}

export function parseConfig<S extends z.ZodType>(schema: S, raw: unknown, source = 'config'): z.infer<S> {
  const result = schema.safeParse(raw);
  if (!result.success) {
    const lines = result.error.issues.map((i) => `  ${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new ConfigError(`invalid ${source}:\n${lines.join('\n')}`);
  }
  return result.data;
}

/** Reads `--config FILE` from argv (or KEYSHARD_CONFIG) and validates it. */
export function loadConfig<S extends z.ZodType>(
  schema: S,
  argv: string[] = process.argv.slice(2),
  env: NodeJS.ProcessEnv = process.env,
): z.infer<S> {
  const i = argv.indexOf('--config');
  const file = i >= 0 ? argv[i + 1] : env.KEYSHARD_CONFIG;
  if (!file) throw new ConfigError('no configuration: pass --config FILE or set KEYSHARD_CONFIG');
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ConfigError(`cannot read config ${file}: ${(e as Error).message}`);
  }
  return parseConfig(schema, raw, `config ${file}`);
}

/** host:port, loopback or otherwise. */
export const address = z.string().regex(/^[\w.-]+:\d{1,5}$/, 'expected host:port');

export const tlsFiles = z.object({
  ca: z.string().min(1),
  cert: z.string().min(1),
  key: z.string().min(1),
});

/**
 * Structured JSON logs. Redaction is a second line of defence: code never logs secrets,
 * and these paths are censored should one slip into a log object. `context` adds fields to
 * every line (services pass `requestLogFields` from @keyshard/rpc: the request id of the call
 * a line is written for); a field the line sets itself wins.
 */
export function createLogger(name: string, level: string = 'info', context?: () => Record<string, unknown>): Logger {
  return pino({
    name,
    level,
    ...(context ? { mixin: context } : {}),
    base: { component: name, pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: {
      paths: ['pin', '*.pin', 'plaintext', '*.plaintext', 'share', '*.share', 'key', '*.material', 'rootKey'],
      censor: '[redacted]',
    },
  });
}

/** Runs a service's main, turning configuration errors into one clear line and exit code 2. */
export async function runMain(main: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`${e.message}\n`);
      process.exit(2);
    }
    process.stderr.write(`fatal: ${(e as Error).message}\n`);
    process.exit(1);
  }
}
