/** etcd failures as keyshard errors, and who hears of them. */
import { KeyshardError } from '@keyshard/errors';

const errorListeners = new Set<(what: string) => void>();

/**
 * Calls `listener` with each etcd failure etcdCall turns into UNAVAILABLE (for metrics; `what`
 * may name a key, so it is no metric label). Returns the function that removes it.
 */
export function onEtcdError(listener: (what: string) => void): () => void {
  errorListeners.add(listener);
  return () => errorListeners.delete(listener);
}

/** Wraps etcd failures as UNAVAILABLE so callers get a retryable status, never a stack. */
export async function etcdCall<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof KeyshardError) throw e;
    for (const listener of errorListeners) listener(what);
    throw new KeyshardError('UNAVAILABLE', `state store unavailable (${what})`, { cause: e, reason: 'STORE_UNAVAILABLE' });
  }
}
