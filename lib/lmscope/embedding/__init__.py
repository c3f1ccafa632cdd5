"""Chapter 01: parameters and hidden states read in embedding space (Dar et al., 2023).

==================  ===========================================================================
module              what it holds
==================  ===========================================================================
``projection``      :class:`Projector` (readings ``v E``, ``k E'^T``, heads as token pairs),
                    the parameter groups and :func:`group_vectors`
``top_k``           top-k of a reading over a token mask, top pairs of ``A @ B.T`` in factors
``filters``         token filters (hub, large-norm, word tokens), the chapter's
                    :func:`reading_mask`, :func:`coherent_units`
``keep_k``          keep-k readings as the paper measures them (``E^T`` against ``E^+``), the
                    spectrum of ``E E^T``, the paper's vector sets
``index``           :class:`ProjectionIndex`: top tokens of every FF value, cached on disk
``validation``      do the parameters that fire agree with the hidden state? (the paper's
                    :func:`paper_overlap`, our earlier variant)
``functional_copy`` a rotated, permuted copy of a model and its :class:`CopyTruth`
``alignment``       correlating two models through the vocabulary, Hungarian matching, accuracies
``scratch``         two small LMs trained from scratch on Shakespeare (seeded, cached)
``two_seeds``       aligning two independently trained models, with chance levels
``stitch``          one model's hidden states mapped through the vocabulary into another's layers
``translate``       sentence features, a linear probe, translating it to another model
``finetune``        fine-tuning the last layer's FF values on cached activations
``sentiment_data``  the built-in sentiment set (VADER words) and loaders
``profiles``        the chapter's run sizes (:data:`PROFILES`)
``widgets``         HTML tables of readings and the ipywidgets explorer
==================  ===========================================================================

This package imports nothing: import the module you need, e.g. ``from lmscope.embedding.projection
import Projector``.
"""
