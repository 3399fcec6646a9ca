/**
 * The standard gRPC health service (grpc.health.v1.Health: Check, Watch, List), served on each
 * component's own mutual-TLS port so that probes test the very listener clients use.
 *
 * Who may call it: any peer whose certificate the cluster CA signed. The TLS handshake already
 * refuses everyone else, and beyond that the answers are not authorised per principal and not
 * audited: a probe every few seconds would flood the tamper-evident log, and what it reveals
 * (SERVING or NOT_SERVING per service name) is no more than a refused connection would.
 * Spec: https://github.com/grpc/grpc/blob/master/doc/health-checking.md
 */
import * as grpc from '@grpc/grpc-js';
import { service as healthDefinition, protoPath as healthProtoPath } from 'grpc-health-check';
import { makeClient } from './client.ts';
import type { TlsMaterial } from './tls.ts';
import { ANY_CLUSTER_SERVER, type ExpectedServer } from './server-identity.ts';

export { healthDefinition, healthProtoPath };

export type ServingStatus = 'SERVING' | 'NOT_SERVING';
/** What a Check or Watch answers; SERVICE_UNKNOWN only ever on Watch (Check says NOT_FOUND). */
export type HealthStatus = ServingStatus | 'UNKNOWN' | 'SERVICE_UNKNOWN';

/** List answers at most this many services (the spec's RESOURCE_EXHAUSTED bound). */
const LIST_LIMIT = 100;

type Request = { service: string };
type Reply = { status: HealthStatus };

export class HealthService {
  #status = new Map<string, ServingStatus>();
  #watches = new Map<string, Set<grpc.ServerWritableStream<Request, Reply>>>();
  #closed = false;

  /** `statuses` by service name; "" is the server's overall health. */
  constructor(statuses: Record<string, ServingStatus>) {
    for (const [name, status] of Object.entries(statuses)) this.#status.set(name, status);
  }

  status(service: string): ServingStatus | undefined {
    return this.#status.get(service);
  }

  /** Sets the status of each named service; Watch streams hear only of actual changes. */
  set(services: string | string[], status: ServingStatus): void {
    if (this.#closed) return;
    for (const name of typeof services === 'string' ? [services] : services) {
      if (this.#status.get(name) === status) continue;
      this.#status.set(name, status);
      for (const call of this.#watches.get(name) ?? []) call.write({ status });
    }
  }

  /**
   * Makes the named services follow a condition: sets them now and returns the function that
   * re-reads it, for the caller to hand to whatever announces the condition's changes.
   */
  track(services: string[], isServing: () => boolean): () => void {
    const update = () => this.set(services, isServing() ? 'SERVING' : 'NOT_SERVING');
    update();
    return update;
  }

  addToServer(server: grpc.Server): this {
    server.addService(healthDefinition, {
      Check: (call: grpc.ServerUnaryCall<Request, Reply>, callback: grpc.sendUnaryData<Reply>) => {
        const status = this.#status.get(call.request.service);
        if (status) callback(null, { status });
        else callback({ code: grpc.status.NOT_FOUND, details: `no health status for service ${JSON.stringify(call.request.service)}` });
      },
      Watch: (call: grpc.ServerWritableStream<Request, Reply>) => {
        const name = call.request.service;
        if (this.#closed) {
          call.end();
          return;
        }
        const watches = this.#watches.get(name) ?? new Set();
        this.#watches.set(name, watches);
        watches.add(call);
        const forget = () => watches.delete(call);
        call.on('cancelled', forget);
        call.on('close', forget);
        call.write({ status: this.#status.get(name) ?? 'SERVICE_UNKNOWN' });
      },
      List: (_call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<{ statuses: Record<string, Reply> }>) => {
        if (this.#status.size > LIST_LIMIT) return callback({ code: grpc.status.RESOURCE_EXHAUSTED, details: 'too many services to list' });
        callback(null, { statuses: Object.fromEntries([...this.#status].map(([name, status]) => [name, { status }])) });
      },
    });
    return this;
  }

  /**
   * Before the server shuts down: every service NOT_SERVING (watchers are told), then every
   * Watch stream ended, since a graceful `tryShutdown` would otherwise wait for them forever.
   */
  shutdown(): void {
    this.set([...this.#status.keys()], 'NOT_SERVING');
    this.#closed = true;
    for (const watches of this.#watches.values()) for (const call of watches) call.end();
    this.#watches.clear();
  }
}

type HealthClient = grpc.Client & {
  Check(req: Request, md: grpc.Metadata, opts: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r: Reply) => void): void;
};

/**
 * One Check call over mutual TLS: the peer's status for `service`, or the call's error. A probe
 * dials its own pod by address, so by default any server certificate of the CA will do.
 */
export async function checkHealth(address: string, tls: TlsMaterial, service = '', timeoutMs = 5_000, server: ExpectedServer = ANY_CLUSTER_SERVER): Promise<HealthStatus> {
  const Client = grpc.makeGenericClientConstructor(healthDefinition as grpc.ServiceDefinition, 'Health');
  const client = makeClient<HealthClient>(Client, address, tls, {}, server);
  try {
    return await new Promise<HealthStatus>((resolve, reject) =>
      client.Check({ service }, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (e, r) => (e ? reject(e) : resolve(r.status))),
    );
  } finally {
    client.close();
  }
}
