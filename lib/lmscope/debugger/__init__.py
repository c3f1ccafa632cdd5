"""Chapter 02: the LM-Debugger (Geva et al., 2022): trace a prediction through the FF sub-updates
``m_i v_i`` and switch value vectors on or off.

=================  =============================================================================
module             what it holds
=================  =============================================================================
``interventions``  value names (``L12D34``), coefficients, :class:`Intervention`, ``random_values``
``records``        what a trace returns: :class:`Trace`, :class:`LayerTrace`, :class:`SubUpdate`,
                   :class:`HeadUpdate`, :class:`ValueDetails`
``engine``         :class:`LMDebugger`: traces, value details, interventions, logits, generation
``generation``     greedy decoding with a KV cache, for one prompt and for left-padded batches
``search``         :class:`ValueSearch`: keyword search over the projection index
``clusters``       spherical k-means of every value vector (:func:`cluster_values`)
``annotations``    :class:`Annotations`: names for values, saved in the cache folder
``attribution``    case study 1: which values write an answer, and switching them off vs random
``steering``       case study 3: steering with searched values against random controls, its figure
``dla``            exact direct logit attribution: embedding, heads, FF values, biases (frozen norms)
``patching``       activation patching grids (clean vs corrupted, or noise) and attribution patching
``localization``   case study 4: who writes the answer (DLA, head knock-out vs random), where it moves
``figures``        attribution and patching figures, logit-lens probability across layers
``sessions``       :class:`Session` to JSON and back; exports of traces, attributions, grids (JSON/CSV)
``profiles``       the chapter's run sizes (:data:`PROFILES`)
``app``            :class:`DebuggerApp`: the ipywidgets app (served alone by Voilà)
``app_views``      the app's attribution, patching and session panels
=================  =============================================================================

This package imports nothing: import the module you need, e.g.
``from lmscope.debugger.engine import LMDebugger``.
"""
