"""One command from a model to a TorchServe archive (`.mar`) served by the project's handler.

`package(...)` (and `python -m runtimes.torchserve package ...`) stages, then runs torch-model-archiver
(0.12.0) on:

- the model: a TorchScript file (`model.pt`, `torch.jit.save`), or an eager model given as
  `path/to/file.py:factory` (or `package.module:factory`), a function returning the `nn.Module`; the
  file is copied into the archive and named in `eager.json`, with an optional state dict (`--weights`);
- `signature.json`, validated here (`gateway.codecs.torchserve.signature`);
- the handler and every project module it imports (found by reading their `import` statements), under
  their package paths, so the archive is self-contained: TorchServe's worker puts the unpacked archive
  on `PYTHONPATH` ahead of site-packages, so an image with only TorchServe, torch and numpy serves it
  (Python 3.10 or newer, and a torch that reads what the archive's torch wrote);
- `gateway_tensor_handler.py`, the `--handler` entry file, which only re-exports `handle`.

torch-model-archiver stages under the temp directory in a folder named after the model, so two
packagings of one name at once would collide: it runs with `TMPDIR` pointing at a fresh directory.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

from gateway.codecs.torchserve.signature import EAGER_FILE, Signature, loads_signature
from gateway.codecs.torchserve.signature import FILENAME as SIGNATURE_FILE

ENTRY_MODULE: Final = "gateway_tensor_handler"
HANDLER_MODULE: Final = "runtimes.torchserve.handler"
_PROJECT_PACKAGES: Final = ("gateway", "runtimes")
_ROOT: Final = Path(__file__).resolve().parents[2]
_ENTRY_SOURCE: Final = f"""\"\"\"TorchServe's entry point: the project's tensor handler.\"\"\"

from {HANDLER_MODULE} import handle

__all__ = ["handle"]
"""


class PackagingError(Exception):
    """The model, signature or archiver run is wrong; the message says which."""


def package(
    model: str,
    signature: Path | Signature,
    *,
    name: str,
    version: str,
    out: Path,
    weights: Path | None = None,
    requirements: Path | None = None,
    force: bool = False,
) -> Path:
    """Writes `<out>/<name>.mar` and returns its path.

    Args:
        model: A TorchScript file, or `FILE.py:factory` / `package.module:factory` for an eager model.
        signature: The signature file, or a `Signature`.
        name: The model's name in TorchServe (the archive's file name too).
        version: The model version recorded in the archive.
        out: Directory for the archive (created if missing).
        weights: For an eager model, a state dict (`torch.save(model.state_dict())`) to load into it.
        requirements: A pip requirements file installed per model when TorchServe allows it.
        force: Replace an archive already there.
    """
    target = out / f"{name}.mar"
    if target.exists() and not force:
        raise PackagingError(f"{target} exists (pass force=True / --force to replace it)")
    sig = signature if isinstance(signature, Signature) else _read_signature(signature)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=out) as scratch:
        staging = Path(scratch)
        bundle = staging / "bundle"
        bundle.mkdir()
        for module_path in project_modules(HANDLER_MODULE):
            relative = module_path.relative_to(_ROOT)
            (bundle / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(module_path, bundle / relative)
        (bundle / SIGNATURE_FILE).write_text(sig.dumps())
        entry = staging / f"{ENTRY_MODULE}.py"
        entry.write_text(_ENTRY_SOURCE)
        serialized = _stage_model(model, weights, bundle)
        argv = [
            sys.executable,
            "-m",
            "model_archiver.model_packaging",
            "--model-name",
            name,
            "--version",
            version,
            "--handler",
            str(entry),
            "--extra-files",
            str(bundle),
            "--export-path",
            str(staging),
        ]
        if serialized is not None:
            argv += ["--serialized-file", str(serialized)]
        if requirements is not None:
            argv += ["--requirements-file", str(requirements)]
        env = {**os.environ, "TMPDIR": str(staging), "TEMP": str(staging), "TMP": str(staging)}
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        built = staging / f"{name}.mar"
        if done.returncode != 0 or not built.is_file():
            detail = (done.stderr or done.stdout).strip()[-2000:]
            raise PackagingError(
                f"torch-model-archiver failed for '{name}' (exit {done.returncode}): {detail}"
            )
        os.replace(built, target)  # atomic: TorchServe never sees half an archive
    return target


def _read_signature(path: Path) -> Signature:
    try:
        text = path.read_text()
    except OSError as exc:
        raise PackagingError(f"cannot read the signature {path}: {exc.strerror}") from None
    from gateway.errors import ConfigError

    try:
        return loads_signature(text, str(path))
    except ConfigError as exc:
        raise PackagingError(str(exc)) from None


def _stage_model(model: str, weights: Path | None, bundle: Path) -> Path | None:
    """Puts an eager model's file and `eager.json` into the bundle; the file for `--serialized-file`."""
    path = Path(model)
    if path.suffix in (".pt", ".pth", ".ts") and ":" not in path.name:
        if weights is not None:
            raise PackagingError("--weights is for eager models; a TorchScript file holds its weights")
        if not path.is_file():
            raise PackagingError(f"model file {path} does not exist")
        return path
    source, sep, factory = model.rpartition(":")
    if not sep or not source or not factory.isidentifier():
        raise PackagingError(
            f"model '{model}': expected a TorchScript file (.pt) or FILE.py:factory / package.module:factory"
        )
    if source.endswith(".py"):
        file = Path(source)
    else:
        spec = importlib.util.find_spec(source)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            raise PackagingError(f"model '{model}': module '{source}' not found as a Python file")
        file = Path(spec.origin)
    if not file.is_file():
        raise PackagingError(f"model '{model}': {file} does not exist")
    module = f"eager_model_{file.stem}"
    shutil.copy2(file, bundle / f"{module}.py")
    (bundle / EAGER_FILE).write_text(json.dumps({"module": module, "factory": factory}) + "\n")
    if weights is not None and not weights.is_file():
        raise PackagingError(f"weights {weights} do not exist")
    return weights


def project_modules(module: str) -> list[Path]:
    """The files of `module` and of every project module it imports, directly or not, with the
    `__init__.py` of each package on the way (read from the source, nothing imported)."""
    seen: dict[str, Path] = {}
    pending = [module]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None:
            continue
        seen[name] = path
        parts = name.split(".")
        pending += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages' __init__
        pending += _imports(path, name)
    return sorted(set(seen.values()))


def _module_file(name: str) -> Path | None:
    base = _ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, name: str) -> list[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append(base)
            found += [f"{base}.{alias.name}" for alias in node.names]  # submodules imported by name
    return [m for m in found if m.split(".")[0] in _PROJECT_PACKAGES]
