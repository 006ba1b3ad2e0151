"""Expanding an experiment into trials: every configuration of a grid, or `trials` drawn by
Optuna's random sampler, each replicated over the experiment's seeds; and the adaptive side of a
running sweep (TPE sampling as slots free, pruning runs that fall behind) by Optuna ask/tell.
Commands are built as argv, so a parameter value is never read by a shell."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Any

import msgspec

from engine.config import MAX_TRIALS, EarlyStop, Experiment, Model, Param
from engine.core import template
from engine.model import Run, RunStatus

# Draws in a row that only repeat earlier configurations before a space counts as exhausted.
MAX_REDRAWS = 100


class SweepError(ValueError):
    """An experiment that cannot be expanded as asked; the message says why."""


class Trial(msgspec.Struct, frozen=True):
    """One run of a sweep: which model and configuration, its parameters, seed and command."""

    model: int
    config: int
    params: dict[str, Any]
    seed: int
    argv: tuple[str, ...]
    fold: int | None = None

    def name(self, experiment: Experiment, sweep_id: str) -> str:
        """`SWEEP-[MODEL-]CONFIG-[fFOLD-]sSEED`, e.g. `lm-2-mlp-003-s1` or `cv-1-000-f2-s0`:
        unique across sweeps."""
        model = experiment.models[self.model].name
        fold = f"f{self.fold}-" if self.fold is not None else ""
        return f"{sweep_id}-{model + '-' if model else ''}{self.config:03d}-{fold}s{self.seed}"


def is_adaptive(experiment: Experiment) -> bool:
    """Whether a sweep needs Optuna while it runs: to sample (TPE) or to prune."""
    return experiment.method == "tpe" or experiment.early_stop.method != "none"


def total_runs(experiment: Experiment) -> int:
    """How many runs a sweep makes at most: every configuration of every model, times seeds."""
    if experiment.baseline is not None:
        configs = 1 + len(experiment.ablations)
    elif experiment.method == "grid":
        configs = sum(math.prod(p.grid_size() for p in m.params) for m in experiment.models)
    else:
        configs = (experiment.trials or 0) * len(experiment.models)
    return configs * len(experiment.seeds) * (experiment.folds or 1)


def trials(experiment: Experiment, sampler_seed: int | None = None) -> list[Trial]:
    """Every trial of a grid or random experiment: model by model, configuration by
    configuration, fold by fold, seed by seed. (A TPE sweep's trials come from
    `AdaptiveSweep.ask`.)"""
    if sampler_seed is None:
        sampler_seed = experiment.sampler_seed or 0
    folds: list[int | None] = list(range(experiment.folds)) if experiment.folds else [None]
    out: list[Trial] = []
    for m, model in enumerate(experiment.models):
        configs = configurations(experiment, model, sampler_seed + m)
        out += [
            Trial(m, i, params, seed, command(model, params, seed, fold), fold)
            for i, params in enumerate(configs)
            for fold in folds
            for seed in experiment.seeds
        ]
        if len(out) > MAX_TRIALS:
            raise SweepError(f"{experiment.path}: over {MAX_TRIALS:,} trials in one sweep")
    return out


def smoke_trials(experiment: Experiment) -> list[Trial]:
    """A smoke test: one trial per model, its parameters the experiment's `[smoke]` values
    and otherwise each one's first value (a range's low end), with the first seed."""
    out = []
    seed, fold = experiment.seeds[0], (0 if experiment.folds else None)
    for m, model in enumerate(experiment.models):
        params = {
            p.name: experiment.smoke[p.name] if p.name in experiment.smoke else _first(p)
            for p in model.params
        }
        out.append(Trial(m, 0, params, seed, command(model, params, seed, fold), fold))
    return out


def _first(param: Param) -> Any:
    if param.values is not None:
        return param.values[0]
    assert param.low is not None
    return round(param.low) if param.integer else param.low


def configurations(
    experiment: Experiment, model: Model, sampler_seed: int = 0
) -> list[dict[str, Any]]:
    """A model's configurations: the baseline and its ablations, the whole grid, or
    `trials` random draws."""
    if experiment.baseline is not None:
        return [experiment.baseline] + [
            {**experiment.baseline, name: value} for name, value in experiment.ablations
        ]
    names = [p.name for p in model.params]
    if experiment.method == "grid":
        sizes = [p.grid_size() for p in model.params]
        if math.prod(sizes) > MAX_TRIALS:
            raise SweepError(
                f"{experiment.path}: a grid of {math.prod(sizes):,} configurations is too large"
            )
        return [
            dict(zip(names, values, strict=True))
            for values in itertools.product(*(p.grid() for p in model.params))
        ]
    if experiment.method == "random":
        optuna = _optuna()
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=sampler_seed))
        space = {p.name: _distribution(p) for p in model.params}
        drawn: dict[str, dict[str, Any]] = {}
        misses = 0
        while len(drawn) < (experiment.trials or 0) and misses < MAX_REDRAWS:
            params = study.ask(space).params
            key = _config_key(params)
            misses = misses + 1 if key in drawn else 0
            drawn.setdefault(key, params)  # a configuration drawn again is not run twice
        return list(drawn.values())
    raise SweepError(f"{experiment.path}: a {experiment.method} sweep samples as it runs")


@dataclass
class _Live:
    """A run's Optuna trial while it runs, and what it has reported so far."""

    model: int
    trial: Any  # optuna.Trial
    best: float | None = None
    last_step: int | None = None


class AdaptiveSweep:
    """The Optuna side of a running sweep: one study per model that asks for configurations as
    slots free (TPE) and judges each run's intermediate metric values with the pruner. Each run
    is one Optuna trial; the seeds of a configuration are trials with the same parameters."""

    def __init__(self, experiment: Experiment, sampler_seed: int | None = None) -> None:
        if sampler_seed is None:
            sampler_seed = experiment.sampler_seed or 0
        if experiment.metric is None:
            raise SweepError(f"{experiment.path}: an adaptive sweep needs `metric`")
        optuna = _optuna()
        self.experiment = experiment
        self.key = experiment.metric.name
        self.maximize = experiment.metric.mode == "max"
        self.prunes = experiment.early_stop.method != "none"
        self.spaces = [{p.name: _distribution(p) for p in m.params} for m in experiment.models]
        budget = total_runs(experiment)
        self.studies = [
            optuna.create_study(
                direction="maximize" if self.maximize else "minimize",
                sampler=_sampler(experiment.method, sampler_seed + m, budget),
                pruner=_pruner(experiment.early_stop),
            )
            for m in range(len(experiment.models))
        ]
        self.asked = [0] * len(experiment.models)  # configurations sampled so far, per model
        self.seen: list[set[str]] = [set() for _ in experiment.models]  # their params, per model
        self.exhausted = [False] * len(experiment.models)  # no new configuration left to draw
        self._grids: dict[int, list[dict[str, Any]] | None] = {}  # made at a first repeat
        self._rng = random.Random(sampler_seed)
        self.live: dict[int, _Live] = {}  # run id → its trial
        self._sampled: dict[tuple[int, int, int], Any] = {}  # (model, config, seed) → trial

    def remaining(self) -> int:
        """Configurations a TPE sweep has still to sample (none for grid and random)."""
        if self.experiment.method != "tpe":
            return 0
        return sum(
            (self.experiment.trials or 0) - n
            for n, done in zip(self.asked, self.exhausted, strict=True)
            if not done
        )

    def ask(self, configs: int) -> list[Trial]:
        """Sample up to `configs` new configurations (the model with the fewest first), each as
        one trial per seed."""
        out: list[Trial] = []
        seeds = self.experiment.seeds
        for _ in range(min(configs, self.remaining())):
            open_models = [m for m in range(len(self.asked)) if not self.exhausted[m]]
            if not open_models:
                break
            m = min(open_models, key=self.asked.__getitem__)
            trial = self._ask_new(m)
            if trial is None:
                continue
            config = self.asked[m]
            self.asked[m] += 1
            self._sampled[(m, config, seeds[0])] = trial
            model = self.experiment.models[m]
            out += [
                Trial(m, config, trial.params, seed, command(model, trial.params, seed))
                for seed in seeds
            ]
        return out

    def _ask_new(self, m: int):  # type: ignore[no-untyped-def]
        """A trial with a configuration not sampled before (those drawn again are told as
        failed, so the sampler moves on); None once the space holds no new one."""
        optuna = _optuna()
        for _ in range(MAX_REDRAWS):
            trial = self.studies[m].ask(self.spaces[m])
            key = _config_key(trial.params)
            if key not in self.seen[m]:
                self.seen[m].add(key)
                return trial
            self.studies[m].tell(trial, state=optuna.trial.TrialState.FAIL)
            if m not in self._grids:
                self._grids[m] = finite_grid(self.experiment.models[m])
            grid = self._grids[m]
            if grid is not None:  # a finite space: offer the sampler one it has not tried
                unseen = [c for c in grid if _config_key(c) not in self.seen[m]]
                if not unseen:
                    break
                self.studies[m].enqueue_trial(self._rng.choice(unseen))
        self.exhausted[m] = True
        return None

    def attach(self, run: Run) -> None:
        """Give a starting run its Optuna trial: the one sampled for it, or a new one with its
        parameters (a grid or random trial, or another seed of a sampled configuration)."""
        if run.id in self.live or run.trial is None:
            return
        m, config = run.trial
        trial = self._sampled.pop((m, config, run.seed), None)
        if trial is None:
            self.studies[m].enqueue_trial(run.params)
            trial = self.studies[m].ask(self.spaces[m])
        self.live[run.id] = _Live(m, trial)
        self.asked[m] = max(self.asked[m], config + 1)
        self.seen[m].add(_config_key(run.params))

    def report(self, run_id: int, points: list[tuple[int | None, float]]) -> str | None:
        """Feed a run's new (step, value) points of the metric to its trial, step by step; the
        reason at the first step the pruner says to stop it, else None."""
        live = self.live.get(run_id)
        if live is None:
            return None
        for step, value in points:
            if math.isnan(value):
                continue
            if live.best is None or (value > live.best if self.maximize else value < live.best):
                live.best = value
            if step is None or (live.last_step is not None and step <= live.last_step):
                continue  # no step to judge at, or one a retry reports again
            live.trial.report(value, step)
            live.last_step = step
            if self.prunes and live.trial.should_prune():
                method = self.experiment.early_stop.method
                return f"pruned by {method} at step {step}: {self.key} = {value:.6g}"
        return None

    def finish(self, run: Run) -> None:
        """Tell the study how a run ended: its best metric value, pruned, or failed."""
        optuna = _optuna()
        live = self.live.pop(run.id, None)
        if live is None:
            if run.trial is None:
                return
            trial = self._sampled.pop((*run.trial, run.seed), None)
            if trial is not None:  # sampled, and ended before it started
                self.studies[run.trial[0]].tell(trial, state=optuna.trial.TrialState.FAIL)
            return
        study = self.studies[live.model]
        if run.status is RunStatus.PRUNED and live.last_step is not None:
            study.tell(live.trial, state=optuna.trial.TrialState.PRUNED)
        elif run.status is RunStatus.SUCCEEDED and live.best is not None:
            study.tell(live.trial, live.best)
        else:
            study.tell(live.trial, state=optuna.trial.TrialState.FAIL)

    def replay(self, run: Run, points: list[tuple[int | None, float]]) -> None:
        """Feed a run that ended before a daemon restart back to its study, as it ended."""
        if run.trial is None:
            return
        optuna = _optuna()
        m, config = run.trial
        self.asked[m] = max(self.asked[m], config + 1)
        self.seen[m].add(_config_key(run.params))
        steps = {step: v for step, v in points if step is not None and not math.isnan(v)}
        values = [v for _, v in points if not math.isnan(v)]
        best = (max if self.maximize else min)(values) if values else None
        state, value = optuna.trial.TrialState.FAIL, None
        if run.status is RunStatus.SUCCEEDED and best is not None:
            state, value = optuna.trial.TrialState.COMPLETE, best
        elif run.status is RunStatus.PRUNED and steps:
            state, value = optuna.trial.TrialState.PRUNED, steps[max(steps)]
        self.studies[m].add_trial(
            optuna.trial.create_trial(
                state=state,
                value=value,
                params=run.params,
                distributions=self.spaces[m],
                intermediate_values=steps,
            )
        )


def finite_grid(model: Model) -> list[dict[str, Any]] | None:
    """Every configuration of a model whose parameters all take finitely many values (lists,
    stepped or whole-number ranges), or None."""
    values = []
    for p in model.params:
        if p.values is not None or p.step is not None:
            size = p.grid_size()
        elif p.integer and p.low is not None and p.high is not None and not p.log:
            size = int(p.high) - int(p.low) + 1
        else:
            return None
        if math.prod(len(v) for v in values) * size > MAX_TRIALS:
            return None
        if p.values is not None or p.step is not None:
            values.append(p.grid())
        else:
            values.append(tuple(range(int(p.low or 0), int(p.high or 0) + 1)))
    names = [p.name for p in model.params]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


def _config_key(params: dict[str, Any]) -> str:
    return msgspec.json.encode(dict(sorted(params.items()))).decode()


def _optuna():  # type: ignore[no-untyped-def]
    import optuna  # only sweeps need it, not every engine start

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna


def _sampler(method: str, seed: int, budget: int):  # type: ignore[no-untyped-def]
    """TPE explores at random for its first quarter of runs (at most Optuna's default 10);
    grid and random sweeps give every trial its parameters, so their sampler never chooses."""
    optuna = _optuna()
    if method == "tpe":
        startup = min(10, max(2, budget // 4))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)
    return optuna.samplers.RandomSampler(seed=seed)


def _pruner(stop: EarlyStop):  # type: ignore[no-untyped-def]
    pruners = _optuna().pruners
    if stop.method == "asha":
        return pruners.SuccessiveHalvingPruner(
            min_resource=stop.min_steps or "auto", reduction_factor=stop.reduction_factor or 4
        )
    if stop.method == "hyperband":
        return pruners.HyperbandPruner(
            min_resource=stop.min_steps or 1, reduction_factor=stop.reduction_factor or 3
        )
    if stop.method == "median":
        return pruners.MedianPruner(
            n_startup_trials=5 if stop.min_trials is None else stop.min_trials,
            n_warmup_steps=stop.min_steps or 0,
        )
    return pruners.NopPruner()


def _distribution(param: Param):  # type: ignore[no-untyped-def]
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if param.values is not None:
        return CategoricalDistribution(param.values)
    if param.integer:
        return IntDistribution(
            int(param.low), int(param.high), log=param.log, step=int(param.step or 1)
        )
    return FloatDistribution(param.low, param.high, log=param.log, step=param.step)


def command(
    model: Model, params: dict[str, Any], seed: int, fold: int | None = None
) -> tuple[str, ...]:
    """The trial's argv: each word of the template with its parameters, seed and fold filled
    in (the run's own {run_id}, {attempt}, … are filled in as each attempt starts)."""
    values = {**params, "seed": seed} | ({"fold": fold} if fold is not None else {})
    try:
        return tuple(template.render_params(word, values) for word in model.argv)
    except (ValueError, TypeError) as exc:  # a format spec the value cannot take
        raise SweepError(f"command {model.command!r}: {exc}") from None
