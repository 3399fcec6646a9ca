export * from './aead.ts';
export * from './context.ts';
export * from './ciphertext.ts';
export * from './key-hierarchy.ts';
export * from './canonical-json.ts';
export * from './share-manifest.ts';
export * from './ceremony.ts';
export * from './rsa-oaep.ts';
