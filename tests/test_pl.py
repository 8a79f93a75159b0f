"""Figures from a hand-built AnnData (no training): files exist, are valid, hubs are marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imread

from sivae import pl as plot
from sivae._constants import KEYS
from sivae._errors import InputError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def adata() -> AnnData:
    rng = np.random.default_rng(0)
    n_cells, n_genes = 60, 30
    data = AnnData(rng.standard_normal((n_cells, n_genes)).astype(np.float32))
    data.var_names = [f"gene{i}" for i in range(n_genes)]
    data.obs["cell_type"] = pd.Categorical(np.repeat(["B", "T", "NK"], n_cells // 3))
    data.obs["depth"] = rng.uniform(size=n_cells)
    data.obsm[KEYS.CELL_EMBEDDING] = rng.standard_normal((n_cells, 2))
    data.varm[KEYS.LOADINGS] = rng.standard_normal((n_genes, 3))
    data.var["community"] = pd.Categorical(np.repeat(["community_0", "community_1", "isolated"], 10))
    data.var["is_hub"] = np.isin(np.arange(n_genes), [0, 10])
    data.var[KEYS.CENTRALITY] = np.linspace(0.0, 0.9, n_genes)[::-1]  # gene0 most central
    return data


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG_MAGIC and imread(path).ndim == 3


def _texts(fig: Figure) -> set[str]:
    return {t.get_text() for t in fig.axes[0].texts}


def test_cell_embedding_writes_png(adata, tmp_path):
    path = tmp_path / "cells.png"
    fig = plot.cell_embedding(adata, color="cell_type", path=path)
    assert isinstance(fig, Figure)
    assert _is_png(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.png"]  # no temp file left


@pytest.mark.parametrize("color", ["depth", "gene3"])
def test_cell_embedding_numeric_and_gene_colours(adata, tmp_path, color):
    path = tmp_path / f"{color}.svg"
    plot.cell_embedding(adata, color=color, path=path)
    assert b"<svg" in path.read_bytes()[:2000]


def test_feature_embedding_marks_planted_hubs(adata, tmp_path):
    path = tmp_path / "features.png"
    fig = plot.feature_embedding(adata, color="community", highlight="is_hub", path=path)
    assert _is_png(path)
    assert _texts(fig) == {"gene0", "gene10"}


def test_feature_embedding_defaults_to_top_central_features(adata):
    fig = plot.feature_embedding(adata, dims=(1, 2))
    assert _texts(fig) == {f"gene{i}" for i in range(10)}
    del adata.var[KEYS.CENTRALITY]
    assert _texts(plot.feature_embedding(adata)) == set()


def test_feature_embedding_names_crowded_hubs_legibly(adata):
    # ten hubs packed at the top edge of the cloud, as a trained model puts them: every name must
    # stay clear of the other names and of every star
    rng = np.random.default_rng(1)
    loadings = rng.standard_normal((adata.n_vars, 2)) * 0.3
    loadings[:10] = [0.0, 1.0] + rng.normal(scale=0.02, size=(10, 2))
    adata.varm[KEYS.LOADINGS] = loadings
    fig = plot.feature_embedding(adata)
    ax = fig.axes[0]
    renderer = FigureCanvasAgg(fig).get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert {t.get_text() for t in ax.texts} == {f"gene{i}" for i in range(10)}
    overlaps = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]
    assert not overlaps, f"{len(overlaps)} pairs of names overlap"
    stars = ax.transData.transform(loadings[:10])
    assert not any(box.contains(x, y) for box in boxes for x, y in stars), "a name covers a star"


def test_centrality_plot_sorted_with_hubs(adata, tmp_path):
    path = tmp_path / "centrality.png"
    fig = plot.centrality(adata, color="community", highlight=["gene10", "gene29"], path=path)
    assert _is_png(path)
    assert _texts(fig) == {"gene10", "gene29"}
    xs = [t.xy[0] for t in fig.axes[0].texts]
    assert sorted(xs) == [11, 30]  # ranks: gene10 is the 11th most central, gene29 the last


def test_draws_into_given_axes(adata):
    fig = Figure()
    ax1, ax2 = fig.subplots(1, 2)
    assert plot.cell_embedding(adata, color="cell_type", ax=ax2) is fig
    assert ax2.collections and not ax1.collections


def test_interrupted_save_leaves_nothing(adata, tmp_path, monkeypatch):
    def broken(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError):
        plot.centrality(adata, path=tmp_path / "c.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda a, d: plot.cell_embedding(a, color="cell_type", basis="umap"), "run model.train"),
        (lambda a, d: plot.cell_embedding(a, color="nope"), "neither a column"),
        (lambda a, d: plot.cell_embedding(a, color="cell_type", dims=(0, 5)), "dims must be"),
        (lambda a, d: plot.feature_embedding(a, key="missing"), "run model.train"),
        (lambda a, d: plot.feature_embedding(a, highlight=["nope"]), "unknown features"),
        (lambda a, d: plot.feature_embedding(a, highlight="community"), "must be boolean"),
        (lambda a, d: plot.centrality(a, path=d / "c.jpg"), "must end in .png"),
        (lambda a, d: plot.centrality(a, path=d / "missing" / "c.png"), "does not exist"),
    ],
)
def test_bad_input_is_refused(adata, tmp_path, call, match):
    with pytest.raises(InputError, match=match):
        call(adata, tmp_path)


def test_centrality_needs_training(adata):
    del adata.var[KEYS.CENTRALITY]
    with pytest.raises(InputError, match=r"run model.train\(\) first"):
        plot.centrality(adata)


# -- issue 25, item 18: names matplotlib would read as mathtext are drawn as written --------------
FORMULAS = [r"$\frac$", "$x$", r"a$b$c\$"]


@pytest.fixture
def formula_names(adata) -> AnnData:
    adata.var_names = FORMULAS + list(adata.var_names[len(FORMULAS):])
    adata.obs["cell_type"] = pd.Categorical(np.resize(FORMULAS, adata.n_obs))
    adata.var["community"] = pd.Categorical(np.resize(FORMULAS, adata.n_vars))
    return adata


def _drawn_texts(fig: Figure) -> dict[str, bool]:
    # every text of the drawn figure -> whether matplotlib would parse it as mathtext
    FigureCanvasAgg(fig).draw()
    from matplotlib.text import Text
    return {t.get_text(): t.get_parse_math() for t in fig.findobj(Text) if t.get_text()}


@pytest.mark.parametrize("call", [
    lambda a: plot.cell_embedding(a, color="cell_type"),
    lambda a: plot.cell_embedding(a, color=r"$\frac$"),
    lambda a: plot.feature_embedding(a, highlight=FORMULAS),
    lambda a: plot.feature_embedding(a, color="community", highlight="$x$"),
    lambda a: plot.centrality(a, highlight=FORMULAS),
], ids=["cell-legend", "cell-gene-colour", "feature-highlight", "feature-legend", "centrality"])
def test_names_that_look_like_formulas_are_drawn_as_written(formula_names, call):
    texts = _drawn_texts(call(formula_names))
    shown = [t for t in texts if any(f in t for f in FORMULAS)]
    assert shown and all(texts[t] is False for t in shown)  # drawn, as plain text


def test_given_axes_keep_formula_titles_plain(formula_names):
    fig = Figure()
    ax = fig.add_subplot()
    plot.cell_embedding(formula_names, color=r"$\frac$", ax=ax)
    assert ax.title.get_parse_math() is False and r"$\frac$" in ax.title.get_text()
    FigureCanvasAgg(fig).draw()


def test_interpretation_and_network_plots_draw_formula_names():
    rng = np.random.default_rng(0)
    square = pd.DataFrame(np.eye(3), index=FORMULAS, columns=FORMULAS)
    table = pd.DataFrame({"a": [FORMULAS[0], FORMULAS[0], FORMULAS[1]], "b": [FORMULAS[1], FORMULAS[2], FORMULAS[2]],
                          "median": [0.1, 0.5, 0.9]})
    truth = pd.Series(rng.random(5), index=[*FORMULAS, "g3", "g4"])
    for fig in (plot.agreement(table), plot.overlap(square, title=FORMULAS[0]),
                plot.centrality_truth({FORMULAS[0]: truth}, truth), plot.cumulative_truth({FORMULAS[1]: truth}, truth),
                plot.neighborhood_pve(pd.DataFrame(rng.random((4, 3)), columns=FORMULAS))):
        texts = _drawn_texts(fig)
        assert any(f in t for t in texts for f in FORMULAS)
