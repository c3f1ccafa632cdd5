"""Tasks from data: the paper's Hugging Face datasets, local CSV / JSONL files, plain dict records.

All three give the same :class:`lmscope.icl.tasks.Task` as the built-in tasks. Deutch et al.'s
tasks (SST-2, SST-5, MR, Subj, AGNews, CB) load through Hugging Face ``datasets``
(:func:`load_hf_task`: needs the package and a hub or its local cache; nothing here downloads
on its own); your own data through :func:`load_task_file`.

>>> task = load_task_file("reviews.csv", input_fields="text", label_field="y",
...                       label_words=("bad", "good"))          # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from lmscope.icl.tasks import Example, Task

# name -> (dataset path, config, split, input fields, label field, label words by class id,
#          input prefix, output prefix): the one-line templates and label words of the paper's code
#          (GiilDe/ft-vs-icl fewshot_task.py, template 0); CB's two fields are joined by a newline, not
#          by its template's "Question: ... True, False, or Neither?" wording
HF_TASKS: dict[str, tuple] = {
    "sst2": ("glue", "sst2", "train", ("sentence",), "label", ("Negative", "Positive"), "Sentence:", " Label:"),
    "sst5": ("SetFit/sst5", None, "train", ("text",), "label", ("terrible", "bad", "neutral", "good", "great"),
             "Sentence:", " Label:"),
    "mr": ("rotten_tomatoes", None, "train", ("text",), "label", ("Negative", "Positive"), "Review:", " Sentiment:"),
    "subj": ("SetFit/subj", None, "train", ("text",), "label", ("objective", "subjective"), "Input:", " Type:"),
    "agnews": ("ag_news", None, "train", ("text",), "label", ("World", "Sports", "Business", "Technology"),
               "Classify the news articles into the categories of World, Sports, Business, and Technology. Article:",
               " Answer:"),
    "cb": ("super_glue", "cb", "train", ("premise", "hypothesis"), "label", ("True", "False", "Neither"),
           "Premise:", " Answer:"),
}


def task_from_records(
    name: str,
    records: list[dict],
    input_fields: tuple[str, ...] | str = "input",
    label_field: str = "label",
    label_words: tuple[str, ...] | dict | None = None,
    input_prefix: str = "Input:",
    output_prefix: str = "\nOutput:",
    n_test: int = 100,
    max_examples: int | None = None,
) -> Task:
    """A :class:`Task` from dict records (the common path of HF datasets and local files).

    ``label_words``: a tuple indexed by integer class ids, a dict mapping raw labels to words,
    or None (labels used as written; the task is open if it has more than 10 distinct labels,
    else a classification over them).
    """
    fields = (input_fields,) if isinstance(input_fields, str) else tuple(input_fields)
    if not records:
        raise ValueError(f"Task '{name}' has no records.")
    missing = [f for f in (*fields, label_field) if f not in records[0]]
    if missing:
        raise ValueError(f"Task '{name}': records have no field(s) {missing}; fields present: {sorted(records[0])}.")
    if max_examples is not None:
        records = records[:max_examples]
    examples = []
    for r in records:
        raw = r[label_field]
        if isinstance(label_words, dict):
            label = label_words[raw] if raw in label_words else label_words.get(str(raw))
        elif label_words is not None:
            label = label_words[int(raw)] if 0 <= int(raw) < len(label_words) else None  # -1: unlabelled
        else:
            label = str(raw)
        if label is None:
            continue
        text = "\n".join(str(r[f]).strip() for f in fields)
        examples.append(Example(text, str(label)))
    words = tuple(label_words.values()) if isinstance(label_words, dict) else label_words
    if words is None:
        distinct = sorted({e.label for e in examples})
        words = tuple(distinct) if len(distinct) <= 10 else None
    words = None if words is None else tuple(dict.fromkeys(str(w) for w in words))
    return Task(name, tuple(examples), input_prefix, output_prefix, label_words=words,
                n_test=min(n_test, len(examples) - 1), separator="\n")


def load_hf_task(name: str, n_test: int = 100, max_examples: int = 2000) -> Task:
    """One of the paper's tasks (SST-2, SST-5, MR, Subj, AGNews, CB) through Hugging Face ``datasets``.

    Needs ``pip install datasets`` and a reachable hub (or its local cache); lmscope never downloads
    at run time on its own, so this is for people who have both.
    """
    if name not in HF_TASKS:
        raise ValueError(f"Unknown HF task '{name}'. Known: {', '.join(HF_TASKS)}.")
    try:
        import datasets
    except ImportError as err:
        raise ValueError(
            f"Task '{name}' loads through Hugging Face datasets, which is not installed: `pip install datasets` "
            "(and a hub connection or a local datasets cache). The built-in tasks need neither."
        ) from err
    path, config, split, fields, label_field, words, input_prefix, output_prefix = HF_TASKS[name]
    dataset = datasets.load_dataset(path, config, split=split)
    records = [dict(r) for r in dataset.shuffle(seed=0).select(range(min(max_examples, len(dataset))))]
    return task_from_records(name, records, fields, label_field, words, input_prefix, output_prefix, n_test)


def load_task_file(
    path: str | Path,
    input_fields: tuple[str, ...] | str = "input",
    label_field: str = "label",
    label_words: tuple[str, ...] | dict | None = None,
    input_prefix: str = "Input:",
    output_prefix: str = "\nOutput:",
    n_test: int = 100,
    name: str | None = None,
) -> Task:
    """A task from a local ``.csv`` (header row) or ``.jsonl`` (one object a line) file."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"Task file '{path}' does not exist.")
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            records = list(csv.DictReader(f))
    elif path.suffix in (".jsonl", ".json"):
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        raise ValueError(f"Task file '{path}': use .csv (with a header) or .jsonl, not '{path.suffix}'.")
    return task_from_records(name or path.stem, records, input_fields, label_field, label_words,
                             input_prefix, output_prefix, n_test)
