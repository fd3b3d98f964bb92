"""Message classes for the two config files whose protos the tensorflow-serving-api wheel lacks.

`BatchingParameters` (tensorflow_serving/servables/tensorflow/session_bundle_config.proto) and
`MonitoringConfig` (tensorflow_serving/config/monitoring_config.proto) are declared here as descriptors,
field for field, so that `google.protobuf.text_format` parses their files: the text format's whole
grammar (comments, `key: { ... }`, `<...>`, separators) and strict errors that name the unknown field
and its line, with no hand-written parser to drift from it.
"""

from __future__ import annotations

from typing import Any, Final

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE: Final = "tensorflow.serving"


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(
        name="runtimes/tfserving/config_messages.proto",
        package=_PACKAGE,
        syntax="proto3",
        dependency=[wrappers_pb2.DESCRIPTOR.name],
    )
    batching = proto.message_type.add(name="BatchingParameters")
    wrapped = [
        ("max_batch_size", 1, ".google.protobuf.Int64Value"),
        ("batch_timeout_micros", 2, ".google.protobuf.Int64Value"),
        ("max_enqueued_batches", 3, ".google.protobuf.Int64Value"),
        ("num_batch_threads", 4, ".google.protobuf.Int64Value"),
        ("thread_pool_name", 5, ".google.protobuf.StringValue"),
        ("enable_large_batch_splitting", 9, ".google.protobuf.BoolValue"),
        ("max_execution_batch_size", 10, ".google.protobuf.Int64Value"),
    ]
    for name, number, type_name in wrapped:
        batching.field.add(
            name=name, number=number, label=_F.LABEL_OPTIONAL, type=_F.TYPE_MESSAGE, type_name=type_name
        )
    batching.field.add(name="allowed_batch_sizes", number=6, label=_F.LABEL_REPEATED, type=_F.TYPE_INT64)
    batching.field.add(
        name="pad_variable_length_inputs", number=7, label=_F.LABEL_OPTIONAL, type=_F.TYPE_BOOL
    )

    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, label=_F.LABEL_OPTIONAL, type=_F.TYPE_BOOL)
    prometheus.field.add(name="path", number=2, label=_F.LABEL_OPTIONAL, type=_F.TYPE_STRING)
    monitoring = proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config",
        number=1,
        label=_F.LABEL_OPTIONAL,
        type=_F.TYPE_MESSAGE,
        type_name=f".{_PACKAGE}.PrometheusConfig",
    )
    return proto


# A private pool: the names cannot clash with a TF Serving build that does ship these protos.
_POOL: Final = descriptor_pool.DescriptorPool()
_POOL.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
_POOL.Add(_file())

BatchingParameters: Final[Any] = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName(f"{_PACKAGE}.BatchingParameters")
)
MonitoringConfig: Final[Any] = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName(f"{_PACKAGE}.MonitoringConfig")
)
