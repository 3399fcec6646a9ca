export * from './proto.ts';
export * from './tls.ts';
export * from './server.ts';
export * from './concurrency-limit.ts';
export * from './request-context.ts';
export * from './client.ts';
export * from './health.ts';
export * from './reflection.ts';
