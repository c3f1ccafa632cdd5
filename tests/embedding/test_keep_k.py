"""Keep-k: the k largest-magnitude entries, and how sparse readings keep the geometry."""

import pytest
import torch

from lmscope import ModelView
from lmscope.embedding.keep_k import gram_spectrum, keep_k, keep_k_similarities, keep_k_similarity, keep_k_vectors
from lmscope.embedding.projection import group_vectors

from conftest import make_tiny_model


@pytest.fixture(scope="module")
def view():
    return ModelView(make_tiny_model("gpt2"))


def test_paper_measure_is_exact_at_full_k(view):
    """keep_k(X E) keep_k(X E^+T)^T = X E E^+ X^T = X X^T once nothing is dropped."""
    X = group_vectors(view, 0, "ff_values")[:20]
    V = view.cfg.d_vocab
    assert keep_k_similarity(X, view.W_U, [V], reading="pinv")[0] == pytest.approx(1.0, abs=1e-6)
    # our earlier variant (E^+ on both sides) is X (E E^T)^-1 X^T there, and E^T is X E E^T X^T: not exact
    assert keep_k_similarity(X, view.W_U, [V], reading="pinv", pairing="both")[0] < 0.999
    assert keep_k_similarity(X, view.W_U, [V], reading="transpose")[0] < 0.999
    sims = keep_k_similarity(X, view.W_U, [2, 10, 40, V], reading="pinv")
    E_pinv = torch.linalg.pinv(view.W_U.detach().double())
    assert keep_k_similarity(X, view.W_U, [2, 10, 40, V], reading="pinv", E_pinv=E_pinv) == pytest.approx(sims)
    assert all(-1 <= s <= 1 for s in sims) and sims[0] < sims[-1]


def test_transpose_is_exact_for_an_isotropic_unembedding():
    """If E E^T = c I (orthonormal rows, scaled), the E^T reading keeps X X^T exactly at full k."""
    Q, _ = torch.linalg.qr(torch.randn(50, 8, dtype=torch.float64))  # (V, d) orthonormal columns
    E = 3.0 * Q.T  # (d, V)
    X = torch.randn(12, 8, dtype=torch.float64)
    assert keep_k_similarity(X, E, [50])[0] == pytest.approx(1.0, abs=1e-6)
    spec = gram_spectrum(E)
    assert spec.condition == pytest.approx(1.0) and spec.top_share == pytest.approx(1 / 8)


def test_gram_spectrum_matches_the_gram_matrix(view):
    spec = gram_spectrum(view.W_U)
    G = view.W_U.detach().double() @ view.W_U.detach().double().T
    assert float(spec.eigenvalues.sum()) == pytest.approx(float(G.trace()), rel=1e-9)
    assert spec.eigenvalues[0] >= spec.eigenvalues[-1] and spec.condition >= 1
    assert len(spec.rows()) == 2


def test_keep_k_vectors(view):
    hidden = torch.randn(3, 7, view.cfg.d_model)
    sets = keep_k_vectors(view, n=15, seed=1, hidden=hidden)
    assert set(sets) == {"Gaussian", "FF values", "hidden states"}
    assert sets["Gaussian"].shape == (15, view.cfg.d_model)
    all_values = torch.cat([group_vectors(view, l, "ff_values") for l in range(view.cfg.n_layers)]).float()
    rows = (sets["FF values"][:, None, :] == all_values[None]).all(-1)  # each sample is one real value
    assert rows.any(1).all()
    layers = rows.float().argmax(1) // view.cfg.d_ff
    assert len(set(layers.tolist())) > 1  # drawn from more than one layer
    assert torch.equal(keep_k_vectors(view, n=15, seed=1)["FF values"], sets["FF values"])  # seeded
    with pytest.raises(ValueError, match="positive number"):
        keep_k_vectors(view, n=0)


def test_keep_k_rows_and_errors():
    x = torch.tensor([[1.0, -4.0, 2.0], [0.5, 0.25, -3.0]])
    assert keep_k(x, 1).tolist() == [[0.0, -4.0, 0.0], [0.0, 0.0, -3.0]]
    assert keep_k(torch.tensor([[3.0, -5.0, 1.0, 0.5]]), 2).tolist() == [[3.0, -5.0, 0.0, 0.0]]
    assert torch.equal(keep_k(x, 3), x)
    with pytest.raises(ValueError, match="positive integer"):
        keep_k(x, 0)
    with pytest.raises(ValueError, match="larger than the number of coordinates"):
        keep_k(x, 4)
    with pytest.raises(ValueError, match="Unknown reading"):
        keep_k_similarity(x, torch.randn(3, 5), [1], reading="inverse")
    with pytest.raises(ValueError, match="Unknown pairing"):
        keep_k_similarity(x, torch.randn(3, 5), [1], pairing="left")


def test_variants_at_once_equal_one_at_a_time(view):
    """keep_k_similarities shares the readings between variants: the same numbers as separate calls."""
    X = group_vectors(view, 1, "ff_values")[:25]
    ks = [3, 20, view.cfg.d_vocab]
    E_pinv = torch.linalg.pinv(view.W_U.detach().double())
    variants = [("transpose", "paper"), ("pinv", "paper"), ("pinv", "both")]
    together = keep_k_similarities(X, view.W_U, ks, variants, E_pinv)
    assert list(together) == variants
    for reading, pairing in variants:
        assert together[reading, pairing] == keep_k_similarity(X, view.W_U, ks, reading, pairing, E_pinv)
    with pytest.raises(ValueError, match="Unknown pairing"):
        keep_k_similarities(X, view.W_U, ks, [("pinv", "left")])


@pytest.mark.parametrize("speedup", [None, 0, float("inf")])
def test_shared_selection_equals_keep_k_per_k(view, monkeypatch, speedup):
    """The one-selection path gives the cosines of keep_k(X E) keep_k(X E^+T)^T built per k, in the order
    asked, whether each Gram product is chosen by cost (None), all sparse (speedup 0) or all dense (inf)."""
    import lmscope.embedding.keep_k as kk

    if speedup is not None:
        monkeypatch.setattr(kk, "SPARSE_SPEEDUP", speedup)
    X = group_vectors(view, 0, "ff_values")[:30].detach().double()
    E = view.W_U.detach().double()
    E_pinv = torch.linalg.pinv(E)
    ks = [40, 2, 11, view.cfg.d_vocab, 11]  # unsorted, repeated, and full
    sims = keep_k_similarities(X, view.W_U, ks, [("transpose", "paper"), ("pinv", "paper"), ("pinv", "both")], E_pinv)
    P_E, P_inv, G = (X @ E).float(), (X @ E_pinv.T).float(), X @ X.T

    def cos(K):
        return float((K.double() * G).sum() / (K.double().norm() * G.norm()))

    for i, k in enumerate(ks):
        assert sims["transpose", "paper"][i] == pytest.approx(cos(keep_k(P_E, k) @ keep_k(P_E, k).T), abs=1e-6)
        assert sims["pinv", "paper"][i] == pytest.approx(cos(keep_k(P_E, k) @ keep_k(P_inv, k).T), abs=1e-6)
        assert sims["pinv", "both"][i] == pytest.approx(cos(keep_k(P_inv, k) @ keep_k(P_inv, k).T), abs=1e-6)
    with pytest.raises(ValueError, match="k"):
        keep_k_similarities(X, view.W_U, [view.cfg.d_vocab + 1])

