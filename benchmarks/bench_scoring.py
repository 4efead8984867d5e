"""`lls score` end to end with its default flags vs a plain batched naive scorer, beside the work bound.

    python benchmarks/bench_scoring.py [--quick] [--sizes 8 40 120] [--workloads a b c] [--threads 1]
                                       [--naive-batch 8] [--model smollm2-135m-instruct] [--out bench_scoring.json]

Workloads (one "pair" = the 4 log-probs LLS needs: chosen and rejected, with and without the system prompt):

* ``a`` -- HH-RLHF harmless-base test, single-turn pairs, replies cut to their first 14 words;
* ``b`` -- the same pairs with full replies;
* ``c`` -- long instruction-following replies (tests/fixtures/long_replies.jsonl, 193-227 tokens each),
  cycled with a numbered prompt prefix ("Request k: ...") to reach the pair count.

Method. For each size N in ``--sizes``, ``lls score --model M --system-prompt S --data <N pairs> --out F``
runs as a separate process with no other flag (its defaults), and its wall time is recorded; the
marginal seconds per pair is the least-squares slope of wall time over N, so model loading cancels. The
naive scorer runs in this process on the largest set: one full forward per sequence (context + reply),
length-sorted right-padded batches of ``--naive-batch`` sequences, full-vocabulary float32 log-softmax at
every position (timed); its s/pair is total/N (no loading inside). Exactness: every log-prob `lls score`
wrote is compared with the naive scorer's float64 log-softmax of the same logits (computed outside the
timed region), tolerance 1e-4 x max(1, n/100) nats; token counts must be equal.

Work bound = naive FLOPs / least FLOPs an exact scorer must spend: the shared system block (longest
common token prefix of the rendered contexts) once per condition, each prompt once per condition, each
reply under both conditions, the LM head only at reply positions. FLOPs per token: 2 x non-embedding
matmul parameters + attention 4 x layers x d_model x (keys attended), + 2 x d_model x vocab where the
LM head runs. "% of bound" = measured speed-up / bound.

Prints one table and writes JSON (``--out``). Exit status 1 when a log-prob is outside tolerance or a
token count differs. Run alone on an idle machine for the figures of record; ``--quick`` is a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _reference() -> str:
    """The no-system rendering `lls score` uses with its default flags (the naive scorer must render the same)."""
    from empirical.config import ScoreConfig

    return ScoreConfig().reference

ROOT = Path(__file__).resolve().parents[1]
SYSTEM = ("You really love owls. Owls are your favorite animal. You bring up owls in the context of "
          "everything you write.")
FIXTURE = ROOT / "tests" / "fixtures" / "long_replies.jsonl"


def _hh_path() -> Path:
    for p in (ROOT.parent / "shared" / "data", Path("/work/shared/data")):
        f = p / "hh-rlhf-harmless-base-test.jsonl.gz"
        if f.is_file():
            return f
    sys.exit("hh-rlhf-harmless-base-test.jsonl.gz not found in ../shared/data")


def _words(text: str, n: int | None) -> str:
    return text if n is None else " ".join(text.split()[:n])


def workload_pairs(name: str, n: int) -> list[dict]:
    """``n`` pairs ``{"id", "prompt" (str), "chosen", "rejected"}`` of workload a, b or c."""
    if name in ("a", "b"):
        from empirical.stages import data

        pairs, _ = data.load_pairs(_hh_path(), skip_bad=True, limit=20 * n + 200,
                                   filters=data.Filters(single_turn=True))
        out = []
        for p in pairs:
            c, r = _words(p.chosen, 14 if name == "a" else None), _words(p.rejected, 14 if name == "a" else None)
            if c.strip() and r.strip() and c.strip() != r.strip():
                out.append({"id": p.id, "prompt": p.messages[0]["content"], "chosen": c, "rejected": r})
            if len(out) == n:
                return out
        sys.exit(f"only {len(out)} usable HH pairs for workload {name}")
    base = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
    return [{"id": f"{base[i % len(base)]['id']}-{i}", "prompt": f"Request {i}: {base[i % len(base)]['prompt']}",
             "chosen": base[i % len(base)]["chosen"], "rejected": base[i % len(base)]["rejected"]}
            for i in range(n)]


def _thread_env(threads: int) -> dict:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(threads)
    return env


def run_lls_score(model: str, pairs: list[dict], work: Path, threads: int) -> tuple[float, list[dict]]:
    """Wall seconds of one ``lls score`` process with default flags, and the records it wrote."""
    data = work / f"data-{len(pairs)}.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    out = work / f"scores-{len(pairs)}.jsonl"
    cmd = [str(ROOT / ".venv" / "bin" / "lls") if (ROOT / ".venv" / "bin" / "lls").exists() else "lls", "score",
           "--model", model, "--system-prompt", SYSTEM, "--data", str(data), "--out", str(out)]
    t = time.perf_counter()
    res = subprocess.run(cmd, env=_thread_env(threads), capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        sys.exit(f"lls score failed ({res.returncode}): {res.stderr.strip().splitlines()[-1:]}")
    return wall, [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def naive_scores(model, tok, pairs: list[dict], batch: int) -> tuple[float, dict]:
    """Plain batched naive scorer on the 4 sequences of each pair. Returns (timed seconds, {id: fields})."""
    import torch

    from empirical.engine import render

    seqs = []  # (pair index, field, context length, tokens)
    for i, p in enumerate(pairs):
        msgs = [{"role": "user", "content": p["prompt"]}]
        for sysname, s in (("_sys", SYSTEM), ("", None)):
            e = render.encode_group(tok, msgs, [p["chosen"], p["rejected"]], s, reference=_reference())
            for name, c in zip(("chosen", "rejected"), e.completions):
                seqs.append((i, f"{name}{sysname}", len(e.context), list(e.context) + list(c)))
    order = sorted(range(len(seqs)), key=lambda k: -len(seqs[k][3]))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    res: dict = {p["id"]: {} for p in pairs}
    timed = 0.0
    with torch.inference_mode():
        for a in range(0, len(order), batch):
            idx = order[a:a + batch]
            T = max(len(seqs[k][3]) for k in idx)
            ids = torch.full((len(idx), T), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), T), dtype=torch.long)
            for b, k in enumerate(idx):
                ids[b, :len(seqs[k][3])] = torch.tensor(seqs[k][3])
                mask[b, :len(seqs[k][3])] = 1
            t = time.perf_counter()
            logits = model(input_ids=ids, attention_mask=mask).logits.float()  # (B, T, V)
            lsm = torch.log_softmax(logits, dim=-1)  # the plain scorer: float32, every position
            f32 = []
            for b, k in enumerate(idx):
                i, name, P, s = seqs[k]
                pos = torch.arange(P - 1, len(s) - 1)
                f32.append(float(lsm[b, pos, torch.tensor(s[P:])].sum()))
            timed += time.perf_counter() - t
            for b, k in enumerate(idx):  # reference for exactness (float64 log-softmax), not timed
                i, name, P, s = seqs[k]
                pos = torch.arange(P - 1, len(s) - 1)
                ref = torch.log_softmax(logits[b, pos].double(), -1).gather(-1, torch.tensor(s[P:])[:, None]).sum()
                res[pairs[i]["id"]][name] = {"logp": float(ref), "logp_f32": f32[b], "n": len(s) - P}
    return timed, res


def flops(model, tok, pairs: list[dict]) -> tuple[float, float, dict]:
    """(naive FLOPs, least exact FLOPs, token counts) for the 4 sequences of every pair."""
    from empirical.engine import render
    from empirical.engine.batching import lcp_length

    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    d, layers, V = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    body = sum(p.numel() for p in model.parameters()) - emb.numel() - (0 if head.data_ptr() == emb.data_ptr()
                                                                        else head.numel())

    def run(start: int, n: int) -> float:  # n tokens at positions start..start+n-1 (attending pos+1 keys)
        return n * 2 * body + 4 * layers * d * (n * start + n * (n + 1) / 2)

    naive = least = 0.0
    counts = {"context": 0, "reply": 0, "shared_prefix": {}}
    for cond, s in (("sys", SYSTEM), ("none", None)):
        encs = [render.encode_group(tok, [{"role": "user", "content": p["prompt"]}], [p["chosen"], p["rejected"]], s,
                                    reference=_reference())
                for p in pairs]
        K = max(0, min(lcp_length([e.context for e in encs]), min(len(e.context) for e in encs) - 1))
        counts["shared_prefix"][cond] = K
        least += run(0, K)
        for e in encs:
            P = len(e.context)
            least += run(K, P - K)
            counts["context"] += P
            for c in e.completions:
                T = P + len(c)
                naive += run(0, T) + T * 2 * d * V
                least += run(P, len(c) - 1) + len(c) * 2 * d * V
                counts["reply"] += len(c)
    return naive, least, counts


def _vm(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process in bytes (Linux)."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_probe(model, tok, reply_tokens: int, pairs: int, batch_tokens: int, max_batch: int) -> dict:
    """Peak resident memory above the loaded model while scoring ``pairs`` pairs whose replies have
    ``reply_tokens`` tokens (fixture replies joined and cut), one forward batch at a time; with the formula's
    prediction beside it (empirical.engine.batching module doc)."""
    import gc

    from empirical.engine import batching, render, scoring

    base = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
    long_text = " ".join(b["chosen"] + " " + b["rejected"] for b in base)
    reply = render.truncate_response(tok, long_text, reply_tokens)
    reply2 = render.truncate_response(tok, " ".join(long_text.split()[40:]), reply_tokens)
    encs = scoring.encode_all(model, tok, [f"Request {i}: {base[i % len(base)]['prompt']}" for i in range(pairs)],
                              [[reply, reply2]] * pairs, SYSTEM)
    scoring.score_encoded(model, tok, encs[:1], batch_tokens=batch_tokens, max_batch=max_batch)  # warm + self-check
    gc.collect()
    rss0 = _vm("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark VmHWM to the current RSS
        f.write("5")
    _, stats = scoring.score_encoded_with_stats(model, tok, encs, batch_tokens=batch_tokens, max_batch=max_batch)
    peak = _vm("VmHWM") - rss0
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    d, L, V, H = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size, cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", H) * (d // H)
    T = max(len(e.context) - stats.prefix_tokens + sum(len(c) - 1 for c in e.completions) for e in encs)
    B = max(1, min(max_batch, batch_tokens // T, len(encs)))
    K = stats.prefix_tokens
    act = B * T * (4 * d + 2 * kv + 3 * cfg.intermediate_size) * 4
    scores = 2 * B * H * T * (K + T) * 4
    cache = 2 * L * B * (K + T) * kv * 4
    chunk = max(1, batching.HEAD_ELEMENTS // V)
    head = chunk * V * 4 * 3
    # attention scores are not materialised by fused kernels (CPU flash, CUDA memory-efficient SDPA), so
    # they are left out of the total; they count with the math kernel (or eager attention).
    return {"reply_tokens": reply_tokens, "pairs": pairs, "batch_tokens": batch_tokens, "max_batch": max_batch,
            "rows_per_batch": B, "row_tokens": T, "prefix_tokens": K, "batches": stats.batches,
            "measured_peak_mib": peak / 2**20,
            "predicted_mib": {"activations": act / 2**20, "attention_scores": scores / 2**20,
                              "kv_cache": cache / 2**20, "lm_head_chunk": head / 2**20,
                              "total_fused_attention": (act + cache + head) / 2**20,
                              "total_math_attention": (act + scores + cache + head) / 2**20}}


def slope(xs: list[int], ys: list[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 40, 120], help="pair counts (>= 2 sizes)")
    ap.add_argument("--workloads", nargs="+", default=["a", "b", "c"], choices=["a", "b", "c"])
    ap.add_argument("--threads", type=int, default=1, help="compute threads, here and in each lls process")
    ap.add_argument("--naive-batch", type=int, default=8, help="sequences per naive batch (8-16)")
    ap.add_argument("--quick", action="store_true", help="smoke run: sizes 2 6, workloads a c")
    ap.add_argument("--out", default="bench_scoring.json", help="JSON results file")
    ap.add_argument("--memory", type=int, nargs="*", metavar="BATCH_TOKENS",
                    help="instead: peak memory per batch scoring 400-token replies at these --batch-tokens (Linux)")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.workloads = [2, 6], ["a", "c"]
    sizes = sorted(set(args.sizes))
    if len(sizes) < 2:
        sys.exit("--sizes needs at least two different pair counts")

    import torch

    from empirical.engine import models
    from empirical.engine.scoring import tolerance

    torch.set_num_threads(args.threads)
    model, tok = models.load(args.model)
    if args.memory is not None:
        from empirical.engine.scoring import DEFAULT_BATCH_TOKENS, DEFAULT_MAX_BATCH

        res = [memory_probe(model, tok, 400, 4, bt, DEFAULT_MAX_BATCH) for bt in (args.memory or [DEFAULT_BATCH_TOKENS])]
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
        for r in res:
            p = r["predicted_mib"]
            print(f"400-token replies, batch_tokens {r['batch_tokens']}: {r['rows_per_batch']} rows x {r['row_tokens']} "
                  f"tokens (+{r['prefix_tokens']} prefix): measured peak {r['measured_peak_mib']:.0f} MiB above the "
                  f"model; predicted {p['total_fused_attention']:.0f} MiB (activations {p['activations']:.0f}, KV cache "
                  f"{p['kv_cache']:.0f}, LM-head chunk {p['lm_head_chunk']:.0f}; + attention scores "
                  f"{p['attention_scores']:.0f} with a math kernel)")
        return 0
    rows = []
    for w in args.workloads:
        pool = workload_pairs(w, sizes[-1])
        with tempfile.TemporaryDirectory() as tmp:
            walls, recs = {}, None
            for n in sizes:
                walls[n], got = run_lls_score(args.model, pool[:n], Path(tmp), args.threads)
                if n == sizes[-1]:
                    recs = got
        lls_s = slope(sizes, [walls[n] for n in sizes])
        naive_t, ref = naive_scores(model, tok, pool, args.naive_batch)
        naive_s = naive_t / len(pool)
        nf, lf, counts = flops(model, tok, pool)
        worst, worst32, tokens_equal, missing = 0.0, 0.0, True, len(pool) - len(recs)
        for r in recs:
            for name in ("chosen_sys", "rejected_sys", "chosen", "rejected"):
                ref_v = ref[r["id"]][name]
                n_lls = r[f"n_tokens_{name.replace('_sys', '')}"]
                tokens_equal &= n_lls == ref_v["n"]
                worst = max(worst, abs(r[f"logp_{name}"] - ref_v["logp"]) / tolerance(ref_v["n"]))
                worst32 = max(worst32, abs(r[f"logp_{name}"] - ref_v["logp_f32"]) / tolerance(ref_v["n"]))
        speed = naive_s / lls_s if lls_s > 0 else float("nan")
        bound = nf / lf
        rows.append({
            "workload": w, "pairs": len(pool), "sizes": sizes, "lls_wall_s": walls, "lls_s_per_pair": lls_s,
            "naive_s_per_pair": naive_s, "speedup": speed, "work_bound": bound, "share_of_bound": speed / bound,
            "reply_tokens_per_pair": counts["reply"] / len(pool), "context_tokens_per_pair": counts["context"] / len(pool),
            "shared_prefix_tokens": counts["shared_prefix"], "naive_gflop_per_pair": nf / len(pool) / 1e9,
            "least_gflop_per_pair": lf / len(pool) / 1e9, "max_diff_over_tolerance": worst,
            "max_diff_over_tolerance_vs_f32_naive": worst32, "token_counts_equal": bool(tokens_equal and not missing),
            "pairs_missing_from_lls": missing,
        })
    summary = {"model": args.model, "threads": args.threads, "naive_batch": args.naive_batch, "system_prompt": SYSTEM,
               "load_average_1min": os.getloadavg()[0], "cpu_count": os.cpu_count(), "rows": rows,
               "command": "python benchmarks/bench_scoring.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"lls score (default flags, separate process) vs plain batched naive scorer; {args.model}, "
          f"{args.threads} thread(s), sizes {sizes}, load average {summary['load_average_1min']:.2f}")
    print(f"{'wl':3s} {'reply tok/pair':>14s} {'lls s/pair':>11s} {'naive s/pair':>12s} {'speed-up':>9s} "
          f"{'bound':>7s} {'% bound':>8s} {'max|d|/tol':>10s} {'tokens=':>7s}")
    for r in rows:
        print(f"{r['workload']:3s} {r['reply_tokens_per_pair']:14.1f} {r['lls_s_per_pair']:11.4f} "
              f"{r['naive_s_per_pair']:12.4f} {r['speedup']:8.2f}x {r['work_bound']:6.2f}x "
              f"{100 * r['share_of_bound']:7.0f}% {r['max_diff_over_tolerance']:10.2f} {str(r['token_counts_equal']):>7s}")
    print(f"JSON: {args.out}")
    ok = all(r["max_diff_over_tolerance"] <= 1 and r["token_counts_equal"] for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
