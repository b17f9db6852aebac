"""Config dataclasses: one declaration of the solver's parameters, flags generated for every command,
nested configs round-tripping through config.json (issue 13 item 2)."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest

from hedonic_neurons.cli import build_parser
from hedonic_neurons.configs import config_from_args, config_from_dict
from hedonic_neurons.partition import HedonicPartition, SolverConfig

SOLVER_FLAGS = ["--k", "4", "--threshold", "0.5", "--utility", "sum", "--sampler", "uniform", "--m", "1000",
                "--omega", "100", "--max-size", "6"]
EXPECTED = dict(k=4, threshold=0.5, utility="sum", sampler="uniform", m=1000, omega=100, max_size=6)


def test_hedonic_partition_defaults_are_solver_config():
    sig = inspect.signature(HedonicPartition.__init__).parameters
    for f in dataclasses.fields(SolverConfig):
        assert sig[f.name].default == f.default, f.name


@pytest.mark.parametrize("command,base", [
    (["partition", "phi.npy"], SolverConfig()),
    (["mnist"], None),
    (["reranker"], None),
])
def test_solver_flags_reach_every_command(command, base):
    args = build_parser().parse_args([*command, *SOLVER_FLAGS])
    if base is None:
        if command[0] == "mnist":
            from hedonic_neurons.experiments.mnist import MnistConfig

            base = MnistConfig().solver
        else:
            from hedonic_neurons.experiments.reranker import RerankerConfig

            base = RerankerConfig().solver
    cfg = config_from_args(base, args, args.solver_fields)
    assert {k: getattr(cfg, k) for k in EXPECTED} == EXPECTED
    # what was not given keeps the command's own default
    assert cfg.epsilon == base.epsilon and cfg.n_init == base.n_init


def test_command_defaults_differ_only_in_sizes():
    from hedonic_neurons.experiments.mnist import MnistConfig
    from hedonic_neurons.experiments.reranker import RerankerConfig

    # sizes, plus the one per-data-set setting docs/solver.md argues for: MLP channels' tiers at q90 / q70
    for sc, (m, omega), (tq, absorb) in (
            (MnistConfig().solver, (80_000, 8_000), (SolverConfig.tau_quantile, SolverConfig.absorb_quantile)),
            (RerankerConfig().solver, (100_000, 10_000), (0.9, 0.7))):
        assert (sc.m, sc.omega, sc.tau_quantile, sc.absorb_quantile) == (m, omega, tq, absorb)
        assert dataclasses.replace(sc, m=SolverConfig.m, omega=SolverConfig.omega,
                                   tau_quantile=SolverConfig.tau_quantile,
                                   absorb_quantile=SolverConfig.absorb_quantile) == SolverConfig()


def test_reranker_finetune_flags_and_lr_default():
    from hedonic_neurons.experiments.reranker import RerankerConfig
    from hedonic_neurons.models.finetune import FinetuneConfig

    assert FinetuneConfig().lr == RerankerConfig().finetune.lr == 2e-3
    args = build_parser().parse_args(["reranker", "--lr", "1e-3", "--lora-alpha", "8", "--alpha", "0.2",
                                      "--rank-loss", "listnet"])
    ft = config_from_args(RerankerConfig().finetune, args, args.finetune_fields, dest_prefix="ft_")
    assert (ft.lr, ft.alpha, ft.rank_loss) == (1e-3, 8.0, "listnet")
    assert config_from_args(RerankerConfig().solver, args, args.solver_fields).alpha == 0.2


def test_nested_config_round_trips_and_old_flat_keys_load():
    from hedonic_neurons.experiments.mnist import MNIST_MOVED, MnistConfig
    from hedonic_neurons.experiments.reranker import RERANKER_MOVED, RerankerConfig

    cfg = MnistConfig(seeds=[0], solver=SolverConfig(m=123, k=2))
    assert config_from_dict(MnistConfig, json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg
    old = {k: v for k, v in dataclasses.asdict(MnistConfig()).items() if k != "solver"}
    old.update(k=3, min_size=2, max_size=10, m=500, omega=50, epsilon=0.1, delta=0.1)
    assert config_from_dict(MnistConfig, old, MNIST_MOVED).solver == SolverConfig(m=500, omega=50)
    r = RerankerConfig(layers=(1, 2))
    assert config_from_dict(RerankerConfig, json.loads(json.dumps(dataclasses.asdict(r)))) == r
    flat = {k: v for k, v in dataclasses.asdict(r).items() if k not in ("solver", "finetune")}
    flat.update(solver_m=7, solver_omega=3, max_size=9, lr=5e-3, epochs=2, rank_loss="listnet")
    back = config_from_dict(RerankerConfig, flat, RERANKER_MOVED)
    assert (back.solver.m, back.solver.omega, back.solver.max_size) == (7, 3, 9)
    assert (back.finetune.lr, back.finetune.epochs, back.finetune.rank_loss) == (5e-3, 2, "listnet")
    with pytest.raises(ValueError, match="--out.*--force"):
        config_from_dict(MnistConfig, {**dataclasses.asdict(cfg), "bogus": 1})
