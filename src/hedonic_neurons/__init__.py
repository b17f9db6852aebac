"""hedonic-neurons: coalitions of neurons as stable partitions of a top-responsive hedonic game.

Every public name is re-exported lazily (PEP 562): `import hedonic_neurons` imports nothing heavy, so a
CLI command pays only for what it uses (refusing an unsupported model takes a second, not the 10+ s of
importing scipy, torch and transformers).
"""

import os

from hedonic_neurons.lazy import lazy_getattr

# Results must not depend on the thread count (README "Reproducibility"). MKL, torch's CPU BLAS, splits
# the inner dimension of small-output float32 products (a classifier head's weight gradient, for example)
# across threads, so 1 and 2 threads train different networks; its strict "conditional numerical
# reproducibility" mode makes every GEMM bitwise the same for any thread count. MKL reads this when it first
# runs, so it is set here, before anything in the package can import torch; a value the user set wins.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__version__ = "0.1.0"

# public name -> the module that defines it (imported on first access)
_LAZY = {
    **dict.fromkeys(["CoalitionSampler", "Game", "PartnerSampler", "UniformSampler", "WeightedSampler",
                     "coalitions_to_labels", "labels_to_coalitions", "planted_game", "register_sampler",
                     "stability_certificate", "top_covering"], "hedonic_neurons.game"),
    **dict.fromkeys(["HedonicPartition", "SolverConfig"], "hedonic_neurons.partition"),
    **dict.fromkeys(["NormTail", "PASResult", "RunningStats", "agreement", "exact_pas", "hessian_pas", "oca",
                     "oca_null_se", "oca_se", "Moments", "ValuationStats"], "hedonic_neurons.valuations"),
    "distributed_valuations": "hedonic_neurons.models.distributed",
    **dict.fromkeys(["compute_valuations", "layer_cache", "load_model", "lora_config", "register_adapter",
                     "get_adapter", "ablate_channels"], "hedonic_neurons.models"),
    **dict.fromkeys(["LeidenPartition", "RandomPartition", "SphericalKMeansPartition", "WardPartition",
                     "matched_baselines"],
                    "hedonic_neurons.baselines"),
    **dict.fromkeys(["pair_synergy", "ratio_synergy", "coalition_synergy"], "hedonic_neurons.metrics.synergy"),
    **dict.fromkeys(["track_layers", "track_transition", "transition_table", "coalition_write",
                     "mlp_interaction_mass", "residual_interaction_mass", "track_run"], "hedonic_neurons.tracking"),
    "build_report": "hedonic_neurons.report",
    **dict.fromkeys(["study", "Study", "StudyConfig"], "hedonic_neurons.experiments.study"),
    "RunDir": "hedonic_neurons.rundir",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())

__all__ = [*_LAZY]
