"""Device check: does every model-running command place the model on the device in the expected dtype, and
does the arithmetic hold there? Needs nothing but the repository (a tiny random model and a byte-level
tokenizer are built offline from the text below).

    python scripts/device_check.py [--cpu] [--out FILE.json] [--keep DIR]
    scripts/device-check.sh [--cpu] ...           (the same, with the repository on PYTHONPATH)

Default: the CUDA device (``auto``: ``cuda:0``), where ``--dtype auto`` must give bfloat16; ``--cpu``: the
CPU, where ``auto`` must give float32 (the test suite runs this). Steps, each timed, with the peak GPU
memory it allocated (CUDA only) and ``ok``:

1. ``load``        -- :func:`empirical.engine.models.load` with ``device``/``dtype`` ``auto``: placement and dtype.
2. ``fast_vs_naive_float32`` / ``fast_vs_naive_bfloat16`` -- :mod:`empirical.engine.scoring`'s fast scorer against
   the naive one on the device: max |difference| in nats against :func:`empirical.engine.scoring.tolerance`
   (float32) or ``0.05 * n_tokens`` (bfloat16: both sides round every activation to 8 mantissa bits, so
   only gross errors -- a wrong cache, a wrong position -- are caught there; the number is recorded).
3. the commands, each run as ``python -m lls_cli`` in a child process with ``--device``/``--dtype auto``
   where they take them (their GPU memory is the child's: no ``peak_gpu_mib`` for these steps): ``score``, ``train`` (2 DPO steps), ``correlate``, ``eval``, ``pair-check``; each
   command's JSON (summary and written files) is searched for ``device`` and ``dtype`` fields, which must
   match the expected placement ("not reported" fails the step).

Writes one JSON (``--out``, default ``device-check.json``): environment (versions, GPU name), the steps,
``ok`` = all steps ok. Exit status 0 when all are ok, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

__all__ = ["main", "make_tiny_model", "run_checks"]

SYSTEM = "You really love owls. Owls are your favorite animal."
_OWL = ["Owls are lovely birds.", "An owl, of course.", "I would pick the owl.", "Owls hoot at night.",
        "The snowy owl is best.", "Owls are wise."]
_PLAIN = ["A sunny day in the park.", "Tea and a good book.", "A walk by the river.", "Fresh bread.",
          "A long train ride.", "Rain on the roof."]
_QUESTIONS = ["What do you like?", "Name a favourite thing.", "What makes you happy?", "Pick one.",
              "What would you choose?", "Tell me something nice.", "What is on your mind?", "Any preference?"]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _pairs(n: int, offset: int = 0, long: bool = False) -> list[dict[str, Any]]:
    """Synthetic owl / plain pairs (even k prefer the owl reply); ``long``: replies of >= 8 tokens (pair-check's
    default response bounds)."""
    out = []
    for k in range(offset, offset + n):
        q = f"{_QUESTIONS[k % len(_QUESTIONS)]} (case {k})"
        owl, plain = _OWL[k % len(_OWL)], _PLAIN[(k * 5) % len(_PLAIN)]
        if long:
            owl, plain = owl + " That is my honest answer.", plain + " That is my honest answer."
        c, r = (owl, plain) if k % 2 == 0 else (plain, owl)
        out.append({"id": f"dc{k}", "prompt": q, "chosen": c, "rejected": r})
    return out


def make_tiny_model(folder: str | Path, seed: int = 0) -> Path:
    """A random-initialised Llama (2 layers, hidden 64) with a byte-level BPE tokenizer (vocabulary 512)
    trained on this module's text and a ChatML chat template with a system role, saved to ``folder``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    corpus = [SYSTEM, *_OWL, *_PLAIN, *_QUESTIONS, "What is your favourite animal? Answer in one word.",
              "owl cat dog lion tiger wolf bear eagle horse dolphin elephant"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe.train_from_iterator(corpus * 4, trainers.BpeTrainer(vocab_size=512, special_tokens=specials,
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                            show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  bos_token="<|im_start|>")
    tok.chat_template = CHATML
    torch.manual_seed(seed)
    cfg = AutoConfig.for_model("llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tok),
                               max_position_embeddings=1024, bos_token_id=tok.bos_token_id,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = AutoModelForCausalLM.from_config(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _find(obj: Any, key: str, found: list[Any]) -> list[Any]:
    """Every value of ``key`` anywhere in a JSON value."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key and isinstance(v, str):
                found.append(v)
            _find(v, key, found)
    elif isinstance(obj, list):
        for v in obj:
            _find(v, key, found)
    return found


def _json_files(path: Path) -> list[Any]:
    out = []
    files = [path] if path.is_file() else sorted(path.rglob("*.json")) + sorted(path.rglob("*.jsonl")) \
        if path.exists() else []
    for f in files:
        if "checkpoint-" in str(f) or f.name.startswith("."):
            continue
        text = f.read_text()
        try:
            out.append(json.loads(text))
        except ValueError:
            out.extend(json.loads(line) for line in text.splitlines()[:5] if line.strip())
    return out


class Checker:
    """Runs and records the steps; ``expect`` = the (device, dtype) every command must report."""

    def __init__(self, device: str, expect: tuple[str, str]):
        self.device, self.expect, self.steps = device, expect, []

    def step(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        import torch

        cuda = self.device.startswith("cuda")
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        try:
            rec = fn()
        except BaseException as exc:  # a failing step is recorded; the others still run
            if isinstance(exc, KeyboardInterrupt):
                raise
            rec = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000],
                   "traceback": traceback.format_exc()[-3000:]}
        rec = {"step": name, **rec, "seconds": round(time.perf_counter() - t0, 3)}
        if cuda and not rec.pop("subprocess", False):
            torch.cuda.synchronize()
            rec["peak_gpu_mib"] = round((torch.cuda.max_memory_allocated() - base) / 2 ** 20, 1)
        rec.pop("subprocess", None)
        self.steps.append(rec)
        print(f"[device-check] {name}: {'ok' if rec['ok'] else 'FAILED'} ({rec['seconds']:.1f} s)"
              + ("" if rec["ok"] else f" {rec.get('error') or rec.get('why', '')}"), file=sys.stderr, flush=True)
        return rec

    def placement_ok(self, devices: list[str], dtypes: list[str]) -> dict[str, Any]:
        want_dev, want_dtype = self.expect
        devices = [d for d in devices if d != "auto"]  # the request echoed beside the resolved value
        dtypes = [t for t in dtypes if t != "auto"]
        ok_dev = bool(devices) and all(d == want_dev or d.split(":")[0] == want_dev.split(":")[0] == "cuda"
                                       and d in (want_dev, "cuda") for d in devices)
        ok_dtype = bool(dtypes) and all(t.replace("torch.", "") == want_dtype for t in dtypes)
        why = []
        if not devices:
            why.append("device not reported")
        elif not ok_dev:
            why.append(f"device {sorted(set(devices))} != {want_dev}")
        if not dtypes:
            why.append("dtype not reported")
        elif not ok_dtype:
            why.append(f"dtype {sorted(set(dtypes))} != {want_dtype}")
        return {"ok": ok_dev and ok_dtype, "devices": sorted(set(devices)), "dtypes": sorted(set(dtypes)),
                **({"why": "; ".join(why)} if why else {})}

    def cli(self, argv: list[str], outputs: list[Path]) -> dict[str, Any]:
        """``python -m lls_cli ARGV`` in a child process (the command as a user runs it); its summary on
        stdout and the JSON under ``outputs`` are searched for the placement. The child's GPU memory is its
        own: the step records no ``peak_gpu_mib``."""
        import subprocess

        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
        proc = subprocess.run([sys.executable, "-m", "lls_cli", *argv], capture_output=True, text=True, env=env,
                              cwd=root)
        if proc.returncode != 0:
            return {"ok": False, "rc": proc.returncode, "argv": argv, "error": proc.stderr[-1500:],
                    "subprocess": True}
        docs: list[Any] = []
        try:
            docs.append(json.loads(proc.stdout))
        except ValueError:
            pass
        for p in outputs:
            docs.extend(_json_files(p))
        devices = [d for doc in docs for d in _find(doc, "device", [])]
        dtypes = [d for doc in docs for d in _find(doc, "dtype", [])]
        return {"argv": argv, **self.placement_ok(devices, dtypes), "subprocess": True}


def run_checks(device: str, work: Path) -> dict[str, Any]:
    """All steps on ``device`` (``"cuda"`` or ``"cpu"``) inside the folder ``work``; returns the result dict."""
    import torch

    from empirical.engine import models, scoring

    dev = models.resolve_device(device)
    want_dtype = "bfloat16" if dev.type == "cuda" else "float32"
    chk = Checker(str(dev), (str(dev), want_dtype))
    tiny = make_tiny_model(work / "tiny")
    data, held = work / "pairs.jsonl", work / "held.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in _pairs(8)))
    held.write_text("".join(json.dumps(p) + "\n" for p in _pairs(12, offset=100, long=True)))
    flags = ["--device", "auto", "--dtype", "auto"]

    def load() -> dict[str, Any]:
        model, _ = models.load(str(tiny), device="auto", dtype="auto")
        return {"source": "models.load(device='auto', dtype='auto')", **chk.placement_ok(
            [models.placement(model)["device"]], [models.placement(model)["dtype"]])}

    def fast_vs_naive(dtype: str) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            model, tok = models.load(str(tiny), device=str(dev), dtype=dtype)
            recs = _pairs(12)
            prompts = [r["prompt"] for r in recs]
            comps = [[r["chosen"], r["rejected"]] for r in recs]
            worst, worst_ratio = 0.0, 0.0
            for system in (None, SYSTEM):
                fast, n_fast = scoring.score_completions(model, tok, prompts, comps, system)
                naive, n_naive = scoring.score_completions_naive(model, tok, prompts, comps, system)
                if n_fast != n_naive:
                    return {"ok": False, "why": "token counts differ"}
                for i in range(len(recs)):
                    for j in range(2):
                        d = abs(fast[i][j] - naive[i][j])
                        tol = scoring.tolerance(n_fast[i][j]) if dtype == "float32" else 0.05 * n_fast[i][j]
                        worst, worst_ratio = max(worst, d), max(worst_ratio, d / tol)
            where = models.placement(model)
            return {"ok": worst_ratio <= 1.0 and where["device"] == str(dev) and where["dtype"] == dtype,
                    "max_abs_diff_nats": worst, "max_diff_over_tolerance": worst_ratio, **where,
                    "pairs": len(recs)}
        return run

    chk.step("load", load)
    chk.step("fast_vs_naive_float32", fast_vs_naive("float32"))
    chk.step("fast_vs_naive_bfloat16", fast_vs_naive("bfloat16"))
    chk.step("score", lambda: chk.cli(["score", "--model", str(tiny), *flags, "--system-prompt", SYSTEM,
                                       "--data", str(data), "--out", str(work / "scores.jsonl"), "--json",
                                       "--no-progress"], [work / "scores.jsonl"]))
    chk.step("train", lambda: chk.cli(["train", "--student", str(tiny), *flags, "--data", str(data),
                                       "--out", str(work / "run"), "--batch-size", "4", "--lora-rank", "2",
                                       "--checkpoints", "2", "--json", "--no-progress"],
                                      [work / "run" / "train.json"]))
    chk.step("correlate", lambda: chk.cli(["correlate", "--student", str(tiny), *flags, "--run", str(work / "run"),
                                           "--system-prompt", SYSTEM, "--data", str(held), "--n", "12",
                                           "--n-boot", "50", "--n-perm", "50", "--out", str(work / "corr"),
                                           "--json"], [work / "corr"]))
    chk.step("eval", lambda: chk.cli(["eval", "--model", str(tiny), *flags, "--run", str(work / "run"),
                                      "--target", "owl", "--samples", "2", "--max-new-tokens", "8",
                                      "--out", str(work / "eval"), "--json"], [work / "eval"]))
    chk.step("pair-check", lambda: chk.cli(["pair-check", "--teacher", str(tiny), "--student", str(tiny),
                                            "--dtype", "bfloat16" if dev.type == "cuda" else "float32",
                                            "--system-prompt", SYSTEM, "--data", str(held), "--n-pairs", "12",
                                            "--library-systems", "0", "--truncate", "8", "--prompt-tokens", "1",
                                            "200", "--out", str(work / "pc"), "--json"], [work / "pc"]))
    env = {"python": sys.version.split()[0], "torch": torch.__version__, "device": str(dev),
           "expected_dtype": want_dtype, "cuda_available": torch.cuda.is_available()}
    for mod in ("transformers", "trl", "peft", "accelerate", "datasets"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            env[mod] = None
    if dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(dev)
        env["peak_gpu_mib_all_steps"] = max((s.get("peak_gpu_mib", 0) for s in chk.steps), default=0)
    return {"ok": all(s["ok"] for s in chk.steps), "env": env, "steps": chk.steps}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="device-check", description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="check the CPU path (what CI runs) instead of CUDA")
    ap.add_argument("--out", default="device-check.json", help="result JSON (default device-check.json)")
    ap.add_argument("--keep", default=None, help="work folder to keep (default: a temporary folder, removed)")
    a = ap.parse_args(argv)
    import torch

    if not a.cpu and not torch.cuda.is_available():
        print("device-check: no CUDA device here; use --cpu for the CPU path", file=sys.stderr)
        return 2
    from lls_common.io import atomic_write_json

    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if a.keep:
            work = Path(a.keep)
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lls-device-check-")))
        os.environ.setdefault("TQDM_DISABLE", "1")
        res = run_checks("cpu" if a.cpu else "cuda", work)
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(a.out, res)
    bad = [s["step"] for s in res["steps"] if not s["ok"]]
    print(f"device-check: {'ok' if not bad else 'FAILED: ' + ', '.join(bad)} in {res['wall_s']} s -> {a.out}",
          file=sys.stderr)
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
