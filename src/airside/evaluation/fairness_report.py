"""The HTML report of ``airside eval fairness``: per-group tables, DET curves and score
histograms for each normalisation measured (the measurement is ``evaluation/fairness.py``)."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from airside.evaluation.fairness import BoolArray, FloatArray, GroupedScores

__all__ = ["render_fairness_report"]

_DET_POINTS = 200


def _det_points(gen: FloatArray, imp: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(FMR, FNMR) at thresholds spaced evenly in log-FMR: a few hundred points, however
    many pairs, so the SVG stays small. Points with a zero rate are dropped (log axes)."""
    imp_desc = -np.sort(-imp)
    gen_sorted = np.sort(gen)
    ranks = np.unique(
        np.clip(
            np.round(np.logspace(0, math.log10(imp.size), _DET_POINTS)).astype(int), 1, imp.size
        )
    )
    thresholds = imp_desc[ranks - 1]
    fmr = np.searchsorted(-imp_desc, -thresholds, side="right") / imp.size
    fnmr = np.searchsorted(gen_sorted, thresholds, side="left") / gen.size
    keep = (fmr > 0) & (fnmr > 0)
    return fmr[keep], fnmr[keep]


def _svg(fig: Any) -> Any:
    from airside.evaluation.report import _svg as svg

    return svg(fig)


def _det_chart(data: GroupedScores, groups: Sequence[str], threshold: float) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.8))
    ax = fig.add_subplot()
    drawn = 0
    index = {name: i for i, name in enumerate(data.names)}
    series: list[tuple[str, BoolArray]] = [("all pairs", np.ones(data.scores.size, dtype=bool))]
    series += [(name, data.group == index[name]) for name in groups]
    for label, mask in series:
        gen = data.scores[mask & data.same]
        imp = data.scores[mask & ~data.same]
        if gen.size == 0 or imp.size == 0:
            continue
        fmr, fnmr = _det_points(gen, imp)
        if fmr.size:
            style = "-" if label == "all pairs" else "--"
            ax.plot(fmr, fnmr, style, drawstyle="steps-post", label=f"{label} ({imp.size} imp.)")
            drawn += 1
    if drawn:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(loc="best", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no points to draw", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("FMR (false match rate)")
    ax.set_ylabel("FNMR (false non-match rate)")
    ax.grid(True, which="both", alpha=0.3)
    return _svg(fig)


def _histograms(
    data: GroupedScores, groups: Sequence[str], threshold: float, deployment: float | None = None
) -> Any:
    from matplotlib.figure import Figure

    cols = 2
    rows = max(1, math.ceil(len(groups) / cols))
    fig = Figure(figsize=(7.0, 2.6 * rows))
    index = {name: i for i, name in enumerate(data.names)}
    lo, hi = float(data.scores.min()), float(data.scores.max())
    bins = [float(b) for b in np.linspace(lo, hi, 61)]
    for k, name in enumerate(groups):
        ax = fig.add_subplot(rows, cols, k + 1)
        mask = data.group == index[name]
        imp = data.scores[mask & ~data.same]
        gen = data.scores[mask & data.same]
        if imp.size:
            ax.hist(imp, bins=bins, density=True, alpha=0.55, color="tab:red", label="impostor")
        if gen.size:
            ax.hist(gen, bins=bins, density=True, alpha=0.55, color="tab:green", label="genuine")
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1.0)
        if deployment is not None:
            ax.axvline(deployment, color="tab:blue", linestyle=":", linewidth=1.2)
        ax.set_title(f"{name}: {imp.size} imp., {gen.size} gen.", fontsize="small")
        ax.tick_params(labelsize="x-small")
    fig.tight_layout()
    return _svg(fig)


def _table_rows(summary: Mapping[str, Any]) -> list[dict[str, str]]:
    def pct(rate: float | None, ci: list[float] | None, k: int, n: int) -> str:
        if rate is None or ci is None:
            return "- (0 pairs)"
        return f"{rate:.3g} ({k}/{n}) [{ci[0]:.3g}, {ci[1]:.3g}]"

    dep = (summary.get("deployment") or {}).get("groups") or {}
    rows = []
    for name, g in summary["groups"].items():
        d = dep.get(name)
        rows.append(
            {
                "group": name,
                "fmr": pct(g["fmr"], g["fmr_ci"], g["false_matches"], g["impostors"]),
                "fnmr": pct(g["fnmr"], g["fnmr_ci"], g["false_non_matches"], g["genuines"]),
                "fmr_dep": "-"
                if d is None
                else pct(d["fmr"], d["fmr_ci"], d["false_matches"], d["impostors"]),
                "fnmr_dep": "-"
                if d is None
                else pct(d["fnmr"], d["fnmr_ci"], d["false_non_matches"], d["genuines"]),
                "status": g["status"]
                + ("" if not g["too_small"] else ": " + "; ".join(g["too_small"])),
            }
        )
    return rows


_FAIR_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 64rem; color: #222; }
  h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; } h3 { font-size: 1rem; }
  table { border-collapse: collapse; margin: 0.5rem 0; }
  th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; }
  th { background: #f3f3f3; }
  figure svg { max-width: 100%; height: auto; }
  p.note { color: #555; font-size: 0.9rem; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="note">Rates are "rate (errors/pairs) [Wilson 95% interval]" at two thresholds for
FMR {{ fmr_target }}: the in-domain one, set on all impostor pairs of this evaluation (no
demographic label is used to set it), and the deployment one, which the model's FMR table
gives for that target. Groups with too few pairs are listed, not ranked. Demographic labels
were used to evaluate only.</p>
{%- if comparison %}
<h2>Methods compared</h2>
<table>
  <tr><th>method</th><th>in-domain threshold</th><th>FMR differential</th>
      <th>FNMR differential</th><th>TAR at the threshold</th><th>deployment threshold</th>
      <th>FMR / TAR there</th></tr>
  {%- for row in comparison %}
  <tr><td>{{ row.method }}</td><td>{{ row.threshold }}</td><td>{{ row.fmr_differential }}</td>
      <td>{{ row.fnmr_differential }}</td><td>{{ row.tar }}</td>
      <td>{{ row.deployment_threshold }}</td><td>{{ row.deployment_rates }}</td></tr>
  {%- endfor %}
</table>
{%- endif %}
{%- for section in sections %}
<h2>{{ section.name }}</h2>
<p>Threshold {{ section.threshold }} ({{ section.basis }}): FMR differential
{{ section.fmr_differential }}; FNMR differential {{ section.fnmr_differential }}.</p>
<p>Deployment threshold {{ section.deployment }}.</p>
<table>
  <tr><th rowspan="2">group</th><th colspan="2">at the in-domain threshold</th>
      <th colspan="2">at the deployment threshold</th><th rowspan="2">status</th></tr>
  <tr><th>FMR</th><th>FNMR</th><th>FMR</th><th>FNMR</th></tr>
  {%- for row in section.rows %}
  <tr><td>{{ row.group }}</td><td>{{ row.fmr }}</td><td>{{ row.fnmr }}</td>
      <td>{{ row.fmr_dep }}</td><td>{{ row.fnmr_dep }}</td><td>{{ row.status }}</td></tr>
  {%- endfor %}
</table>
<h3>DET curves per group</h3>
<figure>{{ section.det }}</figure>
<h3>Score distributions per group</h3>
<p class="note">Dashed: the in-domain threshold; dotted: the deployment threshold.</p>
<figure>{{ section.hist }}</figure>
{%- endfor %}
</body>
</html>
"""


def _deployment_rates(dep: Mapping[str, Any] | None) -> str:
    """Overall FMR and TAR at the deployment threshold, each with its count."""
    if dep is None or dep["threshold"] is None:
        return "-"
    ov = dep["overall"]
    fmr = "-" if ov["fmr"] is None else f"{ov['fmr']:.3g} ({ov['false_matches']}/{ov['impostors']})"
    accepted = ov["genuines"] - ov["false_non_matches"]
    tar = "-" if ov["tar"] is None else f"{ov['tar']:.4f} ({accepted}/{ov['genuines']})"
    return f"FMR {fmr}; TAR {tar}"


def _deployment_line(dep: Mapping[str, Any] | None) -> str:
    """Where the deployment threshold comes from and what it gives here, or why none."""
    if dep is None:
        return "not evaluated"
    if dep["threshold"] is None:
        return f"none ({dep['source']}: {dep['note']})"
    fd = dep["fmr_differential_detail"]
    return (
        f"{dep['threshold']:.6g} ({dep['source']}): {_deployment_rates(dep)}; FMR differential "
        f"{_fmt(dep['fmr_differential'], fd.get('note'))}"
    )


def _fmt(value: float | None, note: str | None = None) -> str:
    if value is None:
        return f"not measurable ({note})" if note else "not measurable"
    return f"{value:.4g}"


def render_fairness_report(
    runs: Mapping[str, tuple[GroupedScores, Mapping[str, Any]]], title: str
) -> str:
    """One HTML page: a comparison table, then per method the per-group table, DET curves
    and score histograms (groups with at least one impostor and one genuine pair)."""
    from jinja2 import Environment

    env = Environment(autoescape=True)
    sections = []
    comparison = []
    fmr_target = None
    for method, (data, summary) in runs.items():
        fmr_target = summary["fmr_target"]
        drawable = [
            name
            for name, g in summary["groups"].items()
            if g["kind"] == "within" and g["impostors"] and g["genuines"]
        ]
        fd, nd = summary["fmr_differential_detail"], summary["fnmr_differential_detail"]
        dep = summary.get("deployment")
        dep_t = None if dep is None else dep["threshold"]
        sections.append(
            {
                "name": method,
                "threshold": f"{summary['threshold']:.6g}",
                "basis": summary.get("threshold_basis", ""),
                "deployment": _deployment_line(dep),
                "fmr_differential": _fmt(summary["fmr_differential"], fd.get("note")),
                "fnmr_differential": _fmt(summary["fnmr_differential"], nd.get("note")),
                "rows": _table_rows(summary),
                "det": _det_chart(data, drawable, summary["threshold"]),
                "hist": _histograms(data, drawable, summary["threshold"], dep_t)
                if drawable
                else "",
            }
        )
        ov = summary["overall"]
        accepted = ov["genuines"] - ov["false_non_matches"]
        comparison.append(
            {
                "method": method,
                "threshold": f"{summary['threshold']:.6g}",
                "fmr_differential": _fmt(summary["fmr_differential"], fd.get("note")),
                "fnmr_differential": _fmt(summary["fnmr_differential"], nd.get("note")),
                "tar": "-"
                if ov["tar"] is None
                else f"{ov['tar']:.4f} ({accepted}/{ov['genuines']})",
                "deployment_threshold": "-" if dep_t is None else f"{dep_t:.6g}",
                "deployment_rates": _deployment_rates(dep),
            }
        )
    buf = io.StringIO()
    buf.write(
        env.from_string(_FAIR_TEMPLATE).render(
            title=title,
            fmr_target=f"{fmr_target:g}" if fmr_target is not None else "",
            comparison=comparison if len(comparison) > 1 else [],
            sections=sections,
        )
    )
    return buf.getvalue()
