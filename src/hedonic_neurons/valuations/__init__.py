"""Pairwise valuations of neurons: OCA and PAS (paper sec. 3.2, eq. 6-7), the local-logit tail, stats."""

from hedonic_neurons.valuations.accumulate import Moments, ValuationStats
from hedonic_neurons.valuations.activations import RunningStats
from hedonic_neurons.valuations.agreement import agreement
from hedonic_neurons.valuations.oca import oca, oca_null_se, oca_se
from hedonic_neurons.valuations.pas import PASResult, exact_pas, hessian_pas
from hedonic_neurons.valuations.tail import NormTail

__all__ = [
    "Moments", "NormTail", "PASResult", "RunningStats", "ValuationStats", "agreement", "exact_pas", "hessian_pas",
    "oca", "oca_null_se", "oca_se",
]
