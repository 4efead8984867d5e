"""Write a notebook from ``[("md" | "code", source), ...]`` cells (used by the notebook builders).

nbformat/nbclient are imported inside the function, so importing this module costs nothing.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_notebook"]


def write_notebook(cells: list[tuple[str, str]], path: str | Path, execute: bool = False, timeout: int = 120) -> Path:
    """Build the notebook (python3 kernel), optionally execute it in its own folder, and write it to ``path``."""
    import nbformat as nbf

    path = Path(path)
    nb = nbf.v4.new_notebook()
    nb.cells = [nbf.v4.new_markdown_cell(t) if k == "md" else nbf.v4.new_code_cell(t) for k, t in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if execute:
        from nbclient import NotebookClient

        NotebookClient(nb, timeout=timeout, resources={"metadata": {"path": str(path.parent)}}).execute()
    nbf.write(nb, path)
    return path
