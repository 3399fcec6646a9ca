/**
 * A health probe for Kubernetes exec probes and scripts: one grpc.health.v1 Check over mutual TLS.
 *   node packages/rpc/dist/health-probe.js --address 127.0.0.1:7100 \
 *     --ca ca.crt --cert tls.crt --key tls.key [--service keyshard.v1.KeyService] [--timeout-ms 3000]
 * Exits 0 when the service is SERVING, 1 when it answers anything else or cannot be reached,
 * 2 on bad arguments. Kubernetes' built-in gRPC probe cannot present a client certificate, and
 * every keyshard port requires one, hence this.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isServiceError, statusName } from './client.ts';
import { checkHealth } from './health.ts';
import { readTls } from './tls.ts';

const USAGE = 'usage: health-probe --address HOST:PORT --ca FILE --cert FILE --key FILE [--service NAME] [--timeout-ms N]';

export interface ProbeArgs {
  address: string;
  ca: string;
  cert: string;
  key: string;
  service: string;
  timeoutMs: number;
}

export function parseProbeArgs(argv: string[]): ProbeArgs {
  const flags = new Map<string, string>();
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i]!, argv[i + 1]];
    if (!flag.startsWith('--') || value === undefined) throw new Error(USAGE);
    flags.set(flag.slice(2), value);
  }
  const known = new Set(['address', 'ca', 'cert', 'key', 'service', 'timeout-ms']);
  for (const f of flags.keys()) if (!known.has(f)) throw new Error(`unknown flag --${f}\n${USAGE}`);
  const need = (f: string) => {
    const v = flags.get(f);
    if (!v) throw new Error(`--${f} is required\n${USAGE}`);
    return v;
  };
  const address = need('address');
  if (!/^[\w.-]+:\d{1,5}$/.test(address)) throw new Error(`--address: expected host:port, got ${address}`);
  const timeoutMs = Number(flags.get('timeout-ms') ?? 3_000);
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) throw new Error('--timeout-ms: expected a positive integer');
  return { address, ca: need('ca'), cert: need('cert'), key: need('key'), service: flags.get('service') ?? '', timeoutMs };
}

async function main(): Promise<number> {
  let args: ProbeArgs;
  try {
    args = parseProbeArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    return 2;
  }
  const label = `${args.address} ${JSON.stringify(args.service)}`;
  try {
    const status = await checkHealth(args.address, readTls(args), args.service, args.timeoutMs);
    process.stdout.write(`${label}: ${status}\n`);
    return status === 'SERVING' ? 0 : 1;
  } catch (e) {
    const why = isServiceError(e) ? `${statusName(e.code)}: ${e.details}` : (e as Error).message;
    process.stdout.write(`${label}: ${why}\n`);
    return 1;
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  void main().then((code) => process.exit(code));
}
