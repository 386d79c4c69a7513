"""The baselines DaSS is judged against (issue 26, section 3): every other way to score the students of a task.

Each baseline gives, for one task and its K students, a float64 Tensor[K] of scores, higher = predicted better
(the same students, in the same order, as the KD labels it is compared with). They see the same inputs DaSS sees
or less:

- cost: :func:`cost_scores`, FLOPs and parameters of each student (the space's cost model);
- zero-cost proxies: :func:`proxy_scores`, every registered proxy of :mod:`rdnas.proxies` (synflow, snip,
  grad_norm, naswot, zen, ...) of each freshly initialised student on one minibatch of the task's training images
  (:func:`task_minibatch`), the published protocol;
- training-free KD signals: :func:`kd_signal_scores`, the remapped student's zero-shot accuracy and minus its KL
  divergence to the teacher, both on the task's training images (the validation labels are what the baselines
  are judged against), the cosine of its and the teacher's probe maps (:func:`training_free_signals`);
- task-agnostic predictors: :func:`pooled_predictor_scores`, rdnas's trees or MLP (:mod:`rdnas.predictors`) on the
  architecture alone, trained on the meta-train tasks' KD labels pooled (each task's labels standardised first,
  so that a task's difficulty is not learned as a property of its students);
- a MetaD2A-style predictor (:class:`DatasetConditionedPredictor`, :func:`fit_dataset_conditioned`): the
  architecture and a learned encoding of the dataset (a two-level DeepSets set encoder over a few images per
  class, as MetaD2A's set encoder), meta-trained on the meta-train tasks; it never sees the teacher.

The same DaSS meta-predictor trained on no-KD (cross-entropy) labels is :func:`rdnas.predictors.dass.fit` on a
benchmark read with ``label="ce"`` (:mod:`rdnas.kd.methods` runs it).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rdnas.kd.data import TaskData
from rdnas.kd.tasks import TaskSpec

COST_BASELINES = ("flops", "params")
KD_SIGNALS = ("zero_shot_acc", "neg_kl", "map_cosine")
POOLED_MODELS = ("gbt", "mlp")


def spearman_or_zero(predicted, truth) -> float:
    """Spearman's rho of two sequences, 0.0 where it is undefined (a constant sequence ranks nothing)."""
    from rdnas.rank import spearman_rho
    from rdnas.rank.metrics import UndefinedRankCorrelation

    try:
        return spearman_rho(predicted, truth)
    except UndefinedRankCorrelation:
        return 0.0


def proxy_names() -> tuple:
    """Every registered zero-cost proxy except the cost ones (flops, params: :func:`cost_scores`), sorted."""
    from rdnas.proxies import PROXIES

    return tuple(sorted(name for name in PROXIES if name not in COST_BASELINES))


def task_minibatch(data: TaskData, batch_size: int = 64, seed: int = 0):
    """One :class:`rdnas.proxies.Minibatch` of ``batch_size`` (at most all) training images of the task, drawn
    without replacement with ``torch.Generator().manual_seed(seed)``: inputs [B, C, S, S], targets [B]."""
    from rdnas.proxies import Minibatch

    count = min(batch_size, len(data.train_x))
    take = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(seed))[:count]
    return Minibatch(data.train_x[take].float(), data.train_y[take].long(), data.num_classes,
                     f"task training images ({count}, seed {seed})")


def _validated(space, archs) -> Tensor:
    from rdnas.spaces import get_space

    return get_space(space).validate(archs)


def cost_scores(space, spec: TaskSpec, archs, num_classes: int, in_channels: int) -> dict[str, Tensor]:
    """FLOPs and parameters (the space's cost model, :meth:`SearchSpace.cost`) of the students ``archs``
    (LongTensor[K, space.width]) at the task's image size and the students' network options:
    {"flops": float64 Tensor[K], "params": float64 Tensor[K]}. Higher = predicted better (larger networks)."""
    from rdnas.spaces import get_space

    space = get_space(space)
    cost = space.cost(_validated(space, archs), image_size=spec.image_size, num_classes=num_classes,
                      in_channels=in_channels, **spec.student_network_options())
    return {name: cost[name].double() for name in COST_BASELINES}


def proxy_scores(space, spec: TaskSpec, archs, data: TaskData, names=None, batch_size: int = 64,
                 seed: int = 0) -> dict[str, Tensor]:
    """Zero-cost proxies of the students ``archs`` (LongTensor[K, space.width]), each freshly initialised (the
    scoring supernet of :func:`rdnas.proxies.scoring_supernet`, default PyTorch initialisation, seed ``seed``, at
    the students' network options), on :func:`task_minibatch` of the task: {name: float64 Tensor[K]}.

    ``names``: proxies to score (default :func:`proxy_names`); snip, grad_norm, plain and fisher share one
    forward / backward per student."""
    from rdnas.proxies import PROXIES, get_proxy, scoring_supernet
    from rdnas.proxies.base import fused_path
    from rdnas.proxies.gradient import LOSS_GRADIENT_PROXIES
    from rdnas.proxies.network import loss_gradient_exported
    from rdnas.spaces import get_space

    names = proxy_names() if names is None else tuple(names)
    for name in names:
        get_proxy(name)  # an unknown name: the error lists the known ones
    archs = _validated(space, archs)
    options = spec.student_network_options()
    supernet = scoring_supernet(num_classes=data.num_classes, in_channels=data.in_channels, seed=seed,
                                space=get_space(space).name, **options)
    minibatch = task_minibatch(data, batch_size, seed)
    scores = {}
    # one exported network per student for the four loss-gradient proxies (a fused path scores them itself)
    shared = [] if fused_path(supernet) else [n for n in names if n in LOSS_GRADIENT_PROXIES]
    if shared:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            scores.update(loss_gradient_exported(supernet, archs, minibatch, shared))
    for name in names:
        if name not in scores:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                scores[name] = PROXIES[name].score(supernet, archs, minibatch).double()
    return {name: scores[name] for name in names}


def kd_signal_scores(teacher, spec: TaskSpec, archs, data: TaskData, embeddings: dict | None = None
                     ) -> dict[str, Tensor]:
    """The training-free KD signals of the students remapped from ``teacher``
    (:func:`training_free_signals`): {"zero_shot_acc", "neg_kl"[, "map_cosine" with the task's
    ``embeddings``]}, each float64 Tensor[K]. ``embeddings`` must list the same students in the same order
    (checked)."""
    from rdnas.spaces import get_space

    space = get_space(teacher.space)
    archs = _validated(space, archs)
    if embeddings is not None:
        names = [space.to_string(a) for a in archs]
        if list(embeddings["archs"]) != names:
            raise ValueError(f"rdnas.kd.baselines.kd_signal_scores: task {spec.name}: the embeddings list other "
                             "students (or another order) than archs")
    return training_free_signals(teacher, spec, archs, data, embeddings)


@torch.no_grad()
def training_free_signals(teacher, task: TaskSpec, archs: list, data=None, embeddings: dict | None = None,
                          batch_size: int = 500) -> dict:
    """Signals of each student remapped from ``teacher`` (:class:`rdnas.kd.Teacher`) that need no training, higher =
    predicted better: float64 Tensor[K] each, for ``archs`` (LongTensor[K, space.width]) of ``task`` (its
    :class:`rdnas.kd.TaskData` ``data``, loaded when None; ``embeddings``: the task's
    :func:`rdnas.kd.embeddings.task_embeddings`).

    - ``zero_shot_acc``: the remapped student's accuracy (%) on the task's training images before any training
      (eval-mode BN);
    - ``neg_kl``: minus the mean KL(softmax(z_t) || softmax(z_s)) over the training images;
    - ``map_cosine`` (with ``embeddings`` of the task): the cosine of the student's and the teacher's flattened
      last-stage probe maps (channels zero-padded to the teacher's).

    Only the training split is read: the validation split's labels are the KD labels the signals are judged
    against, and a baseline must not see them.
    """
    from rdnas.kd.embeddings import remapped_supernet
    from rdnas.kd.train import predict_logits
    from rdnas.spaces import get_space

    space = get_space(teacher.space)
    data = task.data() if data is None else data
    images, labels = data.train_x, data.train_y
    log_teacher = F.log_softmax(predict_logits(teacher.network, images, batch_size).double(), 1)
    supernet = remapped_supernet(teacher.network, space, **task.student_options)
    accuracy, neg_kl = [], []
    archs = space.validate(archs)
    stacked = getattr(supernet, "forward_stacked", None)
    if stacked is not None:  # every student's logits on each chunk of images in one batched pass
        every = torch.cat([stacked(images[start:start + batch_size], archs)
                           for start in range(0, len(images), batch_size)], dim=1)
    for k, arch in enumerate(archs):
        if stacked is not None:
            logits = every[k].double()
        else:
            logits = torch.cat([supernet(images[start:start + batch_size], arch)
                                for start in range(0, len(images), batch_size)]).double()
        accuracy.append(100.0 * float((logits.argmax(1) == labels).double().mean()))
        kl = F.kl_div(F.log_softmax(logits, 1), log_teacher, reduction="batchmean", log_target=True)
        neg_kl.append(-float(kl))
    signals = {"zero_shot_acc": torch.tensor(accuracy, dtype=torch.float64),
               "neg_kl": torch.tensor(neg_kl, dtype=torch.float64)}
    if embeddings is not None:
        students = embeddings["students"].flatten(1).double()
        teacher_map = embeddings["teacher"].flatten().double().unsqueeze(0)
        signals["map_cosine"] = F.cosine_similarity(students, teacher_map.expand_as(students), dim=1)
    return signals


def pooled_predictor_scores(model: str, space, train: list, archs, seed: int = 0) -> Tensor:
    """A task-agnostic predictor's scores of ``archs`` (LongTensor[K, space.width]): rdnas's ``model`` ("gbt" or
    "mlp", :func:`rdnas.predictors.get_predictor`, the space's architecture features, seed ``seed``) fitted on
    the pooled ``train`` = [(archs LongTensor[N_i, space.width], accuracy Tensor[N_i]), ...] of the meta-train
    tasks, each task's accuracies standardised (zero mean, unit standard deviation; a constant task is left
    out). Returns float64 Tensor[K]."""
    from rdnas.predictors import get_predictor

    if model not in POOLED_MODELS:
        raise ValueError(f"rdnas.kd.baselines: pooled model must be one of {', '.join(POOLED_MODELS)}, got {model!r}")
    xs, ys = [], []
    for task_archs, accuracy in train:
        accuracy = torch.as_tensor(accuracy, dtype=torch.float64)
        std = float(accuracy.std(unbiased=False)) if len(accuracy) > 1 else 0.0
        if std == 0.0:
            continue
        xs.append(_validated(space, task_archs))
        ys.append((accuracy - accuracy.mean()) / std)
    if not xs:
        raise ValueError("rdnas.kd.baselines.pooled_predictor_scores: no meta-train task whose students' accuracies "
                         "differ (nothing to learn from)")
    predictor = get_predictor(model)(space=space, seed=seed).fit(torch.cat(xs), torch.cat(ys))
    return predictor.predict(_validated(space, archs)).double()


# -- the MetaD2A-style dataset-conditioned predictor -------------------------------------------------------------
def dataset_sample(data: TaskData, per_class: int = 5, seed: int = 0, channels: int | None = None) -> Tensor:
    """A few training images of every class: [classes, per_class, channels, S, S] (each class's images drawn
    without replacement with ``torch.Generator().manual_seed(seed)``; a class with fewer images repeats them),
    channels zero-padded to ``channels`` (default: the data's)."""
    generator = torch.Generator().manual_seed(seed)
    channels = data.in_channels if channels is None else channels
    if data.in_channels > channels:
        raise ValueError(f"rdnas.kd.baselines.dataset_sample: images have {data.in_channels} channels, at most "
                         f"{channels} expected")
    groups = []
    for label in range(data.num_classes):
        rows = torch.nonzero(data.train_y == label).flatten()
        if not len(rows):
            raise ValueError(f"rdnas.kd.baselines.dataset_sample: class {label} has no training image")
        order = rows[torch.randperm(len(rows), generator=generator)]
        take = order[torch.arange(per_class) % len(order)]
        groups.append(data.train_x[take].float())
    images = torch.stack(groups)
    return F.pad(images, (0, 0, 0, 0, 0, channels - images.shape[2]))


class SetEncoder(nn.Module):
    """MetaD2A-style dataset encoding (two-level DeepSets): each image through a small conv encoder (conv 3x3 ->
    ReLU -> conv 3x3 stride 2 -> ReLU -> global average pool), the mean over a class's images through phi
    (Linear -> ReLU), the mean over the classes through rho (Linear -> ReLU): images [classes, n, C, S, S] ->
    [width]. Permutation-invariant in the images of a class and in the classes; any image side."""

    def __init__(self, channels: int, width: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 3, 1, 1)
        self.conv2 = nn.Conv2d(width, width, 3, 2, 1)
        self.phi = nn.Linear(width, width)
        self.rho = nn.Linear(width, width)

    def forward(self, images: Tensor) -> Tensor:
        classes, n = images.shape[:2]
        features = F.relu(self.conv2(F.relu(self.conv1(images.flatten(0, 1))))).mean(dim=(2, 3))
        per_class = F.relu(self.phi(features.view(classes, n, -1).mean(1)))
        return F.relu(self.rho(per_class.mean(0)))


class DatasetConditionedPredictor(nn.Module):
    """The MetaD2A-style baseline: ``forward(images [classes, n, C, S, S], arch_features [K, F]) -> predicted
    accuracy fractions [K]``: ``concat(SetEncoder(images), Linear(F, arch_width)(a)) -> Linear(., hidden) -> tanh
    -> Linear(hidden, 1)``. No teacher, no functional embedding: the dataset reaches it only through its images."""

    def __init__(self, channels: int, arch_features: int, width: int = 32, arch_width: int = 32, hidden: int = 64):
        super().__init__()
        self.dataset_encoder = SetEncoder(channels, width)
        self.arch_encoder = nn.Linear(arch_features, arch_width)
        self.hidden = nn.Linear(width + arch_width, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, images: Tensor, arch_features: Tensor) -> Tensor:
        d = self.dataset_encoder(images).unsqueeze(0).expand(len(arch_features), -1)
        return self.out(torch.tanh(self.hidden(torch.cat([d, self.arch_encoder(arch_features)], 1)))).squeeze(1)


class DatasetTask:
    """One task for :func:`fit_dataset_conditioned`: ``data`` (its :class:`TaskData`; images are drawn from its
    training split), ``arch_features`` [K, F] float32, ``labels`` [K] (accuracy fractions, or None), ``split``."""

    def __init__(self, name: str, split: str, data: TaskData, arch_features: Tensor, labels: Tensor | None):
        self.name, self.split, self.data = name, split, data
        self.arch_features, self.labels = arch_features, labels


def predict_dataset_conditioned(model: DatasetConditionedPredictor, task: DatasetTask, per_class: int = 5,
                                seed: int = 0) -> Tensor:
    """Predicted accuracy fractions [K] of the task's students, from a fixed image sample (``seed``)."""
    channels = model.dataset_encoder.conv1.in_channels
    with torch.no_grad():
        return model(dataset_sample(task.data, per_class, seed, channels), task.arch_features)


def fit_dataset_conditioned(tasks: list, arch_features: int, seed: int = 0, episodes: int = 1000, query: int = 50,
                            lr: float = 5e-4, per_class: int = 5, eval_every: int = 50, progress: bool = False,
                            channels: int | None = None) -> tuple[DatasetConditionedPredictor, dict]:
    """Meta-trains :class:`DatasetConditionedPredictor` as DaSS is meta-trained (:func:`rdnas.predictors.dass.fit`):
    each episode one meta-train task drawn uniformly, ``query`` of its students, a fresh sample of ``per_class``
    images per class, MSE on the accuracy fractions, Adam (lr 5e-4); every ``eval_every`` episodes the mean
    Spearman over the meta-valid tasks (fixed image samples) picks the model kept (the last one without them).

    Args:
        tasks (list of DatasetTask): with labels; ``split`` says meta-train / meta-valid (others are ignored).
        arch_features (int): the architecture encoding's width.
        channels (int, optional): the image channels the set encoder takes (images with fewer are zero-padded);
            default the most of ``tasks``: give the most of every task it will predict for (a 3-channel meta-test
            task after 1-channel meta-training).
    Returns (model, {"best_episode", "best_valid_spearman", "history"}).
    """
    train = [t for t in tasks if t.split == "meta-train"]
    valid = [t for t in tasks if t.split == "meta-valid"]
    if not train:
        raise ValueError("rdnas.kd.baselines.fit_dataset_conditioned: no meta-train task")
    channels = max([t.data.in_channels for t in tasks] + ([] if channels is None else [channels]))
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DatasetConditionedPredictor(channels, arch_features)

    def valid_spearman() -> float:
        return sum(spearman_or_zero(predict_dataset_conditioned(model, t, per_class).tolist(),
                                    t.labels.tolist()) for t in valid) / len(valid)

    def one_episode() -> Tensor:
        task = train[int(torch.randint(len(train), (1,), generator=generator))]
        index = torch.randperm(len(task.labels), generator=generator)[:query]
        draw = int(torch.randint(2 ** 31 - 1, (1,), generator=generator))
        images = dataset_sample(task.data, per_class, draw, channels)
        return F.mse_loss(model(images, task.arch_features[index]), task.labels[index])

    from rdnas.predictors.dass import run_episodes

    return model, run_episodes(model, one_episode, valid_spearman if valid else None, episodes, lr, eval_every,
                               progress, "meta-training (dataset-conditioned)")
