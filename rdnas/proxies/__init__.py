"""Zero-cost proxies: score architectures at initialisation, with the supernet's weights (NB201: no network per
architecture; any other space: each architecture exported and scored as a plain network).

``PROXIES`` maps each name to a :class:`Proxy`; every proxy is ``score(supernet, archs, minibatch) -> Tensor[K]``
float64 (higher = predicted better; disconnected architectures -inf, except flops and params).
:func:`score_network` scores one plain ``nn.Module`` (:mod:`rdnas.proxies.network`).
:func:`score_space` scores a whole search space into a resumable, shardable CSV (:class:`ScoreTable`);
:func:`load_minibatch` loads the minibatch from a spec such as ``npz:<path>``.
"""

from rdnas.proxies.base import INITS, PROXIES, Minibatch, Proxy, get_proxy, scoring_supernet
from rdnas.proxies.cost import cost_scorer, flops, l2_norm, params
from rdnas.proxies.synflow import logsynflow, synflow, synflow_of_network
from rdnas.proxies.activation import jacov, naswot, zen
from rdnas.proxies.gradient import fisher, grad_norm, grasp, loss_gradient_proxies, plain, snip
from rdnas.proxies.minibatch import load_minibatch
from rdnas.proxies.network import NETWORK_PROXIES, loss_gradient_of_network, score_exported, score_network
from rdnas.proxies.score_table import ScoreTable, merge_tables
from rdnas.proxies.scoring import score_space

__all__ = ["INITS", "PROXIES", "Minibatch", "Proxy", "get_proxy", "scoring_supernet", "cost_scorer", "flops", "l2_norm", "params",
           "logsynflow", "synflow", "synflow_of_network", "jacov", "naswot", "zen", "fisher", "grad_norm", "grasp",
           "loss_gradient_proxies", "plain", "snip", "load_minibatch", "NETWORK_PROXIES", "loss_gradient_of_network",
           "score_exported", "score_network", "ScoreTable", "merge_tables", "score_space"]
