"""Expanding an experiment into trials: every configuration of a grid, or `trials` drawn by
Optuna's random sampler (ask/tell), each replicated over the experiment's seeds. Commands are
built as argv, so a parameter value is never read by a shell."""

from __future__ import annotations

import itertools
import math
from typing import Any

import msgspec

from engine.config import PLACEHOLDER, Experiment, Model, Param

MAX_TRIALS = 100_000


class SweepError(ValueError):
    """An experiment that cannot be expanded as asked; the message says why."""


class Trial(msgspec.Struct, frozen=True):
    """One run of a sweep: which model and configuration, its parameters, seed and command."""

    model: int
    config: int
    params: dict[str, Any]
    seed: int
    argv: tuple[str, ...]

    def name(self, experiment: Experiment) -> str:
        model = experiment.models[self.model].name
        return f"{experiment.name}-{model + '-' if model else ''}{self.config:03d}-s{self.seed}"


def trials(experiment: Experiment, sampler_seed: int = 0) -> list[Trial]:
    """Every trial of an experiment: model by model, configuration by configuration, seed by
    seed."""
    out: list[Trial] = []
    for m, model in enumerate(experiment.models):
        configs = configurations(experiment, model, sampler_seed + m)
        out += [
            Trial(model=m, config=i, params=params, seed=seed, argv=command(model, params, seed))
            for i, params in enumerate(configs)
            for seed in experiment.seeds
        ]
        if len(out) > MAX_TRIALS:
            raise SweepError(f"{experiment.path}: over {MAX_TRIALS:,} trials in one sweep")
    return out


def configurations(
    experiment: Experiment, model: Model, sampler_seed: int = 0
) -> list[dict[str, Any]]:
    """A model's configurations: the whole grid, or `trials` random draws."""
    names = [p.name for p in model.params]
    if experiment.method == "grid":
        sizes = [len(p.grid()) for p in model.params]
        if math.prod(sizes) > MAX_TRIALS:
            raise SweepError(
                f"{experiment.path}: a grid of {math.prod(sizes):,} configurations is too large"
            )
        return [
            dict(zip(names, values, strict=True))
            for values in itertools.product(*(p.grid() for p in model.params))
        ]
    if experiment.method == "random":
        import optuna  # only sweeps need it, not every engine start

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=sampler_seed))
        space = {p.name: _distribution(p) for p in model.params}
        return [study.ask(space).params for _ in range(experiment.trials or 0)]
    raise SweepError(
        f"{experiment.path}: sweep.method = {experiment.method!r} needs adaptive sampling, which "
        "this engine version does not do yet; use grid or random"
    )


def _distribution(param: Param):  # type: ignore[no-untyped-def]
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if param.values is not None:
        return CategoricalDistribution(param.values)
    if param.integer:
        return IntDistribution(
            int(param.low), int(param.high), log=param.log, step=int(param.step or 1)
        )
    return FloatDistribution(param.low, param.high, log=param.log, step=param.step)


def command(model: Model, params: dict[str, Any], seed: int) -> tuple[str, ...]:
    """The trial's argv: each word of the template with its {placeholders} filled in."""
    values = {**params, "seed": seed}
    return tuple(PLACEHOLDER.sub(lambda m: _text(values[m.group(1)]), word) for word in model.argv)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)
