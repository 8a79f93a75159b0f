"""Every benchmark script runs with --quick and writes the JSON BENCHMARKS.md needs.

Scripts are found by glob, so a new one is tested the moment it lands in benchmarks/. The contract
(fields and types) is ``_common.REQUIRED``, described in benchmarks/README.md; the only
exceptions are declared in ``EXCEPTIONS`` below, each with the reason, printed when it applies.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))
import _common  # noqa: E402
import make_report  # noqa: E402

NOT_BENCHMARKS = {"make_report.py"}
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name not in NOT_BENCHMARKS and not p.name.startswith("_"))
QUICK_TIMEOUT_S = 600  # a guard against a hung script; quick runs take seconds to ~2 min

# The one place where a script may depart from the contract, and why ("skip": not run here).
EXCEPTIONS: dict[str, dict] = {}


@pytest.fixture(scope="module")
def quick_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench_quick")


def _run_quick(script: str, out: Path) -> tuple[dict, float]:
    target = out / f"{Path(script).stem}.json"
    args = ["--quick", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=QUICK_TIMEOUT_S)
    seconds = time.perf_counter() - t0
    assert run.returncode == 0, f"{script} --quick failed (exit {run.returncode}):\n{run.stderr[-3000:]}"
    assert target.is_file(), f"{script} --quick wrote no {target.name} into --out; its stdout:\n{run.stdout[-1500:]}"
    left = list(out.glob("*.tmp")) + list(out.glob(".*.sivae-*"))  # sivae._files' temporary names
    assert not left, f"{script} left a temporary file behind: {left}"
    return json.loads(target.read_text()), seconds


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_quick_run_writes_the_contracted_json(script: str, quick_out: Path) -> None:
    rule = EXCEPTIONS.get(script, {})
    if "skip" in rule:
        print(f"NOTE: {script} not run: {rule['skip']}")
        pytest.skip(rule["skip"])
    payload, seconds = _run_quick(script, quick_out)
    print(f"{script} --quick: {seconds:.1f} s")
    found = _common.problems(payload, Path(script).stem)
    assert not found, f"{script}'s JSON breaks the contract in benchmarks/README.md: {found}"
    assert payload["quick"] is True
    assert "--quick" in payload["command"] and Path(script).name in payload["command"]
    for name in payload.get("figures", []):
        assert (quick_out / name).is_file() and (quick_out / name).stat().st_size > 1000, f"{script}: no {name}"


def test_every_script_takes_quick_and_out() -> None:
    for script in SCRIPTS:
        if "skip" in EXCEPTIONS.get(script, {}):
            continue
        text = (BENCH / script).read_text()
        assert "--quick" in text or "add_arguments" in text, f"{script} has no --quick"
        assert "--out" in text or "add_arguments" in text, f"{script} has no --out"


def test_scale_restates_its_measurements(tmp_path: Path) -> None:
    # the committed full-size measurements, stripped back to what the measuring code writes, get the
    # contract's fields from --restate without re-running them
    measured = json.loads((BENCH / "results" / "scale.json").read_text())
    for field in [*_common.REQUIRED, "seconds_note", "summary"]:
        measured.pop(field, None)
    (tmp_path / "old.json").write_text(json.dumps(measured))
    run = subprocess.run([sys.executable, str(BENCH / "scale.py"), "--restate", str(tmp_path / "old.json"),
                          "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    payload = json.loads((tmp_path / "out" / "scale.json").read_text())
    assert _common.problems(payload, "scale") == []
    runs = [measured["cells"]["base_in_memory"]] + [r for g in ("cells", "features", "latent")
                                                   for r in measured[g]["backed"]]
    assert [r["peak_rss_mb"] for r in payload["table"]] == [r["peak_rss_mb"] for r in runs]
    assert {c["reproduced"] for c in payload["claims"]} <= set(_common.VERDICTS) and len(payload["claims"]) == 2


def _payload(**changes: object) -> dict:
    base = {"benchmark": "x", "paper": "Fig. 1", "command": ".venv/bin/python benchmarks/x.py --quick", "quick": True,
            "seconds": 1.5, "table": [{"a": 1, "b": "u"}, {"a": 2, "b": None}],
            "claims": [{"claim": "c", "paper": "p", "ours": "o", "reproduced": "no"}]}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


@pytest.mark.parametrize("changes, message", [
    ({"paper": ...}, "'paper' is missing"),
    ({"quick": "yes"}, "'quick' should be bool"),
    ({"table": []}, "'table' is empty"),
    ({"table": [{"a": 1}, {"b": 2}]}, "same keys"),
    ({"table": [{"a": [1, 2]}]}, "values must be"),
    ({"claims": [{"claim": "c", "paper": "p", "ours": "o", "reproduced": "maybe"}]}, "'reproduced' must be"),
    ({"claims": [{"claim": "c"}]}, "string fields"),
])
def test_contract_check_names_each_break(changes: dict, message: str) -> None:
    assert _common.problems(_payload()) == []
    found = _common.problems(_payload(**changes))
    assert any(message in p for p in found), found
    with pytest.raises(ValueError, match="breaks the contract"):
        _common.write_result(_payload(**changes), Path("/nonexistent"))


def test_report_states_each_claim_and_leaves_out_broken_json(tmp_path: Path) -> None:
    good = _payload(benchmark="good", claims=[{"claim": "siVAE beats LDVAE", "paper": "Fig. 2b",
                                               "ours": "0.91 vs 0.85", "reproduced": "yes"}])
    _common.write_result(good, tmp_path)
    (tmp_path / "broken.json").write_text(json.dumps({"benchmark": "broken"}))
    text = make_report.build_report(tmp_path)
    assert "| siVAE beats LDVAE | Fig. 2b | 0.91 vs 0.85 | **yes** |" in text
    assert "## good" in text and good["command"] in text
    assert "`broken.json`: field 'paper' is missing" in text
    assert "## broken" not in text


def test_scripts_share_code_only_through_common() -> None:
    # one home for shared code: a script that imported another (or edited sys.path to reach one)
    # would run that script's module-level code and tie the two together
    scripts = {p.stem for p in BENCH.glob("*.py")} - {"_common"}
    for path in sorted(BENCH.glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
        assert not imported & scripts, f"{path.name} imports another script: {sorted(imported & scripts)}"
        edits_path = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "path"
                      and isinstance(n.value, ast.Name) and n.value.id == "sys"]
        assert not edits_path, f"{path.name} touches sys.path; import what it shares from _common"


def test_claims_take_only_the_contract_verdicts() -> None:
    assert _common.claim("c", "p", "o", _common.verdict(False, partly=True))["reproduced"] == "partly"
    assert [_common.verdict(v) for v in (True, False, None)] == ["yes", "no", "not tested"]
    with pytest.raises(ValueError, match="'reproduced' must be one of"):
        _common.claim("c", "p", "o", "maybe")


def test_results_are_written_whole_or_not_at_all(tmp_path: Path) -> None:
    good = _payload(benchmark="good")
    path = _common.write_result(good, tmp_path)
    assert json.loads(path.read_text()) == good
    with pytest.raises(TypeError):  # a value JSON cannot hold: nothing replaces the file written before
        _common.write_result({**good, "extra": object()}, tmp_path)
    assert json.loads(path.read_text()) == good and [p.name for p in tmp_path.iterdir()] == ["good.json"]
