"""Figures, each with the baseline measured in the same run, and the reports made of them."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Figure", "Section", "render_markdown", "render_table", "write_results"]


@dataclass(frozen=True)
class Figure:
    """One measured figure. ``ratio`` is ``value / baseline``; ``higher_is_better``
    says which way a ratio is good, so a reader need not guess."""

    benchmark: str
    backend: str
    name: str
    value: float
    unit: str
    baseline_name: str
    baseline: float
    higher_is_better: bool
    note: str = ""

    @property
    def ratio(self) -> float:
        if self.baseline == 0 or math.isnan(self.baseline) or math.isnan(self.value):
            return float("nan")
        return self.value / self.baseline

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


@dataclass
class Section:
    """One benchmark's figures and prose: what was timed, where it is CPU-bound, the
    profile summary when a goal was missed."""

    key: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    profile: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    def add(self, *figures: Figure) -> None:
        self.figures.extend(figures)


def fmt(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 10000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    if magnitude == 0:
        return "0"
    return f"{value:.3g}"


def _ratio(figure: Figure) -> str:
    return "n/a" if math.isnan(figure.ratio) else f"{figure.ratio:.3g}×"


def render_table(sections: list[Section]) -> str:
    """A plain-text table for the terminal."""
    rows = [("benchmark", "backend", "figure", "value", "unit", "baseline", "baseline value", "ratio")]
    for section in sections:
        for f in section.figures:
            rows.append((f.benchmark, f.backend, f.name, fmt(f.value), f.unit, f.baseline_name, fmt(f.baseline),
                         _ratio(f)))
        if section.error:
            rows.append((section.key, "-", f"FAILED: {section.error[:80]}", "", "", "", "", ""))
    widths = [min(60, max(len(r[i]) for r in rows)) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell[:widths[i]].ljust(widths[i]) if i < 3 or i == 4 or i == 5 else
                               cell.rjust(widths[i]) for i, cell in enumerate(row)))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _human_bytes(count: object) -> str:
    if not isinstance(count, int):
        return str(count)
    return f"{count / 2**30:.1f} GiB"


def render_markdown(machine: dict[str, Any], sections: list[Section], *, command: str, started: str,
                    wall_seconds: float) -> str:
    out = ["# Benchmark report", ""]
    out.append(f"Run {started}, {wall_seconds / 60:.1f} minutes, with `{command}`.")
    out.append("")
    out.append("## Machine")
    out.append("")
    out.append("| | |")
    out.append("|---|---|")
    for key, value in machine.items():
        out.append(f"| {key.replace('_', ' ')} | {_human_bytes(value) if key == 'memory_bytes' else value} |")
    out.append("")
    out.append("A ratio is value ÷ baseline; the last column says which direction is better.")
    for section in sections:
        out.append("")
        out.append(f"## {section.title}")
        out.append("")
        if section.error:
            out.append(f"**This benchmark failed:** `{section.error}`")
            out.append("")
        if section.figures:
            out.append("| backend | figure | value | baseline | baseline value | ratio | better |")
            out.append("|---|---|--:|---|--:|--:|---|")
            for f in section.figures:
                out.append(f"| {f.backend} | {f.name} | {fmt(f.value)} {f.unit} | {f.baseline_name} | "
                           f"{fmt(f.baseline)} {f.unit} | {_ratio(f)} | {'higher' if f.higher_is_better else 'lower'} |")
            out.append("")
        for note in section.notes:
            out.append(f"* {note}")
        if section.profile:
            out.append("")
            out.append("Profile of the coordinator during this benchmark (py-spy, share of samples):")
            out.append("")
            out.append("```")
            out.extend(section.profile)
            out.append("```")
        out.append("")
        out.append(f"_Took {section.seconds:.0f} s._")
    out.append("")
    return "\n".join(out)


def write_results(directory: Path, machine: dict[str, Any], sections: list[Section], *, command: str,
                  started: str, wall_seconds: float) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = started.replace(":", "").replace("-", "").replace(" ", "T")
    data = {
        "started": started,
        "wall_seconds": wall_seconds,
        "command": command,
        "machine": machine,
        "sections": [{"key": s.key, "title": s.title, "seconds": s.seconds, "error": s.error, "notes": s.notes,
                      "profile": s.profile, "figures": [f.as_dict() for f in s.figures]} for s in sections],
    }
    json_path = directory / f"bench-{stamp}.json"
    json_path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    markdown = render_markdown(machine, sections, command=command, started=started, wall_seconds=wall_seconds)
    md_path = directory / f"bench-{stamp}.md"
    md_path.write_text(markdown)
    (directory / "latest.json").write_text(json_path.read_text())
    (directory / "latest.md").write_text(markdown)
    return json_path, md_path
