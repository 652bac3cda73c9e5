"""What importing a module loads, asked of a fresh interpreter (this one has imported everything already)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable


def loaded_by_importing(module: str, candidates: Iterable[str]) -> list[str]:
    """Those of `candidates` that `import module` puts in `sys.modules` of a new Python process."""
    probe = f"import sys, {module}; print('\\n'.join(m for m in {tuple(candidates)!r} if m in sys.modules))"
    output = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return output.split()
