"""DaSS (Lee, An, Kim, Hwang, ICLR 2023): a meta-predictor of the accuracy a student reaches when it is trained
with knowledge distillation from a task's teacher, adapted to the task through the teacher alone.

Inputs of one student on one task (:mod:`rdnas.kd.embeddings` computes them):

- S: the last-stage activation map of the remapped student on a fixed N(0, 1) probe, [C, H, W] (channels
  zero-padded to ``channels``), through a conv encoder (3x3 stride 2, ReLU, 3x3 stride 2, ReLU, global average
  pool) to ``width`` features;
- T: the teacher's map on the same probe through a second encoder of the same shape;
- A: the space's architecture encoding (``space.encode``, [F]) through a linear layer to ``arch_width`` features.

``concat(S, A, T) -> Linear(., 64) -> tanh -> Linear(64, 1)`` predicts the accuracy as a fraction (KD validation
accuracy / 100). Teacher-guided adaptation (Meta-SGD): before predicting on a task, one gradient step on the
task's single free label, the teacher itself (its own map as S and T, its architecture as A, its validation
accuracy as the label), with a learned step size per parameter (initialised to 0.005):
``theta' = theta - alpha * grad_theta MSE(f_theta(teacher), acc_teacher)``. Meta-training differentiates the query
loss (MSE on the task's students) through that step (second order) into theta and alpha.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

STEP_INIT = 0.005
"""Initial value of every per-parameter inner step size (DaSS's Meta-SGD)."""


class ConvEncoder(nn.Module):
    """conv 3x3 stride 2 -> ReLU -> conv 3x3 stride 2 -> ReLU -> global average pool: [B, C, H, W] -> [B, width]."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 3, 2, 1)
        self.conv2 = nn.Conv2d(width, width, 3, 2, 1)

    def forward(self, maps: Tensor) -> Tensor:
        """Activation maps [B, channels, H, W] -> features [B, width]."""
        return F.relu(self.conv2(F.relu(self.conv1(maps)))).mean(dim=(2, 3))


class DaSSNet(nn.Module):
    """The DaSS network (module docstring): ``forward(student_maps [B, channels, H, W], teacher_maps [B, channels,
    H, W], arch_features [B, arch_features]) -> predicted accuracy fraction [B]``.

    Args:
        channels (int): channels of the activation maps (maps with fewer are zero-padded by :func:`pad_channels`).
        arch_features (int): the space's encoding width (``space.encode(...).shape[1]``).
        width (int): each encoder's output features (DaSS: 256).
        arch_width (int): features of the linear architecture encoding.
        hidden (int): the head's hidden units (DaSS: 64).
        use_student, use_teacher, use_arch (bool): ablations: a left-out input is replaced by zeros.
    """

    def __init__(self, channels: int, arch_features: int, width: int = 256, arch_width: int = 32, hidden: int = 64,
                 use_student: bool = True, use_teacher: bool = True, use_arch: bool = True):
        super().__init__()
        self.channels = channels
        self.use = (use_student, use_arch, use_teacher)
        self.student_encoder = ConvEncoder(channels, width)
        self.teacher_encoder = ConvEncoder(channels, width)
        self.arch_encoder = nn.Linear(arch_features, arch_width)
        self.hidden = nn.Linear(2 * width + arch_width, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, student_maps: Tensor, teacher_maps: Tensor, arch_features: Tensor) -> Tensor:
        """S maps [B, channels, H, W], T maps [B, channels, H, W], A features [B, arch_features] -> [B]."""
        s = self.student_encoder(student_maps)
        a = self.arch_encoder(arch_features)
        t = self.teacher_encoder(teacher_maps)
        s, a, t = (x if keep else torch.zeros_like(x) for x, keep in zip((s, a, t), self.use))
        return self.out(torch.tanh(self.hidden(torch.cat([s, a, t], 1)))).squeeze(1)


def pad_channels(maps: Tensor, channels: int) -> Tensor:
    """Activation maps [B, C, H, W] with C <= ``channels`` zero-padded to [B, channels, H, W]; ValueError naming
    both counts when C is larger (a teacher wider than the predictor was built for)."""
    if maps.shape[1] > channels:
        raise ValueError(f"rdnas.predictors.dass: activation maps have {maps.shape[1]} channels, the predictor takes "
                         f"at most {channels} (build it with channels >= the widest teacher's last stage)")
    return F.pad(maps, (0, 0, 0, 0, 0, channels - maps.shape[1]))


class MetaSGD(nn.Module):
    """A :class:`DaSSNet` with one learned inner step size per parameter (Meta-SGD).

    ``adapt(support)`` returns the adapted parameters ``theta - alpha * grad MSE(f_theta(support))`` as a dict
    (differentiable into theta and alpha when ``create_graph``); ``predict(params, batch)`` runs the network with
    given parameters. A batch is a tuple (student_maps, teacher_maps, arch_features[, targets]).
    """

    def __init__(self, net: DaSSNet, step_init: float = STEP_INIT):
        super().__init__()
        self.net = net
        self.steps = nn.ParameterDict({name.replace(".", "__"): nn.Parameter(torch.full_like(p, step_init))
                                       for name, p in net.named_parameters()})

    def parameters_dict(self) -> dict:
        """The network's own parameters θ as {name: Tensor} (the step sizes are not among them)."""
        return dict(self.net.named_parameters())

    def predict(self, params: dict, student_maps: Tensor, teacher_maps: Tensor, arch_features: Tensor) -> Tensor:
        """Predicted accuracy fractions [B] with parameters ``params`` (a dict name -> Tensor)."""
        return functional_call(self.net, params, (student_maps, teacher_maps, arch_features))

    def support_loss(self, params: dict, support) -> Tensor:
        """MSE of the prediction on the support set (the teacher): support = (S [1, C, H, W], T, A [1, F], y [1])."""
        *inputs, target = support
        return F.mse_loss(self.predict(params, *inputs), target)

    def adapt(self, support, create_graph: bool = True, params: dict | None = None) -> dict:
        """One Meta-SGD step on ``support``: ``{name: theta - alpha_name * dL_support/dtheta}``."""
        params = self.parameters_dict() if params is None else params
        loss = self.support_loss(params, support)
        # allow_unused: an ablation's left-out encoder (use_student=False, ...) takes no part in the loss
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph, allow_unused=True)
        return {name: p if g is None else p - self.steps[name.replace(".", "__")] * g
                for (name, p), g in zip(params.items(), grads)}


def episode_loss(model: MetaSGD, support, query, adapt: bool = True) -> Tensor:
    """The outer loss of one task: MSE of the (adapted) predictions on the query students,
    query = (S [Q, C, H, W], T [Q, C, H, W], A [Q, F], y [Q])."""
    params = model.adapt(support) if adapt else model.parameters_dict()
    *inputs, target = query
    return F.mse_loss(model.predict(params, *inputs), target)


# -- meta-training, prediction, model files -----------------------------------------------------------------------
MODEL_KIND = "rdnas-dass-model"
LABELS = ("kd", "ce", "remap-ce")


class TaskInputs:
    """One task's inputs and labels as tensors: ``student`` / ``random`` [K, channels, H, W] (remapped / random
    students' maps), ``teacher`` [1, channels, H, W], ``arch_features`` [K, F], ``teacher_features`` [1, F],
    ``teacher_acc`` [1] and ``labels`` [K] (accuracy fractions; labels None where the bench has no row),
    ``archs`` (K strings), ``name``, ``split``."""

    def __init__(self, name, split, student, random, teacher, arch_features, teacher_features, teacher_acc, labels,
                 archs):
        self.name, self.split = name, split
        self.student, self.random, self.teacher = student, random, teacher
        self.arch_features, self.teacher_features = arch_features, teacher_features
        self.teacher_acc, self.labels, self.archs = teacher_acc, labels, archs

    def support(self) -> tuple:
        """The teacher as the single support example: (its map as S, its map as T, its features, its accuracy)."""
        return self.teacher, self.teacher, self.teacher_features, self.teacher_acc

    def query(self, index=None, embedding: str = "remap") -> tuple:
        """(S, T, A, y) of the students at ``index`` (all by default); ``embedding="random"`` takes the random
        students' maps as S (an ablation)."""
        index = torch.arange(len(self.archs)) if index is None else index
        maps = self.student if embedding == "remap" else self.random
        labels = None if self.labels is None else self.labels[index]
        return maps[index], self.teacher.expand(len(index), -1, -1, -1), self.arch_features[index], labels


def task_inputs(space, embeddings: dict, channels: int, labels: dict | None = None, name: str = "task",
                dtype=torch.float32) -> TaskInputs:
    """A :class:`TaskInputs` from one task's entry of an embeddings file (:func:`rdnas.kd.embeddings.task_embeddings`),
    maps zero-padded to ``channels``; ``labels``: {arch string: accuracy %} of every student (or None)."""
    from rdnas.spaces import get_space

    space = get_space(space)
    archs = list(embeddings["archs"])
    features = space.encode(space.validate(archs)).to(dtype)
    teacher_features = space.encode(space.validate([embeddings["teacher_arch"]])).to(dtype)
    y = None
    if labels is not None:
        missing = [a for a in archs if a not in labels]
        if missing:
            raise ValueError(f"task {name}: no label for student {missing[0]}")
        y = torch.tensor([labels[a] / 100.0 for a in archs], dtype=dtype)
    return TaskInputs(name, embeddings["split"], pad_channels(embeddings["students"], channels).to(dtype),
                      pad_channels(embeddings["random"], channels).to(dtype),
                      pad_channels(embeddings["teacher"].unsqueeze(0), channels).to(dtype), features,
                      teacher_features, torch.tensor([embeddings["teacher_valid_acc"] / 100.0], dtype=dtype), y, archs)


def read_bench(bench_dir, label: str = "kd", channels: int | None = None) -> tuple[dict, dict]:
    """Every task of a KD benchmark folder (``kdbench.csv`` + ``embeddings.pt``) as :class:`TaskInputs` labelled
    with the ``label`` regime's mean validation accuracy, keeping the students that have a table row: returns
    ({task name: TaskInputs}, info) with info = {"space", "probe_seed", "channels", "image_sides"}."""
    import csv
    from pathlib import Path

    from rdnas.kd.bench import read_embeddings

    if label not in LABELS:
        raise ValueError(f"rdnas.predictors.dass: label must be one of {', '.join(LABELS)}, got {label!r}")
    folder = Path(bench_dir)
    table_path = folder / "kdbench.csv"
    if not table_path.is_file() or not (folder / "embeddings.pt").is_file():
        raise ValueError(f"{folder} is not a KD benchmark folder (expected kdbench.csv and embeddings.pt, written by "
                         "rdnas dass bench)")
    column = f"{label.replace('-', '_')}_valid_acc"
    labels = {}
    with open(table_path, newline="") as handle:
        for row in csv.DictReader(handle):
            if column not in row:
                raise ValueError(f"{table_path} has no column {column} (build it with --regimes including {label})")
            labels.setdefault(row["task"], {})[row["arch_str"]] = float(row[column])
    embeddings = read_embeddings(folder / "embeddings.pt")
    widest = max(e["teacher"].shape[0] for e in embeddings["tasks"].values())
    channels = widest if channels is None else channels
    tasks = {}
    for name, entry in embeddings["tasks"].items():
        if name not in labels:
            continue
        keep = [k for k, a in enumerate(entry["archs"]) if a in labels[name]]
        entry = {**entry, "archs": [entry["archs"][k] for k in keep], "students": entry["students"][keep],
                 "random": entry["random"][keep]}
        tasks[name] = task_inputs(embeddings["space"], entry, channels, labels[name], name)
    sides = sorted({tuple(t.teacher.shape[-2:]) for t in tasks.values()})
    return tasks, {"space": embeddings["space"], "probe_seed": embeddings["probe_seed"], "channels": channels,
                   "image_sides": [list(s) for s in sides]}


def predict_task(model: MetaSGD, task: TaskInputs, adapt: bool = True, embedding: str = "remap") -> Tensor:
    """Predicted accuracy fractions [K] of every student of ``task``, after the teacher-guided step (``adapt``)."""
    params = model.adapt(task.support(), create_graph=False) if adapt else model.parameters_dict()
    s, t, a, _ = task.query(embedding=embedding)
    with torch.no_grad():
        return model.predict({k: v.detach() for k, v in params.items()}, s, t, a)


def fit(tasks: dict, space, channels: int, seed: int = 0, episodes: int = 1000, query: int = 50, lr: float = 5e-4,
        eval_every: int = 50, adapt: bool = True, embedding: str = "remap", progress: bool = False,
        checkpoint=None, checkpoint_every: int = 50, max_new_episodes: int | None = None,
        settings: dict | None = None, **net_options) -> tuple[MetaSGD, dict]:
    """Meta-trains DaSS: each episode one meta-train task (uniformly at random), ``query`` of its students
    (without replacement), the outer loss through the teacher-guided step, Adam (lr 5e-4) on the weights and the
    step sizes. Every ``eval_every`` episodes (and at the end) the mean Spearman over the meta-valid tasks is
    measured and the best model kept (the last one when there is no meta-valid task).

    Args:
        tasks ({name: TaskInputs}): from :func:`read_bench`; their ``split`` says meta-train / meta-valid.
        space: the space (its ``encode`` width sizes the architecture input).
        channels (int): the maps' channels. seed (int): initialisation and episode draws.
        adapt (bool): the teacher-guided step (False: the no-adaptation ablation).
        embedding (str): "remap" (DaSS) or "random" (randomly initialised students' maps,
            :func:`rdnas.kd.embeddings.random_supernet`: an ablation).
        checkpoint (path, optional): resumable meta-training (:func:`run_episodes`): the state is saved there
            every ``checkpoint_every`` episodes and at the end, and a run started with an existing checkpoint of the
            same settings continues from it, ending with exactly the model of an uninterrupted run.
        max_new_episodes (int, optional): stop (checkpointed, ``report["finished"]`` False) after this many
            episodes of this call.
        settings (dict, optional): more settings that identify the run (e.g. the CLI's ``{"label": "kd"}``),
            compared on resume beside seed, query, adapt, embedding, the network options and a digest of ``tasks``.
        **net_options: :class:`DaSSNet` options (width, arch_width, hidden, use_student, use_teacher, use_arch).

    Returns (model, {"best_episode", "best_valid_spearman", "history": [(episode, loss, valid spearman)],
    "episode", "finished", "resumed_from"}).
    """
    import inspect

    from rdnas.kd.baselines import spearman_or_zero
    from rdnas.spaces import get_space

    train = [t for t in tasks.values() if t.split == "meta-train"]
    valid = [t for t in tasks.values() if t.split == "meta-valid"]
    if not train:
        raise ValueError("rdnas.predictors.dass.fit: no meta-train task with labels")
    space = get_space(space)
    features = space.encode(space.largest().unsqueeze(0)).shape[1]
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MetaSGD(DaSSNet(channels, features, **net_options))

    def valid_spearman() -> float:
        # a meta-valid task whose labels (or predictions) are all equal ranks nothing: it counts as 0
        return float(sum(spearman_or_zero(predict_task(model, t, adapt, embedding).tolist(), t.labels.tolist())
                         for t in valid) / len(valid))

    def one_episode() -> Tensor:
        task = train[int(torch.randint(len(train), (1,), generator=generator))]
        index = torch.randperm(len(task.archs), generator=generator)[:query]
        return episode_loss(model, task.support(), task.query(index, embedding), adapt)

    run = None
    if checkpoint is not None:
        defaults = {name: p.default for name, p in inspect.signature(DaSSNet).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        run = {"space": space.name, "channels": channels, "seed": seed, "query": query, "adapt": adapt,
               "embedding": embedding, **{**defaults, **net_options}, **(settings or {}),
               "tasks": tasks_digest(tasks)}
    return model, run_episodes(model, one_episode, valid_spearman if valid else None, episodes, lr, eval_every,
                               progress, "meta-training", checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                               settings=run, generators=(generator,), max_new_episodes=max_new_episodes)


def tasks_digest(tasks: dict) -> str:
    """A SHA-256 (hex) of every task's name, split, students, labels and maps: what meta-training reads of ``tasks``
    ({name: TaskInputs}); a checkpoint records it, so that a resume on other tasks is refused."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(tasks):
        task = tasks[name]
        digest.update(repr((name, task.split, list(task.archs))).encode())
        for value in (task.student, task.random, task.teacher, task.arch_features, task.teacher_features,
                      task.teacher_acc, task.labels):
            digest.update(b"none" if value is None else repr((str(value.dtype), list(value.shape))).encode())
            if value is not None:
                digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


CHECKPOINT_KIND = "rdnas-dass-fit-checkpoint"


class CheckpointMismatch(ValueError):
    """A meta-training checkpoint saved by a run of other settings: ``name`` is the first setting that differs,
    ``saved`` its value in the checkpoint and ``ours`` this run's (:func:`run_episodes` refuses to mix them)."""

    def __init__(self, path, name: str, saved, ours):
        self.path, self.name, self.saved, self.ours = path, name, saved, ours
        if name == "tasks":
            what = "on other meta-training tasks (their students, labels or maps differ)"
        else:
            what = f"with {name}={saved!r}, this run has {name}={ours!r}"
        super().__init__(f"the checkpoint {path} was saved by a meta-training run {what}; rerun with its settings to "
                         "resume it, or delete it to start afresh")


_MISSING = "<not set>"


def _rng_states(generators) -> dict:
    """The states of ``generators`` (torch.Generator) and of torch's, numpy's and Python's global generators, as
    plain data (tensors, numbers, lists) that ``torch.load(weights_only=True)`` reads back."""
    import random

    import numpy as np

    kind, keys, position, has_gauss, gauss = np.random.get_state()
    version, internal, python_gauss = random.getstate()
    return {"generators": [g.get_state() for g in generators], "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(gauss)],
            "python": [version, list(internal), python_gauss]}


def _set_rng_states(states: dict, generators) -> None:
    """Restores what :func:`_rng_states` saved."""
    import random

    import numpy as np

    for generator, state in zip(generators, states["generators"], strict=True):
        generator.set_state(state)
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    version, internal, python_gauss = states["python"]
    random.setstate((version, tuple(internal), python_gauss))


def run_episodes(model: nn.Module, episode_loss, valid_score, episodes: int, lr: float, eval_every: int,
                 progress: bool = False, description: str = "meta-training", checkpoint=None,
                 checkpoint_every: int = 50, settings: dict | None = None, generators=(),
                 max_new_episodes: int | None = None) -> dict:
    """Meta-training's loop, shared by DaSS and the meta-trained baselines: ``episodes`` Adam steps (``lr``) on
    ``episode_loss()`` (a scalar tensor; it draws its own episode); every ``eval_every`` episodes and at the end
    ``valid_score()`` (e.g. the mean meta-valid Spearman) picks the state ``model`` is left with, the last one
    when ``valid_score`` is None (no meta-valid tasks).

    Resumable with ``checkpoint`` (a file path): every ``checkpoint_every`` episodes, at the end and where
    ``max_new_episodes`` stops the call, the model, the optimizer, the states of ``generators`` (the
    torch.Generators the episodes draw from) and of torch's, numpy's and Python's global generators, the episode
    count, the history and the best meta-valid state so far are written there atomically. A call that finds the
    file continues from it (restoring those generators too), so a killed run, rerun, ends with exactly the model
    of an uninterrupted one. The file records ``settings`` (a dict of plain values that identify the run) with
    ``episodes``, ``lr`` and ``eval_every``; a checkpoint whose settings differ is refused
    (:class:`CheckpointMismatch` naming the first that differs), not mixed into this run.

    Returns {"best_episode", "best_valid_spearman" (nan without ``valid_score`` or where every score was NaN),
    "history": [(episode, loss, valid score)], "episode" (episodes done), "finished" (False where
    ``max_new_episodes`` stopped it first: the model is then left at its last state, not the best),
    "resumed_from" (the checkpoint's episode count, 0 for a fresh run)}.
    """
    from pathlib import Path

    from tqdm.auto import tqdm

    from rdnas.atomic_file import atomic_open

    for name, value in (("checkpoint_every", checkpoint_every), ("max_new_episodes", 1 if max_new_episodes is None else max_new_episodes)):
        if value < 1:
            raise ValueError(f"rdnas.predictors.dass.run_episodes: {name} must be a positive number of episodes, "
                             f"got {value}")
    generators = tuple(generators)
    settings = {"episodes": episodes, "lr": lr, "eval_every": eval_every, **(settings or {})}
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history, best, best_ranked, best_state, best_episode = [], float("-inf"), float("-inf"), None, 0
    done = 0
    if checkpoint is not None and Path(checkpoint).exists():
        from rdnas.kd.files import load_kinded_file

        saved = load_kinded_file(checkpoint, CHECKPOINT_KIND, "a DaSS meta-training checkpoint", "rdnas dass fit")
        for name in list(settings) + [n for n in saved["settings"] if n not in settings]:
            ours, theirs = settings.get(name, _MISSING), saved["settings"].get(name, _MISSING)
            if ours != theirs:
                raise CheckpointMismatch(checkpoint, name, theirs, ours)
        try:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            _set_rng_states(saved["rng"], generators)
        except (RuntimeError, ValueError, KeyError) as error:
            raise ValueError(f"the checkpoint {checkpoint} does not fit this meta-training run ({error})") from None
        done, history = saved["episode"], [tuple(h) for h in saved["history"]]
        best, best_ranked, best_state, best_episode = (saved["best"], saved["best_ranked"], saved["best_state"],
                                                       saved["best_episode"])
    resumed_from = done
    stop = episodes if max_new_episodes is None else min(episodes, done + max_new_episodes)

    def save(episode: int) -> None:
        state = {"kind": CHECKPOINT_KIND, "version": 1, "settings": settings, "episode": episode,
                 "model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": _rng_states(generators),
                 "history": [list(h) for h in history], "best": best, "best_ranked": best_ranked,
                 "best_state": best_state, "best_episode": best_episode}
        with atomic_open(checkpoint, "wb") as handle:
            torch.save(state, handle)

    for episode in tqdm(range(done + 1, stop + 1), desc=description, disable=not progress, initial=done,
                        total=episodes):
        loss = episode_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if episode % eval_every == 0 or episode == episodes:
            score = valid_score() if valid_score is not None else float("nan")
            history.append((episode, float(loss.detach()), score))
            ranked = score if score == score else float("-inf")  # a NaN score (diverged predictions) is the worst
            if valid_score is None or best_state is None or ranked > best_ranked:
                best, best_ranked, best_episode = score, ranked, episode
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        done = episode
        if checkpoint is not None and (episode % checkpoint_every == 0 or episode == stop):
            save(episode)
    finished = done == episodes
    if finished:
        model.load_state_dict(best_state)
    return {"best_episode": best_episode, "best_valid_spearman": best, "history": history, "episode": done,
            "finished": finished, "resumed_from": resumed_from}


def save_model(path, model: MetaSGD, config: dict) -> None:
    """Writes a DaSS model file atomically: ``{"kind", "version", "config", "state"}`` (``config``: the
    :class:`DaSSNet` arguments plus what the model was trained on: space, probe_seed, image_sides, label, ...)."""
    from rdnas.atomic_file import atomic_open

    with atomic_open(path, "wb") as handle:
        torch.save({"kind": MODEL_KIND, "version": 1, "config": config,
                    "state": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, handle)


NET_OPTIONS = ("channels", "arch_features", "width", "arch_width", "hidden", "use_student", "use_teacher", "use_arch")


def load_model(path) -> tuple[MetaSGD, dict]:
    """A model file of :func:`save_model`: (model, config); ValueError naming the file when it is not one."""
    from rdnas.kd.files import load_kinded_file

    payload = load_kinded_file(path, MODEL_KIND, "a DaSS model file", "rdnas dass fit")
    config = payload["config"]
    model = MetaSGD(DaSSNet(**{k: config[k] for k in NET_OPTIONS}))
    model.load_state_dict(payload["state"])
    return model, config


def predict_for_teacher(model: MetaSGD, config: dict, teacher, archs, adapt: bool = True, model_name: str = "the model",
                        teacher_name: str = "the teacher") -> tuple[list, Tensor]:
    """Predicted KD validation accuracy (%) of the students ``archs`` of a new task, given by its teacher alone.

    The model (from :func:`load_model`, with its ``config``) takes the teacher-guided step on the teacher (its own
    embedding and accuracy; skipped when ``adapt`` is False), then scores each student remapped from the teacher
    at the students' network options the model was trained on. The dataset reaches DaSS only through the teacher.

    Args:
        teacher (rdnas.kd.Teacher): the task's teacher (``rdnas dass teacher``).
        archs: LongTensor[K, space.width] or a list of K architectures of the model's space.
        model_name, teacher_name (str): how messages name the two files.

    Returns (K architecture strings, float32 Tensor[K] of predicted accuracies in %).
    Raises ValueError (probe mismatch) when the teacher's image size gives other map sides than the model's.
    """
    from rdnas.kd.embeddings import task_embeddings
    from rdnas.spaces import get_space

    space = get_space(config["space"])
    if config.get("student_options") is None:
        raise ValueError(f"{model_name} was meta-trained on tasks whose students have different network options "
                         f"(bench {config.get('bench')}), so it names no student family to remap from "
                         f"{teacher_name}; meta-train it on a benchmark of one student family")
    task = teacher.task_spec(config["student_options"])
    embeddings = task_embeddings(teacher, task, archs, config["probe_seed"],
                                 random_students=config["embedding"] == "random")
    side = list(embeddings["teacher"].shape[-2:])
    if side not in config["image_sides"]:
        raise ValueError(f"{teacher_name}: its task's image_size {task.image_size} gives {side[0]}x{side[1]} "
                         f"last-stage maps, but {model_name} was trained on {config['image_sides']} (probe "
                         "mismatch: use a teacher trained at the benchmark's image size)")
    try:
        inputs = task_inputs(space, embeddings, config["channels"], None, task.name)
    except ValueError as error:
        raise ValueError(f"{teacher_name}: {error}") from None
    return inputs.archs, 100.0 * predict_task(model, inputs, adapt=adapt, embedding=config["embedding"])
