"""A NAR-style tier ranker (Guo et al., "Neural Architecture Ranker", arXiv 2201.12725).

Written from the paper and the issue's description, after reading the authors' public code (AlbertiPot/nar);
no code is taken from it. The model:

* tokens: the architecture's feature channels (:mod:`rdnas.predictors.features`, 16 values each) through
  ``Linear(16 -> d_model)``, plus sinusoidal positions, then LayerNorm;
* encoder: ``layers`` post-LN transformer layers (``heads`` heads of d_model / heads = 32 dimensions each, FFN
  ``ffn``, dropout);
* tiers: the training set sorted by accuracy and cut into ``tiers`` near-equal tiers (:func:`tier_assignment`,
  tier 0 = best); a *bucket* per tier is the mean of the detached encoder outputs of its training architectures.
  During training it is the running mean over the current epoch's batches so far (the previous epoch's mean for a
  tier not seen yet this epoch; before the first epoch, the initial encoder's mean). After the last epoch the
  buckets are recomputed once from the final encoder in eval mode and **frozen**: they are a buffer of the model,
  saved with it, and evaluation never sees a label (the authors' validation rebuilt them from validation labels);
* a decoder of ``layers`` post-LN layers (shared by the tiers, as in the authors' code) runs once per tier: the
  tier's bucket tokens (``Linear(d_model -> d_model)`` + positions + LayerNorm) attend to themselves and then to the
  architecture's encoding; the per-tier outputs are summed, flattened, and an MLP gives the tier logits (scaled by
  d_model^-0.5);
* a score head (MLP on the flattened encoding) gives the ranking score that :meth:`NARPredictor.predict` returns;
  :meth:`NARPredictor.predict_tiers` gives the tier classification through the frozen buckets.

Loss: cross-entropy of the tier logits + 2 x the pairwise logistic ranking loss of the scores against the
accuracies over every pair of the batch, through the fused
``rdnas.ops.pairwise_margin_rank_loss(..., loss="logistic")``. AdamW (betas 0.9 / 0.99, eps 1e-9, weight decay
0.01) with the Noam schedule
``lr = lr_mul * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)``; 55 epochs (the authors' NB201 configuration) of
batches of 64 by default (theirs: 128), ``lr_mul`` 0.14 (theirs: 0.07; see :class:`NARPredictor`). Deterministic on
the CPU for a given seed.
"""

import math

import torch
from torch import Tensor, nn

from rdnas.predictors.base import ModulePredictor, register_predictor


def tier_assignment(accuracy, tiers: int = 5) -> Tensor:
    """Tier of each architecture: LongTensor[N], 0 = the best accuracies. The architectures are sorted by accuracy,
    best first (ties in input order), and cut into ``tiers`` consecutive groups whose sizes differ by at most one
    (the first ones larger). Raises ValueError when there are fewer architectures than tiers."""
    accuracy = torch.as_tensor(accuracy, dtype=torch.float64).flatten()
    if tiers < 1:
        raise ValueError(f"rdnas.predictors.nar: tiers must be >= 1, got {tiers}")
    if len(accuracy) < tiers:
        raise ValueError(f"rdnas.predictors.nar: too few architectures for the tiers: {len(accuracy)} training "
                         f"architectures cannot fill {tiers} tiers (need at least {tiers})")
    order = torch.sort(-accuracy, stable=True).indices
    assignment = torch.empty(len(accuracy), dtype=torch.long)
    for tier, members in enumerate(torch.tensor_split(order, tiers)):
        assignment[members] = tier
    return assignment


def sinusoidal_positions(length: int, width: int) -> Tensor:
    """The transformer's sinusoidal position table: Tensor[length, width] (sin on even, cos on odd dimensions)."""
    position = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, width, 2, dtype=torch.float64) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)[:, : width // 2]
    return table.float()


class NARModel(nn.Module):
    """The network (module docstring). ``tokens``: Tensor[B, L, token_size]."""

    def __init__(self, num_tokens: int, token_size: int = 16, tiers: int = 5, d_model: int = 128, layers: int = 6,
                 heads: int = 4, ffn: int = 512, dropout: float = 0.1, tier_hidden: int = 256,
                 score_hidden: int = 1024):
        super().__init__()
        self.num_tokens, self.d_model, self.tiers = num_tokens, d_model, tiers
        self.token_projection = nn.Linear(token_size, d_model)
        self.bucket_projection = nn.Linear(d_model, d_model)
        self.register_buffer("positions", sinusoidal_positions(num_tokens, d_model), persistent=False)
        self.encoder_norm = nn.LayerNorm(d_model, eps=1e-6)
        self.decoder_norm = nn.LayerNorm(d_model, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.encoder = nn.ModuleList(nn.TransformerEncoderLayer(d_model, heads, ffn, dropout, batch_first=True)
                                     for _ in range(layers))
        self.decoder = nn.ModuleList(nn.TransformerDecoderLayer(d_model, heads, ffn, dropout, batch_first=True)
                                     for _ in range(layers))
        self.tier_head = nn.Sequential(nn.Linear(num_tokens * d_model, tier_hidden, bias=False), nn.ReLU(),
                                       nn.Linear(tier_hidden, tiers))
        self.score_head = nn.Sequential(nn.Linear(num_tokens * d_model, score_hidden), nn.ReLU(),
                                        nn.Linear(score_hidden, 1))
        self.register_buffer("buckets", torch.zeros(tiers, num_tokens, d_model))  # frozen after fit; saved
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)

    def encode(self, tokens: Tensor) -> Tensor:
        """Tensor[B, L, token_size] -> Tensor[B, L, d_model]."""
        hidden = self.encoder_norm(self.token_projection(self.dropout(tokens)) + self.positions)
        for layer in self.encoder:
            hidden = layer(hidden)
        return hidden

    def score(self, encoding: Tensor) -> Tensor:
        """Tensor[B, L, d_model] -> Tensor[B]."""
        return self.score_head(encoding.flatten(1)).squeeze(1)

    def tier_logits(self, encoding: Tensor, buckets: Tensor | None = None) -> Tensor:
        """Tier logits, Tensor[B, tiers], from the encoding and the buckets (Tensor[tiers, L, d_model]; default the
        frozen ones). The decoder runs on every (tier, architecture) pair in one batch."""
        buckets = self.buckets if buckets is None else buckets
        batch, tiers = encoding.shape[0], buckets.shape[0]
        queries = self.decoder_norm(self.bucket_projection(self.dropout(buckets)) + self.positions)  # [T, L, d]
        hidden = queries.unsqueeze(1).expand(tiers, batch, -1, -1).reshape(tiers * batch, *queries.shape[1:])
        memory = encoding.unsqueeze(0).expand(tiers, -1, -1, -1).reshape(tiers * batch, *encoding.shape[1:])
        for layer in self.decoder:
            hidden = layer(hidden, memory)
        summed = hidden.view(tiers, batch, -1).sum(0)
        return self.tier_head(summed) * self.d_model**-0.5


@register_predictor
class NARPredictor(ModulePredictor):
    """The NAR tier ranker behind the predictor interface (module docstring). Options (saved with the model):
    ``tiers`` (5), ``d_model`` (128), ``layers`` (6), ``heads`` (4), ``ffn`` (512), ``dropout`` (0.1),
    ``tier_hidden`` (256), ``score_hidden`` (1024), ``epochs`` (55), ``batch_size`` (64; the authors' 128,
    :attr:`AUTHORS_BATCH_SIZE`), ``lr_mul`` (0.14; the authors' 0.07), ``warmup`` (30 steps), ``weight_decay``
    (0.01), ``tier_weight`` and ``rank_weight`` (1, 2: the loss is ``tier_weight * CE + rank_weight * pairwise``;
    ``tier_weight=0`` trains the encoder and score head on the ranking loss alone, an ablation without NAR's tiers:
    the decoder stays at its initialisation and ``predict_tiers`` means nothing then)."""

    name = "nar"
    MODEL_OPTIONS = {"tiers": 5, "d_model": 128, "layers": 6, "heads": 4, "ffn": 512, "dropout": 0.1,
                     "tier_hidden": 256, "score_hidden": 1024}
    # lr_mul and rank_weight tuned on NB201 (N = 78, training sets 100-102, tau against cifar10_valid_acc; the
    # reported protocol uses training sets 0-4 and cifar10_test_acc): the authors' 0.07 / 1 gave 0.503, 0.14 / 2
    # 0.547 (README, "Predictors"). batch_size likewise on the live cell (tiers off, sets 100-101): 128 -> 64 gave
    # 0.707 -> 0.729 at N = 156 and 0.773 -> 0.791 at N = 781 for the same epochs and time (110 epochs of 128: 0.737
    # and 0.803 on set 100, at twice the time).
    AUTHORS_BATCH_SIZE = 128
    """The NAR authors' batch size: the README's rows on the authors' input (benchmarks/predictor_experiments.py's
    ``nar``, ``nar+zc``, ...; search_experiments.py's ``sampling+nar``; learned_teacher_experiment.py's ``nar``)
    were measured at it, so those scripts pass ``batch_size=AUTHORS_BATCH_SIZE`` to reproduce them."""
    TRAIN_OPTIONS = {"epochs": 55, "batch_size": 64, "lr_mul": 0.14, "warmup": 30, "weight_decay": 0.01,
                     "tier_weight": 1.0, "rank_weight": 2.0}

    def __init__(self, space="nb201", features=None, seed: int = 0, progress: bool = False, **options):
        unknown = set(options) - set(self.MODEL_OPTIONS) - set(self.TRAIN_OPTIONS)
        if unknown:
            raise ValueError(f"rdnas.predictors.nar: unknown option(s) {sorted(unknown)}; options: "
                             f"{sorted({**self.MODEL_OPTIONS, **self.TRAIN_OPTIONS})}")
        super().__init__(space, features, seed, progress, **{**self.MODEL_OPTIONS, **self.TRAIN_OPTIONS, **options})
        self.model: NARModel | None = None

    def _build(self) -> NARModel:
        model_options = {key: self.options[key] for key in self.MODEL_OPTIONS}
        return NARModel(self.features.num_tokens, **model_options)

    def _fit(self, archs: Tensor, accuracy: Tensor) -> None:
        from tqdm import tqdm

        from rdnas.ops import pairwise_margin_rank_loss

        options = self.options
        tiers = tier_assignment(accuracy, options["tiers"])
        tokens = self.features.tokens(archs)
        target = accuracy.float()
        model = self.model = self._build()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1.0, betas=(0.9, 0.99), eps=1e-9,
                                      weight_decay=options["weight_decay"])
        scale = options["lr_mul"] * options["d_model"] ** -0.5
        warmup = options["warmup"]
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: scale * min((step + 1) ** -0.5, (step + 1) * warmup**-1.5))
        generator = torch.Generator().manual_seed(self.seed)
        previous = self._tier_means(tokens, tiers)  # before the first epoch: the initial encoder's means
        epochs = tqdm(range(options["epochs"]), desc="nar fit", unit="epoch", disable=not self.progress)
        for _ in epochs:
            model.train()
            sums = torch.zeros_like(previous)
            counts = torch.zeros(options["tiers"])
            for batch in torch.randperm(len(archs), generator=generator).split(options["batch_size"]):
                seen = (counts > 0).view(-1, 1, 1)
                buckets = torch.where(seen, sums / counts.clamp_min(1).view(-1, 1, 1), previous)
                encoding = model.encode(tokens[batch])
                loss = options["rank_weight"] * pairwise_margin_rank_loss(model.score(encoding), target[batch],
                                                                          loss="logistic")
                if options["tier_weight"]:  # 0: the ranking loss alone (the decoder, 5/6 of the cost, is skipped)
                    tier_loss = nn.functional.cross_entropy(model.tier_logits(encoding, buckets), tiers[batch])
                    loss = loss + options["tier_weight"] * tier_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                sums.index_add_(0, tiers[batch], encoding.detach())
                counts += torch.bincount(tiers[batch], minlength=options["tiers"]).float()
                epochs.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            seen = (counts > 0).view(-1, 1, 1)
            previous = torch.where(seen, sums / counts.clamp_min(1).view(-1, 1, 1), previous)
        model.buckets.copy_(self._tier_means(tokens, tiers))  # frozen: the final encoder, eval mode
        model.eval()

    @torch.no_grad()
    def _tier_means(self, tokens: Tensor, tiers: Tensor, batch_size: int = 512) -> Tensor:
        """Mean eval-mode encoding of each tier's architectures: Tensor[tiers, L, d_model]."""
        self.model.eval()
        sums = torch.zeros(self.options["tiers"], *self.model.positions.shape)
        for start in range(0, len(tokens), batch_size):
            sums.index_add_(0, tiers[start:start + batch_size], self.model.encode(tokens[start:start + batch_size]))
        counts = torch.bincount(tiers, minlength=self.options["tiers"]).clamp_min(1).float()
        return sums / counts.view(-1, 1, 1)

    def _predict(self, archs: Tensor) -> Tensor:
        self.model.eval()
        return self.model.score(self.model.encode(self.features.tokens(archs)))

    @torch.no_grad()
    def predict_tiers(self, archs, batch_size: int = 256) -> Tensor:
        """Tier probabilities through the frozen buckets: float32 Tensor[K, tiers] (column 0 = best tier)."""
        if not self.fitted:
            raise RuntimeError("rdnas.predictors.nar: predict_tiers before fit (or load)")
        archs = self.space.validate(archs)
        self.model.eval()
        parts = [self.model.tier_logits(self.model.encode(self.features.tokens(archs[start:start + batch_size])))
                 for start in range(0, len(archs), batch_size)]
        return torch.cat(parts).softmax(-1)
