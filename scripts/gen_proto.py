"""Regenerate gateway/proto/*_pb2*.py from gateway/proto/inference.proto.

Run from the repository root: ``python scripts/gen_proto.py`` (needs grpcio-tools and mypy-protobuf).

The generated module is patched to register its descriptors in a private pool, not protobuf's default
pool: the OIP messages are named ``inference.*`` exactly as in Triton's and KServe's stubs, and two files
defining the same symbols in the default pool refuse to load together. With a private pool the gateway
and `tritonclient` live in one process (tests, benchmarks, a user's app).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO = "gateway/proto/inference.proto"
DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
PRIVATE_POOL = "POOL = _descriptor_pool.DescriptorPool()\nDESCRIPTOR = POOL.AddSerializedFile("


def main() -> int:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            ".",
            "--python_out=.",
            "--grpc_python_out=.",
            "--mypy_out=quiet:.",
            "--mypy_grpc_out=quiet:.",
            PROTO,
        ],
        cwd=ROOT,
        check=True,
        # protoc finds the mypy plugins on PATH: those installed beside this interpreter (a venv's bin).
        env={**os.environ, "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
    )
    pb2 = ROOT / "gateway/proto/inference_pb2.py"
    text = pb2.read_text()
    if DEFAULT_POOL not in text:
        raise SystemExit("generated code changed shape: default-pool registration not found")
    text = text.replace(DEFAULT_POOL, PRIVATE_POOL, 1)
    pb2.write_text(text)
    stub = ROOT / "gateway/proto/inference_pb2.pyi"
    pool_stub = (
        "from google.protobuf import descriptor_pool as _descriptor_pool\n\n"
        "POOL: _descriptor_pool.DescriptorPool\n"
    )
    stub.write_text(stub.read_text() + "\n" + pool_stub)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
