"""lmscope.topk.bench: the benchmark's pieces, one tiny real CPU run, saved results and their plot."""

import json
from pathlib import Path

import matplotlib
import pytest
import torch
import torch.nn.functional as F

from lmscope.topk import bench

matplotlib.use("Agg")


def test_naive_attention_equals_sdpa():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 3, 17, 8, generator=g, dtype=torch.float64) for _ in range(3))
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(bench.naive_attention(q, k, v), ref)
    for method in ("sdpa", "naive", "topk"):  # k >= length: every method is exact causal attention
        torch.testing.assert_close(bench.run_method(method, q, k, v, topk=17, chunk=None), ref)
    with pytest.raises(ValueError, match="unknown method"):
        bench.run_method("flash", q, k, v, 4, None)


@pytest.mark.parametrize("method", ["sdpa", "topk", "naive"])
def test_time_fwd_bwd_returns_positive_seconds(method):
    sec = bench.time_fwd_bwd(method, 64, torch.float32, "cpu", topk=8, chunk=None, reps=2)
    assert isinstance(sec, float) and sec > 0


def _row(method, T, time_s, peak, own=None, dtype="fp32"):
    row = {"method": method, "T": T, "dtype": dtype, "time_s": time_s, "peak_gib": peak}
    return row if own is None else {**row, "peak_above_base_gib": own}


def test_ratios_on_hand_made_rows():
    rows = [
        _row("sdpa", 1024, 2.0, 1.0, 0.5), _row("topk", 1024, 1.0, 0.5, 0.25), _row("naive", 1024, 8.0, 4.0, 3.0),
        _row("sdpa", 2048, 4.0, 2.0), _row("topk", 2048, 6.0, 1.0),  # no layer's own memory (GPU rows)
        _row("topk", 4096, 1.0, 1.0),  # no SDPA row at this length
        {"method": "naive", "T": 4096, "dtype": "fp32", "skipped": "memory"},
        _row("sdpa", 1024, 1.0, 1.0, dtype="bf16"), _row("topk", 1024, 3.0, 2.0, dtype="bf16"),
    ]
    assert bench.ratios(rows) == [
        {"dtype": "bf16", "T": 1024, "time_ratio": 3.0, "peak_ratio": 2.0},
        {"dtype": "fp32", "T": 1024, "time_ratio": 0.5, "peak_ratio": 0.5, "peak_above_base_ratio": 0.5},
        {"dtype": "fp32", "T": 2048, "time_ratio": 1.5, "peak_ratio": 0.5},
    ]
    lines = bench.ratio_lines({"ratios": bench.ratios(rows)})
    assert lines[1] == "fp32 T=  1024: top-k time 0.50x SDPA, peak memory 0.50x, layer's own memory 0.50x"
    assert lines[2] == "fp32 T=  2048: top-k time 1.50x SDPA, peak memory 0.50x"


def test_tiny_cpu_run_of_main(tmp_path, capsys):
    """Three child processes (sdpa, top-k, naive) at one short length; the first top-k run on a machine
    compiles the numba kernels (about 15 s per dtype), later runs load them from numba's cache."""
    out = tmp_path / "tiny.json"
    result = bench.main(["--lengths", "128", "--reps", "1", "--k", "16", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert [(r["method"], r["T"]) for r in result["rows"]] == [("sdpa", 128), ("topk", 128), ("naive", 128)]
    for row in result["rows"]:
        assert "error" not in row, row.get("error")
        assert row["time_s"] > 0 and row["peak_gib"] >= row["peak_above_base_gib"] >= 0
    assert result["shape"] == {"batch": 1, "heads": 12, "d_head": 64, "k": 16, "causal": True, "chunk": None}
    assert [(r["dtype"], r["T"]) for r in result["ratios"]] == [("fp32", 128)]
    assert "top-k / SDPA" in capsys.readouterr().out


def test_live_benchmark_writes_only_a_temporary_file(capsys):
    result = bench.live_benchmark([64], extra_args=("--methods", "sdpa", "--k", "8"))
    assert [(r["method"], r["T"]) for r in result["rows"]] == [("sdpa", 64)] and result["rows"][0]["time_s"] > 0
    written = Path(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("wrote "))
    assert written.name == "topk_attention_live.json" and not written.exists()  # removed with its folder


def test_live_benchmark_in_process_runs_every_method_here(capsys):
    result = bench.live_benchmark([64], extra_args=("--k", "8"), in_process=True)
    assert [(r["method"], r["T"]) for r in result["rows"]] == [("sdpa", 64), ("topk", 64), ("naive", 64)]
    assert result["in_process"] and all(r["time_s"] > 0 and "error" not in r for r in result["rows"])
    assert not bench.live_benchmark([64], extra_args=("--methods", "sdpa", "--k", "8"))["in_process"]


def test_find_and_load_saved_results(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    for folder, device in ((first, "first"), (second, "second")):
        folder.mkdir()
        (folder / "r.json").write_text(json.dumps({"device": device, "rows": [], "ratios": []}))
    assert bench.find_benchmark("r.json", [first, second]) == first / "r.json"
    assert bench.find_benchmark("r.json", [tmp_path, second]) == second / "r.json"
    assert bench.find_benchmark("missing.json", [first, second]) is None
    assert bench.load_benchmark(first / "r.json")["device"] == "first"
    assert bench.load_benchmark(first / "missing.json") is None
    assert bench.saved_benchmarks(("missing.json", "r.json"), [second]) == {"r.json": {"device": "second", "rows": [],
                                                                                      "ratios": []}}
    monkeypatch.chdir(tmp_path)  # the default folders: the checkout's benchmarks/results, then the working folder's
    folders = bench.result_folders()
    assert folders[0].parts[-2:] == ("benchmarks", "results") and (folders[0].parent.parent / "lib" / "lmscope").is_dir()
    assert folders[-1] == tmp_path.resolve() / "benchmarks" / "results"


def test_plot_benchmark_draws_a_panel_per_measure():
    cpu = {"device": "cpu", "rows": [
        _row("sdpa", 512, 0.1, 1.0, 0.2), _row("sdpa", 1024, 0.3, 1.1, 0.4),
        _row("topk", 512, 0.2, 0.9, 0.1), _row("topk", 1024, 0.3, 1.0, 0.2),
        {"method": "naive", "T": 1024, "dtype": "fp32", "skipped": "memory"},
    ]}
    fig = bench.plot_benchmark(cpu)
    assert [a.get_ylabel() for a in fig.axes] == ["seconds (fwd+bwd)", "peak memory (GiB)", "layer's own memory (GiB)"]
    for a, key in zip(fig.axes, ("time_s", "peak_gib", "peak_above_base_gib")):
        lines = {line.get_label(): line for line in a.get_lines()}
        assert set(lines) == {"sdpa fp32", "topk fp32"}
        assert list(lines["topk fp32"].get_ydata()) == [r[key] for r in cpu["rows"][2:4]]
    gpu = {"device": "gpu", "rows": [_row("sdpa", 1024, 0.1, 1.0), _row("topk", 1024, 0.1, 0.5, dtype="bf16"),
                                      {"method": "torch.topk alone", "T": 1024, "dtype": "fp32", "time_s": 0.5}]}
    fig = bench.plot_benchmark(gpu)
    assert len(fig.axes) == 2 and fig._suptitle.get_text() == "gpu"
    assert {line.get_label() for line in fig.axes[0].get_lines()} == {"sdpa fp32", "topk bf16"}
