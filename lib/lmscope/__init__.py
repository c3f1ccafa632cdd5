"""lmscope: look inside transformer language models, and rerun four studies on any model.

``lmscope.core`` holds what every study uses (:func:`load_model`, :class:`ModelView`, hook
points, the logit lens); each study has a folder of its own:

==================  ===========================================================  =======
package             study                                                        chapter
==================  ===========================================================  =======
``core``            model access, architecture families, the view, hooks, lens   00
``embedding``       parameters and hidden states read in embedding space         01
``debugger``        LM-Debugger: traces, interventions, value search, the app    02
``topk``            top-k attention and top-k feed-forward                       03
``icl``             in-context learning vs (layer-causal) gradient descent       04
``data``            word lists and text shared by several studies
==================  ===========================================================  =======

``lmscope.display`` holds the HTML and plotting pieces the chapters share.
"""

from lmscope.core import DEFAULT_MODEL, ModelView, cache_dir, hook_name, load_model

__all__ = ["DEFAULT_MODEL", "ModelView", "cache_dir", "hook_name", "load_model"]
__version__ = "0.1.0"
