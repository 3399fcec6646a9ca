/**
 * The share manifest against the frozen vectors in ../vectors/share-manifest.json, computed by
 * ../vectors/generate.py (Python: Shamir over GF(2^8), SHA-256, HMAC and HKDF written out, no
 * keyshard code and not the shamir-secret-sharing package). splitRootKey draws its polynomial
 * and x coordinates at random: the vectors name the shares it would have made, and
 * combineShares must rebuild the root from any threshold of them and verify the KCV and MAC.
 * Format: ../VECTORS.md, "Share manifest".
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { canonicalJson } from './canonical-json.ts';
import { deriveSubkey } from './key-hierarchy.ts';
import { vouchPublicKeyPem } from './join-vouch.ts';
import { checkShare, combineShares, keyCheckValue, manifestFingerprint, peersDigest, shareCommitment, type ShareManifest } from './share-manifest.ts';
import { hex, loadVectors } from './test-vectors.ts';

const v = loadVectors<{
  root_hex: string; cluster_id: string; kcv: string; manifest_mac_key_hex: string;
  manifests: {
    name: string; shares: { custodian_id: string; share_hex: string }[]; mac_input_canonical_json: string; manifest: ShareManifest;
    fingerprint: string; peers_canonical_json: string; peers_digest: string;
  }[];
}>('share-manifest.json');
const root = hex(v.root_hex);

/** Every subset of `items` of size `k`. */
function subsets<T>(items: T[], k: number): T[][] {
  if (k === 0) return [[]];
  return items.flatMap((x, i) => subsets(items.slice(i + 1), k - 1).map((rest) => [x, ...rest]));
}

describe('share manifest (frozen vectors packages/crypto/vectors/share-manifest.json)', () => {
  it('key check value and manifest MAC key of the root', () => {
    assert.equal(keyCheckValue(root), v.kcv);
    assert.equal(deriveSubkey(root, 'manifest-mac').toString('hex'), v.manifest_mac_key_hex);
  });

  for (const m of v.manifests) {
    const shares = m.shares.map((s) => ({ custodianId: s.custodian_id, share: hex(s.share_hex) }));

    it(`${m.name}: commitments, x coordinates, fingerprint, peers digest, vouch key`, () => {
      for (const s of shares) {
        const entry = m.manifest.custodians.find((c) => c.id === s.custodianId)!;
        assert.equal(shareCommitment(v.cluster_id, s.share), entry.commitment, s.custodianId);
        assert.equal(s.share[32], entry.x);
        assert.doesNotThrow(() => checkShare(m.manifest, s.custodianId, s.share));
      }
      assert.equal(manifestFingerprint(m.manifest), m.fingerprint);
      assert.equal(canonicalJson({ ...m.manifest, mac: undefined }), m.mac_input_canonical_json, 'the MAC is over the manifest without mac');
      assert.equal(peersDigest(m.manifest.threshold, m.manifest.custodians), m.peers_digest);
      assert.equal(m.manifest.kcv, v.kcv);
      assert.equal(m.manifest.vouchPublicKeyPem, vouchPublicKeyPem(root));
      assert.equal('generation' in m.manifest, (m.manifest.generation ?? 1) > 1, 'generation is present only after init');
    });

    it(`${m.name}: every threshold subset of the frozen shares combines to the root (KCV and MAC verified)`, async () => {
      for (const subset of subsets(shares, m.manifest.threshold)) assert.deepEqual(await combineShares(m.manifest, subset), root, subset.map((s) => s.custodianId).join(','));
    });

    it(`${m.name}: an edited manifest fails its MAC; a share of another set fails its commitment`, async () => {
      const some = shares.slice(0, m.manifest.threshold);
      await assert.rejects(combineShares({ ...m.manifest, createdAt: '2027-01-01T00:00:00.000Z' }, some), /MAC does not verify/);
      const other = v.manifests.find((x) => x !== m)!;
      const foreign = hex(other.shares.find((s) => s.custodian_id === some[0]!.custodianId)!.share_hex);
      assert.throws(() => checkShare(m.manifest, some[0]!.custodianId, foreign), /x coordinate|commitment/);
    });
  }
});
