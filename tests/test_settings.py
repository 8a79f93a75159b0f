"""Settings declared once (sivae.settings): the CLI's options, the checks and the training modes
all come from the dataclass fields, and a new training mode is one class."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, fields

import numpy as np
import pytest

import sivae
from sivae._errors import InputError
from sivae.cli import _parser, main
from sivae.cli._settings import add_settings, given, option_name
from sivae.models.config import ModelConfig
from sivae.train.modes import TRAINING_MODES, Paper, Plan, register
from sivae.settings import Interval, check, check_value, document, setting
from sivae.train.config import TrainConfig, shared_with

pytestmark = pytest.mark.usefixtures("one_thread")

TRAINER_ONLY = [f for f in fields(TrainConfig) if f.name not in shared_with(ModelConfig)]
SETTINGS = [(ModelConfig, f) for f in fields(ModelConfig)] + [(TrainConfig, f) for f in TRAINER_ONLY]


def _fit_parser() -> argparse.ArgumentParser:
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["fit"]


def _adata(n_cells: int = 80, n_genes: int = 12):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n_cells, n_genes)).astype(np.float32)
    import anndata as ad

    return ad.AnnData(X)


@pytest.mark.parametrize(("cls", "f"), SETTINGS, ids=[f.name for _, f in SETTINGS])
def test_each_setting_is_one_fit_option_with_the_dataclass_default_and_help(cls, f) -> None:
    actions = {a.dest: a for a in _fit_parser()._actions}
    action = actions[f.name]
    assert option_name(f) in action.option_strings
    shown = (",".join(map(str, f.default)) or "none") if isinstance(f.default, tuple) else f.default
    mode = f" ({f.metadata['mode']} mode only)" if f.metadata.get("mode") else ""
    assert action.help.replace("%%", "%") == f"{f.metadata['help']}{mode} (default {shown})"
    assert action.default is argparse.SUPPRESS  # not given: the dataclass's own default applies
    if f.metadata.get("choices") is not None:
        assert tuple(action.choices) == tuple(f.metadata["choices"])


def test_options_left_out_leave_the_dataclass_defaults() -> None:
    args = _fit_parser().parse_args(["in.h5ad", "-o", "o.h5ad"])
    assert not any(hasattr(args, f.name) for _, f in SETTINGS)
    args = _fit_parser().parse_args(["in.h5ad", "-o", "o.h5ad", "--n-latent", "5", "--hidden", "8,4",
                                     "--feature-input-cells", "none", "--linear", "--pretrain-fraction", "0.5"])
    assert (args.n_latent, args.encoder_hidden, args.feature_input_cells, args.linear, args.pretrain_fraction) == (
        5, (8, 4), None, True, 0.5)
    # list-valued settings of names: comma-separated, spaces around the commas dropped
    args = _fit_parser().parse_args(["in.h5ad", "-o", "o.h5ad", "--batch-key", "sample", "--covariates",
                                     "donor, lane", "--continuous-covariates", "pct_mito"])
    assert (args.batch_key, args.categorical_covariate_keys, args.continuous_covariate_keys) == (
        "sample", ("donor", "lane"), ("pct_mito",))


def test_public_signatures_show_the_dataclass_defaults() -> None:
    import inspect

    init = inspect.signature(sivae.SIVAE.__init__).parameters
    assert init["n_latent"].default == ModelConfig.n_latent == 2 and init["gamma"].default == ModelConfig.gamma
    train = inspect.signature(sivae.SIVAE.train).parameters
    assert train["max_epochs"].default == TrainConfig.max_epochs and train["pretraining"].default == "finetune"


# -- one sentence from one place --------------------------------------------------------------------
OUT_OF_RANGE = [(ModelConfig, "n_latent", 0), (ModelConfig, "gamma", -0.5), (ModelConfig, "gamma", math.inf),
                (ModelConfig, "holdout_fraction", 0.5), (ModelConfig, "learning_rate", 2.0),
                (ModelConfig, "seed", -1), (ModelConfig, "encoder_hidden", (16, 0)),
                (ModelConfig, "likelihood", "poisson"), (TrainConfig, "max_epochs", 0),
                (TrainConfig, "pretrain_epochs", -1), (TrainConfig, "finetune_fraction", -0.1),
                (TrainConfig, "subnormals", "sometimes")]


@pytest.mark.parametrize(("cls", "name", "value"), OUT_OF_RANGE, ids=[f"{n}={v}" for _, n, v in OUT_OF_RANGE])
def test_an_out_of_range_setting_is_one_sentence_from_its_declaration(tmp_path, capsys, cls, name, value) -> None:
    with pytest.raises(InputError) as declared:
        check_value(cls, name, value)
    sentence = str(declared.value)
    assert sentence.startswith(f"{name} must be ") and "\n" not in sentence
    adata = _adata()
    # the Python API says the same sentence, before any training
    with pytest.raises(InputError) as api:
        if cls is ModelConfig:
            sivae.SIVAE(adata, **{"encoder_hidden": (8,), "c_red": 5, "device": "cpu", name: value})
        else:
            model = sivae.SIVAE(adata, encoder_hidden=(8,), c_red=5, device="cpu")
            model.train(progress=False, **{name: value})
    assert str(api.value) == sentence
    # and so does the command line, naming its flag, before reading the (absent) input
    f = next(f for f in fields(cls) if f.name == name)
    text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
    if f.metadata.get("choices") is None:
        assert main(["fit", str(tmp_path / "absent.h5ad"), "-o", str(tmp_path / "o.h5ad"), option_name(f), text]) == 2
        assert capsys.readouterr().err.strip() == f"sivae: error: {option_name(f)}: {sentence}"


def test_wrong_types_are_refused_by_the_same_check() -> None:
    for name, value in (("n_latent", "2"), ("n_latent", 2.0), ("linear", "yes"), ("cell_type_key", 3)):
        with pytest.raises(InputError, match=f"^{name} must be "):
            check_value(ModelConfig, name, value)


# -- training modes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", sorted(TRAINING_MODES))
def test_every_registered_mode_trains_from_the_api_and_the_cli(tmp_path, mode) -> None:
    adata = _adata()
    model = sivae.SIVAE(adata.copy(), encoder_hidden=(8,), c_red=5, batch_size=32, device="cpu")
    model.train(max_epochs=2, pretrain_epochs=1, pretraining=mode, progress=False)
    assert model.adata.uns["sivae"]["training"]["pretraining"] == mode
    assert np.isfinite(model.adata.obsm["X_sivae"]).all()
    adata.write_h5ad(tmp_path / "in.h5ad")
    argv = ["fit", str(tmp_path / "in.h5ad"), "-o", str(tmp_path / "out.h5ad"), "--no-preprocess", "--no-progress",
            "--device", "cpu", "--hidden", "8", "--c-red", "5", "--epochs", "1", "--pretrain-epochs", "1",
            "--pretraining", mode]
    assert main(argv) == 0
    assert sivae.read(tmp_path / "out.h5ad").uns["sivae"]["training"]["pretraining"] == mode


def test_a_new_mode_is_one_class() -> None:
    @register
    class Short(Paper):
        """Every step trains one epoch: only here, to show a mode needs nothing else."""

        name = "short-test"

        def plan(self, config, i, n_phases, steps_per_epoch, first_step_ran, cell_steps_per_epoch):
            return Plan(epochs=1)

    try:
        assert "short-test" in [a for a in _fit_parser()._actions if a.dest == "pretraining"][0].choices
        model = sivae.SIVAE(_adata(), encoder_hidden=(8,), c_red=5, batch_size=32, device="cpu")
        model.train(max_epochs=5, pretraining="short-test", progress=False)
        assert [(h["phase"], h["epoch"]) for h in model.history] == [("cell", 0), ("feature", 0), ("joint", 0)]
    finally:
        del TRAINING_MODES["short-test"]


@dataclass(frozen=True)
class _Covariates:  # a setting added as one field: checked, parsed and documented with no other edit
    batch_key: str | None = setting(None, "column of adata.obs naming each cell's batch")
    categorical_covariate_keys: tuple[str, ...] | None = setting(None, "columns of adata.obs to correct for")
    n_layers: int = setting(1, "layers", range=Interval(1))


def test_a_new_setting_is_one_field() -> None:
    parser = argparse.ArgumentParser()
    add_settings(parser, _Covariates)
    args = parser.parse_args(["--batch-key", "sample", "--categorical-covariate-keys", "donor, lab"])
    assert given(args, _Covariates) == {"batch_key": "sample", "categorical_covariate_keys": ("donor", "lab")}
    check(_Covariates(**given(args, _Covariates)))
    with pytest.raises(InputError, match=r"^categorical_covariate_keys must be a list of strings or None, got \(1,\)"):
        check(_Covariates(categorical_covariate_keys=(1,)))
    with pytest.raises(InputError, match=r"^n_layers must be at least 1 \(a positive integer\), got 0$"):
        check(_Covariates(n_layers=0))
    assert "batch_key : a string or None, default None" in document(_Covariates).__doc__
