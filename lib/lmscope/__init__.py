"""lmscope: look inside transformer language models.

Core pieces: :func:`load_model` (model access), :class:`ModelView` (a uniform
architecture view with hook points). Studies live in their own modules.
"""

from lmscope.arch import ModelView
from lmscope.models import DEFAULT_MODEL, cache_dir, load_model

__all__ = ["DEFAULT_MODEL", "ModelView", "cache_dir", "load_model"]
__version__ = "0.1.0"
