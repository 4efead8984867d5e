"""Ground layer shared by every package: the error type, safe output files, run folders, notebooks.

Nothing here imports torch, numpy-heavy code paths or any other package of the project, so
``lls_theory``, ``simulations``, ``empirical`` and ``lls_cli`` can all build on it.
"""

from lls_common.errors import LLSError

__all__ = ["LLSError"]
