"""DaSS's search on a new task: the student a DaSS model predicts best under a FLOPs cap, KD-trained against two
picks from the same candidates, so that the predictor's worth shows in trained accuracy.

The task is given by its teacher (``rdnas dass teacher``: its file records the data spec, classes, split and
recipe). From N candidates (a seeded sample of the space) the ones whose FLOPs are at most the cap are eligible;
three students are picked among them:

- ``dass``: the highest predicted KD accuracy (:func:`rdnas.predictors.dass.predict_for_teacher`);
- ``random``: a FLOPs-matched random pick: drawn uniformly (seeded) among the other eligible candidates whose
  FLOPs are within ``tolerance`` (relative, default 10 %) of the DaSS pick's; the candidate nearest in FLOPs where
  none is;
- ``proxy``: the highest zero-cost proxy score (:mod:`rdnas.proxies`, default synflow) of the eligible candidates,
  at a freshly initialised supernet of the students' family, on a minibatch of the task's training images.

Each distinct pick is then KD-trained from its remapped start as the KD benchmark trains its students
(:func:`rdnas.kd.train_student`, teacher logits computed once, data order from the seed and the architecture) for
every seed. Finished runs are appended to a CSV journal (flushed and fsynced): a resumed search trains only what
is missing, and a journal of another teacher or recipe is refused.
"""

import csv
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rdnas.kd.teacher import Teacher
from rdnas.kd.train import StudentRecipe, teacher_logits, train_student

PICKS = ("dass", "random", "proxy")
JOURNAL_COLUMNS = ("teacher", "recipe", "arch_str", "seed", "valid_acc", "valid_loss", "train_loss", "seconds",
                   "cpu_seconds")


def student_costs(teacher: Teacher, archs, student_options: dict | None = None) -> dict:
    """The space's cost model of the students ``archs`` (LongTensor[K, space.width]) of ``teacher``'s task at
    its image size, classes and input channels, with the students' network options: dict of float64 Tensor[K]
    (``flops``, ``params``, ...)."""
    from rdnas.spaces import get_space

    space = get_space(teacher.space)
    task = teacher.task_spec(student_options)
    config = teacher.network.config
    return space.cost(space.validate(archs), image_size=task.image_size, num_classes=config["num_classes"],
                      in_channels=config["in_channels"], **task.student_network_options())


def proxy_scores(teacher: Teacher, archs, proxy: str = "synflow", student_options: dict | None = None, data=None,
                 batch_size: int = 64, seed: int = 0) -> Tensor:
    """Zero-cost proxy ``proxy`` of the students ``archs`` (LongTensor[K, space.width]), higher = better: float64
    Tensor[K]; the evaluation's proxy baseline (:func:`rdnas.kd.baselines.proxy_scores`) on the teacher's task: a
    supernet of the students' family freshly initialised from ``seed`` (the proxies' protocol: scores at
    initialisation), the minibatch ``batch_size`` training images of the task drawn with ``seed`` (the whole
    training split where it is smaller)."""
    from rdnas.kd import baselines

    task = teacher.task_spec(student_options)
    data = task.data() if data is None else data
    return baselines.proxy_scores(teacher.space, task, archs, data, [proxy], batch_size, seed)[proxy]


def flops_matched(flops: Tensor, target: int, generator: torch.Generator, tolerance: float = 0.1) -> int:
    """A random index other than ``target`` whose FLOPs are within ``tolerance`` (relative) of ``flops[target]``
    (uniform, from ``generator``); the nearest in FLOPs (lowest index on ties) where none is. ``flops``: Tensor[K],
    K >= 2."""
    if len(flops) < 2:
        raise ValueError("rdnas.kd.search.flops_matched: needs at least 2 candidates")
    flops = flops.double()
    distance = (flops - flops[target]).abs() / flops[target].clamp(min=1.0)
    distance[target] = float("inf")
    close = torch.nonzero(distance <= tolerance).flatten()
    if len(close):
        return int(close[int(torch.randint(len(close), (1,), generator=generator))])
    return int(torch.argmin(distance))


def choose(names: list, predicted: Tensor, proxy: Tensor, flops: Tensor, max_flops: float, seed: int = 0,
           tolerance: float = 0.1) -> dict:
    """The three picks (see the module docstring) among candidates ``names`` (K strings) with DaSS predictions,
    proxy scores and FLOPs (Tensor[K] each): ``{pick: index into names}``. ValueError when fewer than 2
    candidates are under ``max_flops``."""
    eligible = torch.nonzero(flops <= max_flops).flatten()
    if len(eligible) < 2:
        raise ValueError(f"--max-flops {max_flops:g}: {len(eligible)} of {len(names)} candidates are under the cap "
                         f"(the fewest FLOPs among them: {float(flops.min()):.4g}); raise the cap or sample more")
    generator = torch.Generator().manual_seed(seed)
    best = int(eligible[int(torch.argmax(predicted[eligible]))])
    matched = int(eligible[flops_matched(flops[eligible], int((eligible == best).nonzero()), generator, tolerance)])
    by_proxy = int(eligible[int(torch.argmax(proxy[eligible]))])
    return {"dass": best, "random": matched, "proxy": by_proxy}


def read_journal(path) -> list[dict]:
    """The finished runs of a search journal (an incomplete last line is not a run)."""
    from rdnas.kd.bench import read_run_rows

    path = Path(path)
    return read_run_rows(path, "a search run row") if path.exists() else []


def train_picks(teacher: Teacher, archs: list, seeds, recipe: StudentRecipe, journal, student_options=None,
                data=None, progress: bool = False) -> dict:
    """KD-trains each distinct architecture string of ``archs`` for every seed (remapped from ``teacher``, KD loss
    against its logits), appending each finished run to the CSV ``journal``; runs already there are read, not
    trained again. Returns ``{(arch string, seed): run row}``.

    Raises ValueError when the journal holds runs of another teacher or recipe (use another --out)."""
    from rdnas.kd.bench import cut_partial_line
    from rdnas.kd.data import flips_keep_labels
    from rdnas.kd.remap import remap
    from rdnas.minibench.build import network_seed
    from rdnas.spaces import get_space

    space = get_space(teacher.space)
    task = teacher.task_spec(student_options)
    journal = Path(journal)
    digest, recipe_text = teacher.digest(), json.dumps(recipe.to_dict(), sort_keys=True)
    done = {}
    for row in read_journal(journal):
        if row["teacher"] != digest or row["recipe"] != recipe_text:
            raise ValueError(f"{journal} holds runs of teacher {row['teacher']} with recipe {row['recipe']}, not of "
                             f"teacher {digest} with {recipe_text}; use another --out")
        done[(row["arch_str"], row["seed"])] = row
    todo = [(a, s) for a in dict.fromkeys(archs) for s in seeds if (a, s) not in done]
    if not todo:
        return done
    cut_partial_line(journal)  # a partial last line (killed mid-write)
    data = task.data() if data is None else data
    logits = teacher_logits(teacher.network, data.train_x)
    new_file = not journal.exists() or journal.stat().st_size == 0
    journal.parent.mkdir(parents=True, exist_ok=True)
    with open(journal, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=JOURNAL_COLUMNS)
        if new_file:
            writer.writeheader()
        for arch, seed in todo:
            code = space.from_string(arch)
            student = remap(teacher.network, code, space, **task.student_options).train()
            result = train_student(student, data.train_x, data.train_y, data.valid_x, data.valid_y, recipe,
                                   network_seed(seed, tuple(code.tolist()), space), logits,
                                   flip=flips_keep_labels(task.dataset))
            row = {"teacher": digest, "recipe": recipe_text, "arch_str": arch, "seed": seed,
                   **{k: result[k] for k in JOURNAL_COLUMNS[4:]}}
            writer.writerow(row)
            handle.flush()
            os.fsync(handle.fileno())
            done[(arch, seed)] = row
            if progress:
                print(f"rdnas dass search: {arch[:16]}... seed {seed}: {row['valid_acc']:.2f} %", flush=True)
    return done


def summary(values: list) -> dict:
    """``{"mean", "std", "values"}`` of per-seed accuracies (std over seeds, ddof 0)."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": [float(v) for v in values]}
