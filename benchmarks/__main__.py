"""``python -m benchmarks [--quick] [--section ...] [--results FILE] [--plot FILE]``: measure and print."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from pathlib import Path
from typing import Any

import docker

from benchmarks import assign, gate, images, overhead, scale, steps, sweep
from benchmarks.measure import Table, load, machine, verdict

SECTIONS = ("overhead", "steps", "images", "scale", "gate", "sweep", "assign")
BEGIN, END = "<!-- python -m benchmarks: begin -->", "<!-- python -m benchmarks: end -->"
MB = 1 << 20


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="2 repeats, small N, no cold build: a smoke test of the harness")
    parser.add_argument("--section", action="append", choices=SECTIONS,
                        help="run only this section (repeatable; default: all)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per row (default 5; --quick 2)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="scale: N samples (default 10000 100000 1000000; --quick 2000 20000)")
    parser.add_argument("--assign-rows", type=int, default=None,
                        help=f"assign: rows of the data scored (default {assign.ROWS:,}; --quick 20000)")
    parser.add_argument("--cold-builds", type=int, default=None,
                        help="images: cold builds (default 1; --quick 0), minutes each")
    parser.add_argument("--results", type=Path, default=None,
                        help="write the tables between the markers of this Markdown file (e.g. "
                             "benchmarks/RESULTS.md), keeping the text around them")
    parser.add_argument("--plot", type=Path, default=None, help="scale: write the PNG plot here")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.sizes = args.sizes or ([2_000, 20_000] if args.quick else [10_000, 100_000, 1_000_000])
    args.assign_rows = args.assign_rows or (20_000 if args.quick else assign.ROWS)
    args.cold_builds = (0 if args.quick else 1) if args.cold_builds is None else args.cold_builds
    return args


def targets(found: dict[str, Any]) -> Table:
    """The issue's targets, each against what this invocation measured."""
    table = Table("Targets", ("target", "measured", "verdict"))
    if "overhead" in found:
        o = {k: v.median for k, v in found["overhead"].items()}
        table.add("local 4-step container run ≤ bare demo + 2.5 s", f"bare + {o['local'] - o['bare']:.2f} s",
                  verdict(o["local"] - o["bare"] <= 2.5))
        table.add("`airflow dags test` ≤ 2× the local container run", f"{o['dags_test'] / o['local']:.2f}×",
                  verdict(o["dags_test"] <= 2 * o["local"]))
        table.add("scheduler-driven trigger → success ≤ 15 s", f"{o['scheduler']:.1f} s",
                  verdict(o["scheduler"] <= 15))
    if "steps" in found:
        startup, work = found["steps"]
        worst = max(startup.items(), key=lambda kv: kv[1])
        table.add("each step's start + import overhead ≤ 0.8 s (`--help` container)",
                  f"max {worst[1]:.2f} s ({worst[0]})", verdict(worst[1] <= 0.8))
        hit = max((s.median, name) for name, s in work["hit_work"].items())
        table.add("a cache hit ≤ 0.3 s per step (the step's own time)", f"max {hit[0]:.3f} s ({hit[1]})",
                  verdict(hit[0] <= 0.3))
        wall = max((s.median, name) for name, s in work["hit"].items())
        table.add("(for reference) a cache hit's whole container, start-up included", f"max {wall[0]:.2f} s "
                  f"({wall[1]})", "—")
    if "images" in found:
        sizes, warm = found["images"]
        biggest = max((sizes[s], s) for s in steps.spec.STEPS)
        table.add("each step image ≤ 300 MB", f"max {biggest[0] / 1e6:.1f} MB ({biggest[1]})",
                  verdict(biggest[0] <= 300e6))
        table.add("the four together ≤ 450 MB unique", f"{sizes['four'] / 1e6:.1f} MB",
                  verdict(sizes["four"] <= 450e6))
        table.add("warm rebuild after a code-only change ≤ 15 s (all four)", f"{warm.median:.1f} s",
                  verdict(warm.median <= 15))
    if "scale" in found:
        n = max(found["scale"])
        m, features = found["scale"][n], n * scale.N_FEATURES * 4 / MB
        table.add(f"{n:,} x 64: end-to-end ≤ 1.3× bare in-process",
                  f"{m['end_to_end'].median / m['bare_s'].median:.2f}× "
                  f"(without report {m['without_report'].median / m['bare_s'].median:.2f}×)",
                  verdict(m["end_to_end"].median <= 1.3 * m["bare_s"].median))
        table.add(f"{n:,} x 64: cluster peak RSS ≤ 1.5× the feature matrix ({features:.0f} MiB)",
                  f"{m['cluster_rss'].median:.0f} MiB = {m['cluster_rss'].median / features:.2f}×",
                  verdict(0 < m["cluster_rss"].median <= 1.5 * features))
        table.add(f"{n:,} x 64: the report < 2 MB", f"{m['report_mb'].median:.2f} MB",
                  verdict(m["report_mb"].median < 2))
    if "sweep" in found:
        s = {k: v.median for k, v in found["sweep"].items()}
        table.add("(for reference) a sweep over k: the runner (--jobs 2) and Airflow vs one bare process",
                  f"{s['local-2'] / s['bare']:.2f}× and {s['dags_test'] / s['bare']:.2f}×", "—")
    return table


def write_results(path: Path, text: str) -> None:
    """Put ``text`` between the markers of ``path`` (appending them if missing)."""
    old = path.read_text() if path.exists() else ""
    block = f"{BEGIN}\n{text}{END}"
    if BEGIN in old and END in old:
        new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, old, flags=re.S)
    else:
        new = f"{old}\n{block}\n" if old else f"{block}\n"
    path.write_text(new)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    chosen = args.section or list(SECTIONS)
    started = dt.datetime.now(dt.UTC)
    header = [f"Measured {started:%Y-%m-%d %H:%M} UTC by `python -m benchmarks"
              f"{' --quick' if args.quick else ''} {' '.join('--section ' + s for s in chosen)}` "
              f"({args.repeats} runs per row; median (min–max))."] + machine()
    print("\n".join(header) + "\n", flush=True)
    client = docker.from_env()
    tables: list[Table] = []
    found: dict[str, Any] = {}

    def show(table: Table) -> None:
        tables.append(table)
        print(table.markdown(), flush=True)

    if "overhead" in chosen:
        table, found["overhead"] = overhead.run(args.repeats)
        show(table)
    if "steps" in chosen:
        table, helps = steps.startup(client, args.repeats)
        show(table)
        table, work = steps.work(client, args.repeats)
        show(table)
        found["steps"] = ({step: stat.median for step, stat in helps.items()}, work)
    if "images" in chosen:
        table, measured = images.sizes(client)
        show(table)
        table, warm = images.builds(args.cold_builds, args.repeats)
        show(table)
        found["images"] = (measured, warm)
    if "scale" in chosen:
        table, found["scale"] = scale.run(client, args.sizes, args.repeats)
        show(table)
        if args.plot:
            scale.plot(found["scale"], args.plot)
            print(f"plot: {args.plot}")
    if "gate" in chosen:
        show(gate.run(client, args.repeats))
    if "sweep" in chosen:
        table, found["sweep"] = sweep.run(args.repeats, sweep.QUICK_KS if args.quick else sweep.KS)
        show(table)
    if "assign" in chosen:
        show(assign.run(client, args.repeats, args.assign_rows)[0])
    show(targets(found))
    footer = f"Finished after {(dt.datetime.now(dt.UTC) - started).total_seconds() / 60:.1f} min; " \
             f"load average then: {load()}."
    print(footer)
    if args.results:
        write_results(args.results, "\n".join(f"- {line}" for line in header) + "\n\n"
                      + "\n".join(t.markdown() for t in tables) + f"\n{footer}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
