"""The docs agree with the CLI: every `videdit ...` command line in README.md, docs/ and weights/README.md
names a command that exists, and every --flag on it is an option of that command."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from videdit.cli import cli

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "weights" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# A command line in a doc: `videdit` then a subcommand, inside backticks or a code block.
COMMAND = re.compile(r"(?:^|[`\s(])(?<!from )(?<!import )(?:\.venv/bin/)?videdit ((?:[a-z][a-z-]*)(?: [^`\n#|]*)?)")


def command_lines() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for block in re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S) + re.findall(r"`([^`\n]+)`", text):
            for line in block.splitlines():
                for match in COMMAND.finditer(line):
                    found.append((f"{doc.relative_to(REPO)}", match.group(1).strip()))
    return found


def resolve(words: list[str]) -> tuple[click.Command, list[str]]:
    """The (sub)command the words name, and the words after it."""
    command: click.Command = cli
    rest = list(words)
    while isinstance(command, click.Group) and rest and rest[0] in command.commands:
        command = command.commands[rest.pop(0)]
    return command, rest


def option_names(command: click.Command) -> set[str]:
    names = {"--help", "-h"}
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(param.opts + param.secondary_opts)
    return names


LINES = command_lines()


def test_the_docs_have_command_lines():
    assert len(LINES) >= 20


@pytest.mark.parametrize("doc, line", LINES, ids=[f"{d}:{l[:40]}" for d, l in LINES])
def test_documented_command_lines_exist(doc, line):
    try:
        words = shlex.split(line)
    except ValueError:
        words = line.split()
    if not words or words[0] not in cli.commands:
        pytest.fail(f"{doc}: `videdit {line}`: no command {words[0] if words else ''!r}")
    command, rest = resolve(words)
    flags = {w.split("=")[0] for w in rest if w.startswith("--")}
    unknown = sorted(flags - option_names(command))
    assert not unknown, f"{doc}: `videdit {line}`: {', '.join(unknown)} not an option of `videdit {command.name}`"


def test_the_checker_catches_a_wrong_flag():
    command, rest = resolve(["run", "talk.mp4", "--lpips-net", "vgg"])
    assert command.name == "run" and "--lpips-net" not in option_names(command)
