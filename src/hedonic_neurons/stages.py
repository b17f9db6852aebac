"""One stage runner for every experiment: resume exactly what is still valid, recompute the rest.

A stage declares the config fields it reads (dotted paths into the config dataclass: ``"epochs"``,
``"solver"``, ``"solver.m"``) and the upstream stages whose files it reads. Its fingerprint is a hash of
those fields' values and of the upstream stages' fingerprints, so a changed field changes the
fingerprint of every stage that reads it and of everything downstream. The stage's marker
(``stages/<name>.done``) stores the fingerprint it was computed with; a stage is reused only when the
marker's fingerprint equals the current one.

``StageRunner.prepare`` is called once, before anything runs: it drops the markers (and the declared
output files) of every stage that is stale or no longer part of the run, and only then writes
``config.json``. So the markers on disk and config.json always describe the same configuration: a file
whose marker is present was produced by the configuration in config.json; a stage without a marker is
recomputed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hedonic_neurons.rundir import RunDir, _jsonable, write_json

log = logging.getLogger(__name__)


@dataclass
class Stage:
    """What a stage reads: config ``fields`` (dotted paths), ``upstream`` stages; and the files or folders
    (relative to the run directory) it writes, removed when it goes stale."""

    name: str
    fields: tuple[str, ...] = ()
    upstream: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    # bumped when the stage's code changes what it writes, so markers written by older code go stale
    version: int = 0


def _field_value(cfg: Mapping[str, Any], path: str) -> Any:
    value: Any = cfg
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(f"stage reads config field {path!r}, which the config does not have")
        value = value[part]
    return value


@dataclass
class StageRunner:
    """Fingerprints, markers and the order of a run's stages (see the module doc)."""

    rd: RunDir
    config: Any
    stages: dict[str, Stage] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._cfg = _jsonable(dataclasses.asdict(self.config) if dataclasses.is_dataclass(self.config)
                              else self.config)
        self._fp: dict[str, str] = {}

    def add(self, name: str, fields: Iterable[str] = (), upstream: Iterable[str] = (),
            outputs: Iterable[str] = (), version: int = 0) -> Stage:
        """Declare a stage (upstream stages first); ``version`` > 0 when its code changed what it writes."""
        st = Stage(name, tuple(fields), tuple(upstream), tuple(outputs), int(version))
        missing = [u for u in st.upstream if u not in self.stages]
        if missing:
            raise ValueError(f"stage {name!r} names upstream stages {missing} that are not declared before it")
        self.stages[name] = st
        return st

    def fingerprint(self, name: str) -> str:
        if name not in self._fp:
            st = self.stages[name]
            payload = {"fields": {f: _field_value(self._cfg, f) for f in st.fields},
                       "upstream": {u: self.fingerprint(u) for u in st.upstream}}
            if st.version:  # version 0 leaves the fingerprints of unversioned stages as they were
                payload["version"] = st.version
            self._fp[name] = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
        return self._fp[name]

    def _marker(self, name: str) -> dict | None:
        path = self.rd.stage_path(name)
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def fresh(self, name: str) -> bool:
        """True when the stage's marker holds the current fingerprint (its files can be reused)."""
        marker = self._marker(name)
        return marker is not None and marker.get("fingerprint") == self.fingerprint(name)

    def done(self, name: str, info: Mapping[str, Any] | None = None) -> None:
        """Mark a stage finished with its fingerprint (and the fields it was computed from)."""
        st = self.stages[name]
        self.rd.mark_done(name, {**(info or {}), "fingerprint": self.fingerprint(name),
                                 "fields": {f: _field_value(self._cfg, f) for f in st.fields},
                                 "upstream": list(st.upstream), "outputs": list(st.outputs)})
        self.ran.append(name)

    def run(self, name: str, fn: Callable[[], Mapping[str, Any] | None]) -> bool:
        """Run ``fn`` unless the stage is fresh; returns True when it ran."""
        if self.fresh(name):
            return False
        self.done(name, fn() or {})
        return True

    def run_parallel(self, items: Iterable[tuple[Iterable[str], Any]], fn: Callable[[Any], Mapping[str, Any] | None],
                     jobs: int = 1) -> list[tuple[Any, dict[str, Any]]]:
        """Per-layer parallelism (docs/scale.md): ``fn(arg)`` for every ``(stage names, arg)`` with a stage
        that is not fresh, on ``jobs`` worker processes (`parallel.map_jobs`; in item order, serially
        when jobs = 1). ``fn`` writes its stages' files (and may mark them done itself, with its own
        StageRunner over the same run directory and config, as the serial path does); it returns
        ``{stage: info}`` for the stages the parent should mark done. A job's exception is raised here
        unchanged, so a failure reads as in the serial path; the stages it did not finish keep no marker
        and are recomputed on the next run. Returns (arg, {stage: info}) of the jobs that ran."""
        from hedonic_neurons.parallel import map_jobs

        todo = [(tuple(names), arg) for names, arg in items if not all(self.fresh(n) for n in names)]
        results = map_jobs(fn, [a for _, a in todo], jobs)
        for (names, _), info in zip(todo, results, strict=True):
            for name in names:
                if name in (info or {}):
                    self.done(name, info[name])
                elif self.fresh(name):  # marked by the worker
                    self.ran.append(name)
        return [(arg, dict(info or {})) for (_, arg), info in zip(todo, results, strict=True)]

    def stale(self) -> list[str]:
        """Declared stages that will be (re)computed."""
        return [n for n in self.stages if not self.fresh(n)]

    def prepare(self, *, force: bool = False) -> list[str]:
        """Before running: drop the markers and outputs of stale stages and of stages no longer in the
        run (``force``: of every stage), then write config.json. Returns the stages that will run."""
        stale = list(self.stages) if force else self.stale()
        known = {p.stem for p in (self.rd.root / "stages").glob("*.done")}
        orphans = sorted(known - set(self.stages))
        for name in [*stale, *orphans]:
            self._drop(name)
        self.rd.save_config(self.config)
        if stale or orphans:
            log.info("stages to compute: %s%s", ", ".join(stale) or "none",
                     f"; dropped stages no longer in the run: {', '.join(orphans)}" if orphans else "")
        return stale

    def _drop(self, name: str) -> None:
        path = self.rd.stage_path(name)
        marker = self._marker(name) or {}
        outputs = self.stages[name].outputs if name in self.stages else tuple(marker.get("outputs", ()))
        path.unlink(missing_ok=True)
        for rel in outputs:
            target = self.rd.root / rel
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()


class StageTimer:
    """Seconds per stage, kept in RUN/timings.json (as last run) and printed unless `quiet`."""

    def __init__(self, rd: RunDir, quiet: bool, label: str = "reranker"):
        self.rd, self.quiet, self.label = rd, quiet, label
        self.path = rd.root / "timings.json"
        self.times: dict[str, float] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def record(self, stage: str, seconds: float) -> None:
        self.times[stage] = round(seconds, 2)
        write_json(self.path, self.times)
        if not self.quiet:
            print(f"[{self.label}] {stage}: {seconds:.1f} s", flush=True)
