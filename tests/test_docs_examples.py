"""The examples of README.md and docs/ do not rot.

- Every ```python block runs: the blocks of one page run in order in one namespace (a page's later block may use
  an earlier one's names), in a temporary working directory. A block that truly cannot run here (it needs a GPU
  or data we do not have) is preceded by ``<!-- skip-example: <why> -->``; the reason is required.
- Every `rdnas ...` command in a shell block (also `python -m rdnas` and `torchrun ... -m rdnas`) is checked against
  the real parser: a concrete command line must parse (``build_parser().parse_args``), and in a synopsis (with
  placeholders: ``<dir>``, ``[--opt]``, ``a|b``, ``...``, ``$var``) and in a console line (``$ rdnas ...``, which
  may show input that rdnas refuses) every ``--option`` must be one of its command's.
- ``rdnas --version`` and ``rdnas --help`` as the docs describe them.
"""

import argparse
import contextlib
import io
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md"] + sorted(p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts)
SKIP_MARKER = re.compile(r"<!--\s*skip-example:\s*(\S.*?)\s*-->")
SHELL_INFOS = {"", "bash", "sh", "shell", "console"}


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    info: str
    text: str
    skip_reason: str | None


def code_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file (``` or ~~~ fences; MyST directives such as ```{toctree} are not
    code and are left out)."""
    blocks, lines = [], path.read_text().splitlines()
    i = 0
    while i < len(lines):
        match = re.match(r"^(\s*)(`{3,}|~{3,})(.*)$", lines[i])
        if not match:
            i += 1
            continue
        indent, fence, info = match.group(1), match.group(2), match.group(3).strip()
        start, body = i, []
        i += 1
        while i < len(lines) and not re.match(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[i]):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1
        previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        skip = SKIP_MARKER.search(previous)
        if not info.startswith("{"):
            blocks.append(Block(path, start + 1, info.split()[0] if info else "", "\n".join(body) + "\n",
                                skip.group(1) if skip else None))
    return blocks


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


PAGES_WITH_PYTHON = [p for p in DOC_FILES if any(b.info == "python" for b in code_blocks(p))]


def test_the_docs_have_examples_to_check():
    """Guards the extraction itself: README and the guides hold Python and shell examples."""
    assert ROOT / "README.md" in PAGES_WITH_PYTHON
    assert len(PAGES_WITH_PYTHON) >= 5
    assert len(list(cli_commands())) >= 30


def test_skip_markers_sit_before_a_python_block_and_give_a_reason():
    for path in DOC_FILES:
        lines = path.read_text().splitlines()
        starts = {b.line for b in code_blocks(path) if b.info == "python"}
        for number, line in enumerate(lines, 1):
            if "skip-example" in line:
                assert SKIP_MARKER.search(line), f"{_name(path)}:{number}: write <!-- skip-example: <why> -->"
                following = next(n for n in range(number + 1, len(lines) + 1) if lines[n - 1].strip())
                assert following in starts, f"{_name(path)}:{number}: a skip marker must precede a ```python block"


@pytest.mark.parametrize("path", PAGES_WITH_PYTHON, ids=_name)
def test_python_examples_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    namespace = {"__name__": "__docs_example__"}
    for block in code_blocks(path):
        if block.info != "python" or block.skip_reason:
            continue
        code = compile(block.text, f"{_name(path)}:{block.line}", "exec")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                exec(code, namespace)
        except Exception as error:  # the message names the page and the block's line
            raise AssertionError(f"the example at {_name(path)}:{block.line} fails: "
                                 f"{type(error).__name__}: {error}") from error


# --- command lines ---------------------------------------------------------------------------------------------

@dataclass
class Command:
    where: str
    argv: list[str]  # after "rdnas"
    text: str
    prompted: bool = False  # "$ rdnas ...": a console session, often showing input that rdnas refuses


# where a command starts: a line's start or after a shell operator (with optional VAR=value prefixes), or torchrun's -m
_START = re.compile(r"(?:(?:^|[;&(|]\s*|\bdo\s+|^\$\s+)(?:\w+=\S*\s+)*(?:python3? -m rdnas|rdnas)|\s-m rdnas)(?=\s|$)")
_PLACEHOLDER = re.compile(r"<[^>]*>|\[|\]|\||\.\.\.|\$|\{|\}")


def _logical_lines(text: str):
    """Lines with backslash continuations joined and ``# comments`` dropped."""
    pending = ""
    for line in text.splitlines():
        line = re.sub(r"(^|\s)#(?!\S*\().*$", "", line).rstrip() if "#" in line else line.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def cli_commands():
    for path in DOC_FILES:
        for block in code_blocks(path):
            if block.info not in SHELL_INFOS:
                continue
            for line in _logical_lines(block.text):
                if re.match(r"\s*rdnas(\s+[\w-]+)*?[\w-]*:(\s|$)", line):
                    continue  # a program's output quoted in the docs ("rdnas bench build: error: ..."), not a command
                for match in _START.finditer(line):
                    rest = line[match.end():]
                    rest = re.split(r"\s(?:&&|&|;|\|\||>|2>|\))\s?|\s&$|;\s*$", rest)[0] if not \
                        _is_synopsis(rest) else rest
                    yield Command(f"{_name(path)}:{block.line}", rest.split(), line.strip(), line.startswith("$"))


_MISSING_FILE = re.compile(r"does not exist|no such file|not found", re.I)


def _is_synopsis(rest: str) -> bool:
    return bool(_PLACEHOLDER.search(rest))


def _parser():
    from rdnas.cli import build_parser

    return build_parser()


def _subcommand_parser(parser: argparse.ArgumentParser, words: list[str]):
    """The parser of `rdnas <words...>` and how many words named it (bench build, predictor fit: two)."""
    used = 0
    while True:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or used >= len(words) or words[used] not in actions[0].choices:
            return parser, used
        parser, used = actions[0].choices[words[used]], used + 1


COMMANDS = list(cli_commands())


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.where}:{' '.join(c.argv[:2])}")
def test_cli_examples_use_real_options(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # --out checks look at the working directory; nothing is run
    parser = _parser()
    if not _is_synopsis(" ".join(command.argv)) and not command.prompted:
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                parser.parse_args(command.argv)
        except SystemExit as exit_:
            if not _MISSING_FILE.search(stderr.getvalue()):
                pytest.fail(f"{command.where}: `{command.text}` does not parse (exit {exit_.code}): {stderr.getvalue()}")
        return  # an option that checks its file while parsing may not find the reader's file here: that is fine
    # a synopsis or a console line: the command it names, and each --option against that command's own options
    words = [w for w in command.argv if not w.startswith("-")]
    sub, used = _subcommand_parser(parser, words[:2])
    if used == 0 and command.argv and not command.argv[0].startswith("-"):
        pytest.skip(f"synopsis naming several commands ({command.argv[0]}): no single parser to check against")
    known = {option for action in sub._actions for option in action.option_strings} | set(
        _parser()._option_string_actions)
    for token in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", " ".join(command.argv)):
        assert token in known, f"{command.where}: `{command.text}` uses {token}, which `{sub.prog}` does not have"


def _run_cli(cwd, *args) -> subprocess.CompletedProcess:
    # outside the checkout: `python -m` puts the working directory first on sys.path
    return subprocess.run([sys.executable, "-m", "rdnas", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_version_prints_the_package_version_that_pyproject_declares(tmp_path):
    import rdnas

    result = _run_cli(tmp_path, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"rdnas {rdnas.__version__}"
    declared = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert declared == rdnas.__version__


def test_help_lists_every_command_on_one_line(tmp_path):
    from rdnas.cli import COMMANDS as CLI_COMMANDS

    result = _run_cli(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for name in CLI_COMMANDS:
        line = next((line for line in lines if line.split()[:1] == [name]), None)
        assert line is not None, f"`rdnas --help` does not list {name}:\n{result.stdout}"
        assert len(line.split()) > 1, f"`rdnas --help`: {name}'s summary is not on its line: {line!r}"


def test_relative_links_of_the_readme_point_at_files():
    """README.md is read on GitHub, outside the Sphinx build (which checks the docs' own links)."""
    text = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path = target.split("#")[0]
        assert (ROOT / path).exists(), f"README.md links to {target}, which does not exist"
