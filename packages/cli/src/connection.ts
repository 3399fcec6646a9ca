/** Where the CLI connects and as whom: flags first, then KEYSHARD_* environment variables. */
import { KeyshardClient, CustodianOperatorClient } from '@keyshard/client';
import { UsageError } from './output.ts';

export interface ConnectionFlags {
  addr?: string;
  ca?: string;
  tlsCert?: string;
  tlsKey?: string;
}

function pick(flag: string | undefined, env: string, what: string): string {
  const v = flag ?? process.env[env];
  if (!v) throw new UsageError(`${what} is not set: pass --${what} or set ${env} (e.g. \`. .keyshard/dev/env\`)`);
  return v;
}

export function tlsFrom(f: ConnectionFlags, prefix = 'KEYSHARD') {
  return {
    ca: pick(f.ca, 'KEYSHARD_CA', 'ca'),
    cert: pick(f.tlsCert, `${prefix}_CERT`, 'tls-cert'),
    key: pick(f.tlsKey, `${prefix}_KEY`, 'tls-key'),
  };
}

export function coordinatorClient(f: ConnectionFlags): KeyshardClient {
  return new KeyshardClient({ address: pick(f.addr, 'KEYSHARD_ADDR', 'addr').split(',').map((a) => a.trim()), tls: tlsFrom(f) });
}

export function custodianClient(f: ConnectionFlags & { custodian?: string }): CustodianOperatorClient {
  return new CustodianOperatorClient({
    address: pick(f.custodian, 'KEYSHARD_CUSTODIAN_ADDR', 'custodian'),
    tls: tlsFrom(f, 'KEYSHARD_CUSTODIAN'),
  });
}

/** Runs one call with a coordinator client and closes it, also on error. */
export async function withClient<T>(program: { opts(): ConnectionFlags }, fn: (c: KeyshardClient) => Promise<T>): Promise<T> {
  const client = coordinatorClient(program.opts());
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

/** Runs one call with a custodian operator client and closes it, also on error. */
export async function withCustodian<T>(flags: ConnectionFlags & { custodian?: string }, fn: (c: CustodianOperatorClient) => Promise<T>): Promise<T> {
  const client = custodianClient(flags);
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}
