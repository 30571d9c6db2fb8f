"""Run the benchmarks: ``python -m tests.benchmarks`` (``make bench`` does this).

Prints a table of every figure with its baseline and ratio, and writes JSON and a
markdown report (with the machine's description) to the results directory;
``--publish`` also writes the report to docs/reference/performance.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from . import bench_agent, bench_crl, bench_fleet, bench_issuance, bench_ocsp
from .context import BenchContext, Sizes
from .procstats import machine_description
from .publish import publish
from .report import Section, render_table, write_results

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ("issuance", "fleet", "ocsp", "crl", "agent")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that everything runs (~3 min)")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {BENCHMARKS}")
    parser.add_argument("--backends", default="sqlite,postgresql", help="sqlite, postgresql or both")
    parser.add_argument("--postgres-url", default=os.environ.get("CERTFLEET_BENCH_POSTGRES_URL",
                                                                  "postgresql://postgres@127.0.0.1:5432/postgres"),
                        help="a role that may create databases; each benchmark uses a database of its own")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench-results")
    parser.add_argument("--publish", action="store_true",
                        help="also write the report to docs/reference/performance.md")
    return parser


async def _run(ctx: BenchContext, only: list[str]) -> list[Section]:
    sections: list[Section] = []

    async def guarded(key: str, title: str, fn: Callable[[], Awaitable[Section | list[Section]]]) -> None:
        started = time.monotonic()
        try:
            result = await fn()
        except Exception as exc:  # one failed benchmark must not lose the others' figures
            traceback.print_exc()
            failed = Section(key, title, error=f"{type(exc).__name__}: {exc}")
            failed.seconds = time.monotonic() - started
            sections.append(failed)
            return
        results = result if isinstance(result, list) else [result]
        for section in results:
            section.seconds = section.seconds or (time.monotonic() - started) / len(results)
            sections.append(section)
        ctx.log(f"{title}: done in {time.monotonic() - started:.0f} s")
        # What is done so far, in case the run is interrupted.
        (ctx.results_dir / "partial.txt").parent.mkdir(parents=True, exist_ok=True)
        (ctx.results_dir / "partial.txt").write_text(render_table(sections) + "\n")

    async with trio.open_nursery() as background:
        if "agent" in only:
            # The idle agent mostly sleeps in its long poll, so it runs beside the other
            # benchmarks instead of adding a minute of waiting to the run.
            async def agent_footprint() -> None:
                await guarded("agent", "Agent footprint", lambda: bench_agent.run(ctx))

            background.start_soon(agent_footprint)
        for backend in ctx.backends:
            if "issuance" in only:
                await guarded(f"issuance-{backend}", f"Issuance ({backend})", lambda b=backend: bench_issuance.run(ctx, b))
        for backend in ctx.backends:
            if "fleet" in only:
                await guarded(f"fleet-{backend}", f"Fleet polling and renewal storm ({backend})",
                              lambda b=backend: bench_fleet.run(ctx, b))
        for backend in ctx.backends:
            if "ocsp" in only:
                await guarded(f"ocsp-{backend}", f"OCSP ({backend})", lambda b=backend: bench_ocsp.run(ctx, b))
        for backend in ctx.backends:
            if "crl" in only:
                await guarded(f"crl-{backend}", f"CRL ({backend})", lambda b=backend: bench_crl.run(ctx, b))
    order = {key: index for index, key in enumerate(BENCHMARKS)}
    return sorted(sections, key=lambda s: order.get(s.key.split("-")[0], 99))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(only) - set(BENCHMARKS)
    if unknown:
        print(f"unknown benchmarks: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    sizes = Sizes.quick() if args.quick else Sizes()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    begin = time.monotonic()
    machine = machine_description(args.postgres_url if "postgresql" in backends else None)
    workdir = Path(tempfile.mkdtemp(prefix="certfleet-bench-"))
    ctx = BenchContext(workdir=workdir, results_dir=args.results_dir, postgres_url=args.postgres_url,
                       backends=backends, sizes=sizes)
    ctx.log(f"benchmarks {', '.join(only)} on {', '.join(backends)} ({'quick' if args.quick else 'full'} sizes); "
            f"work directory {workdir}")
    try:
        sections = trio.run(_run, ctx, only)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    wall = time.monotonic() - begin
    command = "make bench" + (" BENCH_ARGS=--quick" if args.quick else "")
    print()
    print(render_table(sections))
    json_path, md_path = write_results(args.results_dir, machine, sections, command=command, started=started,
                                       wall_seconds=wall)
    print()
    print(f"results: {json_path}")
    print(f"report:  {md_path}")
    if args.publish:
        page = publish(ROOT / "docs" / "reference" / "performance.md", md_path.read_text())
        print(f"published: {page}")
    print(f"total: {wall / 60:.1f} minutes")
    return 1 if any(s.error for s in sections) else 0


if __name__ == "__main__":
    sys.exit(main())
