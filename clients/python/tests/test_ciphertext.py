"""keyshard.ciphertext against the frozen vectors (packages/crypto/vectors/ciphertext-v1.json):
every case parses and opens to its plaintext, every invalid one is refused with keyshard's
message, every unauthentic one fails authentication. $KEYSHARD_CIPHERTEXT_VECTORS names the file
(default: the repository's, relative to this directory)."""
import json
import os
import unittest

from keyshard import ciphertext
from keyshard.ciphertext import CiphertextError

VECTORS = os.environ.get('KEYSHARD_CIPHERTEXT_VECTORS') or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'packages', 'crypto', 'vectors', 'ciphertext-v1.json')


def load():
    if not os.path.isfile(VECTORS):
        raise AssertionError(f'no vector file at {VECTORS}: set KEYSHARD_CIPHERTEXT_VECTORS')
    with open(VECTORS, encoding='utf-8') as f:
        return json.load(f)


class FrozenVectors(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.v = load()
        cls.cases = {c['name']: c for c in cls.v['cases']}

    def test_every_case_opens(self):
        self.assertGreater(len(self.v['cases']), 0)
        for c in self.v['cases']:
            with self.subTest(c['name']):
                blob = bytes.fromhex(c['ciphertext_hex'])
                p = ciphertext.parse(blob)
                self.assertEqual((p.key_id, p.key_version), (c['key_id'], c['key_version']))
                self.assertEqual(p.header.hex(), c['header_hex'])
                self.assertEqual(ciphertext.encode_context(c['context']).hex(), c['context_encoding_hex'])
                pt = ciphertext.open_ciphertext(bytes.fromhex(c['key_hex']), blob, c['context'], c['algorithm'])
                self.assertEqual(pt.hex(), c['plaintext_hex'])

    def test_invalid_ones_are_refused_with_keyshards_reason(self):
        self.assertGreater(len(self.v['invalid']), 0)
        for v in self.v['invalid']:
            with self.subTest(v['name']):
                with self.assertRaises(CiphertextError) as cm:
                    ciphertext.parse(bytes.fromhex(v['ciphertext_hex']))
                self.assertEqual(str(cm.exception), v['error'])

    def test_unauthentic_ones_fail_authentication(self):
        self.assertGreater(len(self.v['authentication_failures']), 0)
        for v in self.v['authentication_failures']:
            with self.subTest(v['name']):
                case = self.cases[v['case']]
                blob = bytes.fromhex(v.get('ciphertext_hex') or case['ciphertext_hex'])
                with self.assertRaises(CiphertextError):
                    ciphertext.open_ciphertext(bytes.fromhex(case['key_hex']), blob, v['context'], case['algorithm'])

    def test_unknown_algorithm(self):
        c = self.v['cases'][0]
        with self.assertRaisesRegex(CiphertextError, 'unknown algorithm'):
            ciphertext.open_ciphertext(bytes.fromhex(c['key_hex']), bytes.fromhex(c['ciphertext_hex']), {}, 'rot13')


if __name__ == '__main__':
    unittest.main()
