"""The deploy report: Markdown, a self-contained HTML page (plots inlined), PNG plots and summary.json."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deploykit.io.outputs import write_json, write_text
from deploykit.report.format import fmt, markdown_table

TASK_KEYS = ("pixel_agreement", "miou", "cc", "sim", "kld", "nss")


def _kept(build: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    report = build.get("report") or {}
    return list(report.get("kept_fp32") or report.get("kept_float") or [])


def latency_rows(bench: Mapping[str, Any]) -> list[list[object]]:
    rows = []
    for r in bench.get("results", []):
        lat = r["latency"]
        rows.append([r["backend"], r["precision"], r["batch"], "x".join(map(str, r["input_shape"])),
                     lat["median"], lat["p90"], lat["p99"], r["images_per_s"], r.get("achieved_gflops"),
                     r.get("efficiency_percent")])
    return rows


def _ratio_rows(bench: Mapping[str, Any]) -> list[list[object]]:
    results = bench.get("results", [])
    base = next((r for r in results if r["backend"] == "torch"), None)
    fp32 = next((r for r in results if r["precision"] == "fp32" and r["backend"] != "torch"), None)
    rows = []
    for r in results:
        median = r["latency"]["median"]
        rows.append([f"{r['backend']} {r['precision']}", median,
                     base["latency"]["median"] / median if base else None,
                     fp32["latency"]["median"] / median if fp32 else None])
    return rows


def accuracy_rows(parity: Mapping[str, Any]) -> list[list[object]]:
    rows = []
    for cand in parity.get("candidates", []):
        for out in cand["outputs"]:
            m = out["metrics"]
            rows.append([cand["precision"], out["name"], m.get("cosine"), m.get("max_abs"), m.get("snr_db"),
                         ", ".join(f"{k} {fmt(m[k])}" for k in TASK_KEYS if k in m) or "-",
                         "pass" if out["passed"] else "FAIL"])
    return rows


def markdown(summary: Mapping[str, Any], plots: Mapping[str, Path]) -> str:
    parity, bench, layers = summary["parity"], summary["bench"], summary["layers"]
    lines = [
        f"# deploykit report: {summary['model']}",
        "",
        f"Options {summary['options'] or '(defaults)'}; weights {summary['weights'] or '(builder initialisation)'}; "
        f"backend {summary['backend']} ({summary['backend_note']}).",
        "",
        "## Accuracy against PyTorch",
        "",
        f"{parity['input_count']} inputs: {parity['inputs']}. {parity['summary']}.",
        "",
        markdown_table(["precision", "output", "cosine", "max abs", "SNR dB", "task metrics", "verdict"],
                       accuracy_rows(parity)),
        "",
        "## Latency",
        "",
        markdown_table(["backend", "precision", "batch", "input", "median ms", "p90 ms", "p99 ms", "images/s",
                        "GFLOP/s", "% GEMM peak"], latency_rows(bench)),
        "",
        markdown_table(["run", "median ms", "speed-up vs PyTorch", "speed-up vs fp32"], _ratio_rows(bench)),
        "",
    ]
    if bench.get("peaks"):
        peaks = bench["peaks"]
        lines += [f"Machine peaks measured in this run: fp32 GEMM {fmt(peaks['gemm_gflops'])} GFLOP/s, "
                  f"memory copy {fmt(peaks['copy_gbps'])} GB/s ({peaks['threads']} threads).", ""]
    for note in bench.get("notes", []):
        lines += [f"> {note}", ""]
    lines += ["## Nodes kept in higher precision", ""]
    for build in summary["builds"]:
        kept = _kept(build)
        if build["precision"] != "fp32":
            names = ", ".join(f"{k.get('name')} ({k.get('op_type')}: {k.get('reason', '')})" for k in kept[:12])
            lines.append(f"- {build['precision']}: {len(kept)} kept" + (f": {names}" if kept else "")
                         + (" …" if len(kept) > 12 else ""))
    lines += ["", "## Per-layer error", ""]
    if layers.get("nodes"):
        worst = sorted(layers["nodes"], key=lambda n: -n["growth"])[:5]
        lines += [f"Worst candidate: {layers['candidate']} ({layers['precision']}); nodes with the largest error "
                  "growth:", "",
                  markdown_table(["node", "op", "PyTorch module", "error", "growth"],
                                 [[n["node"], n["op_type"], n["module"] or "-", n["error"], n["growth"]]
                                  for n in worst]), ""]
    else:
        lines += [layers.get("note", "no per-layer data"), ""]
    for name, path in plots.items():
        lines += [f"![{name}]({path.name})", ""]
    lines += ["## Steps", "", markdown_table(["step", "skipped (unchanged)", "seconds"],
                                             [[s["name"], s["skipped"], s["seconds"]] for s in summary["steps"]]), ""]
    return "\n".join(lines)


def _html(markdown_text: str, plots: Mapping[str, Path]) -> str:
    """A small self-contained page: the Markdown's tables and text, plots inlined as data URIs."""
    body: list[str] = []
    table: list[str] = []

    def flush() -> None:
        if table:
            rows = [r.strip().strip("|").split(" | ") for r in table if not r.startswith("|---")]
            head, *rest = rows
            body.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                                  for r in rest) + "</table>")
            table.clear()

    for line in markdown_text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("!["):
            name = line[2:line.index("]")]
            data = base64.b64encode(plots[name].read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}"></figure>')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line.startswith("> "):
            body.append(f"<blockquote>{html.escape(line[2:])}</blockquote>")
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line:
            body.append(f"<p>{html.escape(line)}</p>")
    flush()
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:right}th{background:#f3f3f3}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>deploykit report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def write_report(summary: Mapping[str, Any], out: Path) -> dict[str, Path]:
    """Write report.md, report.html, summary.json and the plots into `out`; returns the files."""
    from deploykit.report.deploy_plots import make_plots

    plots = make_plots(summary, out)
    text = markdown(summary, plots)
    files = {"markdown": write_text(out / "report.md", text, force=True),
             "html": write_text(out / "report.html", _html(text, plots), force=True),
             "json": write_json(out / "summary.json", summary, force=True)}
    return {**files, **plots}
