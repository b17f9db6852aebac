"""`hedonic-neurons report RUN_DIR [--open]`: write RUN_DIR/report.html from whatever the run holds."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def _run(args: argparse.Namespace) -> int:
    from hedonic_neurons.report.html import build_report

    track: bool | str = {"auto": "auto", "yes": True, "no": False}[args.track]
    if args.hi is not None or args.lo is not None or args.measure is not None or args.paper_task is not None:
        from hedonic_neurons.report.sankey import track_and_draw

        track_and_draw(args.run_dir, hi=args.hi if args.hi is not None else 0.7,
                  lo=args.lo if args.lo is not None else 0.1, measure=args.measure or "excess",
                  paper_task=args.paper_task)
        track = False
    path = build_report(args.run_dir, derive=not args.no_derive, track=track)
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
    p.add_argument("--hi", type=float, default=None, help="tracking threshold hi; re-tracks (default: 0.7)")
    p.add_argument("--lo", type=float, default=None,
                   help="smallest link share drawn; re-tracks (default: 0.1)")
    p.add_argument("--measure", choices=["excess", "raw"], default=None,
                   help="tracking measure: excess over a size-matched random group or the paper's raw share; "
                        "re-tracks (default: excess)")
    p.add_argument("--paper-task", choices=["cqtr", "mtfl", "relevance"], default=None,
                   help="print the paper's Table 3 for this task beside ours; re-tracks (default: none)")
    p.add_argument("--no-derive", action="store_true",
                   help="only assemble what is on disk (no size/stability/phi/synergy figures)")
    p.set_defaults(func=_run)
