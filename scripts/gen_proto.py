"""Regenerate the gateway's protobuf modules.

Run from the repository root: ``python scripts/gen_proto.py [inference|tfserving|torchserve|all]`` (needs
grpcio-tools and mypy-protobuf; ``tfserving`` also needs the official ``tensorflow-serving-api`` stubs and
TensorFlow, ``torchserve`` the ``torchserve`` package, as the test extra installs them).

- ``inference``: the Open Inference Protocol, from ``gateway/proto/inference.proto`` (written here from the
  documented field numbers).
- ``tfserving``: TF Serving's API, a tree of 38 ``.proto`` files that import each other
  (``tensorflow_serving/apis/*``, ``tensorflow_serving/config/*`` and the ``tensorflow/core`` protos they
  use), taken from the descriptors the installed official packages carry, so the messages are the official
  ones field for field. Each file is renamed under ``gateway/proto/tfserving/`` (its imports too), which
  makes the Python modules private to the gateway (``gateway.proto.tfserving.tensorflow_serving.apis.
  predict_pb2``) while the proto package, and so every message's full name, the gRPC method paths and the
  type URLs in ``Any``, stay ``tensorflow.serving.*`` / ``tensorflow.*``: the wire is unchanged.
- ``torchserve``: TorchServe's gRPC inference API. Its ``.proto`` files ship only inside the installed
  package's ``ts/frontend/model-server.jar``; they are read from there (``proto/inference.proto`` and the
  ``google/rpc/status.proto`` it imports), placed under ``gateway/proto/torchserve/`` with the import
  rewritten to match, and compiled; the proto package stays ``org.pytorch.serve.grpc.inference``.

Every generated module registers its descriptors in a private pool, not protobuf's default pool: the
messages carry the same full names as Triton's, KServe's, TensorFlow's and TF Serving's own stubs, and two
files defining the same symbols in the default pool refuse to load together. With private pools the
gateway lives in one process with `tritonclient`, TensorFlow and the official stubs (tests, a user's app).
"""

from __future__ import annotations

import importlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("

# --- inference --------------------------------------------------------------------------------------
INFERENCE_PROTO = "gateway/proto/inference.proto"
INFERENCE_POOL = "POOL = _descriptor_pool.DescriptorPool()\nDESCRIPTOR = POOL.AddSerializedFile("

# --- tfserving ----------------------------------------------------------------------------------------
TFS_PREFIX = "gateway/proto/tfserving/"
TFS_PACKAGE = "gateway.proto.tfserving"
# The services the gateway speaks and serves; everything they import comes along.
TFS_ROOTS = ("tensorflow_serving.apis.prediction_service_pb2", "tensorflow_serving.apis.model_service_pb2")
TFS_POOL = f"from {TFS_PACKAGE} import POOL\nDESCRIPTOR = POOL.AddSerializedFile("
# protobuf's own well-known types keep their names and modules; the private pool is given them by
# gateway/proto/tfserving/__init__.py (hand-written, kept by this script).
WELL_KNOWN = "google/protobuf/"


def _protoc(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", *args],
        cwd=ROOT,
        check=True,
        # protoc finds the mypy plugins on PATH: those installed beside this interpreter (a venv's bin).
        env={**os.environ, "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
    )


def _private_pool(path: pathlib.Path, registration: str) -> None:
    text = path.read_text()
    if DEFAULT_POOL not in text:
        raise SystemExit(f"{path}: generated code changed shape: default-pool registration not found")
    path.write_text(text.replace(DEFAULT_POOL, registration, 1))


def generate_inference() -> None:
    _protoc(
        "-I",
        ".",
        "--python_out=.",
        "--grpc_python_out=.",
        "--mypy_out=quiet:.",
        "--mypy_grpc_out=quiet:.",
        INFERENCE_PROTO,
    )
    _private_pool(ROOT / "gateway/proto/inference_pb2.py", INFERENCE_POOL)
    stub = ROOT / "gateway/proto/inference_pb2.pyi"
    pool_stub = (
        "from google.protobuf import descriptor_pool as _descriptor_pool\n\n"
        "POOL: _descriptor_pool.DescriptorPool\n"
    )
    stub.write_text(stub.read_text() + "\n" + pool_stub)


def official_tfserving_files() -> list[object]:
    """The FileDescriptorProtos of TF Serving's services and their imports, dependencies first."""
    from google.protobuf import descriptor_pb2

    ordered: list[object] = []
    seen: set[str] = set()

    def walk(file: object) -> None:
        name = file.name  # type: ignore[attr-defined]
        if name in seen:
            return
        seen.add(name)
        for dependency in file.dependencies:  # type: ignore[attr-defined]
            walk(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)  # type: ignore[attr-defined]
        ordered.append(proto)

    for module in TFS_ROOTS:
        walk(importlib.import_module(module).DESCRIPTOR)
    return ordered


def private_name(name: str) -> str:
    """Where an official file lives in the gateway's tree (protobuf's well-known types stay put)."""
    return name if name.startswith(WELL_KNOWN) else TFS_PREFIX + name


def generate_tfserving() -> None:
    from google.protobuf import descriptor_pb2

    files = official_tfserving_files()
    renamed = descriptor_pb2.FileDescriptorSet()
    targets: list[str] = []
    for official in files:
        proto = renamed.file.add()
        proto.CopyFrom(official)
        proto.name = private_name(proto.name)
        proto.dependency[:] = [private_name(d) for d in proto.dependency]
        if not proto.name.startswith(WELL_KNOWN):
            targets.append(proto.name)
    out = ROOT / TFS_PREFIX
    for child in out.iterdir() if out.exists() else ():
        if child.is_dir():  # the generated tree; __init__.py (the pool) is ours
            shutil.rmtree(child)
    with tempfile.TemporaryDirectory() as tmp:
        descriptor_set = pathlib.Path(tmp) / "tfserving.pb"
        descriptor_set.write_bytes(renamed.SerializeToString())
        _protoc(f"--descriptor_set_in={descriptor_set}", "--python_out=.", "--mypy_out=quiet:.", *targets)
    for name in targets:
        module = ROOT / name.replace(".proto", "_pb2.py")
        _private_pool(module, TFS_POOL)
        package = module.parent
        while package != out:
            (package / "__init__.py").touch()
            package = package.parent
    print(f"generated {len(targets)} files under {TFS_PREFIX}")


# --- torchserve ---------------------------------------------------------------------------------------
TS_PREFIX = "gateway/proto/torchserve/"
TS_PACKAGE = "gateway.proto.torchserve"
# Inside the jar: the file and the one non-well-known file it imports.
TS_FILES = {"proto/inference.proto": "inference.proto", "google/rpc/status.proto": "google/rpc/status.proto"}
TS_POOL = f"from {TS_PACKAGE} import POOL\nDESCRIPTOR = POOL.AddSerializedFile("


def generate_torchserve() -> None:
    import importlib.util
    import zipfile

    spec = importlib.util.find_spec("ts")
    if spec is None or spec.origin is None:
        raise SystemExit("torchserve is not installed (pip install torchserve==0.12.0)")
    jar = pathlib.Path(spec.origin).parent / "frontend" / "model-server.jar"
    out = ROOT / TS_PREFIX
    for child in out.iterdir() if out.exists() else ():
        if child.is_dir():
            shutil.rmtree(child)
        elif child.name.endswith(("_pb2.py", "_pb2.pyi")):
            child.unlink()
    targets = []
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(jar) as archive:
        for inside, placed in TS_FILES.items():
            text = archive.read(inside).decode("utf-8")
            status = "google/rpc/status.proto"
            text = text.replace(f'import "{status}"', f'import "{TS_PREFIX}{status}"')
            target = pathlib.Path(tmp) / TS_PREFIX / placed
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            targets.append(TS_PREFIX + placed)
        import grpc_tools

        well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
        _protoc("-I", tmp, "-I", str(well_known), "--python_out=.", "--mypy_out=quiet:.", *targets)
    for name in targets:
        module = ROOT / name.replace(".proto", "_pb2.py")
        _private_pool(module, TS_POOL)
        package = module.parent
        while package != out:
            (package / "__init__.py").touch()
            package = package.parent
    print(f"generated {len(targets)} files under {TS_PREFIX} from {jar.name}")


def main(argv: list[str]) -> int:
    which = argv[0] if argv else "all"
    if which not in ("inference", "tfserving", "torchserve", "all"):
        raise SystemExit("usage: gen_proto.py [inference|tfserving|torchserve|all]")
    if which in ("inference", "all"):
        generate_inference()
    if which in ("tfserving", "all"):
        generate_tfserving()
    if which in ("torchserve", "all"):
        generate_torchserve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
