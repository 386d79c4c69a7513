"""The methods DaSS is compared with, run on a KD benchmark (issue 26, section 3); :mod:`rdnas.kd.evaluation`
measures what they give.

A *result* is the scores one job gives the students of the tasks it covers, with their architecture strings (read
back by architecture, never by position):

- :func:`fixed_scores` (one task): every seed-free baseline (:mod:`rdnas.kd.baselines`): FLOPs, params, the
  zero-cost proxies on the task's minibatch, the training-free KD signals;
- :func:`seeded_scores` (one method, one meta-training seed, every judged task): DaSS, its ablations (no
  adaptation; without S / T / A; the random-init student embedding), DaSS trained on no-KD (CE) labels, the
  MetaD2A-style dataset-conditioned predictor, the task-agnostic trees and MLP on the pooled meta-train KD labels;
- :func:`model_scores`: a DaSS model file (``rdnas dass fit``) in place of meta-training one.

:func:`cached_job` keeps each job's result in a file (:func:`job_path`) and reads it back instead of running the
job again, so a long evaluation never loses a finished job.
"""

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from rdnas.kd import baselines

DASS_VARIANTS = {
    "dass": {},
    "dass-no-adapt": {"adapt": False},
    "dass-without-s": {"use_student": False},
    "dass-without-t": {"use_teacher": False},
    "dass-without-a": {"use_arch": False},
    "dass-random-embedding": {"embedding": "random"},
    "dass-ce": {"label": "ce"},
}
"""DaSS and the variants meta-trained like it: :func:`rdnas.predictors.dass.fit` options."""
ABLATIONS = ("dass-no-adapt", "dass-without-s", "dass-without-t", "dass-without-a", "dass-random-embedding")
LEARNED_BASELINES = ("dass-ce", "metad2a", "gbt", "mlp")
SEEDED_METHODS = ("dass",) + ABLATIONS + LEARNED_BASELINES
"""Every method that is meta-trained (one result per meta-training seed)."""
REFERENCE = "dass"
KINDS = {"dass": "DaSS", **{m: "ablation" for m in ABLATIONS}, "dass-ce": "learned baseline",
         "metad2a": "learned baseline", "gbt": "learned baseline", "mlp": "learned baseline",
         **{m: "cost" for m in baselines.COST_BASELINES}, **{m: "KD signal" for m in baselines.KD_SIGNALS}}
SUMMARIES = {
    "dass": "DaSS: S, T, A, Meta-SGD step on the teacher",
    "dass-no-adapt": "DaSS without the teacher-guided step",
    "dass-without-s": "DaSS without the student's embedding S",
    "dass-without-t": "DaSS without the teacher's embedding T",
    "dass-without-a": "DaSS without the architecture encoding A",
    "dass-random-embedding": "DaSS with a randomly initialised student's embedding as S",
    "dass-ce": "DaSS meta-trained on no-KD (CE) labels",
    "metad2a": "MetaD2A-style: architecture + set encoding of the images, no teacher",
    "gbt": "trees on the architecture, pooled meta-train KD labels",
    "mlp": "MLP on the architecture, pooled meta-train KD labels",
    "flops": "FLOPs", "params": "parameters",
    "zero_shot_acc": "remapped student's zero-shot accuracy, training images",
    "neg_kl": "-KL(teacher || remapped student), training images",
    "map_cosine": "cosine of student and teacher probe maps",
}


@dataclass(frozen=True)
class FitSettings:
    """How the meta-trained methods are trained: DaSS's defaults (1000 episodes of one task, 50 query students,
    Adam 5e-4, 256-feature encoders, model kept on meta-valid Spearman every 50 episodes); ``per_class`` images of
    each class for the dataset-conditioned predictor."""

    episodes: int = 1000
    query: int = 50
    width: int = 256
    eval_every: int = 50
    lr: float = 5e-4
    per_class: int = 5

    def to_dict(self) -> dict:
        return asdict(self)


class EvaluationBench:
    """A KD benchmark folder (``rdnas dass bench``) read for the evaluation: ``kd`` / ``ce`` ({task: TaskInputs}
    labelled with the KD / CE validation accuracy; ``ce`` None when the build has no ``ce`` regime), ``specs``
    ({task: TaskSpec}), ``space``, ``runs`` (every finished run), ``judged`` (the names of the ``split`` tasks,
    in the benchmark's order), and the tasks' data, teachers and embeddings on demand."""

    def __init__(self, folder, split: str = "meta-test", channels: int | None = None):
        import csv

        from rdnas.kd.bench import read_bench_tasks, read_runs
        from rdnas.predictors import dass
        from rdnas.spaces import get_space

        self.folder = Path(folder)
        self.split = split
        self.kd, self.info = dass.read_bench(folder, "kd", channels)
        with open(self.folder / "kdbench.csv", newline="") as handle:
            header = next(csv.reader(handle), [])
        self.ce = dass.read_bench(folder, "ce", self.info["channels"])[0] if "ce_valid_acc" in header else None
        self.specs = {t.name: t for t in read_bench_tasks(folder).tasks}
        self.space = get_space(self.info["space"])
        self.runs = read_runs(folder)
        self.judged = [name for name, task in self.kd.items() if task.split == split]
        if not self.judged:
            raise ValueError(f"{folder} has no {split} task with KD labels (kdbench.csv and embeddings.pt)")
        self._data, self._embeddings = {}, None

    @property
    def digest(self) -> str:
        """The first 16 hex digits of a SHA-256 over the folder's ``kdbench.csv`` (which students, which labels) and
        ``embeddings.pt`` (what the predictors read): a finished job made with other labels or other embeddings
        (e.g. a rebuilt teacher, a rewritten embeddings file) is refused."""
        import hashlib

        hasher = hashlib.sha256()
        for name in ("kdbench.csv", "embeddings.pt"):
            data = (self.folder / name).read_bytes()
            hasher.update(f"{name}:{len(data)}:".encode())
            hasher.update(data)
        return hasher.hexdigest()[:16]

    def data(self, name: str):
        """The task's :class:`rdnas.kd.TaskData` (loaded once)."""
        if name not in self._data:
            self._data[name] = self.specs[name].data()
        return self._data[name]

    def embeddings(self, name: str) -> dict:
        """The task's entry of ``embeddings.pt``."""
        from rdnas.kd.bench import read_embeddings

        if self._embeddings is None:
            self._embeddings = read_embeddings(self.folder / "embeddings.pt")
        return self._embeddings["tasks"][name]

    def teacher(self, name: str):
        """The task's teacher (``OUT/teachers/<task>.pt``), or None where the folder has none.

        Raises ValueError when the file is not the teacher the benchmark was built with (its digest is not the
        one ``embeddings.pt`` records): e.g. a teacher rebuilt from its recipe on another CPU."""
        from rdnas.kd.bench import teacher_path
        from rdnas.kd.teacher import load_teacher

        path = teacher_path(self.folder, self.specs[name])
        if not path.exists():
            return None
        teacher = load_teacher(path, self.space.name)
        recorded, digest = self.embeddings(name).get("teacher_digest"), teacher.digest()
        if recorded is not None and digest != recorded:
            raise ValueError(f"{path} is teacher {digest}, but the benchmark {self.folder} was built with "
                             f"teacher {recorded} (its embeddings.pt); a teacher rebuilt from its recipe on another "
                             "CPU or thread count is another teacher: restore the build's teacher, or move the file "
                             "away to score without the training-free KD signals")
        return teacher

    def truth(self, name: str) -> dict:
        """{architecture string: KD validation accuracy (%, mean over seeds)} of the task's students."""
        task = self.kd[name]
        return dict(zip(task.archs, (100.0 * task.labels).tolist()))


def _entry(archs, scores) -> dict:
    scores = torch.as_tensor(scores, dtype=torch.float64).flatten()
    if len(scores) != len(archs):
        raise ValueError(f"rdnas.kd.methods: {len(archs)} students but {len(scores)} scores")
    return {"archs": list(archs), "scores": [float(v) for v in scores]}


# -- scores -------------------------------------------------------------------------------------------------------
def fixed_scores(bench: EvaluationBench, name: str, proxies=None) -> dict:
    """The seed-free baselines' scores of task ``name``'s students: ``{"kind": "fixed", "task", "archs",
    "scores": {method: [K floats]}, "skipped": {method: why}}`` with the cost baselines, the zero-cost proxies
    ``proxies`` (default every registered one, :func:`rdnas.kd.baselines.proxy_names`; an empty list: none) and,
    where the folder holds the task's teacher, the training-free KD signals (otherwise they are ``skipped``)."""
    task, spec = bench.kd[name], bench.specs[name]
    archs = bench.space.validate(task.archs)
    data = bench.data(name)
    scores = dict(baselines.cost_scores(bench.space, spec, archs, data.num_classes, data.in_channels))
    teacher, skipped = bench.teacher(name), {}
    if teacher is not None:
        embeddings = bench.embeddings(name)
        keep = [list(embeddings["archs"]).index(a) for a in task.archs]
        embeddings = {**embeddings, "archs": list(task.archs), "students": embeddings["students"][keep]}
        scores.update(baselines.kd_signal_scores(teacher, spec, archs, data, embeddings))
    else:  # e.g. a shipped benchmark (teachers are rebuilt from their recipe, not shipped)
        from rdnas.kd.bench import teacher_path

        skipped = {signal: f"no teacher file {teacher_path(bench.folder, spec)}" for signal in baselines.KD_SIGNALS}
    names = baselines.proxy_names() if proxies is None else tuple(proxies)
    if names:
        scores.update(baselines.proxy_scores(bench.space, spec, archs, data, names))
    return {"kind": "fixed", "task": name, "archs": list(task.archs), "skipped": skipped,
            "scores": {method: [float(v) for v in values] for method, values in scores.items()}}


def seeded_scores(bench: EvaluationBench, method: str, seed: int, settings: FitSettings = FitSettings(),
                  progress: bool = False) -> dict:
    """One meta-trained method (:data:`SEEDED_METHODS`) trained with ``seed`` and its scores of every judged
    task's students: ``{"kind": "seeded", "method", "seed", "settings", "fit", "tasks": {task: {"archs",
    "scores"}}}``. The meta-train / meta-valid tasks of the benchmark train it; the judged tasks never do."""
    if method not in SEEDED_METHODS:
        raise ValueError(f"rdnas.kd.methods: unknown method {method!r}; meta-trained methods: "
                         f"{', '.join(SEEDED_METHODS)}")
    tasks, fit = {}, {}
    if method in DASS_VARIANTS:
        from rdnas.predictors import dass

        options = DASS_VARIANTS[method]
        if options.get("label", "kd") == "ce" and bench.ce is None:
            raise ValueError(f"{bench.folder}: {method} needs CE labels, and kdbench.csv has no ce_valid_acc column "
                             "(build it with --regimes kd,ce)")
        train = bench.ce if options.get("label", "kd") == "ce" else bench.kd
        adapt, embedding = options.get("adapt", True), options.get("embedding", "remap")
        net = {k: options.get(k, True) for k in ("use_student", "use_teacher", "use_arch")}
        model, report = dass.fit(train, bench.space, bench.info["channels"], seed=seed, episodes=settings.episodes,
                                 query=settings.query, lr=settings.lr, eval_every=settings.eval_every, adapt=adapt,
                                 embedding=embedding, progress=progress, width=settings.width, **net)
        for name in bench.judged:
            tasks[name] = _entry(bench.kd[name].archs, dass.predict_task(model, bench.kd[name], adapt, embedding))
        fit = {"best_episode": report["best_episode"], "best_valid_spearman": _finite(report["best_valid_spearman"])}
    elif method == "metad2a":
        dataset_tasks = [baselines.DatasetTask(name, t.split, bench.data(name), t.arch_features, t.labels)
                         for name, t in bench.kd.items() if t.split in ("meta-train", "meta-valid")]
        model, report = baselines.fit_dataset_conditioned(
            dataset_tasks, bench.kd[bench.judged[0]].arch_features.shape[1], seed=seed, episodes=settings.episodes,
            query=settings.query, lr=settings.lr, per_class=settings.per_class, eval_every=settings.eval_every,
            progress=progress, channels=max(bench.data(name).in_channels for name in bench.judged))
        for name in bench.judged:
            task = bench.kd[name]
            target = baselines.DatasetTask(name, task.split, bench.data(name), task.arch_features, None)
            tasks[name] = _entry(task.archs, baselines.predict_dataset_conditioned(model, target, settings.per_class))
        fit = {"best_episode": report["best_episode"], "best_valid_spearman": _finite(report["best_valid_spearman"])}
    else:
        train = [(bench.space.validate(t.archs), t.labels.double()) for t in bench.kd.values()
                 if t.split == "meta-train"]
        informative = any(len(set(labels.tolist())) > 1 for _, labels in train)
        fit = {"informative_tasks": sum(len(set(labels.tolist())) > 1 for _, labels in train)}
        for name in bench.judged:
            archs = bench.kd[name].archs
            if informative:
                scores = baselines.pooled_predictor_scores(method, bench.space, train, bench.space.validate(archs),
                                                           seed)
            else:  # every meta-train task's students tie: nothing to learn, a constant score (ranks nothing)
                scores = torch.zeros(len(archs), dtype=torch.float64)
            tasks[name] = _entry(archs, scores)
    return {"kind": "seeded", "method": method, "seed": seed, "settings": settings.to_dict(), "fit": fit,
            "tasks": tasks}


def model_scores(bench: EvaluationBench, model_path, method: str = REFERENCE) -> dict:
    """The scores of a DaSS model file (``rdnas dass fit``) as the result of ``method`` with seed "model"
    (adaptation and embedding as the model was trained); ValueError on a probe, space, image-size or student-family
    mismatch between the model and the judged tasks."""
    from rdnas.predictors import dass

    model, config = dass.load_model(model_path)
    if bench.info["probe_seed"] != config["probe_seed"] or bench.info["space"] != config["space"]:
        raise ValueError(f"{bench.folder}: embeddings of space {bench.info['space']} with probe_seed "
                         f"{bench.info['probe_seed']}, but {model_path} was trained on space {config['space']} with "
                         f"probe_seed {config['probe_seed']} (probe mismatch)")
    for name in bench.judged:  # as rdnas dass rank refuses a teacher of another image size
        side = list(bench.kd[name].teacher.shape[-2:])
        if side not in config["image_sides"]:
            raise ValueError(f"{bench.folder}: task {name} has {side[0]}x{side[1]} last-stage maps, but {model_path} "
                             f"was trained on {config['image_sides']} (probe mismatch: another image size)")
        student_options = bench.specs[name].student_options
        if config.get("student_options") is not None and config["student_options"] != student_options:
            raise ValueError(f"{bench.folder}: task {name}'s students have the network options {student_options}, "
                             f"but {model_path} was trained on students with {config['student_options']}")
    if bench.info["channels"] != config["channels"]:
        raise ValueError(f"{bench.folder}: read with maps of {bench.info['channels']} channels, but {model_path} takes "
                         f"{config['channels']} (read the bench with EvaluationBench(..., channels=the model's))")
    tasks = {}
    for name in bench.judged:
        task = bench.kd[name]
        tasks[name] = _entry(task.archs, dass.predict_task(model, task, config["adapt"], config["embedding"]))
    return {"kind": "seeded", "method": method, "seed": "model", "settings": {"model": str(model_path)},
            "fit": {"best_episode": config.get("best_episode")}, "tasks": tasks}


def job_path(folder, job: str, key) -> Path:
    """The result file of one job in ``folder``: ``baselines_<task>.json`` (``job`` "baselines", ``key`` the task)
    or ``<method>_seed<key>.json``."""
    return Path(folder) / (f"baselines_{key}.json" if job == "baselines" else f"{job}_seed{key}.json")


def run_job(bench: EvaluationBench, job: str, key, settings: FitSettings = FitSettings(), proxies=None,
            progress: bool = False) -> dict:
    """One job: ``("baselines", task)`` -> :func:`fixed_scores` (plus ``"proxies"``), ``(method, seed)`` ->
    :func:`seeded_scores`; the result records the benchmark's :attr:`EvaluationBench.digest`."""
    if job == "baselines":
        names = list(baselines.proxy_names() if proxies is None else proxies)
        result = {**fixed_scores(bench, key, names), "proxies": names}
    else:
        result = seeded_scores(bench, job, key, settings, progress)
    return {**result, "bench_digest": bench.digest}


def check_job(path, result: dict, digest: str, settings: FitSettings | None, proxies=None) -> None:
    """Refuses a finished job's result made with another benchmark (``digest``), other meta-training ``settings``
    or (a baselines job, unless ``proxies`` is None) other proxies: ValueError naming the file."""
    if result.get("bench_digest") != digest:
        raise ValueError(f"{path} was made with benchmark {result.get('bench_digest')} (its table and embeddings), "
                         f"this benchmark's is {digest}; use another results folder")
    if settings is not None and result["kind"] == "seeded" and result["settings"] != settings.to_dict():
        raise ValueError(f"{path} was meta-trained with {result['settings']}, now {settings.to_dict()}; use the same "
                         "options or another results folder")
    if proxies is not None and result["kind"] == "fixed" and result.get("proxies") != list(proxies):
        raise ValueError(f"{path} scored the proxies {result.get('proxies')}, now {list(proxies)}; use the same "
                         "proxies or another results folder")


def cached_job(folder, bench: EvaluationBench, job: str, key, settings: FitSettings = FitSettings(), proxies=None,
               progress: bool = False) -> tuple[dict, bool]:
    """:func:`run_job`, its result kept in :func:`job_path` (written atomically when the job ends) and read back
    instead of running it again (after :func:`check_job`): returns (result, whether it was read back)."""
    import json

    from rdnas.atomic_file import write_text_atomic

    path = job_path(folder, job, key)
    names = list(baselines.proxy_names() if proxies is None else proxies)
    if path.exists():
        result = json.loads(path.read_text())
        check_job(path, result, bench.digest, settings, names if job == "baselines" else None)
        return result, True
    result = run_job(bench, job, key, settings, names, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(result))
    return result, False


def _finite(value):
    return float(value) if value is not None and math.isfinite(value) else None
