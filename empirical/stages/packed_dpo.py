"""DPO's policy forward in the scoring engine's packed form, inside TRL's ``DPOTrainer``.

TRL's step runs ``2B`` right-padded rows ``[prompt_i + chosen_i]`` and ``[prompt_i + rejected_i]``
(``B`` pairs): every prompt twice, and padding up to the longest row. The packed forward computes the same
per-token log-probs ``log pi(r_t | p, r_<t)`` with each prompt once: pair ``i`` becomes one segment
``[p_i, chosen_i[:-1], rejected_i[:-1]]`` in which each reply attends to the prompt and to its own earlier
tokens, never to the other reply, and segments are packed first-fit into rows (block-diagonal mask, positions
restarting per segment) -- the rows, positions and masks of :func:`empirical.engine.batching.pack_rows`, the
scorer's own layout (no second copy of the packing). The LM head runs only at the positions that predict a
reply token, through the model's own fused head (TRL's ``add_fused_lm_head``, called with pre-shifted
``shift_labels``), so every per-token field (log-prob, entropy, mean logit, top-1) comes from the kernel
TRL's own forward uses. The fields are put back at the places TRL's padded layout has them, and TRL's
``_compute_loss`` / ``compute_ref_log_probs`` go on unchanged: its loss, metrics, optimizer, schedule,
logging and checkpoints are TRL's. Only the model call is replaced, by :class:`PackedForward`.

Work per step (tokens through the decoder): TRL ``2B * T_max`` padded; packed ``sum_i (|p_i| + |c_i| + |r_i| - 2)``
plus the padding of the last packed rows.

When it is used: TRL's ``DPOTrainer`` calls the model through the fused-head protocol
(``model(..., labels=..., fused_lm_head=True)``, TRL >= 1.16's form; older TRL computes full logits and keeps
its own forward), the attention implementation takes a 4-D mask (sdpa, eager), no MoE auxiliary loss and no
vision inputs. The first packed call of a trainer is checked against TRL's own forward on the same batch
(per-sequence log-prob sums, :func:`empirical.engine.batching.self_check_tolerance`); a mismatch or an error there
(a model type whose forward does not honour the mask or positions) turns the packed form off for the run.
Whenever TRL's forward is used instead, one line on stderr says why and :attr:`PackedState.reason` records
it (``train.json``'s ``forward``). A batch whose rows do not have the preference collator's shape (a prompt
that differs between its chosen and rejected rows after truncation, an empty reply) runs through TRL's
forward and is counted.
"""

from __future__ import annotations

import inspect
import math
import sys
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PackedState", "PackedForward", "Pair", "step_rows", "unpack_pairs", "fused_protocol", "trainer_class",
           "make_trainer", "unavailable_reason"]

#: The model-call keywords TRL's fused-head DPO forward passes; any other (vision, MoE) keeps TRL's forward.
_PLAIN_KEYS = {"input_ids", "attention_mask", "use_cache", "labels", "fused_lm_head"}


@dataclass(frozen=True)
class Pair:
    """One preference pair as the engine takes a group: ``context`` = prompt token ids, ``completions`` =
    (chosen ids, rejected ids)."""

    context: tuple[int, ...]
    completions: tuple[tuple[int, ...], ...]


@dataclass
class PackedState:
    """Which forward a trainer uses: ``requested`` (the setting), ``used`` (packed calls made), ``reason``
    (why TRL's forward was used instead; None while the packed form is on), ``trl_batches`` (batches that
    ran TRL's forward because of their shape), ``checked`` (the first-call comparison, nats)."""

    requested: bool = True
    reason: str | None = None
    packed_calls: int = 0
    trl_batches: int = 0
    checked: dict[str, float] | None = None
    pack_tokens: int = 512
    said: set = field(default_factory=set)

    @property
    def active(self) -> bool:
        return self.requested and self.reason is None

    def record(self) -> dict[str, Any]:
        """What ``train.json`` records: ``forward`` = ``"packed"`` or ``"trl"``, the reason, the counts."""
        return {"forward": "packed" if self.active and self.packed_calls else "trl", "packed_setting": self.requested,
                "reason": self.reason if self.requested else "packed forward turned off (--no-packed)",
                "packed_calls": self.packed_calls, "trl_forward_batches": self.trl_batches,
                "first_call_check_nats": self.checked, "pack_tokens": self.pack_tokens}

    def off(self, reason: str) -> None:
        """Use TRL's forward from now on and say so once (stderr)."""
        if self.reason is None:
            self.reason = reason
            self.say(f"lls train: packed DPO forward not used ({reason}); using TRL's forward", "off")

    def say(self, line: str, key: str) -> None:
        if key not in self.said:
            self.said.add(key)
            print(line, file=sys.stderr, flush=True)


def fused_protocol() -> bool:
    """Whether the installed TRL's ``DPOTrainer`` calls the model as ``model(..., labels=..., fused_lm_head=True)``
    and passes the model to ``compute_ref_log_probs`` (TRL 1.16's form), which :class:`PackedForward` replaces."""
    from trl.trainer import dpo_trainer

    if not hasattr(dpo_trainer, "add_fused_lm_head"):
        return False
    params = inspect.signature(dpo_trainer.DPOTrainer.compute_ref_log_probs).parameters
    return "model" in params and hasattr(dpo_trainer.DPOTrainer, "_compute_loss")


def unavailable_reason(trainer: Any, model: Any) -> str | None:
    """Why the packed forward cannot run for ``trainer`` / ``model`` (None when it can)."""
    from empirical.engine.batching import supports_4d_mask

    inner = _unwrap(model)
    if not supports_4d_mask(inner):
        impl = getattr(inner.config, "_attn_implementation", None)
        return f"attention implementation {impl!r} cannot take a 4-D mask"
    if getattr(trainer, "aux_loss_enabled", False):
        return "the model has a mixture-of-experts auxiliary loss"
    if getattr(trainer, "_is_vision_dataset", False):
        return "vision inputs"
    return None


def _unwrap(model: Any) -> Any:
    """The innermost ``PreTrainedModel`` (through DDP's ``module`` and PEFT's ``get_base_model``)."""
    m = getattr(model, "module", model)
    return m.get_base_model() if hasattr(m, "get_base_model") else m


def unpack_pairs(input_ids: Any, attention_mask: Any, labels: Any) -> tuple[list[Pair], list[int]] | str:
    """The pairs of a preference batch: rows ``0..B-1`` = prompt + chosen, ``B..2B-1`` = prompt + rejected,
    right-padded, ``labels`` = ``-100`` outside the replies (TRL's collator and ``_compute_loss``).

    Returns ``(pairs, prompt_lengths)``, or a one-line reason when the batch does not have that shape (odd
    row count, left padding, a reply not contiguous after its prompt, an empty prompt or reply, chosen and
    rejected prompts that differ).
    """
    n = input_ids.shape[0]
    if n % 2:
        return "odd number of rows"
    ids, att, lab = input_ids.tolist(), attention_mask.tolist(), labels.tolist()
    B = n // 2
    pairs, plens = [], []
    for i in range(B):
        parts = []
        for r in (i, i + B):
            m = sum(att[r])
            if att[r][:m] != [1] * m:
                return "rows are not right-padded"
            comp = [k for k in range(m) if lab[r][k] != -100]
            if not comp or comp[0] < 1 or comp != list(range(comp[0], m)):
                return "a reply is empty, truncated away or not contiguous after its prompt"
            parts.append((tuple(ids[r][:comp[0]]), tuple(ids[r][comp[0]:m])))
        (pc, c), (pr, rj) = parts
        if pc != pr:
            return "the chosen and rejected rows of a pair have different prompts"
        pairs.append(Pair(pc, (c, rj)))
        plens.append(len(pc))
    return pairs, plens


def step_rows(model: Any, pairs: list[Pair], pad_id: int, pack_tokens: int) -> Any:
    """The rows of one step (:class:`empirical.engine.batching.PackedRows`): each pair one segment (prompt, chosen,
    rejected), segments spread evenly over ``ceil(total / pack_tokens)`` rows (``balanced`` layout: one batch,
    little padding), one spare column per pair; sequence ``g + j * B`` = reply ``j`` of pair ``g`` (TRL's
    row order)."""
    from empirical.engine.batching import make_rows, pack_rows

    B = len(pairs)
    rows = make_rows(pairs, 0, "balanced", pack_tokens)
    seq_index = {(g, j): g + j * B for g in range(B) for j in range(2)}
    return pack_rows(model, pairs, rows, 0, pad_id, True, seq_index, spare=[len(row) for row in rows])


class PackedForward:
    """Callable in place of the model in TRL's ``_compute_loss`` / ``compute_ref_log_probs``: takes TRL's
    padded keywords and returns TRL's ``FusedCausalLMOutput`` fields in TRL's layout ``(2B, T - 1)``, computed
    from packed rows. Calls that are not the plain fused-head call go to the model unchanged."""

    def __init__(self, model: Any, state: PackedState, pad_id: int):
        self.model, self.state, self.pad_id = model, state, pad_id

    def __call__(self, **kw: Any) -> Any:
        if not self.state.active or not kw.get("fused_lm_head") or set(kw) - _PLAIN_KEYS or kw.get("labels") is None:
            return self.model(**kw)
        got = unpack_pairs(kw["input_ids"], kw["attention_mask"], kw["labels"])
        if isinstance(got, str):
            self.state.trl_batches += 1
            self.state.say(f"lls train: a batch ran TRL's forward ({got}); counted in train.json", "batch")
            return self.model(**kw)
        pairs, plens = got
        if self.state.checked is None:
            return self._first_call(kw, pairs, plens)
        self.state.packed_calls += 1
        return self._packed(kw, pairs, plens)

    def _first_call(self, kw: dict[str, Any], pairs: list[Pair], plens: list[int]) -> Any:
        """The packed output, after comparing its per-sequence log-prob sums with TRL's own forward on this
        batch (no gradient); TRL's output (and the packed form off for the run) on an error or a mismatch."""
        import torch

        from empirical.engine.batching import self_check_tolerance

        with torch.no_grad():
            plain = self.model(**kw)
        try:
            out = self._packed(kw, pairs, plens)
        except Exception as exc:  # noqa: BLE001 - a model whose forward does not take the packed inputs
            msg = str(exc).splitlines()[0] if str(exc) else ""
            self.state.off(f"the packed call failed for {type(_unwrap(self.model)).__name__}: "
                           f"{type(exc).__name__}: {msg}")
            return plain
        a = out.log_probs.detach().double().sum(dim=1)
        b = plain.log_probs.detach().double().sum(dim=1)
        n = (kw["labels"][:, 1:] != -100).sum(dim=1)
        dtype = next(_unwrap(self.model).parameters()).dtype
        worst = max(range(len(a)), key=lambda k: abs(float(a[k] - b[k])))
        diff = float((a - b).abs().max())
        ok = all(math.isfinite(float(a[k])) and abs(float(a[k] - b[k])) <= self_check_tolerance(int(n[k]), dtype)
                 for k in range(len(a)))
        self.state.checked = {"max_abs_diff": diff, "packed": float(a[worst]), "trl": float(b[worst])}
        if not ok:
            self.state.off(f"first batch: packed {float(a[worst]):.6f} vs TRL {float(b[worst]):.6f} nats for one "
                           f"reply of {type(_unwrap(self.model)).__name__} (the mask or positions are not honoured)")
            return plain
        self.state.packed_calls += 1
        return out

    def _packed(self, kw: dict[str, Any], pairs: list[Pair], plens: list[int]) -> Any:
        """The fused-head output of the packed rows, scattered to TRL's ``(2B, T - 1)`` layout.

        Both replies' first tokens are predicted from the prompt's last hidden state; the fused head scores one
        label per position, so each rejected reply's first prediction gets a spare padding column of its row
        whose hidden state a forward hook on the decoder sets to that of the prompt's last token."""
        import torch

        B = len(pairs)
        T = kw["input_ids"].shape[1]
        device = kw["input_ids"].device
        inner = _unwrap(self.model)
        pk = step_rows(inner, pairs, self.pad_id, self.state.pack_tokens)
        lens = pk.lens
        sel_c = list(pk.sel_c)
        src_r, src_c, dst_c = [], [], []
        used = [0] * len(lens)
        dest_c, count = [], {}
        for i, s in enumerate(pk.seq):
            t = count.get(s, 0)
            count[s] = t + 1
            dest_c.append(plens[s % B] - 1 + t)  # reply token t of sequence s: column plen - 1 + t of TRL's row s
            if s >= B and t == 0:  # the rejected reply's first token: predicted from a spare column
                b = pk.sel_r[i]
                col = lens[b] + used[b]
                used[b] += 1
                src_r.append(b), src_c.append(sel_c[i]), dst_c.append(col)
                sel_c[i] = col
        sel_r_t = torch.tensor(pk.sel_r, device=device)
        sel_c_t = torch.tensor(sel_c, device=device)
        shift = torch.full(pk.ids.shape, -100, dtype=torch.long, device=device)
        shift[sel_r_t, sel_c_t] = torch.tensor(pk.tgt, device=device)
        src = (torch.tensor(src_r, device=device), torch.tensor(src_c, device=device))
        dst = (torch.tensor(src_r, device=device), torch.tensor(dst_c, device=device))

        def copy_hidden(module: Any, args: Any, output: Any) -> Any:
            h = output.last_hidden_state
            output.last_hidden_state = h.index_put(dst, h[src])
            return output

        hook = inner.base_model.register_forward_hook(copy_hidden)
        try:
            out = self.model(input_ids=pk.ids.to(device), attention_mask=pk.mask, position_ids=pk.pos.to(device),
                             use_cache=False, shift_labels=shift, fused_lm_head=True)
        finally:
            hook.remove()
        dest = (torch.tensor(pk.seq, device=device), torch.tensor(dest_c, device=device))
        fields = {}
        for name in ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1"):
            x = getattr(out, name, None)
            fields[name] = None if x is None else x.new_zeros((2 * B, T - 1)).index_put(dest, x[sel_r_t, sel_c_t])
        mask = kw["labels"][:, 1:] != -100
        loss = -fields["log_probs"].sum() / mask.sum().clamp(min=1)
        return type(out)(loss=loss, aux_loss=None, label_mask=mask, **fields)


def trainer_class(requested: bool) -> tuple[type, PackedState]:
    """``(DPOTrainer class, state)``: TRL's ``DPOTrainer`` with the model call of ``_compute_loss`` and
    ``compute_ref_log_probs`` replaced by :class:`PackedForward` when ``requested`` and TRL uses the fused-head
    protocol; TRL's own class (and the reason in ``state``) otherwise. Pass ``state`` to the trainer as
    ``packed_state=``."""
    import trl
    from trl import DPOTrainer

    state = PackedState(requested=requested)
    if not requested:
        return DPOTrainer, state
    if not fused_protocol():
        state.off(f"TRL {trl.__version__}'s DPOTrainer computes full logits; the packed forward needs its "
                  "fused-head protocol (TRL >= 1.16)")
        return DPOTrainer, state

    class PackedDPOTrainer(DPOTrainer):
        """TRL's ``DPOTrainer`` whose policy (and precomputed reference) forward runs packed rows."""

        def __init__(self, *args: Any, packed_state: PackedState, **kwargs: Any):
            self.packed_state = packed_state
            self._packed_decided = False
            super().__init__(*args, **kwargs)

        def _packed_call(self, model: Any) -> Any:
            st = self.packed_state
            if not self._packed_decided:
                self._packed_decided = True
                reason = unavailable_reason(self, model)
                if reason is not None:
                    st.off(reason)
            if not st.active:
                return model
            tok = self.processing_class
            pad = getattr(tok, "pad_token_id", None)
            return PackedForward(model, st, pad if pad is not None else 0)

        def compute_ref_log_probs(self, model: Any, inputs: Any) -> Any:
            return super().compute_ref_log_probs(self._packed_call(model), inputs)

        def _compute_loss(self, model: Any, inputs: Any, return_outputs: bool) -> Any:
            return super()._compute_loss(self._packed_call(model), inputs, return_outputs)

    return PackedDPOTrainer, state


def make_trainer(packed: bool, **kwargs: Any) -> tuple[Any, PackedState]:
    """``(trainer, state)``: the DPO trainer of :func:`trainer_class` built with TRL's ``DPOTrainer`` keywords."""
    cls, state = trainer_class(packed)
    if state.active:
        return cls(packed_state=state, **kwargs), state
    return cls(**kwargs), state
