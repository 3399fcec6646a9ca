"""Which calls may be sent again: the descriptors' idempotency_level when the protos declare
it, else the TypeScript SDK's table."""
import unittest

from google.protobuf import descriptor_pb2, descriptor_pool

import keyshard
from keyshard import _policy
from keyshard.v1 import ceremony_pb2, keys_pb2


class Safety(unittest.TestCase):
    def test_every_method_of_both_services_has_a_safety(self):
        for service, module in (('KeyService', keys_pb2), ('CeremonyService', ceremony_pb2)):
            names = {m.name for m in module.DESCRIPTOR.services_by_name[service].methods}
            self.assertEqual(set(keyshard.METHOD_SAFETY[service]), names)
            self.assertIn(keyshard.METHOD_SAFETY_SOURCE[service], ('descriptor', 'table'))

    def test_the_common_calls(self):
        k = keyshard.METHOD_SAFETY['KeyService']
        for m in ('GetKey', 'ListKeys', 'Encrypt', 'Decrypt', 'GenerateDataKey', 'Sign', 'Verify', 'Mac'):
            self.assertEqual(k[m], _policy.IDEMPOTENT, m)
        for m in ('CreateKey', 'RotateKey', 'EnableKey', 'DisableKey', 'ScheduleKeyDestruction'):
            self.assertEqual(k[m], _policy.ONCE, m)
        c = keyshard.METHOD_SAFETY['CeremonyService']
        self.assertEqual(c['Status'], _policy.IDEMPOTENT)
        self.assertEqual(c['Seal'], _policy.ONCE)

    def test_the_protos_declare_idempotency_and_agree_with_the_table(self):
        # keys.proto and ceremony.proto set idempotency_level on every rpc; the fallback table
        # (for protos that declare none) must say the same.
        for service, module in (('KeyService', keys_pb2), ('CeremonyService', ceremony_pb2)):
            descriptor = module.DESCRIPTOR.services_by_name[service]
            self.assertEqual(_policy.source_of(descriptor), 'descriptor', service)
            self.assertEqual(keyshard.METHOD_SAFETY_SOURCE[service], 'descriptor', service)
            for name, safety in _policy.safety_table(descriptor).items():
                self.assertEqual(safety, _policy.FALLBACK_TABLE.get(name), f'{service}.{name}')

    def test_the_table_names_only_methods_that_exist(self):
        names = {m.name for s in ('KeyService',) for m in keys_pb2.DESCRIPTOR.services_by_name[s].methods}
        names |= {m.name for m in ceremony_pb2.DESCRIPTOR.services_by_name['CeremonyService'].methods}
        self.assertEqual(set(_policy.FALLBACK_TABLE) - names, set())

    def test_declared_idempotency_levels_win_over_the_table(self):
        # A service whose protos declare idempotency_level on some methods: those are
        # idempotent, every other method is not, whatever the table says.
        f = descriptor_pb2.FileDescriptorProto(name='policy_test.proto', package='policytest', syntax='proto3')
        f.message_type.add(name='M')
        s = f.service.add(name='KeyService')
        for name, level in (('GetKey', 'NO_SIDE_EFFECTS'), ('Encrypt', None), ('CreateKey', 'IDEMPOTENT'), ('RotateKey', 'IDEMPOTENCY_UNKNOWN')):
            m = s.method.add(name=name, input_type='.policytest.M', output_type='.policytest.M')
            if level:
                m.options.idempotency_level = getattr(descriptor_pb2.MethodOptions, level)
        pool = descriptor_pool.DescriptorPool()
        pool.Add(f)
        service = pool.FindServiceByName('policytest.KeyService')
        self.assertEqual(_policy.source_of(service), 'descriptor')
        self.assertEqual(_policy.safety_table(service), {
            'GetKey': _policy.IDEMPOTENT, 'Encrypt': _policy.ONCE, 'CreateKey': _policy.IDEMPOTENT, 'RotateKey': _policy.ONCE})


if __name__ == '__main__':
    unittest.main()
