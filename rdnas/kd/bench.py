"""The KD mini-benchmark: students of every task trained with knowledge distillation from the task's teacher
(and without it), the ground truth DaSS is trained and judged on, plus the functional embeddings it reads.

A run is (task, architecture, seed, regime):

- ``kd``: the student remapped from the teacher (:func:`rdnas.kd.remap`), trained with :func:`rdnas.kd.kd_loss`
  against the teacher's logits (computed once per task and process);
- ``ce``: the student freshly initialised, trained with cross-entropy (the usual stand-alone accuracy);
- ``remap-ce``: the remapped student trained with cross-entropy (separates the remap's effect from the loss's).

Initial weights (``ce``) and data order come from :func:`rdnas.minibench.build.network_seed` of (seed,
architecture) alone, so the regimes of one (architecture, seed) see the same batches. Every finished run is
appended to ``OUT/runs.csv`` (``runs.<i>of<n>.csv`` for shard i of n), flushed and fsynced, so a killed build
loses at most the run in progress and a resume never trains a finished run again. Teachers are trained from
their task's recipe into ``OUT/teachers/<task>.pt`` (atomically) the first time a task needs one; a run of a
regime that uses the teacher records its teacher's digest, and a resume with another teacher for the same task is
refused (``ce`` runs use no teacher: their column reads ``-``, and they stay valid whatever the teacher).

``OUT/kdbench.csv`` (:func:`kd_table`) has one row per (task, architecture) with every seed of every regime:
``task, split, teacher, teacher_valid_acc, arch_str, <regime>_valid_acc, <regime>_valid_acc_std, ..., seeds``.
``OUT/embeddings.pt`` (:func:`write_embeddings`) holds, per task, the last-stage activation maps of a fixed N(0, 1)
probe through the teacher, the remapped students and randomly initialised students
(:func:`rdnas.kd.embeddings.task_embeddings`, each kind of student in one batched pass). :func:`ship` writes a finished
build as package data (``rdnas/kd/shipped/``, with a recipe JSON) and :func:`load_shipped` reads it back.
"""

import csv
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rdnas.atomic_file import atomic_open
from rdnas.kd.data import flips_keep_labels
from rdnas.kd.embeddings import task_embeddings
from rdnas.kd.files import load_kinded_file
from rdnas.kd.remap import remap
from rdnas.kd.tasks import TaskFile, TaskSpec, parse_tasks
from rdnas.kd.teacher import Teacher, load_teacher, save_teacher, train_teacher
from rdnas.kd.train import teacher_logits, train_student

REGIMES = ("kd", "ce", "remap-ce")
TEACHER_FREE_REGIMES = ("ce",)
"""Regimes whose runs never touch the teacher (a fresh student, cross-entropy): their ``teacher`` column is ``-``."""
NO_TEACHER = "-"
RUN_COLUMNS = ("task", "teacher", "arch_str", "seed", "regime", "valid_acc", "valid_loss", "train_loss", "seconds",
               "cpu_seconds")
BENCH_KIND = "rdnas-dass-kdbench"
EMBEDDINGS_KIND = "rdnas-dass-embeddings"


def check_regimes(regimes) -> tuple:
    """``regimes`` as a tuple of distinct names of :data:`REGIMES`; ValueError naming the bad one."""
    regimes = tuple(regimes)
    for regime in regimes:
        if regime not in REGIMES:
            raise ValueError(f"unknown regime {regime!r}; expected some of {', '.join(REGIMES)}")
    if not regimes or len(set(regimes)) != len(regimes):
        raise ValueError(f"regimes must be distinct and at least one, got {list(regimes)}")
    return regimes


JUDGED_SPLIT = "meta-test"
"""The split whose students the predictors are judged on: it always gets every seed of a build."""


def task_seeds(task: TaskSpec, seeds, train_seeds: int | None = None) -> list:
    """The seeds ``task``'s students train with in a build of ``seeds``: all of them on a meta-test task (its
    seed ceiling needs two or more); the first ``train_seeds`` of them on a meta-train or meta-valid task, whose
    labels only train and select the predictors (None: all of them). DaSS's own meta-training labels are single
    runs."""
    seeds = sorted(seeds)
    if train_seeds is None or task.split == JUDGED_SPLIT:
        return seeds
    return seeds[:train_seeds]


def check_train_seeds(train_seeds, seeds) -> None:
    """``train_seeds``: None, or an int in 1..len(seeds); ValueError naming it otherwise."""
    if train_seeds is None:
        return
    if isinstance(train_seeds, bool) or not isinstance(train_seeds, int) or not 1 <= train_seeds <= len(seeds):
        raise ValueError(f"train_seeds must be an int from 1 to the {len(seeds)} seeds, got {train_seeds!r}")


def teacher_path(out_dir, task: TaskSpec) -> Path:
    """Where a build keeps the teacher of ``task``: ``OUT/teachers/<task name>.pt``."""
    return Path(out_dir) / "teachers" / f"{task.name}.pt"


def task_teacher(out_dir, task: TaskSpec, space, data=None, progress: bool = False) -> Teacher:
    """The build's teacher of ``task``: read from :func:`teacher_path` (its task and recipe must be the task's),
    or trained from the task's recipe and saved there."""
    path = teacher_path(out_dir, task)
    if path.exists():
        teacher = load_teacher(path, space)
        if teacher.task != task.data_dict() or teacher.recipe != task.teacher:
            raise ValueError(f"{path} was trained for {teacher.task} with {teacher.recipe.to_dict()}, not for task "
                             f"{task.name!r} as the tasks file defines it; move it away or use another --out")
        return teacher
    if progress:
        print(f"rdnas dass bench: training the teacher of task {task.name} ({task.teacher.epochs} epochs)", flush=True)
    teacher = train_teacher(task, space, data)
    save_teacher(teacher, path)
    return teacher


def _complete_lines(path: Path) -> bytes:
    data = path.read_bytes()
    return data[:data.rfind(b"\n") + 1]


def cut_partial_line(path) -> None:
    """Cuts an incomplete last line (a process killed while appending it) off the CSV file ``path``, so that the
    next appended row starts on a line of its own; a missing file or one that ends in a newline is left as it is.
    """
    path = Path(path)
    if not path.exists():
        return
    complete = len(_complete_lines(path))
    if complete < path.stat().st_size:
        with open(path, "r+b") as handle:
            handle.truncate(complete)


def read_run_rows(path, what: str) -> list[dict]:
    """The complete rows of a file of student runs (a build's run file, a search journal), with ``seed`` an int
    and ``valid_acc``, ``valid_loss``, ``train_loss``, ``seconds``, ``cpu_seconds`` floats; an incomplete last line
    (a process killed while writing it) is not a row. A malformed row: ValueError naming the file, the line and
    ``what`` it is not (e.g. "a KD run row")."""
    path = Path(path)
    rows = list(csv.DictReader(_complete_lines(path).decode().splitlines()))
    for number, row in enumerate(rows, start=2):
        try:
            row["seed"] = int(row["seed"])
            for name in ("valid_acc", "valid_loss", "train_loss", "seconds", "cpu_seconds"):
                row[name] = float(row[name])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}:{number}: not {what} ({type(error).__name__}: {error})") from None
    return rows


def runs_files(out_dir) -> list[Path]:
    """Every run file of a build: ``runs.csv`` and the shards' ``runs.<i>of<n>.csv``."""
    return sorted(p for p in Path(out_dir).glob("runs*.csv") if p.name == "runs.csv" or p.name.startswith("runs."))


def read_runs(out_dir) -> list[dict]:
    """The finished runs of every run file of a build, each (task, architecture, seed, regime) once; an incomplete
    last line (a build killed while writing it) is not a run."""
    runs, seen = [], set()
    for path in runs_files(out_dir):
        for row in read_run_rows(path, "a KD run row"):
            key = (row["task"], row["arch_str"], row["seed"], row["regime"])
            if key not in seen:
                seen.add(key)
                runs.append(row)
    return runs


def _check_bench_file(out: Path, tasks: TaskFile) -> None:
    """``OUT/bench.json`` records the space, the students' recipe, the probe and every task; a resume may add
    tasks but not change one."""
    path = out / "bench.json"
    record = {"kind": BENCH_KIND, "version": 1,
              **{k: v for k, v in tasks.to_dict().items() if k not in ("kind", "version")}}
    if path.exists():
        saved = json.loads(path.read_text())
        for name in ("space", "student", "probe_seed"):
            if saved.get(name) != record[name]:
                raise ValueError(f"{out} was built with {name} {saved.get(name)!r}, not {record[name]!r}; use another "
                                 "--out or the same tasks file")
        old = {task["name"]: task for task in saved.get("tasks", [])}
        for task in record["tasks"]:
            if task["name"] in old and old[task["name"]] != task:
                raise ValueError(f"{out} was built with task {task['name']!r} defined as {old[task['name']]}, now "
                                 f"{task}; give the changed task a new name or use another --out")
        record["tasks"] = list(old.values()) + [t for t in record["tasks"] if t["name"] not in old]
    with atomic_open(path) as handle:
        handle.write(json.dumps(record, indent=2))


def read_bench_tasks(out_dir) -> TaskFile:
    """The tasks a build was made with (``OUT/bench.json``)."""
    path = Path(out_dir) / "bench.json"
    if not path.is_file():
        raise ValueError(f"{out_dir} is not a KD benchmark folder (no bench.json; built by rdnas dass bench)")
    values = json.loads(path.read_text())
    if values.get("kind") != BENCH_KIND:
        raise ValueError(f"{path}: kind {values.get('kind')!r}, expected {BENCH_KIND!r}")
    return parse_tasks({**values, "kind": "rdnas-dass-tasks"}, str(path))


def build(out_dir, tasks: TaskFile, archs: list, seeds: list, regimes=("kd", "ce"), shard=(0, 1),
          progress: bool = True, max_runs: int | None = None, device="cpu",
          train_seeds: int | None = None) -> list[dict]:
    """Trains every (task, architecture, seed, regime) run not yet in the build's run files; returns all runs.

    Args:
        out_dir: the build folder (created).
        tasks (TaskFile): the tasks, the space, the students' recipe.
        archs (list of architectures): the students of every task (LongTensor[K, space.width] or a list).
        seeds (list of int), regimes (names of :data:`REGIMES`).
        shard ((i, n)): train only the students at positions p with p % n == i of the (seed, task, architecture)
            order, every regime of each, appending to ``runs.<i>of<n>.csv``; every run file of the folder counts
            as done. Seed first: a build stopped halfway holds a whole first seed of every task, enough to fit and
            judge a predictor while the other seeds train. Each shard gets its share of every regime (regimes cost
            differently). A run's result does not depend on the order.
        max_runs (int, optional): stop after this many new runs (a time-boxed session; rerun to continue).
        device: where students train. A task whose remaining runs are all teacher-free
            (:data:`TEACHER_FREE_REGIMES`, e.g. ``regimes=("ce",)``) never loads, trains or checks its teacher.
        train_seeds (int, optional): the meta-train and meta-valid tasks' students train with the first
            ``train_seeds`` of ``seeds`` only (:func:`task_seeds`); default every seed.
    """
    from rdnas.minibench.build import network_seed
    from rdnas.spaces import get_space

    i, n = shard
    if not (isinstance(i, int) and isinstance(n, int) and 0 <= i < n):
        raise ValueError(f"rdnas.kd.bench.build: shard must be (i, n) with 0 <= i < n, got {shard!r}")
    regimes = check_regimes(regimes)
    check_train_seeds(train_seeds, seeds)
    space = get_space(tasks.space)
    archs = [tuple(a) for a in space.validate(archs).tolist()]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_bench_file(out, tasks)
    runs = read_runs(out)
    done = {(r["task"], r["arch_str"], r["seed"], r["regime"]) for r in runs}
    digests = {}
    for r in runs:
        if r["regime"] not in TEACHER_FREE_REGIMES:
            digests.setdefault(r["task"], r["teacher"])
    names = {a: space.to_string(torch.as_tensor(a)) for a in archs}
    order = [(task, a, s, regime) for s in seeds for task in tasks.tasks if s in task_seeds(task, seeds, train_seeds)
             for a in archs for regime in regimes]
    todo = [run for p, run in enumerate(order)
            if p // len(regimes) % n == i and (run[0].name, names[run[1]], run[2], run[3]) not in done]
    if max_runs is not None:
        todo = todo[:max_runs]
    runs_path = out / ("runs.csv" if n == 1 else f"runs.{i}of{n}.csv")
    new_file = not runs_path.exists()
    cut_partial_line(runs_path)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="training students", unit="run", disable=not progress)
    device = torch.device(device)
    with open(runs_path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RUN_COLUMNS)
        if new_file:
            writer.writeheader()
            handle.flush()
        current, data, teacher, logits = None, None, None, None
        # tasks whose remaining runs here all go without a teacher (e.g. --regimes ce) never load or train one
        taught = {task.name for task, _, _, regime in todo if regime not in TEACHER_FREE_REGIMES}
        for task, arch, seed, regime in todo:  # a task's runs are consecutive within a seed: its data loads once
            if task is not current:
                current, data, teacher, digest, logits = task, task.data(), None, NO_TEACHER, None
                if task.name in taught:
                    teacher = task_teacher(out, task, space, data, progress)
                    digest = teacher.digest()
                    if digests.setdefault(task.name, digest) != digest:
                        raise ValueError(f"task {task.name}: the runs in {out} were made with teacher "
                                         f"{digests[task.name]}, "
                                         f"but {teacher_path(out, task)} is teacher {digest}; restore that teacher "
                                         "or use another --out")
                    teacher.network.to(device)
                train = (data.train_x.to(device), data.train_y.to(device), data.valid_x.to(device),
                         data.valid_y.to(device))
            options = task.student_network_options()
            run_seed = network_seed(seed, arch, space)
            if regime == "ce":
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(run_seed)
                    student = _fresh(space, arch, data.num_classes, data.in_channels, options)
            else:
                student = remap(teacher.network, arch, space, **task.student_options)
            student = student.to(device).train()
            if regime == "kd" and logits is None:
                logits = teacher_logits(teacher.network, train[0])
            result = train_student(student, *train, tasks.student, run_seed, logits if regime == "kd" else None,
                                   flip=flips_keep_labels(task.dataset))
            used = NO_TEACHER if regime in TEACHER_FREE_REGIMES else digest
            row = {"task": task.name, "teacher": used, "arch_str": names[arch], "seed": seed, "regime": regime,
                   **result}
            writer.writerow(row)
            handle.flush()
            os.fsync(handle.fileno())
            runs.append(row)
            bar.update(1)
    bar.close()
    return runs


def _fresh(space, arch, num_classes: int, in_channels: int, options: dict) -> nn.Module:
    """A freshly initialised stand-alone network of ``arch`` (from torch's default generator)."""
    from rdnas.supernet import supernet_spec

    return supernet_spec(space).network(arch, num_classes=num_classes, in_channels=in_channels, **options)


def train_teachers(out_dir, tasks: TaskFile, shard=(0, 1), progress: bool = True) -> list[Teacher]:
    """Trains (or reads) the teachers of the tasks at positions t with t % n == i: run the n shards side by side
    before the student runs so that no teacher is trained twice."""
    i, n = shard
    return [task_teacher(out_dir, task, tasks.space, None, progress)
            for t, task in enumerate(tasks.tasks) if t % n == i]


def kd_table(runs: list[dict], tasks: TaskFile, seeds, regimes, train_seeds: int | None = None) -> list[dict]:
    """One row per (task, architecture) that has every seed of every regime (the task's seeds:
    :func:`task_seeds`): ``task``, ``split``, ``teacher`` (digest; ``-`` when every regime is teacher-free),
    ``arch_str``, ``<regime>_valid_acc`` (mean over seeds, %), ``<regime>_valid_acc_std``, ``seeds``; in the
    tasks' order, then the architectures' first appearance."""
    regimes = check_regimes(regimes)
    by_key = {}
    for r in runs:
        by_key.setdefault((r["task"], r["arch_str"]), {})[(r["regime"], r["seed"])] = r
    rows = []
    for task in tasks.tasks:
        seeds_of_task = task_seeds(task, seeds, train_seeds)
        for (name, arch), cells in by_key.items():
            if name != task.name or any((g, s) not in cells for g in regimes for s in seeds_of_task):
                continue
            used = [c["teacher"] for (g, _), c in cells.items() if g in regimes and g not in TEACHER_FREE_REGIMES]
            row = {"task": name, "split": task.split, "teacher": used[0] if used else NO_TEACHER, "arch_str": arch}
            for g in regimes:
                values = [cells[(g, s)]["valid_acc"] for s in seeds_of_task]
                row[f"{g.replace('-', '_')}_valid_acc"] = float(np.mean(values))
                row[f"{g.replace('-', '_')}_valid_acc_std"] = float(np.std(values))
            row["seeds"] = len(seeds_of_task)
            rows.append(row)
    return rows


def kd_table_text(rows: list[dict], regimes) -> str:
    """:func:`kd_table` rows as CSV text (accuracies with 4 decimals)."""
    import io

    columns = ["task", "split", "teacher", "arch_str"]
    for g in check_regimes(regimes):
        columns += [f"{g.replace('-', '_')}_valid_acc", f"{g.replace('-', '_')}_valid_acc_std"]
    columns.append("seeds")
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in row.items()})
    return text.getvalue()


def write_kd_table(path, rows: list[dict], regimes) -> None:
    """Writes :func:`kd_table` rows as CSV (:func:`kd_table_text`), atomically."""
    with atomic_open(path, newline="") as handle:
        handle.write(kd_table_text(rows, regimes))


# -- the build's embeddings file ---------------------------------------------------------------------------------
EMBEDDINGS_VERSION = 2
"""Version 2: the random-embedding students are subnets of one freshly initialised supernet
(:func:`rdnas.kd.embeddings.random_supernet`); version 1 files (one freshly built network per student) are
refused."""


def write_embeddings(out_dir, tasks: TaskFile, archs: list) -> Path:
    """Computes every task's :func:`rdnas.kd.embeddings.task_embeddings` (teachers from the build's folder; a task
    without a teacher yet is left out) and writes ``OUT/embeddings.pt`` atomically: ``{"kind", "version", "space",
    "probe_seed", "tasks": {name: embeddings}}``."""
    out = Path(out_dir)
    per_task = {}
    for task in tasks.tasks:
        if teacher_path(out, task).exists():
            per_task[task.name] = task_embeddings(load_teacher(teacher_path(out, task), tasks.space), task, archs,
                                                  tasks.probe_seed)
    path = out / "embeddings.pt"
    with atomic_open(path, "wb") as handle:
        torch.save({"kind": EMBEDDINGS_KIND, "version": EMBEDDINGS_VERSION, "space": tasks.space,
                    "probe_seed": tasks.probe_seed, "tasks": per_task}, handle)
    return path


def read_embeddings(path) -> dict:
    """An ``embeddings.pt`` written by :func:`write_embeddings`; ValueError naming the file when it is not one or
    is of another version (rerunning the build's ``rdnas dass bench`` command rewrites it; nothing is retrained)."""
    payload = load_kinded_file(path, EMBEDDINGS_KIND, "an embeddings file", "rdnas dass bench")
    if payload.get("version") != EMBEDDINGS_VERSION:
        raise ValueError(f"{path}: embeddings file version {payload.get('version')!r}, expected {EMBEDDINGS_VERSION}; "
                         "rerun the build's rdnas dass bench command to rewrite it (finished runs are not retrained)")
    return payload


# -- the shipped benchmark (package data) -------------------------------------------------------------------------
SHIPPED_FOLDER = Path(__file__).resolve().parent / "shipped"
"""Where the finished KD benchmark ships inside the package (``rdnas/kd/shipped/``)."""
SHIPPED_FILES = ("recipe.json", "bench.json", "kdbench.csv", "runs.csv", "embeddings.pt")
RECIPE_KIND = "rdnas-dass-kdbench-recipe"
MAX_SHIPPED_BYTES = 20 * 2 ** 20
"""The shipped files' size limit (20 MiB): the tables and embeddings ship; teachers are rebuilt from the recipe."""


def ship(out_dir, tasks: TaskFile, archs: list, seeds, regimes, dest=None, train_seeds: int | None = None) -> Path:
    """Writes a finished build's package data into ``dest`` (default :data:`SHIPPED_FOLDER`): ``embeddings.pt`` and
    ``bench.json`` as the build wrote them, ``runs.csv`` (every shard's runs of the build's tasks, students, seeds
    and regimes in one file, in build order), ``kdbench.csv`` (:func:`kd_table` of those runs) and
    ``recipe.json`` (kind ``rdnas-dass-kdbench-recipe``: the tasks file, the students, seeds and regimes, each
    task's teacher digest and validation accuracy, and the measured cost: CPU and wall seconds per run by regime).
    ``dest`` is then itself a KD benchmark folder (``rdnas dass fit --bench DEST`` reads it) and
    :func:`load_shipped` reads it. ``train_seeds``: as the build's (:func:`task_seeds`), recorded in the recipe.

    Raises ValueError before writing anything when the build is not finished (a (task, student) row or a task's
    embeddings missing) or the files would exceed :data:`MAX_SHIPPED_BYTES`. Each file is written atomically.
    """
    from rdnas.spaces import get_space

    out = Path(out_dir)
    regimes, seeds = check_regimes(regimes), sorted(seeds)
    check_train_seeds(train_seeds, seeds)
    space = get_space(tasks.space)
    names = [space.to_string(torch.as_tensor(a)) for a in space.validate(archs)]
    runs = read_runs(out)
    rows = kd_table(runs, tasks, seeds, regimes, train_seeds)
    complete = {(r["task"], r["arch_str"]) for r in rows}
    missing = [(t.name, a) for t in tasks.tasks for a in names if (t.name, a) not in complete]
    if missing:
        raise ValueError(f"{out}: cannot ship an unfinished build: {len(missing)} of {len(tasks.tasks) * len(names)} "
                         f"(task, student) rows lack a run (the first: task {missing[0][0]}, {missing[0][1]}); "
                         "rerun rdnas dass bench to finish it")
    embeddings = read_embeddings(out / "embeddings.pt")
    for task in tasks.tasks:
        entry = embeddings["tasks"].get(task.name)
        if entry is None or list(entry["archs"]) != names:
            raise ValueError(f"{out / 'embeddings.pt'}: task {task.name} has no embeddings of these students; rerun "
                             "rdnas dass bench with the same students to write them")
    order = {(t.name, s, a, g): p for p, (t, s, a, g) in
             enumerate((t, s, a, g) for t in tasks.tasks for s in task_seeds(t, seeds, train_seeds) for a in names
                       for g in regimes)}
    kept = sorted((r for r in runs if (r["task"], r["seed"], r["arch_str"], r["regime"]) in order),
                  key=lambda r: order[(r["task"], r["seed"], r["arch_str"], r["regime"])])
    cost = {}
    for regime in regimes:
        mine = [r for r in kept if r["regime"] == regime]
        cost[regime] = {"runs": len(mine), "mean_cpu_seconds": float(np.mean([r["cpu_seconds"] for r in mine])),
                        "mean_seconds": float(np.mean([r["seconds"] for r in mine])),
                        "total_cpu_seconds": float(np.sum([r["cpu_seconds"] for r in mine]))}
    teachers = {name: {"digest": entry["teacher_digest"], "valid_acc": entry["teacher_valid_acc"]}
                for name, entry in embeddings["tasks"].items() if name in {t.name for t in tasks.tasks}}
    recipe = {"kind": RECIPE_KIND, "version": 1, "tasks": tasks.to_dict(), "archs": names, "seeds": seeds,
              "train_seeds": train_seeds, "regimes": list(regimes), "teachers": teachers, "cost": cost,
              "rebuild": "rdnas dass bench --tasks TASKS --archs-file ARCHS --seeds S [--train-seeds T] --regimes R "
                         "--out DIR (TASKS: this recipe's tasks, ARCHS: its archs one per line; T: train_seeds, "
                         "where not null)"}
    runs_text = [",".join(RUN_COLUMNS)]
    for r in kept:
        runs_text.append(",".join(str(r[c]) for c in RUN_COLUMNS))
    texts = {"kdbench.csv": kd_table_text(kd_table(kept, tasks, seeds, regimes, train_seeds), regimes),
             "runs.csv": "\n".join(runs_text) + "\n", "recipe.json": json.dumps(recipe, indent=1) + "\n"}
    sources = {name: out / name for name in ("bench.json", "embeddings.pt")}
    size = sum(len(t.encode()) for t in texts.values()) + sum(p.stat().st_size for p in sources.values())
    if size > MAX_SHIPPED_BYTES:
        raise ValueError(f"{out}: the package data would be {size / 2 ** 20:.1f} MiB, over the "
                         f"{MAX_SHIPPED_BYTES / 2 ** 20:.0f} MiB limit")
    dest = Path(SHIPPED_FOLDER if dest is None else dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name, path in sources.items():
        with atomic_open(dest / name, "wb") as handle:
            handle.write(path.read_bytes())
    for name, text in texts.items():  # recipe.json last: its presence says the folder is complete
        with atomic_open(dest / name, newline="") as handle:
            handle.write(text)
    return dest


def shipped_folder(folder=None) -> Path:
    """The folder of the shipped KD benchmark (:data:`SHIPPED_FOLDER`, or ``folder``), checked: every file of
    :data:`SHIPPED_FILES` present and ``recipe.json`` of its kind; ValueError saying how to make it otherwise."""
    folder = Path(SHIPPED_FOLDER if folder is None else folder)
    missing = [name for name in SHIPPED_FILES if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"the KD benchmark is not shipped in {folder} yet (no {', '.join(missing)}): build it with "
                         "bash benchmarks/dass_build.sh, then write the package data with rdnas dass bench ... "
                         "--ship (docs/guides/dass.md)")
    recipe = json.loads((folder / "recipe.json").read_text())
    if not isinstance(recipe, dict) or recipe.get("kind") != RECIPE_KIND:
        got = recipe.get("kind") if isinstance(recipe, dict) else None
        raise ValueError(f"{folder / 'recipe.json'}: kind {got!r}, expected {RECIPE_KIND!r}")
    return folder


SHIPPED_NAME = "shipped"
"""What ``--bench`` takes for the shipped benchmark (:func:`bench_folder`)."""


def bench_folder(text) -> Path:
    """The KD benchmark folder a ``--bench`` option names: exactly ``shipped`` is the shipped package data
    (:func:`shipped_folder`; a folder of that name in the working directory is ``./shipped``), anything else a
    folder path. ValueError, saying how to build it, when ``shipped`` is asked for and nothing is shipped yet."""
    if str(text) != SHIPPED_NAME:
        return Path(text)
    try:
        return shipped_folder()
    except ValueError as error:
        raise ValueError(f"{error} ({SHIPPED_NAME} names the package's shipped benchmark; a folder named "
                         f"{SHIPPED_NAME} in the working directory is ./{SHIPPED_NAME})") from None


def load_shipped(folder=None) -> dict:
    """The shipped KD benchmark (:func:`shipped_folder`): ``{"folder": Path, "recipe": dict, "tasks": TaskFile,
    "table": [kdbench.csv rows as dicts of strings], "runs": [:func:`read_runs` rows], "embeddings": dict}``;
    ValueError when it is not shipped (yet)."""
    folder = shipped_folder(folder)
    with open(folder / "kdbench.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    return {"folder": folder, "recipe": json.loads((folder / "recipe.json").read_text()),
            "tasks": read_bench_tasks(folder), "table": table, "runs": read_runs(folder),
            "embeddings": read_embeddings(folder / "embeddings.pt")}
