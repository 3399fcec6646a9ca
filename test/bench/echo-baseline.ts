/**
 * The bare gRPC baseline of the per-call benches (encrypt, decrypt, sign): test/bench/echo-server.ts
 * in its own process with the coordinator's mutual TLS (cluster CA, coordinator-1's certificate,
 * client certificate required), and the alternating comparison of a KeyService call against it:
 * the same load generator, concurrency, channels and payload size against both.
 */
import { COORDINATOR } from '@keyshard/devcluster';
import type { BenchRun } from './bench-run.ts';
import type { Child } from './common.ts';
import { atCoordinator, compareRounds, runLoad, DEFAULT_CONCURRENCY, DEFAULT_PAYLOAD, type Row } from './load-run.ts';
import { report } from './report.ts';

export interface EchoServer {
  label: string;
  address: string;
  child: Child;
}

/** Starts echo-server.ts; `wrap` and `auditAddress` select the diagnostic variants (see its header). */
export async function startEcho(run: BenchRun, label: string, wrap: 'none' | 'rpc' | 'audit' = 'none', auditAddress?: string): Promise<EchoServer> {
  const c = run.cluster!;
  const certs = c.layout.certs[COORDINATOR]!;
  const args = ['--ca', certs.ca, '--cert', certs.cert, '--key', certs.key, '--wrap', wrap];
  // The cluster's audit log as coordinators reach it (every replica), or a stand-in at `auditAddress` (ack-sink.ts).
  const sink = auditAddress ? ['--audit-address', auditAddress, '--audit-key', c.layout.sinkCheckpointPublicKey] : run.auditFlags();
  if (wrap === 'audit') args.push(...sink, '--audit-source', COORDINATOR);
  const child = run.spawn(`echo-server ${label}`, 'echo-server.ts', args, run.profArgs(label));
  const line = await child.waitFor(/"listening"/);
  return { label, address: (JSON.parse(line) as { listening: string }).listening, child };
}

export interface EchoComparison {
  /** The JSON line's `bench`. */
  bench: string;
  /** Row label and load.ts --target of the measured call, e.g. 'decrypt'. */
  target: string;
  keyName: string;
  /** What the payload is, for the title (e.g. "1024 B plaintext"). */
  payloadNote: string;
  ratioTarget: number;
  /** Diagnostic runs between the echo and the measured run of every round (encrypt BENCH_EXTRA). */
  extraSteps?: ((suffix: string) => Promise<Row>)[];
  /** Reset and read the echo server's counters around each run. */
  probeEcho?: boolean;
  /** More fields for the JSON line. */
  details?: Record<string, unknown>;
}

/** Starts the echo server, alternates echo and `c.target` runs, prints the report; returns the exit code. */
export async function compareWithEcho(run: BenchRun, c: EchoComparison): Promise<number> {
  const echo = await startEcho(run, 'echo');
  const { seconds, warmup, channels } = run.settings;
  const cmp = await compareRounds(run, {
    baseline: (suffix) =>
      runLoad(run, {
        label: `echo${suffix}`,
        target: 'echo',
        address: echo.address,
        watch: { 'echo-server': () => echo.child.pid },
        probe: c.probeEcho ? echo.child : undefined,
      }),
    extra: c.extraSteps,
    measured: (suffix) => runLoad(run, { label: `${c.target}${suffix}`, target: c.target, args: ['--keyname', c.keyName], ...atCoordinator(run) }),
  });
  const name = c.target[0]!.toUpperCase() + c.target.slice(1);
  return report(run, cmp, {
    title:
      `${name} vs bare gRPC echo: ${DEFAULT_PAYLOAD} B payload (${c.payloadNote}), mutual TLS, ${DEFAULT_CONCURRENCY} in flight, ` +
      `${channels} channel(s), ${seconds} s measured after ${warmup} s warm-up`,
    bench: c.bench,
    unit: 'calls/s',
    target: c.ratioTarget,
    ratioName: `${c.target}/echo`,
    details: c.details,
  });
}
