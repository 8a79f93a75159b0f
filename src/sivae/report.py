"""One self-contained HTML page about a fitted model: ``sivae.report.write_report(adata, "report.html")``.

The page holds everything inline (figures as base64 PNG, styles in the head, no scripts, no links
out), so it opens offline in any browser and can be mailed as one file. Sections: the data and
run, the cell embedding coloured by an ``obs`` column, the feature embedding with the top hubs
named, centrality with a table of the hubs, the training curves of each step, the run's
parameters, and the analyses' results where they ran (gene modules and gene-set enrichment,
cross-validation, neighbourhoods, agreement, gene networks).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from . import pl, tl
from ._constants import KEYS
from ._errors import InputError
from ._files import atomic_file, check_destination
from .pl._plain import plain_text
from .models.saving import read_model_folder

__all__ = ["build_report", "write_report"]

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:left}th{background:#f4f4f4}figure{margin:.8em 0}img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}.meta{color:#555}nav a{margin-right:1em}
"""
_MAX_ROWS = 25  # rows of any table shown; the h5ad holds the rest


# -- pieces ---------------------------------------------------------------------------------------
def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(fig: Figure, fig_id: str, caption: str) -> str:
    return (f'<figure id="{fig_id}"><img alt="{html.escape(caption)}" src="data:image/png;base64,{_png(fig)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _cell(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple, np.ndarray)):
        return html.escape(", ".join(map(str, np.asarray(value).ravel()[:20])))
    return html.escape(str(value))


def _table(frame: pd.DataFrame, caption: str | None = None) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [frame.index.name or "", *frame.columns])
    rows = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in [i, *r]) + "</tr>"
                   for i, r in zip(frame.index[:_MAX_ROWS], frame.to_numpy()[:_MAX_ROWS]))
    more = f"<p class='meta'>{len(frame) - _MAX_ROWS} more rows in the file.</p>" if len(frame) > _MAX_ROWS else ""
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<tr>{head}</tr>{rows}</table>{more}"


def _section(sec_id: str, title: str, body: str) -> str:
    return f'<section id="{sec_id}"><h2>{html.escape(title)}</h2>{body}</section>'


def _default_color(adata: AnnData) -> str:
    # the cell types when present, else the first categorical column, else the train/validation split
    if KEYS.CELL_TYPE in adata.obs:
        return KEYS.CELL_TYPE
    for column in adata.obs.columns:
        if isinstance(adata.obs[column].dtype, pd.CategoricalDtype) and column != KEYS.SPLIT:
            return column
    return KEYS.SPLIT


@plain_text  # step names come from the file: drawn as written, never as mathtext
def _training_curves(losses: dict[str, Any]) -> Figure:
    """One panel per training step: training total loss and held-out loss against the epoch."""
    phase = np.asarray(losses["phase"]).astype(str)
    steps = list(dict.fromkeys(phase))
    fig = Figure(figsize=(4.0 * len(steps), 3.2))
    for i, step in enumerate(steps):
        ax = fig.add_subplot(1, len(steps), i + 1)
        rows = phase == step
        epoch = np.asarray(losses["epoch"])[rows]
        for key, label in (("total", "training loss"), ("val", "held-out loss")):
            if key in losses:
                ax.plot(epoch, np.asarray(losses[key], dtype=float)[rows], marker=".", label=label)
        ax.set_title(f"step {i + 1}: {step}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
        ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def _read_model_dir(model_dir: str | os.PathLike | None, uns: Any) -> dict[str, Any]:
    # what the parameter table shows of a model folder: its scalars, and how many features the
    # preprocessing record covers rather than its per-feature names, means and deviations
    if model_dir is None:
        return {}
    from .models.saving import check_same_run

    folder = read_model_folder(model_dir)  # a missing, corrupt or foreign folder: one sentence
    check_same_run(folder, uns, "the AnnData of the report")
    meta = {key: folder.meta[key] for key in ("version", "model") if key in folder.meta}
    record = folder.preprocessing
    if record is not None:
        meta["preprocessing"] = {
            "raw_counts": record.raw_counts, "target_sum": record.target_sum, "max_value": record.max_value,
            "features": len(record.features),
            "library_features": None if record.library_features is None else len(record.library_features)}
    elif folder.has_preprocessing_record:
        meta["preprocessing"] = {"preprocessed": False}
    return meta


def _run_record(uns: Any) -> dict[str, Any]:
    """uns["sivae"] as `sivae fit` writes it, or one sentence naming the field that is not."""
    where = f"adata.uns[{KEYS.UNS!r}]"
    fix = "report on the h5ad that `sivae fit` wrote, or delete the entry"
    if not isinstance(uns, Mapping):
        raise InputError(f"{where} is a {type(uns).__name__}, not the record of a run; {fix}")
    seconds = uns.get("training_seconds", 0.0)
    try:
        seconds = float(np.asarray(seconds, dtype=np.float64).item())
    except (TypeError, ValueError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise InputError(f"{where}['training_seconds'] is {uns.get('training_seconds')!r}, not a number of "
                         f"seconds; {fix}")
    losses, params = uns.get("losses", {}), uns.get("params", {})
    if not isinstance(losses, Mapping) or not isinstance(params, Mapping):
        raise InputError(f"{where}['losses'] and ['params'] must be tables (mappings); {fix}")
    lengths = {str(k): len(np.atleast_1d(v)) for k, v in losses.items()}
    if len(set(lengths.values())) > 1:
        raise InputError(f"{where}['losses'] has columns of different lengths {lengths}; {fix}")
    if "phase" in losses and "epoch" not in losses:
        raise InputError(f"{where}['losses'] has phases but no epochs; {fix}")
    for key in ("epoch", "total", "val"):
        if key in losses:
            try:
                np.asarray(losses[key], dtype=np.float64)
            except (TypeError, ValueError):
                raise InputError(f"{where}['losses'][{key!r}] holds values that are not numbers; {fix}") from None
    return {**uns, "training_seconds": seconds}


# -- sections -------------------------------------------------------------------------------------
def _overview(adata: AnnData, uns: dict[str, Any], source: str | None) -> str:
    facts = {"cells": adata.n_obs, "features": adata.n_vars, "model": uns.get("model", "?"),
             "sivae version": uns.get("version", "?"),
             "training seconds": uns["training_seconds"],
             "embedding dimensions": adata.obsm[KEYS.CELL_EMBEDDING].shape[1]}
    if KEYS.SPLIT in adata.obs:
        facts["held-out cells (early stopping)"] = int((adata.obs[KEYS.SPLIT] == "validation").sum())
    if source:
        facts["file"] = source
    return _table(pd.DataFrame({"value": list(facts.values())}, index=pd.Index(list(facts), name="")))


def _embeddings(adata: AnnData, color: str, n_hubs: int) -> str:
    parts = [_figure(pl.cell_embedding(adata, color=color), "fig-cells",
                     f"Cell embedding (obsm['{KEYS.CELL_EMBEDDING}'], dimensions 1 and 2) coloured by obs['{color}'].")]
    if KEYS.LOADINGS in adata.varm:
        var_color = KEYS.COMMUNITY if KEYS.COMMUNITY in adata.var else None
        parts.append(_figure(pl.feature_embedding(adata, color=var_color, highlight=n_hubs), "fig-features",
                             f"Feature embedding (varm['{KEYS.LOADINGS}']); stars: the {n_hubs} most central "
                             "features, named."))
    return "".join(parts)


def _centrality(adata: AnnData, n_hubs: int) -> str:
    fig = _figure(pl.centrality(adata, highlight=n_hubs), "fig-centrality",
                  f"Reconstruction accuracy per feature (var['{KEYS.CENTRALITY}']), sorted; the hubs rank first.")
    top = adata.var[KEYS.CENTRALITY].sort_values(ascending=False).head(n_hubs)
    frame = pd.DataFrame({"centrality": top.to_numpy()}, index=pd.Index(top.index, name="feature"))
    for column in (KEYS.CENTRALITY_RANK_LOW, KEYS.CENTRALITY_RANK_HIGH, KEYS.GROUND_TRUTH_CENTRALITY, KEYS.IS_HUB):
        if column in adata.var:
            frame[column] = adata.var.loc[top.index, column].to_numpy()
    baseline = "" if KEYS.GROUND_TRUTH_CENTRALITY in adata.var else _pca_baseline(adata, frame, n_hubs)
    return fig + _table(frame, f"The {n_hubs} most central features") + baseline


_BASELINE_CELLS = 5000  # cells sampled (seeded) for the PCA baseline of the hub section


def _pca_baseline(adata: AnnData, frame: pd.DataFrame, n_hubs: int) -> str:
    # what training bought: siVAE's ranking beside the one-second linear one (each feature's R^2
    # from the top-K principal components, K the embedding's dimensions); adds its rank to frame
    k = adata.obsm[KEYS.CELL_EMBEDDING].shape[1]
    if min(adata.n_obs, adata.n_vars) <= k + 1:
        return ""
    rows = np.sort(np.random.default_rng(0).choice(adata.n_obs, min(adata.n_obs, _BASELINE_CELLS), replace=False))
    sample = AnnData(adata.X[rows], var=pd.DataFrame(index=adata.var_names.copy()))
    r2 = tl.pca_centrality(sample, n_components=k, key_added=None)
    rank = r2.rank(ascending=False, method="first")
    frame[f"PCA R^2 rank (top {k} PCs)"] = rank.loc[frame.index].to_numpy()
    ours = pd.to_numeric(adata.var[KEYS.CENTRALITY], errors="coerce")
    rho = ours.corr(r2, method="spearman")
    shared = len(set(frame.index) & set(rank.nsmallest(n_hubs).index))
    return (f"<p>No ground truth here, so beside the model's ranking is the linear baseline a PCA gives in seconds: "
            f"each feature's R^2 from the top {k} principal components. Spearman between the two rankings "
            f"{rho:.2f}; {shared} of the {n_hubs} hubs are also among the PCA's {n_hubs} best. The closer the "
            "two, the less the model's hubs differ from those a linear model already finds.</p>")


def _parameters(uns: dict[str, Any], meta: dict[str, Any]) -> str:
    params = dict(uns.get("params", {}))
    for key in ("version", "model", "preprocessing"):
        if key in meta:
            params[f"model folder: {key}"] = meta[key] if not isinstance(meta[key], dict) else json.dumps(meta[key])
    frame = pd.DataFrame({"value": [str(v) for v in params.values()]}, index=pd.Index(list(params), name="parameter"))
    return _table(frame)


def _as_frame(value: Any) -> pd.DataFrame | None:
    # a table-like uns entry (DataFrame, or a dict of equal-length arrays / scalars) as a frame
    if isinstance(value, pd.DataFrame):
        return value
    if isinstance(value, dict):
        flat = {k: v for k, v in value.items() if np.ndim(v) <= 1 and not isinstance(v, dict)}
        sizes = {np.size(v) for v in flat.values()}
        if flat and len(sizes) == 1:
            return pd.DataFrame({k: np.ravel(v) for k, v in flat.items()})
        if flat:
            return pd.DataFrame({"value": [_cell(v) for v in flat.values()]}, index=pd.Index(list(flat), name="key"))
    return None


def _analyses(adata: AnnData) -> str:
    """Whatever the tools wrote: cross-validation, neighbourhoods, agreement, networks."""
    named = {KEYS.CROSS_VALIDATION: "Cross-validated k-NN accuracy (sivae.evaluation.cross_validate)",
             KEYS.NEIGHBORHOODS: "Gene neighbourhoods (sivae.tl.compare_neighborhoods)",
             KEYS.AGREEMENT: "Agreement of interpretations (sivae.tl.agreement)"}
    parts = []
    # shown in _modules_and_gene_sets and _differential_hubs
    own_section = (KEYS.UNS, KEYS.PREPROCESS, KEYS.MODULE, KEYS.ENRICHMENT, KEYS.DIFFERENTIAL_HUBS)
    for key in sorted(k for k in adata.uns if k.startswith(("sivae_", "sivae")) and k not in own_section):
        frame = _as_frame(adata.uns[key])
        if frame is not None:
            parts.append(f"<h3>{html.escape(named.get(key, key))}</h3>" + _table(frame, f"uns['{key}']"))
    networks = [k for k in adata.varp if k.startswith(KEYS.GRN)]
    if networks:
        sizes = pd.DataFrame({"edges above zero": [int((np.asarray(adata.varp[k]) > 0).sum() // 2) for k in networks]},
                             index=pd.Index(networks, name="varp key"))
        parts.append("<h3>Gene networks (sivae.tl.grn)</h3>" + _table(sizes))
    return "".join(parts) or "<p class='meta'>No analyses have been run on this file yet.</p>"


def _modules_and_gene_sets(adata: AnnData) -> str:
    """Gene modules (sivae.tl.gene_modules) and gene-set enrichment (sivae.tl.enrich), where present."""
    parts = []
    if KEYS.MODULE in adata.var and KEYS.LOADINGS in adata.varm:
        info = adata.uns.get(KEYS.MODULE, {})
        modules = adata.var[KEYS.MODULE].astype("category")
        sizes = modules.value_counts(sort=False).rename("genes").to_frame()
        sizes.index.name = "module"
        rule = f"{int(modules.isna().sum()):,} genes unassigned ({tl.modules.unassigned_rule(info)}, or in a module too small)"
        parts.append(_figure(pl.gene_modules(adata), "fig-modules", "Gene modules (var['sivae_module']) on the first "
                             f"two principal components of the loadings; {rule}.") + _table(sizes))
    result = adata.uns.get(KEYS.ENRICHMENT, {})
    table = result.get("results") if isinstance(result, Mapping) else None
    if isinstance(table, pd.DataFrame) and len(table):
        matching = result.get("matching", {})
        parts.append(f"<p class='meta'>Gene sets {html.escape(str(result.get('gene_sets', '')))}: "
                     f"{int(matching.get('n_genes_matched', 0)):,} of {int(matching.get('n_genes', 0)):,} genes in "
                     f"any set, {int(matching.get('n_sets_kept', 0)):,} sets tested (uns['{KEYS.ENRICHMENT}']).</p>")
        significant = table[table["fdr"] <= 0.05]
        if len(significant):
            parts.append(_figure(pl.enrichment(significant), "fig-enrichment",
                                 "Top gene sets per source at FDR <= 0.05 (sivae.tl.enrich; dot size: overlap)."))
        order = table["source"].map(lambda s: 0 if s == "hubs" else 1 if str(s).startswith("module") else 2)
        best = table.assign(order=order).sort_values(["order", "p"], kind="stable").groupby("source", sort=False).head(1)
        best = best[["source", "term", "statistic", "fdr", "overlap", "leading_genes"]]
        parts.append(_table(best.set_index("source"), "The best gene set of each source (hubs, modules, dimensions)"))
    return "".join(parts)


def _differential_hubs(adata: AnnData) -> str:
    """Hubs that change between two groups of cells (sivae.tl.differential_hubs), where present."""
    result = adata.uns.get(KEYS.DIFFERENTIAL_HUBS, {})
    table = result.get("table") if isinstance(result, Mapping) else None
    if not isinstance(table, pd.DataFrame) or not len(table):
        return ""
    params = dict(result.get("params", {}))
    hits = table[table["fdr"] < 0.05]
    shown = pd.concat([hits[hits["difference"] > 0].head(10), hits[hits["difference"] < 0].tail(10)])
    what = (f"obs['{params.get('groupby', '?')}']: {params.get('target', '?')} ({int(params.get('n_target', 0)):,} "
            f"cells) against {params.get('reference', '?')} ({int(params.get('n_reference', 0)):,} cells); "
            f"{len(hits):,} genes at FDR < 0.05 (uns['{KEYS.DIFFERENTIAL_HUBS}'])")
    return (_figure(pl.differential_hubs(adata), "fig-differential", f"Centrality in each group; {what}.")
            + _table(shown.round(4), "The largest gains and losses at FDR < 0.05"))


# -- the page -------------------------------------------------------------------------------------
def build_report(
    adata: AnnData,
    *,
    model_dir: str | os.PathLike | None = None,
    color: str | None = None,
    n_hubs: int = 10,
    title: str | None = None,
    source: str | None = None,
) -> str:
    """The HTML text of the report on a fitted model's output.

    Parameters
    ----------
    adata
        AnnData after ``model.train()`` (or read from `sivae fit`'s output). Reads
        ``obsm["X_sivae"]``, ``varm["sivae_loadings"]``, ``var["sivae_centrality"]``,
        ``uns["sivae"]`` (parameters and the per-epoch ``losses`` of each step),
        ``obs[color]``, and where present ``var["community"]``, the centrality-rank and
        ground-truth columns, ``var["sivae_module"]``, ``uns["sivae_enrichment"]``, ``uns["sivae_*"]``
        results of the tools and ``varp["sivae_grn_*"]``.
    model_dir
        The model folder `sivae fit` wrote: its config.json and preprocess.json are listed with
        the parameters.
    color
        Column of ``adata.obs`` to colour the cells by; None: ``"cell_type"`` when present, else
        the first categorical column, else the train/validation split.
    n_hubs
        How many of the most central features to name.
    title
        Page title; None: "siVAE report".
    source
        The file the AnnData came from, shown in the overview.

    Returns
    -------
    str
        A complete HTML document with every figure inline; it needs no network to display.
    """
    if not isinstance(adata, AnnData):
        raise InputError(f"expected an AnnData, got {type(adata).__name__}")
    missing = [f"{where}['{key}']" for where, store, key in (
        ("obsm", adata.obsm, KEYS.CELL_EMBEDDING), ("var", adata.var, KEYS.CENTRALITY), ("uns", adata.uns, KEYS.UNS))
        if key not in store]
    if missing:
        raise InputError(f"adata lacks {', '.join(missing)}; report on the output of a trained siVAE "
                         "(`sivae fit ... -o OUT.h5ad`)")
    if isinstance(n_hubs, bool) or not isinstance(n_hubs, (int, np.integer)) or not 1 <= n_hubs <= adata.n_vars:
        raise InputError(f"n_hubs must be an integer from 1 to the {adata.n_vars} features; got {n_hubs!r}")
    color = color or _default_color(adata)
    if color not in adata.obs and color not in adata.var_names:
        raise InputError(f"color {color!r} is neither a column of adata.obs nor a feature; choose one of "
                         f"{list(adata.obs.columns)[:8]}")
    uns = _run_record(adata.uns[KEYS.UNS])
    title = title or "siVAE report"
    sections = [
        ("overview", "Data and run", _overview(adata, uns, source)),
        ("embeddings", "Cell and feature embeddings", _embeddings(adata, color, n_hubs)),
        ("centrality", "Centrality: the hubs", _centrality(adata, n_hubs)),
    ]
    losses = uns.get("losses", {})
    if len(losses) and "phase" in losses and len(np.atleast_1d(losses["phase"])):
        curves = _figure(_training_curves(losses), "fig-training",
                         "Training curves of each step (uns['sivae']['losses']): training and held-out loss.")
    else:
        curves = "<p class='meta'>No training history in uns['sivae']['losses'].</p>"
    modules = _modules_and_gene_sets(adata)
    if modules:
        sections.append(("modules", "Gene modules and gene sets", modules))
    differential = _differential_hubs(adata)
    if differential:
        sections.append(("conditions", "Hubs that change between groups", differential))
    sections += [("training", "Training", curves),
                 ("parameters", "Parameters of the run", _parameters(uns, _read_model_dir(model_dir, uns))),
                 ("analyses", "Analyses", _analyses(adata))]
    nav = "".join(f'<a href="#{sid}">{html.escape(name)}</a>' for sid, name, _ in sections)
    body = "".join(_section(sid, name, content) for sid, name, content in sections)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1><nav>{nav}</nav>{body}"
            "</body></html>\n")


def write_report(
    adata: AnnData,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    **kwargs: Any,
) -> Path:
    """Write `build_report`'s page to ``path`` atomically (a temporary name, then a rename).

    Parameters
    ----------
    adata
        As in `build_report`.
    path
        The ``.html`` file to write; an existing one is replaced only with ``overwrite``.
    overwrite
        Replace an existing file.
    **kwargs
        ``model_dir``, ``color``, ``n_hubs``, ``title``, ``source``: as in `build_report`.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    target = check_destination(path, what="report", overwrite=overwrite)
    text = build_report(adata, **kwargs)
    with atomic_file(target, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)
