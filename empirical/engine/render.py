"""Chat rendering and tokenization: the exact token sequences that are scored (and later DPO-trained).

Conventions (they follow TRL's conversational DPO preprocessing, so scored tokens = trained tokens):

* A prompt is a list of chat messages ``[{"role": "user"|"assistant"|"system", "content": str}, ...]``
  (a plain string prompt means one user message). A completion is the assistant's reply text.
* Rendered prompt = chat template over ``[system (if any)] + prompt messages`` with the generation prompt.
  Rendered full text = chat template over ``[system] + prompt messages + [assistant reply]``.
* Templates without a system role (they raise, or drop the system message): the system prompt is
  prepended to the first user turn as ``system + "\\n\\n" + user content``.
* Tokenizers without a chat template (Gemma-3-270M base here) use :data:`PLAIN_TEMPLATE_DOC`::

      [system]\\n\\n                      (only when a system prompt is given)
      User: {content}\\n\\n               (user turns)
      Assistant: {content}{eos}\\n\\n     (assistant turns in the prompt history)
      Assistant:                         (generation prompt)
      full text = prompt + " " + reply + eos

  Text is tokenized with the tokenizer's special tokens (``add_special_tokens=True``: Gemma adds
  ``<bos>``), exactly as TRL tokenizes string-form data; chat-template text is tokenized with
  ``add_special_tokens=False`` (the template writes its own special tokens), as
  ``apply_chat_template(tokenize=True)`` does.
* Token split (TRL ``DPOTrainer`` rule): ``L`` = the common-prefix length of the tokenized prompt and
  each tokenized full text (minimum over the completions of one prompt); the scored completion tokens are
  ``full_ids[L:]`` (they include the template's end-of-turn tokens), the shared context is
  ``prompt_ids[:L]``. When the prompt tokens are a prefix of every full text, ``L = len(prompt_ids)``.
  ``n_tokens`` = number of scored tokens.
* Truncation to ``T`` tokens (:func:`truncate_response`): tokenize the reply alone (no special tokens),
  keep the first ``T`` tokens, decode. Applied before rendering; the truncated text is what is scored.

Reference rendering (the "no system prompt" condition), an explicit setting ``reference`` used identically
by scoring, DPO training data, correlate and eval (callers pass it from their config; :data:`REFERENCES`):

* ``"empty"`` -- an empty system turn ``{"role": "system", "content": ""}`` before the prompt, as the
  paper's authors render it (``helper_functions.py``). Needs a template with a system role; for the plain
  template an empty system message renders as nothing (same text as ``"none"``).
* ``"default"`` -- no system message: the template's own default applies. SmolLM2's template then inserts
  its persona ("You are a helpful AI assistant named SmolLM, trained by Hugging Face"), so the weights
  measure persona -> prompt rather than nothing -> prompt. This was the toolkit's only behaviour before the
  setting existed (``results/e2e`` was made with it; its config says so explicitly).
* ``"none"`` -- no system message, for templates without a system role (and the plain template); refused
  on a template that has a system role (use ``"default"`` or ``"empty"`` there).
* ``"auto"`` (the default everywhere: these functions' keyword default, the stage configs and the CLI) --
  ``"empty"`` where the chat template has a system role, else ``"none"`` (:func:`resolve_reference`): the
  authors' convention.

With a system prompt the setting does not matter: the system prompt is the system turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from lls_common.errors import LLSError

__all__ = [
    "PLAIN_TEMPLATE_DOC",
    "REFERENCES",
    "resolve_reference",
    "Encoded",
    "as_messages",
    "encode_group",
    "encode_text",
    "has_chat_template",
    "render_full",
    "render_prompt",
    "supports_system_role",
    "trl_example",
    "truncate_response",
    "with_system",
]

PLAIN_TEMPLATE_DOC = (
    "[system]\\n\\n + 'User: {content}\\n\\n' per user turn + 'Assistant: {content}{eos}\\n\\n' per "
    "assistant turn + 'Assistant:'; completion = ' ' + reply + eos"
)

_ROLES = ("system", "user", "assistant")

REFERENCES = ("auto", "empty", "default", "none")
EMPTY_SYSTEM = {"role": "system", "content": ""}


def as_messages(prompt: Any, where: str = "prompt") -> list[dict[str, str]]:
    """Validate a prompt: a non-empty string (one user turn) or a list of ``{"role", "content"}`` messages.

    Raises ``ValueError`` naming ``where`` on empty/non-string content or unknown roles. A leading system
    message may be empty (the ``"empty"`` reference rendering).
    """
    if isinstance(prompt, str):
        if not prompt.strip():
            raise LLSError(f"{where}: empty prompt")
        return [{"role": "user", "content": prompt}]
    if not isinstance(prompt, (list, tuple)) or not prompt:
        raise LLSError(f"{where}: prompt must be a non-empty string or a non-empty list of messages")
    out = []
    for k, msg in enumerate(prompt):
        if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
            raise LLSError(f"{where}: message {k} must be an object with 'role' and 'content'")
        role, content = msg["role"], msg["content"]
        if role not in _ROLES:
            raise LLSError(f"{where}: message {k} has unknown role {role!r}")
        if not isinstance(content, str):
            raise LLSError(f"{where}: message {k} has non-string content")
        if not content.strip() and not (role == "system" and k == 0 and content == ""):
            raise LLSError(f"{where}: message {k} has empty content")
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "user":
        raise LLSError(f"{where}: the last prompt message must be a user turn, got {out[-1]['role']!r}")
    return out


def has_chat_template(tok: Any) -> bool:
    return bool(getattr(tok, "chat_template", None))


_SYSTEM_PROBE = "lls-system-probe-7f3a"


def supports_system_role(tok: Any) -> bool:
    """Whether the chat template renders a system message (it neither raises nor drops it)."""
    if not has_chat_template(tok):
        return True  # the plain template has a system slot
    cached = getattr(tok, "_lls_supports_system", None)
    if cached is not None and cached[0] == tok.chat_template:
        return cached[1]
    try:
        text = tok.apply_chat_template(
            [{"role": "system", "content": _SYSTEM_PROBE}, {"role": "user", "content": "hi"}],
            tokenize=False, add_generation_prompt=True,
        )
        ok = _SYSTEM_PROBE in text and text.index(_SYSTEM_PROBE) < text.index("hi")
    except Exception:  # templates raise TemplateError("System role not supported")
        ok = False
    try:
        tok._lls_supports_system = (tok.chat_template, ok)
    except AttributeError:
        pass
    return ok


def resolve_reference(tok: Any, reference: str = "auto") -> str:
    """Effective reference rendering for ``tok``: ``"empty"`` | ``"default"`` | ``"none"`` (see module doc).

    ``"auto"`` -> ``"empty"`` when the tokenizer has a chat template with a system role, else ``"none"``.
    Raises ``ValueError`` for an unknown name, ``"empty"`` on a chat template without a system role, and
    ``"none"`` on a chat template with one.
    """
    if reference not in REFERENCES:
        raise LLSError(f"unknown reference rendering {reference!r}; use one of {', '.join(REFERENCES)}")
    chat = has_chat_template(tok)
    system = chat and supports_system_role(tok)
    if reference == "auto":
        return "empty" if system else "none"
    if reference == "empty" and chat and not system:
        raise LLSError("reference 'empty' needs a chat template with a system role; this template has none "
                         "(use 'none')")
    if reference == "none" and system:
        raise LLSError("reference 'none' is for templates without a system role; this template has one "
                         "(use 'empty' for an empty system turn or 'default' for the template's default)")
    return reference


def with_system(tok: Any, messages: list[dict[str, str]], system_prompt: str | None,
                reference: str = "auto") -> list[dict[str, str]]:
    """``[system] + messages`` or, without a system role, the system prompt merged into the first user turn.

    ``system_prompt=None`` renders the reference condition ``reference`` (module doc): ``"empty"`` prepends
    ``{"role": "system", "content": ""}`` (unless the prompt already starts with a system message),
    ``"default"``/``"none"`` add nothing. A leading *empty* system message in ``messages`` (a pair file
    written with the ``"empty"`` rendering) is dropped first, so the rendering depends on ``reference`` and
    ``system_prompt`` only; with a system prompt it takes that message's place.
    """
    if messages and messages[0]["role"] == "system" and messages[0]["content"] == "":
        messages = list(messages[1:])
    if system_prompt is None:
        mode = resolve_reference(tok, reference)
        if mode == "empty" and not (messages and messages[0]["role"] == "system"):
            return [dict(EMPTY_SYSTEM)] + list(messages)
        return list(messages)
    if not isinstance(system_prompt, str) or not system_prompt.strip():
        raise LLSError("system prompt must be a non-empty string (use None for no system prompt)")
    if messages and messages[0]["role"] == "system":
        raise LLSError("prompt already has a system message; pass system_prompt=None")
    if supports_system_role(tok):
        return [{"role": "system", "content": system_prompt}] + list(messages)
    out = [dict(m) for m in messages]
    for m in out:
        if m["role"] == "user":
            m["content"] = system_prompt + "\n\n" + m["content"]
            break
    return out


def _plain(tok: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    eos = tok.eos_token or ""
    parts = []
    for m in messages:
        if m["role"] == "system":
            if m["content"]:  # an empty system turn (reference "empty") renders as nothing
                parts.append(m["content"] + "\n\n")
        elif m["role"] == "user":
            parts.append("User: " + m["content"] + "\n\n")
        else:
            parts.append("Assistant: " + m["content"] + eos + "\n\n")
    if add_generation_prompt:
        parts.append("Assistant:")
    return "".join(parts)


def render_prompt(tok: Any, messages: list[dict[str, str]], system_prompt: str | None = None,
                  reference: str = "auto") -> str:
    """Rendered prompt text: template over ``[system?] + messages`` with the generation prompt."""
    msgs = with_system(tok, messages, system_prompt, reference)
    if not has_chat_template(tok):
        return _plain(tok, msgs, add_generation_prompt=True)
    return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def render_full(tok: Any, messages: list[dict[str, str]], reply: str, system_prompt: str | None = None,
                reference: str = "auto") -> str:
    """Rendered text of the conversation including the assistant ``reply`` (no generation prompt)."""
    msgs = with_system(tok, messages, system_prompt, reference)
    if not has_chat_template(tok):
        return _plain(tok, msgs, add_generation_prompt=True) + " " + reply + (tok.eos_token or "")
    return tok.apply_chat_template(msgs + [{"role": "assistant", "content": reply}], tokenize=False)


def encode_text(tok: Any, text: str) -> list[int]:
    """Token ids of rendered text (special tokens added only for the plain template; see module doc)."""
    return list(tok(text, add_special_tokens=not has_chat_template(tok))["input_ids"])


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass(frozen=True)
class Encoded:
    """One prompt and its completions as token ids.

    ``context``: shared prefix tokens (length L >= 1); ``completions[j]``: scored tokens of completion j
    (non-empty); ``prompt_is_prefix``: whether L equals the length of the tokenized prompt alone.
    """

    context: tuple[int, ...]
    completions: tuple[tuple[int, ...], ...]
    prompt_is_prefix: bool


def encode_group(
    tok: Any, messages: list[dict[str, str]], replies: Sequence[str], system_prompt: str | None = None,
    reference: str = "auto",
) -> Encoded:
    """Tokenize one prompt with its replies under the TRL split rule (see module doc)."""
    prompt_ids = encode_text(tok, render_prompt(tok, messages, system_prompt, reference))
    fulls = [encode_text(tok, render_full(tok, messages, r, system_prompt, reference)) for r in replies]
    L = min(_common_prefix(prompt_ids, f) for f in fulls)
    if L == 0:
        raise ValueError("rendered prompt and completion share no leading token")
    comps = tuple(tuple(f[L:]) for f in fulls)
    for j, c in enumerate(comps):
        if not c:
            raise ValueError(f"completion {j} adds no token to the rendered prompt")
    return Encoded(tuple(prompt_ids[:L]), comps, L == len(prompt_ids))


def truncate_response(tok: Any, text: str, max_tokens: int | None) -> str:
    """First ``max_tokens`` tokens of ``text`` (tokenized alone, no special tokens), decoded; unchanged if shorter."""
    if max_tokens is None:
        return text
    if max_tokens < 1:
        raise ValueError(f"truncation length must be >= 1, got {max_tokens}")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    return tok.decode(ids[:max_tokens], skip_special_tokens=False, clean_up_tokenization_spaces=False)


def trl_example(
    tok: Any, messages: list[dict[str, str]], chosen: str, rejected: str, system_prompt: str | None = None,
    reference: str = "auto",
) -> dict[str, Any]:
    """A TRL DPO record that TRL tokenizes into the same tokens this module scores.

    Chat-template tokenizers: conversational form (``prompt`` = messages with the system prompt applied
    as in :func:`with_system`, with the ``reference`` rendering when ``system_prompt`` is None,
    ``chosen``/``rejected`` = one assistant message each). Plain-template
    tokenizers: string form (``prompt`` = rendered prompt, ``chosen``/``rejected`` = " " + reply + eos).
    """
    if has_chat_template(tok):
        return {
            "prompt": with_system(tok, messages, system_prompt, reference),
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
        }
    prompt = render_prompt(tok, messages, system_prompt, reference)
    eos = tok.eos_token or ""
    return {"prompt": prompt, "chosen": " " + chosen + eos, "rejected": " " + rejected + eos}
