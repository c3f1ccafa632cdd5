"""Study 4: in-context learning vs gradient descent (Dai et al. 2023; Deutch et al. 2024), chapter 04.

==================  ===========================================================================
module              what it holds
==================  ===========================================================================
``tasks``           :class:`Example`, :class:`Task`: a few-shot task, its split and its options
``prompts``         :class:`PromptBuilder` (prompts as token ids, exact spans), ``option_logprobs``
``builtin_tasks``   the four built-in tasks (``BUILTIN_TASKS``) and ``get_task``
``task_files``      tasks from the paper's HF datasets (``HF_TASKS``), CSV / JSONL files, records
``layer_causal``    layer-causal (LCGD) and vanilla (GD) finetuning of chosen weights
``runs``            the ZS / ICL / GD / LCGD runs of a task or study, lr sweep, untrained control
``metrics``         SimAOU, SimAM_Δ, SimAM, Rec2FTP; ``SeedResult`` and ``TaskResult``
``report``          the chapter's tables (accuracies, paper table, controls) and figures
``profiles``        ``PROFILES``: run sizes of the quick and full chapter
``study``           the chapter's whole study in one call (``run_chapter_study``), saved / loaded as JSON
``study_json``      ``SeedResult`` / ``TaskResult`` as JSON and back, every array exact
``widgets``         the task / k / layer explorer (ipywidgets)
==================  ===========================================================================

Nothing is imported here: import from the modules, e.g. ``from lmscope.icl.runs import run_study``.
"""
