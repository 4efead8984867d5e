"""Shared fixtures. Model-backed fixtures skip (with the reason) when the model package is absent."""

from __future__ import annotations

import pytest

SMOLLM2 = "smollm2-135m-instruct"


def _require_installed(name: str) -> None:
    from empirical.engine import models

    if not models.is_installed(name):
        pytest.skip(f"model {name!r} not installed: run `lls models install {name}`")


@pytest.fixture(scope="session")
def smollm2_dir():
    """Local safetensors folder of SmolLM2-135M-Instruct (converted from GGUF once, then cached)."""
    _require_installed(SMOLLM2)
    from empirical.engine import models

    return models.local_dir(SMOLLM2)


@pytest.fixture(scope="session")
def smollm2(smollm2_dir):
    """(model, tokenizer) in fp32, eval mode. Shared by the session: never train or wrap it in place."""
    from empirical.engine import models

    return models.load(str(smollm2_dir))
