"""Every AnnData key and saved-file name sivae reads or writes, in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class _Keys:
    # .layers
    COUNTS: str = "counts"
    # .obsm: cell embedding (posterior means of z_c1), C x K; prefixed with "X_" as scanpy expects
    CELL_EMBEDDING: str = "X_sivae"
    # .varm: feature embedding (posterior means of v_f1), F x K
    LOADINGS: str = "sivae_loadings"
    # .var: per-feature centrality, the correlation of reconstruction and data on training cells
    CENTRALITY: str = "sivae_centrality"
    # .var: per-feature mean and standard deviation used to z-score the data
    FEATURE_MEAN: str = "sivae_mean"
    FEATURE_STD: str = "sivae_std"
    # .obs: which cells were held out for early stopping
    SPLIT: str = "sivae_split"
    # .uns: parameters, losses, version
    UNS: str = "sivae"
    # .uns: how the matrix was preprocessed
    PREPROCESS: str = "sivae_preprocess"
    # .uns: where the matrix of an AnnData opened with sivae.read_backed lives (path, layer)
    BACKED: str = "sivae_backed"
    # .obs: per-cell total counts of a backed matrix, normalised per batch while training
    LIBRARY_SIZE: str = "sivae_library_size"
    # .var: scanpy's highly-variable-gene flag, read by sivae.pp.preprocess
    HIGHLY_VARIABLE: str = "highly_variable"
    # .obs: cell-type labels of the bundled datasets (sivae.datasets)
    CELL_TYPE: str = "cell_type"
    # .obs: the condition of sivae.datasets.kang ("ctrl" or "stim")
    CONDITION: str = "condition"
    # .var / .uns: ground truth of sivae.datasets.simulated_network
    COMMUNITY: str = "community"
    IS_HUB: str = "is_hub"
    IS_ISOLATED: str = "is_isolated"
    SIMULATED_NETWORK: str = "simulated_network"
    # .var / .uns: ground truth and parameters of sivae.data.simulate.simulate_large
    PROGRAM: str = "program"
    SIMULATE_LARGE: str = "simulate_large"
    # .varp: gene networks of sivae.tl.grn, "<GRN>_<method>" (genes x genes edge weights)
    GRN: str = "sivae_grn"
    # .var: ground-truth centrality of sivae.tl.centrality_ground_truth (mean PVE of the others)
    GROUND_TRUTH_CENTRALITY: str = "sivae_ground_truth_centrality"
    # .var: bootstrap rank of the centrality and its interval (sivae.tl.centrality_ci; 1 = top)
    CENTRALITY_RANK: str = "sivae_centrality_rank"
    CENTRALITY_RANK_LOW: str = "sivae_centrality_rank_low"
    CENTRALITY_RANK_HIGH: str = "sivae_centrality_rank_high"
    # .uns: sivae.tl.compare_neighborhoods (query genes, PVE per method, overlap matrices)
    NEIGHBORHOODS: str = "sivae_neighborhoods"
    # .uns: sivae.evaluation.cross_validate, one row per fold (fold, n_train, n_test, k, accuracy, seconds)
    CROSS_VALIDATION: str = "sivae_cross_validation"
    # .varm: summarised attributions (sivae.tl.summarize_attributions), "<ATTRIBUTION>_<method>",
    # features x K; .uns["<ATTRIBUTION>_<method>"]: how they were computed (sivae attribute)
    ATTRIBUTION: str = "sivae_attribution"
    # .varm: summarised Gene Relevance partials, features x dims (sivae.tl.gene_relevance)
    GENE_RELEVANCE: str = "sivae_gene_relevance"
    # .uns: sivae.tl.agreement, per-dimension |Spearman| of each pair of interpretations
    AGREEMENT: str = "sivae_agreement"
    # .var: gene module of sivae.tl.gene_modules (categorical, NaN = unassigned: near the origin);
    # .uns under the same key: its parameters and the norm threshold used
    MODULE: str = "sivae_module"
    # .obsm: per-cell activity of each module (sivae.tl.module_scores), a cells x modules DataFrame
    MODULE_SCORES: str = "sivae_module_scores"
    # .uns: sivae.tl.enrich, {"results": table, "matching": counts, "gene_sets": name}
    ENRICHMENT: str = "sivae_enrichment"
    # .uns: sivae.tl.differential_hubs, {"table": per-gene centrality per group, difference,
    # interval, p, FDR; "params": the groups, their sizes and the replicates}
    DIFFERENTIAL_HUBS: str = "sivae_differential_hubs"


KEYS = _Keys()


@dataclass(frozen=True)
class _Files:
    CONFIG: str = "config.json"
    WEIGHTS: str = "model.safetensors"
    CHECKPOINT_META: str = "checkpoint.json"
    # the tensors of checkpoint number n; checkpoint.json names the current one
    CHECKPOINT_TENSORS: str = "checkpoint-{}.safetensors"
    # written beside a model by `sivae fit`: how to preprocess new cells the same way for `embed`
    PREPROCESS: str = "preprocess.json"
    # written by `sivae demo` into its output folder
    DEMO_NETWORK_H5AD: str = "simulated_network.h5ad"
    DEMO_PBMC_H5AD: str = "pbmc68k_reduced.h5ad"
    DEMO_PBMC_CELLS_PNG: str = "pbmc68k_reduced_cells.png"
    DEMO_PBMC_FEATURES_PNG: str = "pbmc68k_reduced_features.png"
    DEMO_NETWORK_FEATURES_PNG: str = "simulated_network_features.png"
    DEMO_NETWORK_CENTRALITY_PNG: str = "simulated_network_centrality.png"


FILES = _Files()


@dataclass(frozen=True)
class OutputKeys:
    """Where one model writes its results; siVAE's are KEYS', a baseline's carry its own prefix."""

    cell_embedding: str
    loadings: str
    centrality: str
    uns: str
    # .varm: each covariate's effect per feature (features x categories), with covariates only;
    # its columns, "covariate:category", in uns[uns]["batch_effects"]
    batch_effects: str


def output_keys(prefix: str) -> OutputKeys:
    """Keys for a model whose results go under ``prefix`` ("sivae", "vae", "ldvae")."""
    return OutputKeys(f"X_{prefix}", f"{prefix}_loadings", f"{prefix}_centrality", prefix, f"{prefix}_batch_effects")
