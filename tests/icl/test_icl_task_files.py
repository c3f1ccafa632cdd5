"""Tasks from files and records; the paper's HF tasks say what they need."""

from __future__ import annotations

import json

import pytest

from lmscope.icl.builtin_tasks import get_task
from lmscope.icl.task_files import HF_TASKS, load_hf_task, load_task_file, task_from_records


def test_csv_and_jsonl_give_the_same_task(tmp_path):
    rows = [{"text": f"sentence {i}", "y": i % 2} for i in range(40)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "d.csv").write_text("text,y\n" + "\n".join(f"{r['text']},{r['y']}" for r in rows))
    kw = dict(input_fields="text", label_field="y", label_words=("bad", "good"), n_test=20, name="d")
    a, b = load_task_file(tmp_path / "d.jsonl", **kw), load_task_file(tmp_path / "d.csv", **kw)
    assert a == b and a.label_words == ("bad", "good") and a.examples[1].label == "good"
    with pytest.raises(ValueError, match="no field"):
        load_task_file(tmp_path / "d.csv", input_fields="sentence", label_field="y")
    with pytest.raises(ValueError, match="does not exist"):
        load_task_file(tmp_path / "missing.csv")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(ValueError, match="use .csv"):
        load_task_file(tmp_path / "d.txt")


def test_hf_tasks_need_datasets_or_say_so():
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="pip install datasets"):
            get_task("sst2")
    with pytest.raises(ValueError, match="Unknown HF task"):
        load_hf_task("nope")
    assert set(HF_TASKS) == {"sst2", "sst5", "mr", "subj", "agnews", "cb"}


def test_records_label_mappings_and_open_tasks():
    records = [{"premise": f"p{i}", "hypothesis": f"h{i}", "label": i % 3 - 1} for i in range(30)]
    task = task_from_records("nli", records, ("premise", "hypothesis"), label_words=("yes", "no"), n_test=5)
    assert len(task.examples) == 20  # label -1 is unlabelled: dropped
    assert task.examples[0].input == "p1\nh1" and task.examples[0].label == "yes"
    by_name = task_from_records("d", [{"input": f"x{i}", "label": "pos" if i % 2 else "neg"} for i in range(12)],
                                label_words={"pos": "good", "neg": "bad"}, n_test=4)
    assert by_name.label_words == ("good", "bad") and by_name.examples[1].label == "good"
    open_task = task_from_records("o", [{"input": f"x{i}", "label": f"y{i}"} for i in range(20)], n_test=5)
    assert open_task.label_words is None  # more than 10 distinct labels: an open task
    few = task_from_records("c", [{"input": f"x{i}", "label": i % 3} for i in range(20)], n_test=5)
    assert few.label_words == ("0", "1", "2")
    assert task_from_records("s", records[:4], ("premise",), label_words=("a", "b", "c"), n_test=100).n_test == 1
    with pytest.raises(ValueError, match="no records"):
        task_from_records("e", [])


def test_a_local_file_in_sst2_format_gives_the_papers_prompt(tmp_path):
    from icl_helpers import CharTokenizer

    from lmscope.icl.prompts import PromptBuilder

    _, _, _, fields, label_field, words, prefix, out_prefix = HF_TASKS["sst2"]
    rows = [{"sentence": f"a film number {i} .", "label": i % 2, "idx": i} for i in range(40)]
    path = tmp_path / "sst2.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    task = load_task_file(path, fields, label_field, words, prefix, out_prefix, n_test=10)
    assert task.label_words == ("Negative", "Positive") and task.separator == "\n"
    tok = CharTokenizer()
    ex, demo = task.test_set[0], task.demonstrations(1, 0)[0]
    text = f"Sentence: {demo.input} Label: {demo.label}\nSentence: {ex.input} Label:"
    assert PromptBuilder(task, tok).prompt(ex, [demo]).ids == [1] + tok(text).input_ids
