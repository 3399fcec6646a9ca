"""Typed errors from the ErrorInfo reason in grpc-status-details-bin, else from the status code
(with the code's default reason); never the message text. The same classes as the TypeScript
SDK (packages/client/src/errors.ts)."""
import unittest

import grpc

import keyshard
from keyshard import errors
from tests.support import FakeRpcError, status_trailer

C = grpc.StatusCode
FP = C.FAILED_PRECONDITION


def err(code, reason=None, details='whatever the text', metadata=None, domain='keyshard.dev', extra=()):
    trailers = [status_trailer(code, details, reason, metadata, domain)] if reason else []
    return errors.from_rpc_error(FakeRpcError(code, details, [*trailers, *extra]), 'sent-id')


class FromTrailer(unittest.TestCase):
    def test_each_common_reason_has_its_class_under_its_codes(self):
        expected = {
            'SEALED': (FP, keyshard.SealedError, keyshard.FailedPreconditionError),
            'UNINITIALIZED': (FP, keyshard.UninitializedError, keyshard.FailedPreconditionError),
            'KEY_NOT_FOUND': (C.NOT_FOUND, keyshard.KeyNotFoundError, keyshard.NotFoundError),
            'KEY_DISABLED': (FP, keyshard.KeyDisabledError, keyshard.FailedPreconditionError),
            'KEY_PENDING_DESTRUCTION': (FP, keyshard.KeyPendingDestructionError, keyshard.FailedPreconditionError),
            'KEY_DESTROYED': (FP, keyshard.KeyDestroyedError, keyshard.FailedPreconditionError),
            'WRONG_KEY_USAGE': (FP, keyshard.WrongKeyUsageError, keyshard.FailedPreconditionError),
            'WRONG_CONTEXT': (C.INVALID_ARGUMENT, keyshard.WrongContextError, keyshard.InvalidArgumentError),
            'INVALID_CIPHERTEXT': (C.INVALID_ARGUMENT, keyshard.InvalidCiphertextError, keyshard.InvalidArgumentError),
            'CEREMONY_NOT_FOUND': (C.NOT_FOUND, keyshard.CeremonyNotFoundError, keyshard.NotFoundError),
            'OVERLOADED': (C.RESOURCE_EXHAUSTED, keyshard.OverloadedError, keyshard.ResourceExhaustedError),
            'AUDIT_UNAVAILABLE': (C.UNAVAILABLE, keyshard.AuditUnavailableError, keyshard.UnavailableError),
            'NOT_AUTHORIZED': (C.PERMISSION_DENIED, keyshard.PermissionDeniedError, keyshard.KeyshardError),
        }
        for reason, (code, cls, parent) in expected.items():
            with self.subTest(reason):
                e = err(code, reason, metadata={'key': 'k_1'})
                self.assertIs(type(e), cls)
                self.assertIsInstance(e, parent)
                self.assertIsInstance(e, keyshard.KeyshardError)
                self.assertEqual(e.reason, reason)
                self.assertEqual(e.code, code)
                self.assertEqual(e.code_name, code.name)
                self.assertEqual(e.grpc_code, code.value[0])
                self.assertEqual(e.metadata, {'key': 'k_1'})
                self.assertEqual(e.domain, 'keyshard.dev')
                self.assertEqual(e.details, 'whatever the text')
                self.assertIn(reason, str(e))

    def test_an_unknown_reason_keeps_its_string_and_its_codes_class(self):
        e = err(FP, 'SOMETHING_NEWER')
        self.assertIs(type(e), keyshard.FailedPreconditionError)
        self.assertEqual(e.reason, 'SOMETHING_NEWER')

    def test_the_reason_wins_over_the_code(self):
        self.assertIs(type(err(C.UNAVAILABLE, 'SEALED')), keyshard.SealedError)

    def test_without_details_the_code_decides_with_its_default_reason(self):
        for code, cls, reason in [(C.UNAVAILABLE, keyshard.UnavailableError, 'UNAVAILABLE'),
                                  (C.PERMISSION_DENIED, keyshard.PermissionDeniedError, 'NOT_AUTHORIZED'),
                                  (FP, keyshard.FailedPreconditionError, 'FAILED_PRECONDITION'),
                                  (C.NOT_FOUND, keyshard.NotFoundError, 'NOT_FOUND'),
                                  (C.DEADLINE_EXCEEDED, keyshard.DeadlineExceededError, 'DEADLINE_EXCEEDED'),
                                  (C.CANCELLED, keyshard.KeyshardError, 'CANCELLED')]:
            with self.subTest(code.name):
                e = err(code, details='keyshard is sealed: a custodian quorum must unseal it')
                self.assertIs(type(e), cls, 'message text is never matched')
                self.assertEqual(e.reason, reason)
                self.assertIsNone(e.domain)
                self.assertEqual(e.metadata, {})

    def test_another_domain_is_not_keyshards_reason(self):
        e = err(FP, 'SEALED', domain='proxy.example')
        self.assertIs(type(e), keyshard.FailedPreconditionError)
        self.assertEqual(e.reason, 'FAILED_PRECONDITION')

    def test_a_malformed_trailer_is_no_reason(self):
        e = err(FP, extra=[('grpc-status-details-bin', b'\xff\xff\xff')])
        self.assertIs(type(e), keyshard.FailedPreconditionError)

    def test_the_request_id_the_server_echoed_else_the_one_sent(self):
        self.assertEqual(err(FP, 'SEALED', extra=[('x-request-id', 'echoed-id')]).request_id, 'echoed-id')
        self.assertEqual(err(FP, 'SEALED').request_id, 'sent-id')

    def test_the_cause_is_the_grpc_error(self):
        raw = FakeRpcError(C.UNAVAILABLE, 'down')
        self.assertIs(errors.from_rpc_error(raw).__cause__, raw)


if __name__ == '__main__':
    unittest.main()
