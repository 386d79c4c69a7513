"""An MLP on the predictors' flat features, trained with the same fused pairwise logistic ranking loss as NAR
(``rdnas.ops.pairwise_margin_rank_loss(..., loss="logistic")``): the baseline that shows what NAR's transformer and
tiers add beyond the loss."""

import torch
from torch import Tensor, nn

from rdnas.predictors.base import ModulePredictor, register_predictor


@register_predictor
class MLPPredictor(ModulePredictor):
    """Options: ``hidden`` (256), ``layers`` (2 hidden layers), ``dropout`` (0.1), ``epochs`` (200),
    ``batch_size`` (128), ``lr`` (1e-3, AdamW, cosine to 0), ``weight_decay`` (1e-2)."""

    name = "mlp"
    DEFAULTS = {"hidden": 256, "layers": 2, "dropout": 0.1, "epochs": 200, "batch_size": 128, "lr": 1e-3,
                "weight_decay": 1e-2}

    def __init__(self, space="nb201", features=None, seed: int = 0, progress: bool = False, **options):
        unknown = set(options) - set(self.DEFAULTS)
        if unknown:
            raise ValueError(f"rdnas.predictors.mlp: unknown option(s) {sorted(unknown)}; options: "
                             f"{sorted(self.DEFAULTS)}")
        super().__init__(space, features, seed, progress, **{**self.DEFAULTS, **options})
        self.model: nn.Module | None = None

    def _build(self) -> nn.Module:
        width = self.features.flat(self.space.sample(1, torch.Generator().manual_seed(0))).shape[1]
        blocks, size = [], width
        for _ in range(self.options["layers"]):
            blocks += [nn.Linear(size, self.options["hidden"]), nn.ReLU(), nn.Dropout(self.options["dropout"])]
            size = self.options["hidden"]
        return nn.Sequential(*blocks, nn.Linear(size, 1))

    def _fit(self, archs: Tensor, accuracy: Tensor) -> None:
        from tqdm import tqdm

        from rdnas.ops import pairwise_margin_rank_loss

        options = self.options
        inputs, target = self.features.flat(archs), accuracy.float()
        model = self.model = self._build()
        optimizer = torch.optim.AdamW(model.parameters(), lr=options["lr"], weight_decay=options["weight_decay"])
        steps = options["epochs"] * -(-len(archs) // options["batch_size"])
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, steps))
        generator = torch.Generator().manual_seed(self.seed)
        model.train()
        epochs = tqdm(range(options["epochs"]), desc="mlp fit", unit="epoch", disable=not self.progress)
        for _ in epochs:
            for batch in torch.randperm(len(archs), generator=generator).split(options["batch_size"]):
                loss = pairwise_margin_rank_loss(model(inputs[batch]).squeeze(1), target[batch], loss="logistic")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
        model.eval()

    def _predict(self, archs: Tensor) -> Tensor:
        self.model.eval()
        return self.model(self.features.flat(archs)).squeeze(1)
