"""The report: tables, static plots, Sankey views and the self-contained report.html.

``build_report(run_dir) -> Path`` is imported lazily so that ``report.tables`` stays light.
"""

__all__ = ["build_report"]


def __getattr__(name):
    if name == "build_report":
        from hedonic_neurons.report.html import build_report

        return build_report
    raise AttributeError(name)
