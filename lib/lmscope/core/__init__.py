"""The core every study stands on: model access, the architecture families, the uniform view with its
hook points, the attention implementations, the logit lens and token display.

=================  ================================================================================
module             what it holds
=================  ================================================================================
``models``         :func:`load_model` (embedded GGUF, hub id or local folder; safetensors only), the cache
``families``       the family table: where each architecture keeps each piece (the only such place)
``view``           :class:`ModelView`: canonical weights (``W_E``, ``W_U``, per-head ``W_Q``..``W_O``,
                   FF keys/values) and hook points
``hooks``          :func:`hook_name` and the capture/overwrite context managers
``attention``      the scored eager and top-k attention implementations and the guard over them
``lens``           the logit lens
``tuned_lens``     the tuned lens (one affine map per layer before the read-out), trained and cached per model
``tokens``         tokens as readable text
``tensors``        small tensor operations the studies share
``profiles``       :func:`profiles.settings`: a chapter's run sizes by profile (``quick`` / ``full``)
=================  ================================================================================

Nothing here imports matplotlib or ipywidgets.
"""

from lmscope.core.families import FAMILIES, SUPPORTED_MODEL_TYPES, Family, ModelConfig
from lmscope.core.hooks import POINTS, hook_name, hook_names
from lmscope.core.lens import LensTable, lens_topk, logit_lens
from lmscope.core.models import DEFAULT_MODEL, EMBEDDED_MODELS, ModelLoadError, cache_dir, load_model
from lmscope.core.tokens import token_text, token_texts, vocab_texts
from lmscope.core.view import LayerView, ModelView

__all__ = [
    "DEFAULT_MODEL", "EMBEDDED_MODELS", "FAMILIES", "POINTS", "SUPPORTED_MODEL_TYPES", "Family", "LayerView",
    "LensTable", "ModelConfig", "ModelLoadError", "ModelView", "cache_dir", "hook_name", "hook_names",
    "lens_topk", "load_model", "logit_lens", "token_text", "token_texts", "vocab_texts",
]
