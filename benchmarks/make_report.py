"""BENCHMARKS.md from the JSON files in benchmarks/results/, and the JSON contract every script keeps.

    .venv/bin/python benchmarks/make_report.py                       # results/ -> BENCHMARKS.md
    .venv/bin/python benchmarks/make_report.py --results benchmarks/results/quick -o /tmp/B.md

The contract (benchmarks/README.md spells it out) lives here in code, once: ``REQUIRED`` names the
fields, ``problems`` checks a JSON against them (tests/test_benchmarks.py uses it), and
``add_arguments``/``write_result`` are what a script uses to take ``--quick --out DIR`` and write
``DIR/<name>.json`` atomically. The report renders, per JSON: its claims (ours against the paper's,
and whether we reproduce it), its table, and the command that reproduces it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
REPORT = HERE.parent / "BENCHMARKS.md"

# field -> the JSON types it may hold
REQUIRED: dict[str, tuple[type, ...]] = {
    "benchmark": (str,), "paper": (str,), "command": (str,), "quick": (bool,),
    "seconds": (int, float), "table": (list,), "claims": (list,),
}
CLAIM_FIELDS = ("claim", "paper", "ours", "reproduced")
VERDICTS = ("yes", "no", "partly", "not tested")
_CELL = (str, int, float, bool, type(None))


def problems(payload: Any, name: str | None = None) -> list[str]:
    """Every way ``payload`` breaks the contract (empty when it keeps it)."""
    if not isinstance(payload, dict):
        return [f"the JSON is a {type(payload).__name__}, not an object"]
    out = [f"field {f!r} is missing" for f in REQUIRED if f not in payload]
    out += [f"field {f!r} should be {'/'.join(t.__name__ for t in types)}, got {type(payload[f]).__name__}"
            for f, types in REQUIRED.items() if f in payload and not isinstance(payload[f], types)]
    if out:
        return out
    if name is not None and payload["benchmark"] != name:
        out.append(f"'benchmark' is {payload['benchmark']!r}, expected the script name {name!r}")
    table = payload["table"]
    if not table:
        out.append("'table' is empty")
    elif not all(isinstance(r, dict) for r in table):
        out.append("'table' rows must be objects")
    else:
        keys = list(table[0])
        if any(list(r) != keys for r in table):
            out.append("'table' rows must all have the same keys in the same order")
        if any(not isinstance(v, _CELL) for r in table for v in r.values()):
            out.append("'table' values must be numbers, strings, booleans or null")
    for i, claim in enumerate(payload["claims"]):
        if not isinstance(claim, dict) or any(not isinstance(claim.get(f), str) for f in CLAIM_FIELDS):
            out.append(f"claim {i} must be an object with string fields {CLAIM_FIELDS}")
        elif claim["reproduced"] not in VERDICTS:
            out.append(f"claim {i}: 'reproduced' must be one of {VERDICTS}, got {claim['reproduced']!r}")
    return out


# -- what a script uses ---------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--quick`` and ``--out DIR``, as every benchmark takes them."""
    parser.add_argument("--quick", action="store_true", help="small settings, seconds to a minute")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the JSON and PNGs (default benchmarks/results/, "
                             "benchmarks/results/quick/ with --quick)")


def out_dir(args: argparse.Namespace) -> Path:
    """The folder a run writes into, created."""
    folder = args.out if args.out is not None else (RESULTS / "quick" if args.quick else RESULTS)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def command_line() -> str:
    """The command that reproduced this run, relative to the repository root."""
    script = os.path.relpath(Path(sys.argv[0]).resolve(), HERE.parent)
    return shlex.join([".venv/bin/python", script, *sys.argv[1:]])


def write_result(payload: dict[str, Any], folder: Path) -> Path:
    """Check ``payload`` against the contract, then write ``folder/<benchmark>.json`` atomically."""
    found = problems(payload)
    if found:
        raise ValueError(f"benchmark JSON breaks the contract: {'; '.join(found)}")
    path = folder / f"{payload['benchmark']}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=float))
    os.replace(tmp, path)
    return path


def save_figure(fig: Any, path: Path) -> Path:
    """Save a matplotlib figure atomically (tmp + rename)."""
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    return path


# -- the report -------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e3 else f"{value:,.0f}"
    return "" if value is None else str(value).replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]], limit: int = 60) -> str:
    """A Markdown table of flat rows (at most ``limit`` rows; the JSON holds them all)."""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |" for r in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"\n({len(rows) - limit} more rows in the JSON)")
    return "\n".join(lines)


def _section(path: Path, payload: dict[str, Any]) -> str:
    head = [f"## {payload['benchmark']}", "",
            f"Paper: {payload['paper']}. Reproduce: `{payload['command']}` "
            f"({payload['seconds'] / 60:.1f} min here{', quick settings' if payload['quick'] else ''}"
            f"{'; ' + payload['seconds_note'] if payload.get('seconds_note') else ''}; "
            f"JSON: `{os.path.relpath(path, REPORT.parent)}`)."]
    if payload.get("summary"):
        head += ["", str(payload["summary"])]
    if payload["claims"]:
        head += ["", "| claim | paper | ours | reproduced |", "|---|---|---|---|"]
        head += [f"| {_fmt(c['claim'])} | {_fmt(c['paper'])} | {_fmt(c['ours'])} | **{c['reproduced']}** |"
                 for c in payload["claims"]]
    figures = [f"![{p.stem}]({os.path.relpath(path.parent / p, REPORT.parent)})"
               for p in map(Path, payload.get("figures", []))]
    return "\n".join([*head, "", markdown_table(payload["table"]), "", *figures]).rstrip() + "\n"


def build_report(results: Path) -> str:
    """BENCHMARKS.md's text from every JSON in ``results`` that keeps the contract."""
    parts, skipped, claims = [], [], []
    for path in sorted(results.glob("*.json")):
        payload = json.loads(path.read_text())
        found = problems(payload, path.stem)
        if found:
            skipped.append(f"- `{path.name}`: {found[0]}")
            continue
        parts.append(_section(path, payload))
        label = payload["benchmark"] + (" (quick settings: a smoke run, not evidence)" if payload["quick"] else "")
        claims += [(label, c) for c in payload["claims"]]
    lines = ["# Benchmarks: the paper's claims, measured here", "",
             "Generated by `benchmarks/make_report.py` from the JSON files in "
             f"`{os.path.relpath(results, REPORT.parent)}/`; do not edit by hand. Every number was "
             "measured on this machine (2 CPU cores) by the command shown beside it.", "",
             "## Claim by claim", "", "| benchmark | claim | paper | ours | reproduced |", "|---|---|---|---|---|"]
    lines += [f"| {b} | {_fmt(c['claim'])} | {_fmt(c['paper'])} | {_fmt(c['ours'])} | **{c['reproduced']}** |"
              for b, c in claims]
    if skipped:
        lines += ["", "JSON files left out because they do not keep the contract in benchmarks/README.md:",
                  *skipped]
    return "\n".join(lines) + "\n\n" + "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of benchmark JSON files")
    parser.add_argument("-o", "--output", type=Path, default=REPORT, help="the Markdown file to write")
    args = parser.parse_args(argv)
    text = build_report(args.results)
    tmp = args.output.with_name(args.output.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
