"""Spherical k-means, and clusters of every value vector of a model."""

import pytest
import torch

from lmscope.debugger.clusters import cluster_values, spherical_kmeans


def test_spherical_kmeans_recovers_separated_groups():
    g = torch.Generator().manual_seed(0)
    centers = torch.nn.functional.normalize(torch.randn(5, 16, generator=g), dim=1)
    truth = torch.arange(5).repeat_interleave(40)
    X = centers[truth] * torch.rand(200, 1, generator=g).add(0.5) + 0.05 * torch.randn(200, 16, generator=g)
    result = spherical_kmeans(X, 5, seed=1)
    # each true group lands in one cluster, and different groups in different clusters
    mapping = {int(t): set(result.labels[truth == t].tolist()) for t in range(5)}
    assert all(len(s) == 1 for s in mapping.values())
    assert len({next(iter(s)) for s in mapping.values()}) == 5
    assert result.mean_cosine > 0.9
    with pytest.raises(ValueError, match="n_clusters"):
        spherical_kmeans(X, 0)
    with pytest.raises(ValueError, match="non-empty"):
        spherical_kmeans(torch.zeros(0, 3), 1)


def test_spherical_kmeans_result_is_consistent():
    X = torch.randn(300, 8, generator=torch.Generator().manual_seed(2))
    result = spherical_kmeans(X, 7, seed=0, chunk_size=64)  # several chunks per assignment
    unit = torch.nn.functional.normalize(X, dim=1)
    sims = unit @ result.centroids.T  # (N, K)
    assert torch.equal(result.labels, sims.argmax(dim=1))  # every point sits with its nearest centroid
    assert result.centroids.norm(dim=1).tolist() == pytest.approx([1.0] * 7, rel=1e-5)
    assert result.sizes.tolist() == torch.bincount(result.labels, minlength=7).tolist()
    assert result.mean_cosine == pytest.approx(float(sims.max(dim=1).values.mean()), rel=1e-5)
    assert torch.equal(spherical_kmeans(X, 7, seed=0, chunk_size=300).labels, result.labels)


def test_cluster_values_of_a_tiny_model(tiny):
    _, _, view = tiny
    cfg = view.cfg
    vc = cluster_values(view, None, n_clusters=6, n_tokens=4)
    assert vc.labels.shape == (cfg.n_layers, cfg.d_ff)
    assert torch.equal(vc.labels.flatten(), vc.clusters.labels)
    members = [vc.members(c) for c in range(6)]
    assert sum(len(m) for m in members) == cfg.n_layers * cfg.d_ff
    first = members[vc.cluster_of(1, 2)]
    assert "L1D2" in first
    top = (vc.clusters.centroids @ view.W_U.float()).topk(4, dim=1).indices
    assert vc.top_tokens == [[f"<{i}>" for i in row] for row in top.tolist()]
    with pytest.raises(IndexError, match="Cluster 6 does not exist"):
        vc.members(6)
