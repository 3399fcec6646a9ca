"""Typed errors from the ErrorInfo reason in grpc-status-details-bin, the status code when
there is none; never the message text."""
import unittest

import grpc

import keyshard
from keyshard import errors
from tests.support import FakeRpcError, status_trailer

FP = grpc.StatusCode.FAILED_PRECONDITION


class FromTrailer(unittest.TestCase):
    def test_each_reason_has_its_class(self):
        expected = {
            'SEALED': keyshard.SealedError,
            'UNINITIALIZED': keyshard.UninitializedError,
            'KEY_NOT_FOUND': keyshard.KeyNotFoundError,
            'KEY_DISABLED': keyshard.KeyDisabledError,
            'WRONG_CONTEXT': keyshard.WrongContextError,
            'NOT_AUTHORIZED': keyshard.PermissionDeniedError,
        }
        for reason, cls in expected.items():
            with self.subTest(reason):
                e = errors.from_rpc_error(FakeRpcError(FP, 'whatever the text', [status_trailer(FP, 'x', reason, {'key': 'k_1'})]))
                self.assertIs(type(e), cls)
                self.assertIsInstance(e, keyshard.KeyshardError)
                self.assertEqual(e.reason, reason)
                self.assertEqual(e.code, FP)
                self.assertEqual(e.code_name, 'FAILED_PRECONDITION')
                self.assertEqual(e.grpc_code, 9)
                self.assertEqual(e.metadata, {'key': 'k_1'})
                self.assertEqual(e.domain, 'keyshard.dev')
                self.assertEqual(e.details, 'whatever the text')
                self.assertIn(reason, str(e))

    def test_an_unknown_reason_is_kept_on_the_base_class(self):
        e = errors.from_rpc_error(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, 'busy', [status_trailer(grpc.StatusCode.RESOURCE_EXHAUSTED, 'busy', 'OVERLOADED')]))
        self.assertIs(type(e), keyshard.KeyshardError)
        self.assertEqual(e.reason, 'OVERLOADED')

    def test_the_reason_wins_over_the_code(self):
        e = errors.from_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, 'x', [status_trailer(grpc.StatusCode.UNAVAILABLE, 'x', 'SEALED')]))
        self.assertIs(type(e), keyshard.SealedError)
        e = errors.from_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, 'x', [status_trailer(grpc.StatusCode.UNAVAILABLE, 'x', 'AUDIT_UNAVAILABLE')]))
        self.assertIs(type(e), keyshard.UnavailableError, 'no class for the reason: the code decides')
        self.assertEqual(e.reason, 'AUDIT_UNAVAILABLE')

    def test_without_details_the_code_decides_and_reason_is_none(self):
        for code, cls in [(grpc.StatusCode.UNAVAILABLE, keyshard.UnavailableError),
                          (grpc.StatusCode.PERMISSION_DENIED, keyshard.PermissionDeniedError),
                          (FP, keyshard.KeyshardError), (grpc.StatusCode.NOT_FOUND, keyshard.KeyshardError)]:
            with self.subTest(code.name):
                e = errors.from_rpc_error(FakeRpcError(code, 'keyshard is sealed: a custodian quorum must unseal it'))
                self.assertIs(type(e), cls, 'message text is never matched')
                self.assertIsNone(e.reason)
                self.assertEqual(e.metadata, {})

    def test_another_domain_is_not_keyshards_reason(self):
        e = errors.from_rpc_error(FakeRpcError(FP, 'x', [status_trailer(FP, 'x', 'SEALED', domain='proxy.example')]))
        self.assertIs(type(e), keyshard.KeyshardError)
        self.assertIsNone(e.reason)

    def test_a_malformed_trailer_is_no_reason(self):
        e = errors.from_rpc_error(FakeRpcError(FP, 'x', [('grpc-status-details-bin', b'\xff\xff\xff')]))
        self.assertIs(type(e), keyshard.KeyshardError)
        self.assertIsNone(e.reason)

    def test_the_cause_is_the_grpc_error(self):
        raw = FakeRpcError(grpc.StatusCode.UNAVAILABLE, 'down')
        self.assertIs(errors.from_rpc_error(raw).__cause__, raw)


if __name__ == '__main__':
    unittest.main()
