"""Experiment files: models, parameters, seeds and sweep settings, read into an `Experiment`
whose every value has been checked."""

from __future__ import annotations

import math
import os
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

from engine.config.hosts import data_place
from engine.config.toml import Locator, convert, duration_s, read_toml, toml_type
from engine.core import template
from engine.core.capture import CaptureError, readers_for
from engine.core.template import RUNTIME_FIELDS
from engine.errors import ConfigError
from engine.model import MAX_PRIORITY, MAX_SEED, Resources, RetryPolicy, WatchPolicy

MAX_TRIALS = 100_000  # runs in one sweep
EXPERIMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class MetricSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The metric a sweep is judged by: its name, which way is better, which value of each run
    counts (its `last`, the convention of Ray Tune and W&B, or its `best`), and the bounds it
    cannot leave (e.g. [0, 1] for accuracy; AUC-like names get those by default)."""

    name: str
    mode: Literal["min", "max"] = "max"
    summary: Literal["last", "best"] = "last"
    bounds: tuple[float, float] | None = None


class EarlyStop(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How a sweep stops trials that fall behind: an Optuna pruner and its few settings."""

    method: Literal["asha", "hyperband", "median", "none"] = "none"
    min_steps: int | None = None  # asha/hyperband: the first rung; median: warm-up steps
    min_trials: int | None = None  # median: finished trials before anything is pruned
    reduction_factor: int | None = None  # asha/hyperband: keep 1 in this many at each rung


class SweepSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    method: Literal["grid", "random", "tpe"] = "grid"
    trials: int | None = None
    seeds: list[int] = msgspec.field(default_factory=lambda: [0])
    max_concurrent: int | None = None
    params: dict[str, Any] = {}
    early_stop: EarlyStop = EarlyStop()
    sampler_seed: int | None = None  # default: a fresh one per sweep, recorded
    folds: int | None = None  # cross-validation: each configuration over every fold and seed


class ModelSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One of several models an experiment launches together; unset fields come from the top."""

    name: str
    command: str
    model_type: str | None = None
    requires: list[str] | None = None
    tags: list[str] | None = None
    resources: Resources | None = None
    capture: str | list[str] | None = None
    params: dict[str, Any] = {}


class EvaluateSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A step run after training: a command per split, given the trained run's folders."""

    command: str
    name: str = "eval"
    splits: list[str] = []
    on: Literal["each", "best"] = "each"  # every trial that succeeded, or the best config's
    resources: Resources | None = None


class WatchSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the watchdog looks for in each trial: a metric that becomes NaN or infinite (`on_nan`
    "flag" or "stop"), and silence for `stall_after_s` (seconds, or "30m")."""

    metrics: str | list[str] = []  # default: every metric
    on_nan: Literal["flag", "stop"] = "flag"
    stall_after_s: str | float | None = None


class ExperimentSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    command: str | None = None
    models: list[ModelSection] = []
    model_type: str | None = None
    requires: list[str] = []
    tags: list[str] = []
    priority: int = 0
    resources: Resources = Resources()
    metric: MetricSection | None = None
    capture: str | list[str] = []
    sweep: SweepSection = SweepSection()
    retry: RetryPolicy = RetryPolicy()
    data: list[str] | dict[str, str] = []
    confirm_over: str | float | None = None  # ask before launching it if estimated longer
    smoke: dict[str, Any] = {}  # params fixed for a smoke test: epochs = 1, subset = true
    baseline: dict[str, Any] | None = None  # one configuration the others are compared with
    ablations: dict[str, Any] = {}  # param = value (or [values]): each changes one thing
    evaluate: list[EvaluateSection] = []
    watch: WatchSection = WatchSection()


class Param(msgspec.Struct, frozen=True):
    """One swept parameter: a list of values, or a range (`low`..`high`, optionally `log` or `step`)."""

    name: str
    values: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False

    def grid_size(self) -> int:
        """How many values a grid sweep takes, without making them."""
        if self.values is not None:
            return len(self.values)
        assert self.low is not None and self.high is not None and self.step is not None
        return int((self.high - self.low) / self.step + 1e-9) + 1

    def grid(self) -> tuple[Any, ...]:
        """Every value a grid sweep takes."""
        if self.values is not None:
            return self.values
        assert self.low is not None and self.high is not None and self.step is not None
        values = [self.low + i * self.step for i in range(self.grid_size())]
        return tuple(round(v) if self.integer else round(v, 12) for v in values)


class Model(msgspec.Struct, frozen=True):
    """What one command of an experiment runs and needs, and the parameters it sweeps."""

    name: str | None  # None for an experiment with a single command
    command: str
    argv: tuple[str, ...]  # the command split as a shell would, placeholders still in it
    model_type: str | None
    requires: tuple[str, ...]
    tags: tuple[str, ...]
    resources: Resources
    capture: tuple[str, ...]
    params: tuple[Param, ...]


class EvaluateStep(msgspec.Struct, frozen=True):
    """An evaluation step, checked: its command split into words (placeholders still in it),
    the splits it runs once each for ("" for once), and which trained runs it follows."""

    name: str
    argv: tuple[str, ...]
    splits: tuple[str, ...]
    on: str
    resources: Resources


# What an evaluation command may name besides the trained run's params, seed and fold.
EVALUATE_FIELDS = ("split", "parent_id", "parent_run_dir", "parent_artifact_dir")


class Experiment(msgspec.Struct, frozen=True):
    """An experiment file, validated: its models (one per command) and the sweep over them."""

    path: Path
    name: str
    models: tuple[Model, ...]
    priority: int
    metric: MetricSection | None
    method: str
    trials: int | None
    seeds: tuple[int, ...]
    max_concurrent: int | None
    early_stop: EarlyStop
    retry: RetryPolicy
    # Data each run sees in its work directory: (place, source) with place "" for "where the
    # source sits in the project"; resolved against the project when the sweep is submitted.
    data: tuple[tuple[str, str], ...] = ()
    sampler_seed: int | None = None
    confirm_over_s: float | None = None
    smoke: dict[str, Any] = {}
    # The baseline's every param, and each ablation as (param, value): the configurations of
    # a sweep that has a baseline, in that order.
    baseline: dict[str, Any] | None = None
    ablations: tuple[tuple[str, Any], ...] = ()
    folds: int | None = None
    evaluate: tuple[EvaluateStep, ...] = ()
    watch: WatchPolicy = WatchPolicy()


def experiment_json(experiment: Experiment) -> str:
    """An experiment as JSON, to be read back by `experiment_from_json` after a restart."""
    return msgspec.json.encode(experiment, enc_hook=str).decode()


def experiment_from_json(text: str) -> Experiment:
    return msgspec.json.decode(text, type=Experiment, dec_hook=_path_hook)


def _path_hook(kind: type, value: Any) -> Any:
    if kind is Path:
        return Path(value)
    raise NotImplementedError(kind)


def load_experiment(
    path: str | os.PathLike[str], overrides: dict[str, str] | None = None
) -> Experiment:
    """Read and validate one experiment file; `overrides` (from --set KEY=VALUE) fix a parameter
    to a value or list, or set `trials`, `seeds`, `max_concurrent` or `method`."""
    path, text, raw = read_toml(path)
    where = Locator(path, text)
    if overrides:
        raw = _apply_overrides(path, raw, overrides)
    section = convert(where, "", raw, ExperimentSection)
    if not EXPERIMENT_NAME.match(section.name):
        raise where.error("name", "letters, digits, '.', '_' or '-' (at most 63 characters)")
    sweep = section.sweep
    if section.command is None and not section.models:
        raise where.error("command", "expected a command, or [[models]] each with one")
    if section.command is not None and section.models:
        raise where.error("command", "give a top-level `command` or [[models]], not both")
    shared = {name: value for name, value in sweep.params.items()}
    if section.models:
        names = [m.name for m in section.models]
        for i, m in enumerate(section.models):
            if not EXPERIMENT_NAME.match(m.name) or m.name in names[:i]:
                raise where.error(
                    f"models[{i}].name", "a unique name of letters, digits, '.', '_' or '-'"
                )
        models = tuple(
            _model(where, f"models[{i}].", section, m, {**shared, **m.params}, sweep)
            for i, m in enumerate(section.models)
        )
    else:
        only = ModelSection(name="", command=section.command or "")
        models = (_model(where, "", section, only, shared, sweep),)
    if not sweep.seeds:
        raise where.error("sweep.seeds", "expected at least one seed")
    for i, seed in enumerate([*sweep.seeds, sweep.sampler_seed or 0]):
        if not 0 <= seed <= MAX_SEED:
            key = f"sweep.seeds[{i}]" if i < len(sweep.seeds) else "sweep.sampler_seed"
            raise where.error(key, f"expected a seed from 0 to {MAX_SEED}, got {seed}")
    if sweep.folds is not None:
        if not 2 <= sweep.folds <= 100:
            raise where.error("sweep.folds", f"expected 2 to 100 folds, got {sweep.folds}")
        if sweep.method == "tpe" or sweep.early_stop.method != "none":
            raise where.error(
                "sweep.folds", "folds work with grid and random sweeps, without early stopping"
            )
    if len(set(sweep.seeds)) < len(sweep.seeds):
        raise where.error("sweep.seeds", "a seed is listed twice")
    if sweep.max_concurrent is not None and not 1 <= sweep.max_concurrent <= MAX_PRIORITY:
        raise where.error("sweep.max_concurrent", f"expected 1 to {MAX_PRIORITY:,}")
    if sweep.trials is not None and not 1 <= sweep.trials <= MAX_TRIALS:
        raise where.error("sweep.trials", f"expected 1 to {MAX_TRIALS:,} trials")
    if sweep.method in ("random", "tpe") and sweep.trials is None:
        raise where.error("sweep.trials", f"a {sweep.method} sweep needs `trials`")
    if not -MAX_PRIORITY <= section.priority <= MAX_PRIORITY:
        raise where.error("priority", f"expected -{MAX_PRIORITY:,} to {MAX_PRIORITY:,}")
    for field, what in section.retry.problems():
        raise where.error(f"retry.{field}", what)
    if section.metric is not None and section.metric.bounds is not None:
        low, high = section.metric.bounds
        if not low < high:
            raise where.error(
                "metric.bounds", f"expected [low, high] with low < high, got {[low, high]}"
            )
    _check_early_stop(where, sweep.early_stop)
    runs = (
        len(sweep.seeds)
        * (sweep.folds or 1)
        * sum(
            math.prod(p.grid_size() for p in m.params)
            if sweep.method == "grid"
            else sweep.trials or 0
            for m in models
        )
    )
    if runs > MAX_TRIALS:
        raise where.error(
            "sweep.params" if sweep.method == "grid" else "sweep.trials",
            f"{runs:,} runs in one sweep; at most {MAX_TRIALS:,}",
        )
    names = sorted({p.name for m in models for p in m.params})
    for name, value in section.smoke.items():
        if name not in names:
            raise where.error(
                f"smoke.{name}", f"not a parameter of this experiment; expected one of {names}"
            )
        if isinstance(value, list | dict):
            raise where.error(
                f"smoke.{name}", f"expected one value for the smoke test, got {toml_type(value)}"
            )
    baseline, ablations = _baseline(where, section, models, sweep.method)
    if section.metric is None and sweep.method == "tpe":
        raise where.error("sweep.method", "tpe learns from a metric: set `metric`")
    if section.metric is None and sweep.early_stop.method != "none":
        raise where.error(
            "sweep.early_stop.method",
            f"{sweep.early_stop.method} compares a metric between trials: set `metric`",
        )
    return Experiment(
        path=path,
        name=section.name,
        models=models,
        priority=section.priority,
        metric=section.metric,
        method=sweep.method,
        trials=sweep.trials,
        seeds=tuple(sweep.seeds),
        max_concurrent=sweep.max_concurrent,
        early_stop=sweep.early_stop,
        retry=section.retry,
        data=_data(where, section.data),
        sampler_seed=sweep.sampler_seed,
        confirm_over_s=None
        if section.confirm_over is None
        else duration_s(where, "confirm_over", section.confirm_over),
        smoke=dict(section.smoke),
        baseline=baseline,
        ablations=ablations,
        folds=sweep.folds,
        evaluate=_evaluate(where, section, models, sweep),
        watch=_watch(where, section.watch),
    )


def _watch(where: Locator, section: WatchSection) -> WatchPolicy:
    metrics = [section.metrics] if isinstance(section.metrics, str) else section.metrics
    for i, name in enumerate(metrics):
        if not name.strip():
            raise where.error(
                f"watch.metrics[{i}]", "expected a metric's name, got an empty string"
            )
    stall = section.stall_after_s
    return WatchPolicy(
        metrics=tuple(metrics),
        on_nan=section.on_nan,
        stall_after_s=None if stall is None else duration_s(where, "watch.stall_after_s", stall),
    )


def _baseline(
    where: Locator, section: ExperimentSection, models: tuple[Model, ...], method: str
) -> tuple[dict[str, Any] | None, tuple[tuple[str, Any], ...]]:
    """A `[baseline]` made whole (a param it leaves out must have one value), and its
    `[ablations]`, each one param set to a value the baseline does not have."""
    if section.baseline is None:
        if section.ablations:
            raise where.error("ablations", "ablations change a [baseline]: give one")
        return None, ()
    if len(models) > 1:
        raise where.error("baseline", "a baseline is for an experiment with one command")
    if method != "grid":
        raise where.error("sweep.method", 'a sweep with a [baseline] is method = "grid"')
    params = {p.name: p for p in models[0].params}
    whole: dict[str, Any] = {}
    for name, value in section.baseline.items():
        if name not in params:
            raise where.error(
                f"baseline.{name}", f"not a parameter; expected one of {sorted(params)}"
            )
        if isinstance(value, list | dict):
            raise where.error(f"baseline.{name}", f"expected one value, got {toml_type(value)}")
        whole[name] = value
    for name, param in params.items():
        if name not in whole:
            if param.values is None or len(param.values) != 1:
                raise where.error(
                    "baseline", f"set {name}: it has more than one value in sweep.params"
                )
            whole[name] = param.values[0]
    ablations = []
    for name, value in section.ablations.items():
        key = f"ablations.{name}"
        if name not in params:
            raise where.error(key, f"not a parameter; expected one of {sorted(params)}")
        for one in value if isinstance(value, list) else [value]:
            if isinstance(one, list | dict):
                raise where.error(
                    key, f"expected a value or a list of values, got {toml_type(one)}"
                )
            if one == whole[name]:
                raise where.error(key, f"{one!r} is the baseline's own value")
            ablations.append((name, one))
    if not ablations:
        raise where.error("ablations", "expected at least one ablation: param = other value")
    return {name: whole[name] for name in params}, tuple(ablations)


def _evaluate(
    where: Locator, section: ExperimentSection, models: tuple[Model, ...], sweep: SweepSection
) -> tuple[EvaluateStep, ...]:
    """The `[[evaluate]]` steps, each command checked for the placeholders it may use: the
    trained run's params, seed and fold, {split}, {parent_id}, {parent_run_dir},
    {parent_artifact_dir} and the evaluation run's own runtime fields."""
    known = {p.name for m in models for p in m.params} | {"seed", *EVALUATE_FIELDS}
    known |= set(RUNTIME_FIELDS) | ({"fold"} if sweep.folds else set())
    steps = []
    names: set[str] = set()
    for i, step in enumerate(section.evaluate):
        at = f"evaluate[{i}]."
        if not EXPERIMENT_NAME.match(step.name) or step.name in names:
            raise where.error(at + "name", "a unique name of letters, digits, '.', '_' or '-'")
        names.add(step.name)
        try:
            argv = tuple(shlex.split(step.command))
        except ValueError as exc:
            raise where.error(at + "command", f"cannot be split into words: {exc}") from None
        if not argv:
            raise where.error(at + "command", "expected a command, got nothing")
        for word in argv:
            try:
                placeholders = template.fields(word)
            except template.TemplateError as exc:
                raise where.error(at + "command", str(exc)) from None
            for name, _ in placeholders:
                if name not in known:
                    raise where.error(
                        at + "command",
                        f"unknown placeholder {{{name}}}; expected one of {sorted(known)}",
                    )
        for split in step.splits:
            if not EXPERIMENT_NAME.match(split):
                raise where.error(at + "splits", f"a split is a name such as test, got {split!r}")
        if len(set(step.splits)) < len(step.splits):
            raise where.error(at + "splits", "a split is listed twice")
        resources = step.resources or section.resources
        for field, what in resources.problems():
            raise where.error(f"{at}resources.{field}", what)
        if step.on == "best" and section.metric is None:
            raise where.error(at + "on", '"best" needs the experiment\'s `metric`')
        steps.append(EvaluateStep(step.name, argv, tuple(step.splits) or ("",), step.on, resources))
    return tuple(steps)


def _data(where: Locator, raw: list[str] | dict[str, str]) -> tuple[tuple[str, str], ...]:
    """An experiment's `data`: a list of paths (each appears where it sits in the project), or
    a table of place = source (for data kept outside the project)."""
    pairs = [("", source) for source in raw] if isinstance(raw, list) else list(raw.items())
    out = []
    for i, (place, source) in enumerate(pairs):
        key = f"data[{i}]" if isinstance(raw, list) else f"data.{place}"
        if not source.strip():
            raise where.error(key, "expected a path, got an empty string")
        if place:
            try:
                place = data_place(place)
            except ValueError as exc:
                raise where.error(key, str(exc)) from None
        out.append((place, source))
    return tuple(out)


def _check_early_stop(where: Locator, stop: EarlyStop) -> None:
    key = "sweep.early_stop."
    if stop.min_steps is not None and stop.min_steps < (0 if stop.method == "median" else 1):
        raise where.error(key + "min_steps", "expected 1 or more (0 or more for median)")
    if stop.min_trials is not None:
        if stop.method != "median":
            raise where.error(key + "min_trials", "applies to method = median only")
        if stop.min_trials < 0:
            raise where.error(key + "min_trials", "expected 0 or more")
    if stop.reduction_factor is not None:
        if stop.method not in ("asha", "hyperband"):
            raise where.error(key + "reduction_factor", "applies to asha and hyperband only")
        if stop.reduction_factor < 2:
            raise where.error(key + "reduction_factor", "expected 2 or more")
    if stop.method == "none" and stop.min_steps is not None:
        raise where.error(key + "min_steps", "applies only with an early-stopping method")


def _model(
    where: Locator,
    prefix: str,
    top: ExperimentSection,
    model: ModelSection,
    raw_params: dict[str, Any],
    sweep: SweepSection,
) -> Model:
    """One model of an experiment, with the top-level fields it does not set itself."""
    key = f"{prefix}command"
    try:
        argv = tuple(shlex.split(model.command))
    except ValueError as exc:
        raise where.error(key, f"cannot be split into words: {exc}") from None
    if not argv:
        raise where.error(key, "expected a command, got nothing")
    in_model = set(model.params)
    params = tuple(
        _param(
            where, name, value, f"{prefix}params" if name in in_model and prefix else "sweep.params"
        )
        for name, value in raw_params.items()
    )
    known = {p.name for p in params} | {"seed", *RUNTIME_FIELDS}
    if sweep.folds is not None:
        known.add("fold")
    for word in argv:
        try:
            placeholders = template.fields(word)
        except template.TemplateError as exc:
            raise where.error(key, str(exc)) from None
        for name, _ in placeholders:
            if name == "fold" and name not in known:
                raise where.error(key, "{fold} needs `folds = K` in [sweep]")
            if name not in known:
                raise where.error(
                    key,
                    f"unknown parameter {{{name}}}; params are {sorted(p.name for p in params)}"
                    f" (and {{seed}}, {', '.join('{' + f + '}' for f in RUNTIME_FIELDS)})",
                )
    if sweep.method == "grid":
        for p in params:
            if p.values is None and p.step is None:
                raise where.error(
                    f"sweep.params.{p.name}", "a grid needs a list, or a range with `step`"
                )
    resources = model.resources or top.resources
    for field, what in resources.problems():
        where_set = f"{prefix}resources" if model.resources is not None else "resources"
        raise where.error(f"{where_set}.{field}", what)
    capture_spec = model.capture if model.capture is not None else top.capture
    capture = (capture_spec,) if isinstance(capture_spec, str) else tuple(capture_spec)
    try:
        readers_for(capture)
    except CaptureError as exc:
        raise where.error(
            f"{prefix}capture" if model.capture is not None else "capture", str(exc)
        ) from None
    return Model(
        name=model.name or None,
        command=model.command,
        argv=argv,
        model_type=model.model_type or top.model_type,
        requires=tuple(model.requires if model.requires is not None else top.requires),
        tags=tuple(model.tags if model.tags is not None else top.tags),
        resources=resources,
        capture=capture,
        params=params,
    )


def _param(where: Locator, name: str, value: Any, table: str = "sweep.params") -> Param:
    key = f"{table}.{name}"
    if isinstance(value, list):
        if not value:
            raise where.error(key, "empty list: give at least one value")
        return Param(name=name, values=tuple(value))
    if not isinstance(value, dict):
        return Param(name=name, values=(value,))  # one fixed value
    unknown = set(value) - {"low", "high", "log", "step"}
    if unknown:
        raise where.error(
            f"{key}.{sorted(unknown)[0]}", "unknown key; expected low, high, log, step"
        )
    for bound in ("low", "high"):
        if bound not in value:
            raise where.error(key, f"a range needs `{bound}`")
        if isinstance(value[bound], bool) or not isinstance(value[bound], int | float):
            raise where.error(f"{key}.{bound}", f"expected a number, got {toml_type(value[bound])}")
    low, high = value["low"], value["high"]
    if low > high:
        raise where.error(key, f"expected low ≤ high, got low = {low} and high = {high}")
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise where.error(f"{key}.log", f"expected true or false, got {toml_type(log)}")
    if log and low <= 0:
        raise where.error(key, f"a log range needs low > 0, got {low}")
    step = value.get("step")
    if step is not None and (
        isinstance(step, bool) or not isinstance(step, int | float) or step <= 0
    ):
        raise where.error(f"{key}.step", "expected a number above 0")
    if step is not None and log:
        raise where.error(key, "a range takes `log` or `step`, not both")
    if step is not None and (high - low) / step >= MAX_TRIALS:
        raise where.error(
            f"{key}.step",
            f"about {(high - low) / step + 1:.3g} values; a grid takes at most {MAX_TRIALS:,}",
        )
    integer = all(isinstance(v, int) for v in (low, high)) and (
        step is None or isinstance(step, int)
    )
    return Param(name=name, low=low, high=high, log=log, step=step, integer=integer)


def _apply_overrides(path: Path, raw: dict[str, Any], overrides: dict[str, str]) -> dict[str, Any]:
    raw = {**raw, "sweep": dict(raw.get("sweep", {}))}
    sweep = raw["sweep"]
    sweep["params"] = dict(sweep.get("params", {}))
    for key, text in overrides.items():
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text  # a bare word is a string
        in_models = [m for m in raw.get("models", []) if key in m.get("params", {})]
        if key in ("trials", "seeds", "max_concurrent", "method", "sampler_seed"):
            sweep[key] = value
        elif key in sweep["params"] or in_models:
            if key in sweep["params"]:
                sweep["params"][key] = value
            raw["models"] = [
                {**m, "params": {**m["params"], key: value}} if m in in_models else m
                for m in raw.get("models", [])
            ]
        else:
            raise ConfigError(
                f"{path}: --set {key}: not a parameter of this experiment; expected one of "
                f"{sorted(set(sweep['params']).union(*(m.get('params', {}) for m in raw.get('models', []))))}"
                " or trials, seeds, max_concurrent, method"
            )
    return raw
