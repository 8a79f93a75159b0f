"""The demo end to end at one epoch: every file written, metrics and table present."""

from __future__ import annotations

import pytest

from sivae._errors import InputError
from sivae.demo import run_demo

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_demo_writes_everything(tmp_path, capsys, monkeypatch):
    # the real run: 5,000 cells and 1024-512-128 layers; the same code path, smaller
    monkeypatch.setattr("sivae.demo.NETWORK_CELLS", 500)
    monkeypatch.setattr("sivae.demo.MODEL_OPTIONS", {"encoder_hidden": (64, 32), "c_red": 50})
    metrics = run_demo(tmp_path / "demo", epochs=1, progress=False)
    for path in metrics["files"].values():
        data = open(path, "rb").read(8)
        assert data == PNG_MAGIC if path.endswith(".png") else len(data) == 8
    assert len(metrics["top_genes"]) == 5
    assert 0 <= metrics["hubs_in_top10"] <= metrics["n_hubs"] == 5
    assert -1 <= metrics["loading_silhouette"] <= 1
    assert metrics["isolated_norm_ratio"] > 0
    assert 0 < metrics["knn_accuracy"] <= 1
    assert "planted hubs among the 10 most central genes" in capsys.readouterr().out
    # a second run is refused before training, and allowed with force
    with pytest.raises(InputError, match="force"):
        run_demo(tmp_path / "demo", epochs=1, progress=False)


@pytest.mark.parametrize("epochs", [0, -3, 1.5, True])
def test_demo_refuses_bad_epochs(tmp_path, epochs):
    with pytest.raises(InputError, match="epochs"):
        run_demo(tmp_path, epochs=epochs)
