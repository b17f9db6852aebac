"""`hedonic-neurons report RUN_DIR [--open]`: write RUN_DIR/report.html from whatever the run holds."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _run(args: argparse.Namespace) -> int:
    from hedonic_neurons.report.html import build_report

    track: bool | str = {"auto": "auto", "yes": True, "no": False}[args.track]
    rule = {k: getattr(args, k) for k in ("hi", "lo", "measure", "floor", "z_min", "chance_draws", "paper_task",
                                          "min_size")
            if getattr(args, k) is not None}
    if args.chance_gate is not None:
        rule["chance_gate"] = args.chance_gate == "yes"
    if rule or track is True:
        from hedonic_neurons.report.sankey import track_and_draw

        track_and_draw(args.run_dir, **rule)
        track = False
    path = build_report(args.run_dir, derive=not args.no_derive, track=track)
    controls = Path(args.run_dir) / "tables" / "tracking_controls.md"
    if controls.exists() and (rule or args.track == "yes"):
        print(controls.read_text().rstrip())
    print(path)
    if args.open:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())
    return 0


def register(subparsers) -> None:
    """Add the `report` sub-command."""
    p = subparsers.add_parser(
        "report", help="write RUN_DIR/report.html (self-contained, works offline)",
        description="Write one self-contained report.html from a run directory: config, summary, every "
                    "table, figure and view, the tracking Sankeys; derived figures are written beside it.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (the --out of mnist/reranker)")
    p.add_argument("--open", action="store_true", help="open the report in the default browser")
    p.add_argument("--track", choices=["auto", "yes", "no"], default="auto",
                   help="run cross-layer tracking first: auto = only when tracking/ is empty (default: %(default)s)")
    p.add_argument("--hi", type=float, default=None, help="tracking threshold hi; re-tracks (--track yes, or any "
                   "tracking option, re-tracks and prints the control figures) (default: 0.7)")
    p.add_argument("--lo", type=float, default=None,
                   help="smallest link share drawn; re-tracks (default: 0.1)")
    p.add_argument("--measure", choices=["relative", "excess", "raw"], default=None,
                   help="tracking measure: relative (a link's excess over size-matched random groups out of what an "
                        "identical coalition would carry, significance-gated), excess (over random groups only) or "
                        "raw (the paper's share); re-tracks (default: relative)")
    p.add_argument("--floor", type=float, default=None,
                   help="relative measure: the weaker share of a merge or split must reach it (0 is the paper's "
                        "rule); re-tracks (default: 0.4)")
    p.add_argument("--z-min", type=float, default=None,
                   help="relative measure: z a link must reach over random groups; re-tracks (default: 2)")
    p.add_argument("--chance-draws", type=int, default=None,
                   help="random redraws of the next layer's partition that an event must beat (0 skips the test); "
                        "re-tracks (default: 49)")
    p.add_argument("--chance-gate", choices=["yes", "no"], default=None,
                   help="yes: an event that random redraws of the next partition give as often reads vanish; no: the "
                        "link rule alone decides (the *_link_%% columns either way); re-tracks (default: yes)")
    p.add_argument("--min-size", type=int, default=None,
                   help="smallest group tracked as a coalition; 1 also tracks lone players (the paper's tables "
                        "may count them); re-tracks (default: 2)")
    p.add_argument("--paper-task", choices=["cqtr", "mtfl", "relevance"], default=None,
                   help="print the paper's Table 3 for this task beside ours; re-tracks (default: none)")
    p.add_argument("--no-derive", action="store_true",
                   help="only assemble what is on disk (no size/stability/phi/synergy figures)")
    p.set_defaults(func=_run)
