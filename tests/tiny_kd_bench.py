"""A finished tiny KD benchmark for the DaSS tests: digits tasks at 8 px, 1-epoch teachers (ResNet48, small stem,
widths / 8), 3 students, one seed, the kd regime. Seconds to build; shared so that the tests build it one way."""

import copy
import json
from pathlib import Path

from rdnas.kd import bench, read_tasks
from rdnas.minibench.build import sample_architectures
from rdnas.spaces import get_space

SPACE = get_space("resnet48")
TEACHER = {"options": {"resnet_stem": "small", "width_divisor": 8}, "epochs": 1, "seed": 0, "batch_size": 32}


def tasks_values(tasks, dataset: str = "digits") -> dict:
    """A tasks.json document of ``tasks`` ((name, split, classes) each; task i seeded i) on ``dataset``."""
    return {"kind": "rdnas-dass-tasks", "version": 1, "space": "resnet48", "student": {"epochs": 1, "batch_size": 32},
            "probe_seed": 0,
            "tasks": [{"name": name, "split": split, "dataset": dataset, "classes": classes, "image_size": 8,
                       "train": 48, "valid": 30, "seed": i, "teacher": copy.deepcopy(TEACHER)}
                      for i, (name, split, classes) in enumerate(tasks)]}


def build_tiny_bench(root: Path, tasks) -> tuple:
    """Writes ``root``/tasks.json for ``tasks`` and builds its benchmark in ``root``/bench (teachers, 3 students'
    KD runs, kdbench.csv, embeddings.pt). Returns (the bench folder, the read tasks, the students LongTensor[3, w])."""
    (root / "tasks.json").write_text(json.dumps(tasks_values(tasks)))
    tasks = read_tasks(root / "tasks.json")
    archs = sample_architectures(3, seed=0, space=SPACE)
    out = root / "bench"
    runs = bench.build(out, tasks, archs, [0], ("kd",), progress=False)
    bench.write_kd_table(out / "kdbench.csv", bench.kd_table(runs, tasks, [0], ("kd",)), ("kd",))
    bench.write_embeddings(out, tasks, archs)
    return out, tasks, archs
