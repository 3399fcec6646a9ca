/**
 * What every SDK client shares about a connection: where it goes and as whom (TLS material or
 * the files holding it), and the pinned identity of a cluster's coordinators
 * (@keyshard/rpc server-identity.ts): a server presenting any other certificate of the CA is
 * refused.
 */
import type * as grpc from '@grpc/grpc-js';
import { expectCoordinator, readTls, type ExpectedServer, type TlsFiles, type TlsMaterial } from '@keyshard/rpc';

/** Where one connection goes and as whom. */
export interface ConnectionOptions {
  address: string;
  tls: TlsMaterial | TlsFiles;
  channelOptions?: grpc.ChannelOptions;
}

/** The TLS material as given, or read from the files given. */
export function tlsMaterial(tls: TlsMaterial | TlsFiles): TlsMaterial {
  return Buffer.isBuffer(tls.ca) ? (tls as TlsMaterial) : readTls(tls as TlsFiles);
}

/** The pinned identity of a cluster's coordinators (validated: a list of non-empty ids, or none). */
export function coordinatorIdentity(ids: readonly string[] | undefined): ExpectedServer {
  if (ids !== undefined && (!Array.isArray(ids) || ids.some((i) => typeof i !== 'string' || i.trim() === ''))) throw new Error('coordinatorIds must be a list of non-empty certificate names');
  return expectCoordinator(ids);
}
