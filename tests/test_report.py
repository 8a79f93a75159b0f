"""The HTML report (sivae.report, `sivae report`): every figure inline, valid HTML, nothing fetched."""

from __future__ import annotations

import base64
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import sivae
from sivae._constants import KEYS
from sivae._errors import InputError
from sivae.cli import main
from sivae.report import build_report

FIGURES = ("fig-cells", "fig-features", "fig-centrality", "fig-training")
SECTIONS = ("overview", "embeddings", "centrality", "training", "parameters", "analyses")
_VOID = {"meta", "img", "br", "hr", "link", "input"}


class _Page(HTMLParser):
    """Collects figures, ids, links and checks that every opened tag is closed in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: set[str] = set()
        self.images: dict[str, str] = {}
        self.urls: list[str] = []
        self.tags: set[str] = set()
        self.text: list[str] = []
        self._figure: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "figure":
            self._figure = a.get("id")
        if tag == "img":
            self.images[self._figure or f"img{len(self.images)}"] = a.get("src", "")
        self.urls += [v for k, v in attrs if k in ("src", "href") and v and not v.startswith(("#", "data:"))]
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in _VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    # three gene programmes of 10 genes driven by one latent factor each, 10 noise genes
    rng = np.random.default_rng(0)
    factors = rng.normal(size=(300, 3))
    X = np.hstack([factors[:, [p]] + 0.5 * rng.normal(size=(300, 10)) for p in range(3)] + [rng.normal(size=(300, 10))])
    var = pd.DataFrame({KEYS.COMMUNITY: np.repeat(["p0", "p1", "p2", "noise"], 10)}, index=[f"g{j}" for j in range(40)])
    adata = AnnData(((X - X.mean(0)) / X.std(0)).astype(np.float32), var=var)
    adata.obs_names = [f"c{i}" for i in range(300)]
    adata.obs["batch"] = pd.Categorical(np.where(np.arange(adata.n_obs) % 2, "a", "b"))
    model = sivae.SIVAE(adata, n_latent=2, encoder_hidden=(32, 16), c_red=20, batch_size=64)
    model.train(max_epochs=4, pretrain_epochs=3, progress=False)
    folder = tmp_path_factory.mktemp("report")
    model.save(folder / "model")
    adata.write_h5ad(folder / "out.h5ad")
    return adata, folder


@pytest.fixture(scope="module")
def text(fitted):
    adata, folder = fitted
    return build_report(adata, model_dir=folder / "model", n_hubs=5)


def test_page_is_valid_self_contained_html_with_every_figure(fitted, text):
    adata, folder = fitted
    page = _parse(text)
    assert text.startswith("<!DOCTYPE html>") and not page.errors and not page.stack
    assert set(SECTIONS) <= page.ids
    for fig_id in FIGURES:
        src = page.images[fig_id]
        assert src.startswith("data:image/png;base64,"), fig_id
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000, fig_id
    assert page.urls == [] and "script" not in page.tags  # nothing to fetch, nothing to run
    words = " ".join(page.text)
    top = adata.var[KEYS.CENTRALITY].sort_values(ascending=False).index[:5]
    assert all(name in words for name in top)  # the hubs are named
    assert "gamma" in words and "0.05" in words and "c_red" in words  # the run's parameters
    assert "model folder: version" in words  # read from the model folder's config.json
    assert "No analyses have been run" in words


def test_analyses_appear_when_present_and_colour_is_chosen(fitted):
    adata, _ = fitted
    adata = adata.copy()
    adata.uns[KEYS.CROSS_VALIDATION] = pd.DataFrame({"fold": [0, 1], "accuracy": [0.875, 0.625]})
    page = _parse(build_report(adata, color="batch"))
    words = " ".join(page.text)
    assert "Cross-validated k-NN accuracy" in words and "0.875" in words
    assert "obs['batch']" in words
    with pytest.raises(InputError, match="neither a column"):
        build_report(adata, color="nope")


def test_modules_and_gene_sets_section_appears_when_present(fitted):
    adata, _ = fitted
    adata = adata.copy()
    assert "modules" not in _parse(build_report(adata)).ids
    sivae.tl.gene_modules(adata, n_neighbors=5, min_norm=0.0)
    programmes = {f"SET_{p}": list(adata.var_names[adata.var[KEYS.COMMUNITY] == p]) for p in ("p0", "p1", "p2")}
    sivae.tl.enrich(adata, programmes, max_fdr=1.0)
    page = _parse(build_report(adata))
    words = " ".join(page.text)
    assert "modules" in page.ids and "fig-modules" in page.images and not page.errors
    assert "The best gene set of each source" in words and "SET_p0" in words
    assert "No analyses have been run" in words  # shown in their own section, not listed again


def test_differential_hubs_section_appears_when_present(fitted):
    adata, folder = fitted
    adata = adata.copy()
    assert "conditions" not in _parse(build_report(adata)).ids
    model = sivae.load_model(folder / "model", adata)
    sivae.tl.differential_hubs(model, groupby="batch", reference="a", target="b", n_boot=20, n_perm=100)
    page = _parse(build_report(adata))
    words = " ".join(page.text)
    assert "conditions" in page.ids and "fig-differential" in page.images and not page.errors
    assert "obs['batch']: b (150 cells) against a (150 cells)" in words
    assert "No analyses have been run" in words  # shown in its own section, not listed again


def test_refuses_untrained_data(fitted):
    adata, _ = fitted
    bare = adata.copy()
    del bare.obsm[KEYS.CELL_EMBEDDING]
    with pytest.raises(InputError, match="obsm\\['X_sivae'\\]"):
        build_report(bare)


def test_cli_writes_the_page_and_refuses_to_overwrite(fitted, capsys):
    _, folder = fitted
    out = folder / "report.html"
    args = ["report", str(folder / "out.h5ad"), "--model-dir", str(folder / "model"), "-o", str(out)]
    assert main(args) == 0
    assert set(FIGURES) <= set(_parse(out.read_text()).images)
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err
    assert main([*args[:-1], str(folder / "report.txt")]) == 2
    assert main([*args, "--force", "--hubs", "3"]) == 0
    assert not list(folder.glob(".report.html.*"))  # no temporary left behind


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.slow
def test_renders_in_headless_chromium(text, tmp_path):
    browser = _chromium()
    if browser is None:
        print("NOTE: Chromium is not installed (apt-get install -y chromium); screenshot test skipped")
        pytest.skip("Chromium is not installed")
    page = tmp_path / "report.html"
    page.write_text(text)
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1200,2400", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=False)
    assert shot.is_file(), "Chromium wrote no screenshot"
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.shape[0] >= 2000 and pixels.shape[1] >= 1100
    dark = (pixels.mean(axis=2) < 0.5).mean()
    assert 0.005 < dark < 0.5  # text and figures drawn on a white page, not blank, not an error page


def test_parameters_of_a_2000_gene_model_folder_stay_a_short_table(fitted, tmp_path):
    # the preprocessing record holds 2,000 names, means and deviations; the table shows counts
    import torch

    from sivae.data.record import Preprocessing
    from sivae.models.saving import write_model_folder

    adata, folder = fitted
    genes = [f"gene{i}" for i in range(2000)]
    record = Preprocessing(raw_counts=True, features=tuple(genes), mean=tuple(np.linspace(0.5, 1, 2000)),
                           std=tuple(np.linspace(1, 2, 2000)), target_sum=1e4, max_value=10.0,
                           library_features=tuple(genes))
    meta = {"model": "sivae", "version": "test", "config": {}, "feature_names": genes}
    write_model_folder(tmp_path / "big", meta=meta, tensors={"w": torch.zeros(1)}, preprocessing=record,
                       overwrite=False)
    page = build_report(adata, model_dir=tmp_path / "big", n_hubs=5)
    section = page[page.index('<section id="parameters">'):page.index('<section id="analyses">')]
    assert len(section) < 5000, len(section)  # before: every name, mean and deviation, ~100 kB
    assert '"features": 2000' in section.replace("&quot;", '"') and "gene1999" not in section
    with pytest.raises(InputError, match="is not a saved sivae model"):
        build_report(adata, model_dir=tmp_path, n_hubs=5)


def test_cli_draws_category_and_step_names_that_look_like_formulas(fitted, tmp_path, capsys):
    # issue 25, item 18: matplotlib read these as mathtext, and `report --color` failed with a traceback
    adata, _ = fitted
    hostile = adata.copy()
    hostile.obs[r"$\frac$"] = pd.Categorical(np.where(np.arange(hostile.n_obs) % 2, r"$\frac$", "$x$"))
    hostile.write_h5ad(tmp_path / "out.h5ad")
    args = ["report", str(tmp_path / "out.h5ad"), "-o", str(tmp_path / "r.html"), "--color", r"$\frac$"]
    assert main(args) == 0, capsys.readouterr().err
    assert (tmp_path / "r.html").stat().st_size > 0
