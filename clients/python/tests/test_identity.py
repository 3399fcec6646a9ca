"""Pinned servers: only a coordinator replica (serverAuth, CN a coordinator id) passes; its CN
is pinned through gRPC when the certificate names it as a DNS subjectAltName."""
import socket
import ssl
import unittest

from keyshard import _identity
from keyshard._identity import COORDINATOR_ID_PATTERN, IdentityError, check_server, extended_key_usage, split_address
from tests.support import Pki, TlsServer


class Pattern(unittest.TestCase):
    def test_coordinator_ids(self):
        for ok in ('coordinator-1', 'coordinator-12', 'keyshard-coordinator-0', 'a-b-coordinator-9999'):
            self.assertTrue(COORDINATOR_ID_PATTERN.fullmatch(ok), ok)
        for bad in ('custodian-1', 'coordinator', 'coordinator-', 'coordinator-12345', 'Coordinator-1', 'audit-sink',
                    '-coordinator-1', 'coordinator-1.example', 'admin', 'coordinator-1-operator'):
            self.assertFalse(COORDINATOR_ID_PATTERN.fullmatch(bad), bad)

    def test_split_address(self):
        self.assertEqual(split_address('127.0.0.1:7100'), ('127.0.0.1', 7100))
        self.assertEqual(split_address('[::1]:7100'), ('::1', 7100))
        self.assertEqual(split_address('keyshard.example:443'), ('keyshard.example', 443))
        for bad in ('127.0.0.1', 'host:0', 'host:99999', ':1', 'a:b:c'):
            with self.assertRaises(ValueError, msg=bad):
                split_address(bad)


class Certificates(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pki = Pki()
        cls.pki.issue('coordinator-1', sans=('IP:127.0.0.1', 'DNS:localhost', 'DNS:coordinator-1'))
        cls.pki.issue('unpinnable', cn='keyshard-coordinator-0')  # SANs without DNS:<CN> (deploy/ style)
        cls.pki.issue('custodian-1', sans=('IP:127.0.0.1', 'DNS:localhost', 'DNS:custodian-1'))
        cls.pki.issue('client-only', cn='coordinator-2', eku='clientAuth')
        cls.pki.issue('no-eku', cn='coordinator-3', eku=None)
        cls.pki.issue('two-cns', cn=['coordinator-4', 'coordinator-5'])
        cls.pki.issue('elsewhere', cn='coordinator-6', sans=('DNS:coordinator-6.example',))
        cls.pki.issue('admin', eku='clientAuth', sans=())
        cls.client_ctx = _identity.TlsFiles(*(cls.pki.read(p) for p in (cls.pki.ca, *cls._paths('admin')))).ssl_context()

    @classmethod
    def _paths(cls, name):
        return (f'{cls.pki.dir}/{name}.pem', f'{cls.pki.dir}/{name}-key.pem')

    @classmethod
    def tearDownClass(cls):
        cls.pki.cleanup()

    def test_extended_key_usage_from_der(self):
        self.assertEqual(extended_key_usage(self.pki.der('coordinator-1')), ('1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2'))
        self.assertEqual(extended_key_usage(self.pki.der('client-only')), ('1.3.6.1.5.5.7.3.2',))
        self.assertIsNone(extended_key_usage(self.pki.der('no-eku')))

    def serve(self, name):
        server = TlsServer(self.pki, *self._paths(name))
        self.addCleanup(server.stop)
        return server

    def test_a_coordinator_with_dns_cn_is_pinned_by_name(self):
        s = self.serve('coordinator-1')
        ident = check_server(s.address, self.client_ctx, None, 5)
        self.assertEqual((ident.cn, ident.pin), ('coordinator-1', 'coordinator-1'))
        self.assertIn('coordinator-1', ident.dns_names)

    def test_a_coordinator_without_dns_cn_passes_unpinned(self):
        s = self.serve('unpinnable')
        ident = check_server(s.address, self.client_ctx, None, 5)
        self.assertEqual((ident.cn, ident.pin), ('keyshard-coordinator-0', None))

    def test_configured_ids_replace_the_pattern(self):
        s = self.serve('coordinator-1')
        self.assertEqual(check_server(s.address, self.client_ctx, ['coordinator-1', 'coordinator-7'], 5).cn, 'coordinator-1')
        with self.assertRaisesRegex(IdentityError, r"expected a coordinator replica \(CN 'coordinator-7'.*presented CN 'coordinator-1'"):
            check_server(s.address, self.client_ctx, ['coordinator-7'], 5)

    def test_another_component_of_the_ca_is_refused(self):
        s = self.serve('custodian-1')
        with self.assertRaisesRegex(IdentityError, rf"server identity check failed at {s.address}: expected a coordinator replica \(CN matching .*\); the server presented CN 'custodian-1'"):
            check_server(s.address, self.client_ctx, None, 5)

    def test_a_certificate_without_server_auth_is_refused(self):
        s = self.serve('no-eku')  # OpenSSL accepts a certificate with no EKU at all; the SDK does not
        with self.assertRaisesRegex(IdentityError, "CN 'coordinator-3' whose certificate is not for serverAuth"):
            check_server(s.address, self.client_ctx, None, 5)

    def test_a_client_only_certificate_cannot_serve(self):
        s = self.serve('client-only')
        with self.assertRaises((ssl.SSLError, IdentityError)):  # OpenSSL refuses it first
            check_server(s.address, self.client_ctx, None, 5)

    def test_several_cns_are_no_identity(self):
        s = self.serve('two-cns')
        with self.assertRaisesRegex(IdentityError, r'presented CN \(none\)'):
            check_server(s.address, self.client_ctx, None, 5)

    def test_the_dialled_name_is_verified(self):
        s = self.serve('elsewhere')  # a coordinator certificate that does not name 127.0.0.1
        with self.assertRaises(ssl.SSLCertVerificationError):
            check_server(s.address, self.client_ctx, None, 5)

    def test_no_server(self):
        with socket.socket() as free:
            free.bind(('127.0.0.1', 0))
            address = f'127.0.0.1:{free.getsockname()[1]}'  # bound, never listening: refused
            with self.assertRaises(OSError):
                check_server(address, self.client_ctx, None, 2)


if __name__ == '__main__':
    unittest.main()
