/**
 * Which etcd calls the client may send again after a failure: connectEtcd's `global` fault
 * policy, in place of etcd3's default.
 *
 * etcd3 1.x (lib/connection-pool.js) runs every unary call through `global`, by default
 * `retry(handleWhen(isRecoverableError), { maxAttempts: 3 })`: UNAVAILABLE, DEADLINE_EXCEEDED,
 * INTERNAL and the like are resent, to the next host. But such an error may come after etcd
 * applied the request and only its answer was lost; a resent transaction then meets its own
 * write (a create finds its name taken) and a resent put lands again, possibly over a newer value.
 *
 * The policy only sees an opaque attempt, so the call-options factory — which etcd3 calls within
 * each attempt, just before the request goes out — notes in the attempt's async context which
 * call it is (`noteCall`). A failed attempt is sent again only if it is a read (or a lease grant:
 * a lease nobody keeps alive expires by itself) or if its request never went out: every host's
 * circuit breaker open, or no connection to the host (grpc-js fails such a call in its picker,
 * before any transport has it). A write whose answer may have been lost fails with its error,
 * for the caller to settle: commitCas and CreateBatcher (cas.ts) do so for a compare-and-swap.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { isBrokenCircuitError } from 'cockatiel';
import { isRecoverableError, type CallContext, type IOptions, type IRequestOp } from 'etcd3';

type GlobalPolicy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>;

/** Sends after the first, as etcd3's default (each to the next host, without delay). */
const RESENDS = 3;

const RESENDABLE = new Set([
  'KV.range',
  'Lease.leaseGrant',
  'Lease.leaseTimeToLive',
  'Lease.leaseLeases',
  'Cluster.memberList',
  'Maintenance.status',
  'Maintenance.hash',
  'Maintenance.hashKV',
]);

const readsOnly = (ops: IRequestOp[] | undefined) => (ops ?? []).every((op) => op.request_range !== undefined && Object.keys(op).length === 1);

/** Whether a request may be sent again without its effect happening twice. */
export function isResendable(call: CallContext): boolean {
  if (call.service === 'KV' && call.method === 'txn') return readsOnly(call.params.success) && readsOnly(call.params.failure);
  return RESENDABLE.has(`${call.service}.${call.method}`);
}

/**
 * A call that failed before it left: grpc-js had no connection up to take it
 * (load-balancer-pick-first.js, picker.js), or every host's circuit breaker was open (etcd3's
 * connection pool then throws cockatiel's BrokenCircuitError without calling through).
 */
export function neverSent(e: unknown): boolean {
  return isBrokenCircuitError(e) || (e instanceof Error && e.message.includes('UNAVAILABLE: No connection established'));
}

const noEvent = () => ({ dispose() {} });

export class ResendPolicy {
  readonly #attempt = new AsyncLocalStorage<{ sent?: CallContext }>();

  /** To be called by the call-options factory: the request `call` is about to be sent. */
  noteCall(call: CallContext): void {
    if (call.isStream) return; // streams (watch, keep-alive) do not go through the policy
    const attempt = this.#attempt.getStore();
    if (attempt) attempt.sent = call;
  }

  readonly global: GlobalPolicy = {
    _altReturn: undefined as never,
    onSuccess: noEvent,
    onFailure: noEvent,
    execute: async <T>(fn: (context: { signal: AbortSignal }) => PromiseLike<T> | T, signal = new AbortController().signal): Promise<T> => {
      for (let sends = 1; ; sends++) {
        const attempt: { sent?: CallContext } = {};
        try {
          return await this.#attempt.run(attempt, () => fn({ signal }));
        } catch (e) {
          const again = sends <= RESENDS && !signal.aborted && e instanceof Error && isRecoverableError(e) && (!attempt.sent || isResendable(attempt.sent) || neverSent(e));
          if (!again) throw e;
        }
      }
    },
  };
}
