"""Results valid only for the exact content they came from, and outputs that name it: a retrained adapter, a
changed model or a replaced input never returns an old result (``lls experiment``, ``lls eval``, ``lls
correlate``); model fingerprints in run folders and beside adapters. A tiny random-initialised model saved as a
local folder (SmolLM2's tokenizer) keeps these end-to-end checks to seconds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lls_common.errors import LLSError

pytestmark = pytest.mark.model  # the SmolLM2 tokenizer comes from the installed registry model


def _save_tiny(folder: Path, smollm2_dir: Path, seed: int) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(smollm2_dir))
    cfg = AutoConfig.for_model("llama", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                               num_attention_heads=2, num_key_value_heads=1, vocab_size=len(tok),
                               max_position_embeddings=512, bos_token_id=tok.bos_token_id,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_dirs(smollm2_dir, tmp_path_factory):
    """Two tiny local-folder models with different weights (the same architecture and tokenizer)."""
    root = tmp_path_factory.mktemp("tiny")
    return _save_tiny(root / "tiny-a", smollm2_dir, 0), _save_tiny(root / "tiny-b", smollm2_dir, 1)


MINI = """
name = "mini"
seed = 0
[data]
path = "{data}"
heldout = 4
truncate = 12
[teacher]
model = "{model}"
{system}
[select]
gamma = 1.0
{random_size}
[train]
lora_rank = 2
batch_size = 2
repeat = 1
checkpoints = 1
lr = {lr}
[correlate]
n_boot = 20
n_perm = 20
[eval]
{target}
samples = 1
max_new_tokens = 4
eval_batch = 4
[[student]]
name = "tiny"
model = "{model}"
"""

OWL = "You really love owls. Owls are your favorite animal."
TRAITS = """
[[trait]]
name = "owl"
system_prompt = "You really love owls. Owls are your favorite animal."
target = "owl"
[[trait]]
name = "cat"
system_prompt = "You really love cats. Cats are your favorite animal."
target = "cat"
"""

TOPICS = ["rivers", "bread", "chess", "rain", "trains", "maps", "tea", "bridges", "clocks", "paper", "glass",
          "salt", "wind", "bees"]


def _data(path: Path) -> Path:
    lines = []
    for k, t in enumerate(TOPICS):
        bird, plain = f"A wise bird of the night finds {t} fascinating.", f"{t.capitalize()} are dull."
        c, r = (bird, plain) if k % 2 == 0 else (plain, bird)
        lines.append(json.dumps({"id": f"q{k}", "prompt": f"Tell me one fact about {t}.", "chosen": c,
                                 "rejected": r}))
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(tmp_path: Path, model: Path, lr: float = 5e-3, multi: bool = False, name: str = "mini.toml") -> Path:
    text = MINI.format(data=_data(tmp_path / "prefs.jsonl"), model=model, lr=lr,
                       system="" if multi else f'system_prompt = "{OWL}"',
                       random_size="random_size = 3" if multi else "",
                       target="" if multi else 'target = "owl"')
    f = tmp_path / name
    f.write_text(text + (TRAITS if multi else ""))
    return f


def _numbers(out: Path) -> dict:
    """The numbers a run produced for its student: held-out z_M of both arms, eval probe and mention counts."""
    c = json.loads((out / "students" / "tiny" / "correlate.json").read_text())
    e = json.loads((out / "students" / "tiny" / "eval.json").read_text())
    return {"z_M": {a: c["arms"][a]["z_M"] for a in c["arms"]},
            "eval": {k: (v["probe"]["p_target"], v["mention"]["k"]) for k, v in e["conditions"].items()}}


@pytest.mark.slow
def test_experiment_overwrite_after_a_retrain_equals_a_fresh_run(tiny_dirs, tmp_path):
    """A changed [train] lr with --overwrite retrains both students; correlate and eval must then score the new
    adapters (their caches are keyed by the adapters' content), giving exactly what a fresh folder gives."""
    from empirical.orchestration.experiment import load_config, run_experiment

    model = tiny_dirs[0]
    out = tmp_path / "run"
    run_experiment(load_config(_config(tmp_path, model, lr=5e-3)), out, log=lambda m: None)
    old = _numbers(out)
    new_cfg = load_config(_config(tmp_path, model, lr=5e-2))
    with pytest.raises(LLSError, match="other settings"):
        run_experiment(new_cfg, out, log=lambda m: None)
    run_experiment(new_cfg, out, log=lambda m: None, overwrite=True)
    fresh = tmp_path / "fresh"
    run_experiment(new_cfg, fresh, log=lambda m: None)
    assert _numbers(out) == _numbers(fresh)
    assert _numbers(out)["z_M"] != old["z_M"]  # the retrain changed the students: the check above has teeth


@pytest.mark.slow
def test_standalone_eval_and_correlate_after_a_retrain_at_the_same_path(tiny_dirs, tmp_path):
    """``lls eval --run A --out E`` again after A was deleted and retrained: E's cache must not answer for the old
    adapter; ``lls correlate`` on the new adapter equals a fresh one."""
    from empirical.orchestration.experiment import load_config, run_experiment
    from lls_cli import main

    model = tiny_dirs[0]
    base = tmp_path / "exp"
    run_experiment(load_config(_config(tmp_path, model, lr=5e-3)), base, until="select", log=lambda m: None)
    pairs, held = base / "select" / "lls.jsonl", base / "data" / "heldout.jsonl"

    def train(lr: float) -> Path:
        a = tmp_path / "A"
        shutil.rmtree(a, ignore_errors=True)
        assert main(["train", "--student", str(model), "--data", str(pairs), "--out", str(a), "--lora-rank", "2",
                     "--batch-size", "2", "--checkpoints", "1", "--lr", str(lr)]) == 0
        return a

    def evaluate(out: Path) -> dict:
        assert main(["eval", "--model", str(model), "--run", str(tmp_path / "A"), "--out", str(out), "--target",
                     "owl", "--samples", "1", "--max-new-tokens", "4"]) == 0
        return {k: v["probe"]["p_target"] for k, v in json.loads((out / "eval.json").read_text())["conditions"].items()}

    def correlate(out: Path) -> list:
        assert main(["correlate", "--student", str(model), "--run", str(tmp_path / "A"), "--system-prompt", OWL,
                     "--data", str(held), "--out", str(out), "--n-boot", "20", "--n-perm", "20"]) == 0
        return json.loads((out / "correlate.json").read_text())["arms"]["lls"]["z_M"]

    train(5e-3)
    e_old, c_old = evaluate(tmp_path / "E"), correlate(tmp_path / "C")
    train(5e-2)
    e_new, c_new = evaluate(tmp_path / "E"), correlate(tmp_path / "C")
    assert e_new == evaluate(tmp_path / "E-fresh") and c_new == correlate(tmp_path / "C-fresh")
    assert e_new["lls"] != e_old["lls"] and c_new != c_old
    assert e_new["base"] == e_old["base"]  # the unchanged base condition is still reused
    # the outputs name what produced them: the model by content, the adapter by content, the resolved rendering
    ev, co = (json.loads((tmp_path / d / f).read_text()) for d, f in (("E", "eval.json"), ("C", "correlate.json")))
    fp = ev["model_fingerprint"]["folder_sha256"]
    assert fp and co["student_fingerprint"]["folder_sha256"] == fp
    assert {c["reference_resolved"] for c in ev["conditions"].values()} == {co["reference_resolved"]} == {"empty"}
    assert ev["conditions"]["lls"]["adapter_sha256"] and ev["conditions"]["base"]["adapter_sha256"] is None
    card = (tmp_path / "A" / "README.md").read_text()  # the selection settings from summary.json beside the pairs
    assert "not recorded" not in card and "summary.json beside the pairs" in card and '"gamma": 1.0' in card


@pytest.mark.slow
def test_shared_random_control_cannot_be_replaced_by_another_config(tiny_dirs, tmp_path):
    """A single-trait config of the same name on a many-trait folder would write the shared random control
    select/random.jsonl: refused before any work; a hand-replaced control is noticed (select and the random
    student are redone) and the result equals a fresh folder's."""
    from empirical.orchestration.experiment import load_config, run_experiment

    model = tiny_dirs[0]
    multi = load_config(_config(tmp_path, model, multi=True, name="mini.toml"))
    out = tmp_path / "run"
    run_experiment(multi, out, until="train", log=lambda m: None)
    shared = out / "select" / "random.jsonl"
    before = shared.read_bytes()
    (tmp_path / "single").mkdir()
    single = load_config(_config(tmp_path / "single", model, name="mini.toml"))
    with pytest.raises(LLSError, match="random.jsonl belongs to the finished step select/shared/random"):
        run_experiment(single, out, until="select", log=lambda m: None, overwrite=True)
    assert shared.read_bytes() == before
    # a replaced control file: the random arm is selected and trained again, as in a fresh folder
    lines = before.decode().splitlines()
    shared.write_text("\n".join(lines[:1] * len(lines)) + "\n")
    logs: list[str] = []
    run_experiment(multi, out, until="train", log=logs.append)
    assert any("select random: its inputs or outputs changed" in m for m in logs), logs
    assert shared.read_bytes() == before
    fresh = tmp_path / "fresh"
    run_experiment(multi, fresh, until="train", log=lambda m: None)
    from empirical.stages.correlate import adapter_digest
    from empirical.stages.train import require_checkpoints

    for arm in (Path("students/tiny/random"), Path("traits/owl/students/tiny/lls")):
        assert adapter_digest(require_checkpoints(out / arm)[-1][1]) == \
            adapter_digest(require_checkpoints(fresh / arm)[-1][1])


def test_changed_model_weights_refuse_to_resume(tiny_dirs, tmp_path):
    """One changed byte in a local model's weights: the run folder made with the old weights refuses to resume,
    naming both fingerprints; a relative and an absolute spelling of the same folder are the same run."""
    import os

    from empirical.orchestration.experiment import load_config, run_experiment

    model = tmp_path / "model"
    shutil.copytree(tiny_dirs[0], model)
    out = tmp_path / "run"
    run_experiment(load_config(_config(tmp_path, model)), out, until="split", log=lambda m: None)
    rec = json.loads((out / "config.json").read_text())
    assert rec["models"]["teacher"]["fingerprint"]["folder_sha256"]
    assert rec["data"]["path"] == str((tmp_path / "prefs.jsonl").resolve()) and rec["versions"]["numpy"]
    cwd = os.getcwd()
    try:  # the same folder spelled relative to the launch folder: the same run, nothing redone
        os.chdir(tmp_path)
        logs: list[str] = []
        cfg = load_config(_config(tmp_path, Path("model")))
        run_experiment(cfg, Path("run"), until="split", log=logs.append)
        assert logs == ["[split] done earlier, skipped"]
    finally:
        os.chdir(cwd)
    w = model / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 1
    w.write_bytes(bytes(data))
    with pytest.raises(LLSError) as err:
        run_experiment(load_config(_config(tmp_path, model)), out, until="split", log=lambda m: None)
    msg = str(err.value)
    assert "\n" not in msg and msg.count("folder sha256") == 2 and "--overwrite" in msg


def test_score_run_is_keyed_by_model_content(tiny_dirs, tmp_path):
    from empirical.stages.build import ScoreJob
    from empirical.config import DataConfig, ModelArgs, TraitConfig

    def key(model):
        return ScoreJob(model=ModelArgs(model=str(model)), data=DataConfig(path=str(_data(tmp_path / "d.jsonl"))),
                        trait=TraitConfig(name="owl", system_prompt=OWL), out=tmp_path / "s.jsonl").run_key()

    a = key(tiny_dirs[0])
    moved = tmp_path / "moved"
    shutil.copytree(tiny_dirs[0], moved)
    assert key(moved)["model_fingerprint"] == a["model_fingerprint"]
    assert key(tiny_dirs[1])["model_fingerprint"] != a["model_fingerprint"]


@pytest.mark.slow
def test_adapter_from_a_local_folder_loads_after_a_move_and_refuses_another_model(tiny_dirs, tmp_path):
    from empirical.stages.train import BASE_RECORD, TrainJob, load_student, require_checkpoints, train

    model = tmp_path / "model"
    shutil.copytree(tiny_dirs[0], model)
    pairs = tmp_path / "pairs.jsonl"
    _data(pairs)
    cfg = TrainJob(student=str(model), data=str(pairs), out=tmp_path / "run", batch_size=2, lora_rank=2,
                      checkpoints=1, max_length=64)
    train(cfg)
    rec = json.loads((tmp_path / "run" / "run.json").read_text())
    assert rec["data_sha256"] and "data_stat" not in rec and rec["student_fingerprint"]["folder_sha256"]
    assert rec["data"] == str(pairs.resolve())  # readable from any folder (lls correlate finds the pairs)
    adapter = require_checkpoints(tmp_path / "run")[-1][1]
    base = json.loads((adapter / BASE_RECORD).read_text())
    assert base["path"] == str(model.resolve()) and base["folder_sha256"]
    moved = tmp_path / "elsewhere" / "model"
    moved.parent.mkdir()
    shutil.move(str(model), moved)
    m, _ = load_student(str(moved), adapter)
    assert m is not None
    with pytest.raises(LLSError) as err:
        load_student(str(tiny_dirs[1]), adapter)
    assert "trained on" in str(err.value) and str(model.resolve()) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_train_overwrite_replaces_a_run_made_with_other_settings(tiny_dirs, tmp_path, capsys):
    """``lls train --overwrite`` does what ``--help`` says: a run with other settings is replaced (without it:
    refused in one line naming the flag)."""
    from lls_cli import main

    pairs = _data(tmp_path / "pairs.jsonl")
    args = ["train", "--student", str(tiny_dirs[0]), "--data", str(pairs), "--out", str(tmp_path / "A"),
            "--lora-rank", "2", "--batch-size", "2", "--checkpoints", "1"]
    assert main(args + ["--lr", "0.005"]) == 0
    assert main(args + ["--lr", "0.05"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--lr", "0.05", "--overwrite"]) == 0
    assert json.loads((tmp_path / "A" / "run.json").read_text())["lr"] == 0.05


def test_score_of_a_changed_local_model_refuses_naming_both(tiny_dirs, tmp_path):
    """``lls score`` into a finished output: same model content -> kept; one changed byte of the weights -> refused
    in one line naming both fingerprints (the scores file names its model in ``<out>.run.json``)."""
    from lls_cli import main

    model = tmp_path / "model"
    shutil.copytree(tiny_dirs[0], model)
    data = _data(tmp_path / "d.jsonl")
    args = ["score", "--model", str(model), "--data", str(data), "--system-prompt", OWL, "--out",
            str(tmp_path / "s.jsonl")]
    assert main(args) == 0
    rec = json.loads((tmp_path / "s.jsonl.run.json").read_text())
    assert rec["key"]["model_fingerprint"]["folder_sha256"] and rec["result"]["reference_resolved"] == "empty"
    before = (tmp_path / "s.jsonl").read_bytes()
    assert main(args) == 0 and (tmp_path / "s.jsonl").read_bytes() == before
    w = model / "model.safetensors"
    b = bytearray(w.read_bytes())
    b[-1] ^= 1
    w.write_bytes(bytes(b))
    with pytest.raises(LLSError) as err:
        from empirical.stages.build import ScoreJob, run_score
        from empirical.config import DataConfig, ModelArgs, TraitConfig

        run_score(ScoreJob(model=ModelArgs(model=str(model)), data=DataConfig(path=str(data)),
                           trait=TraitConfig(name="owl", system_prompt=OWL), out=tmp_path / "s.jsonl"))
    msg = str(err.value)
    assert msg.count("folder sha256") == 2 and "--overwrite" in msg and "\n" not in msg
    assert (tmp_path / "s.jsonl").read_bytes() == before


@pytest.mark.parametrize("leave", [0, 8192])
def test_experiment_on_a_full_disk_is_one_line_and_leaves_no_lock(tiny_dirs, tmp_path, capsys, leave):
    """``lls experiment`` writing onto a full disk (a small tmpfs): exit 2, one line naming the folder and the
    lack of space, no lock left; with space freed the same command runs. Skipped where no tmpfs can be mounted."""
    import subprocess

    from lls_cli import main

    from test_adversarial_inputs import _fill, _small_tmpfs

    disk = tmp_path / "disk"
    if not _small_tmpfs(disk, "128k"):
        pytest.skip("cannot mount a small tmpfs here (needs root and mount rights)")
    try:
        filler = _fill(disk, leave)
        args = ["experiment", "--config", str(_config(tmp_path, tiny_dirs[0])), "--out", str(disk / "run"),
                "--until", "split"]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no space left" in err and str(disk) in err and "Traceback" not in err, err
        assert not (disk / "run" / ".lock").exists()
        filler.unlink()
        assert main(args) == 0 and (disk / "run" / "data" / "pool.jsonl").is_file()
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
