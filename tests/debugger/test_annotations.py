"""Names for value vectors, saved in a JSON file."""

import json

import pytest

from lmscope.debugger.annotations import Annotations


def test_annotations_survive_restart(tmp_path):
    path = tmp_path / "annotations.json"
    notes = Annotations("model-a", path, n_layers=30, d_ff=1536)
    notes.set("L12D34", "sports")
    assert notes.add(" l3d7 =  negation ") == ("L3D7", "negation")
    Annotations("model-b", path).set("L0D0", "other model")
    again = Annotations("model-a", path, n_layers=30, d_ff=1536)  # a fresh process reads the file
    assert again.get("L12D34") == "sports" and again.get("L3D7") == "negation"
    assert again.items() == [("L3D7", "negation"), ("L12D34", "sports")]
    assert again.search("SPORT") == ["L12D34"]
    assert Annotations("model-b", path).get("L0D0") == "other model"
    again.remove("L12D34")
    assert Annotations("model-a", path).get("L12D34") is None
    with pytest.raises(IndexError, match="layer 99"):
        again.set("L99D1", "x")
    with pytest.raises(ValueError, match="L<layer>D<unit>"):
        again.set("sports", "x")
    with pytest.raises(ValueError, match="'L12D34 = label'"):
        again.add("L1D1 sports")
    assert again.get("L99D1") is None


def test_annotations_are_keyed_by_the_views_name(tiny, tmp_path):
    _, model, view = tiny
    path = tmp_path / "annotations.json"
    model.config.name_or_path = "some/where/tiny-model"
    notes = Annotations.for_model(view, path)
    assert notes.model == view.name == "tiny-model"
    notes.set("L1D2", "first")
    assert json.loads(path.read_text()) == {"tiny-model": {"L1D2": "first"}}
    assert "L1D2" in Annotations.for_model(view, path) and len(notes) == 1
    with pytest.raises(IndexError, match=f"unit {view.cfg.d_ff} does not exist"):
        notes.set(f"L0D{view.cfg.d_ff}", "x")


def test_a_broken_file_is_named(tmp_path):
    path = tmp_path / "annotations.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="Fix or remove it"):
        Annotations("m", path)
