"""Which calls may be sent again: the descriptors' idempotency_level, nothing else."""
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

    def test_the_common_calls(self):
        k = keyshard.METHOD_SAFETY['KeyService']
        for m in ('GetKey', 'ListKeys', 'Encrypt', 'Decrypt', 'GenerateDataKey', 'Sign', 'Verify', 'Mac'):
            self.assertEqual(k[m], _policy.IDEMPOTENT, m)
        # State changes with a request token are retried: the coordinator applies them once.
        for m in ('CreateKey', 'RotateKey', 'EnableKey', 'DisableKey', 'ScheduleKeyDestruction', 'CreateAlias', 'DeleteAlias', 'UpdateKey'):
            self.assertEqual(k[m], _policy.IDEMPOTENT, m)
        c = keyshard.METHOD_SAFETY['CeremonyService']
        self.assertEqual(c['Status'], _policy.IDEMPOTENT)
        # Ceremony starts and Init take a request token too; Seal is declared IDEMPOTENT (sealed stays sealed).
        for m in ('Seal', 'Init', 'StartUnseal', 'StartCeremony'):
            self.assertEqual(c[m], _policy.IDEMPOTENT, m)
        self.assertEqual(c['CancelCeremony'], _policy.ONCE)

    def test_idempotent_exactly_where_the_protos_say_so(self):
        # State changes declare nothing (IDEMPOTENCY_UNKNOWN): sent once unless their request takes
        # a request_token; reads and pure crypto declare NO_SIDE_EFFECTS or IDEMPOTENT.
        for service, module in (('KeyService', keys_pb2), ('CeremonyService', ceremony_pb2)):
            for m in module.DESCRIPTOR.services_by_name[service].methods:
                declared = m.GetOptions().idempotency_level in (descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS, descriptor_pb2.MethodOptions.IDEMPOTENT)
                tokened = 'request_token' in m.input_type.fields_by_name
                self.assertEqual(keyshard.METHOD_SAFETY[service][m.name], _policy.IDEMPOTENT if declared or tokened else _policy.ONCE, f'{service}.{m.name}')
                self.assertEqual(m.name in keyshard.client.TOKENED_METHODS[service], tokened)

    def test_only_declared_repeatable_levels_are_idempotent(self):
        # NO_SIDE_EFFECTS and IDEMPOTENT are idempotent; IDEMPOTENCY_UNKNOWN or nothing is sent once.
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
        self.assertEqual(_policy.safety_table(service), {
            'GetKey': _policy.IDEMPOTENT, 'Encrypt': _policy.ONCE, 'CreateKey': _policy.IDEMPOTENT, 'RotateKey': _policy.ONCE})


if __name__ == '__main__':
    unittest.main()
