"""Check that a Dockerfile installs only pinned packages.

The Dockerfile is parsed with BuildKit's own parser (the ``dockerfile`` package), so line continuations,
JSON-form RUN and heredocs read as Docker reads them. Every ``pip install`` must install from a lock file
(``-r``/``--requirement``) that the Dockerfile copied from ``docker/<image>/requirements.lock``, with
``--no-deps`` so nothing unpinned comes in through a dependency; the only other thing it may install is
the project itself (a local path), also with ``--no-deps``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath

import dockerfile

# Options of `pip install` that take a value (the value is not a package).
_VALUED = {
    "-r",
    "--requirement",
    "-c",
    "--constraint",
    "-i",
    "--index-url",
    "--extra-index-url",
    "-f",
    "--find-links",
    "--target",
    "-t",
    "--prefix",
    "--root",
    "--platform",
    "--python-version",
    "--implementation",
    "--abi",
    "--cache-dir",
    "--src",
    "--upgrade-strategy",
    "--progress-bar",
    "--trusted-host",
    "--timeout",
    "--retries",
    "--log",
}


@dataclass(frozen=True)
class PipInstall:
    line: int
    words: tuple[str, ...]

    @property
    def lock_files(self) -> list[str]:
        files = []
        for index, word in enumerate(self.words):
            if word in ("-r", "--requirement") and index + 1 < len(self.words):
                files.append(self.words[index + 1])
            elif word.startswith("--requirement="):
                files.append(word.split("=", 1)[1])
        return files

    @property
    def targets(self) -> list[str]:
        """Positional arguments: package specifiers or local paths."""
        targets, skip = [], False
        for word in self.words[2:]:
            if skip:
                skip = False
            elif word in _VALUED:
                skip = True
            elif not word.startswith("-"):
                targets.append(word)
        return targets


def _simple_commands(script: str) -> list[list[str]]:
    """A shell script's simple commands as word lists (split at ``&&``, ``||``, ``;``, ``|``)."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token and set(token) <= set("&|;()"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [words for words in commands if words]


def pip_installs(text: str) -> list[PipInstall]:
    """Every ``pip install`` in the RUN instructions, split into words like a shell would."""
    found = []
    for command in dockerfile.parse_string(text):
        if command.cmd.upper() != "RUN":
            continue
        for words in _simple_commands(" ".join(command.value)):
            for start in range(len(words) - 1):
                if PurePosixPath(words[start]).name in ("pip", "pip3") and words[start + 1] == "install":
                    found.append(PipInstall(command.start_line, tuple(words[start:])))
                    break
                if words[start].startswith("python") and words[start + 1 : start + 4] == [
                    "-m",
                    "pip",
                    "install",
                ]:
                    found.append(PipInstall(command.start_line, ("pip", *words[start + 3 :])))
                    break
    return found


def copied_locks(text: str) -> dict[str, str]:
    """Destination -> source of every COPY of a ``requirements.lock``."""
    copies = {}
    for command in dockerfile.parse_string(text):
        if command.cmd.upper() == "COPY" and len(command.value) == 2 and command.value[0].endswith(".lock"):
            copies[command.value[1]] = command.value[0]
    return copies


def unpinned_installs(text: str, lock: str) -> list[str]:
    """Problems with the Dockerfile's pip installs, each naming the line; empty when all are pinned."""
    problems = []
    copies = copied_locks(text)
    installs = pip_installs(text)
    if not installs:
        problems.append("no pip install found: the image would not install its lock")
    for install in installs:
        where = f"line {install.line}: {' '.join(install.words)}"
        if "--no-deps" not in install.words:
            problems.append(f"{where}: no --no-deps, so dependencies would come in unpinned")
        for lock_file in install.lock_files:
            if copies.get(lock_file) != lock:
                problems.append(f"{where}: -r {lock_file} is not a copy of {lock}")
        for target in install.targets:
            if not (target.startswith((".", "/")) and "==" not in target):
                problems.append(f"{where}: installs {target!r} by name, not from the lock")
        if not install.lock_files and not install.targets:
            problems.append(f"{where}: installs nothing from a lock")
    return problems
