"""Top-k attention vs SDPA vs naive: one causal layer, fwd+bwd (see lmscope.topk.bench).

    python benchmarks/topk_attention.py                                  # CPU, 1K..16K
    python benchmarks/topk_attention.py --device cuda --out $OUT/topk_gpu.json

The accuracy side (loss over sequence length x k on the embedded model, keep-first check, dense mass
dropped) is ``python -m lmscope.topk.lengths`` (writes ``benchmarks/results/topk_length_sweep_<model>.json``,
which chapter 03 reads; ``--append`` adds lengths to it).

Needs only torch: when ``import lmscope`` fails (no transformers), the
torch-only modules are loaded without the package ``__init__``.
"""

import sys
import types
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib"
sys.path.insert(0, str(LIB))
try:
    import lmscope  # noqa: F401
except ImportError:
    pkg = types.ModuleType("lmscope")
    pkg.__path__ = [str(LIB / "lmscope")]
    sys.modules["lmscope"] = pkg

from lmscope.topk.bench import main  # noqa: E402

if __name__ == "__main__":
    main()
