"""Open Inference Protocol (KServe v2) codecs: pure wire <-> `gateway.types` conversions, no I/O.

`tensors` holds the checks and buffer/JSON conversions both transports share; `rest` the JSON bodies
with the binary tensor data extension; `protobuf` the gRPC messages.
"""
