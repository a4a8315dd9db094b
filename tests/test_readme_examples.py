"""Every shell example of README.md and docs/api.md, run against a live service, answers as the text shows.

The examples are read from the documents themselves, so a document and the service cannot drift apart. How to
write one (a reader sees plain shell sessions):

- A ```sh block runs. The blocks of one document run in order in one bash, from the checkout, as a reader's
  terminal would (variables carry over), under `set -uo pipefail`, and each command must exit 0 (as under
  `set -e`). `http://127.0.0.1:8000` stands for the live server; `.venv/bin/python manage.py` reaches its
  database.
- The lines right after a command that start with `# ` show what it answers: after `curl -i`, the status
  line, the headers that matter, then the body; otherwise the output, as JSON (`{...}`, `[...]`) or as text.
  In JSON only the keys shown are checked, in any order and spacing. `…` stands for anything: a value, the
  rest of a list (as its last item), a part of a string or of the output. `<id>`, `<…_id>` or `<cursor>`
  right after `/`, `"` or `=` (or opening a line) is a placeholder: where it first appears in an answer it
  takes the value found there; later, in answers and in commands, it stands for that value (a reader types
  it in).
- A command that only reads (`curl` without `-d` or `-X`) is repeated until it answers as shown, for up to
  READ_DEADLINE seconds: workers send in the background, as a reader waits a moment.
- A ```sh norun block does not run (Docker, `make run`, minutes of work). Each is listed in NOT_RUN with why,
  so that none is skipped unnoticed; every other fence names what it holds (json, text).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.processes import ROOT, wait_for

DOCUMENTS = ["README.md", "docs/api.md"]
DOCUMENTED_URL = "http://127.0.0.1:8000"
RUN, NOT_RUN_INFO = "sh", "sh norun"
# Shown, not run: answers, tables, and settings a client puts in its own project (python).
OTHER_INFO = {"json", "text", "python"}

# (document, the block's first line): why it does not run here.
NOT_RUN = {
    ("README.md", "make run    # the API and every other process; PostgreSQL and Redis too when none answer"): (
        "runs the whole service in the foreground until stopped"
    ),
    ("README.md", """echo "SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_urlsafe(50))')" >> .env"""): (
        "Docker Compose: needs Docker, builds an image, and writes .env"
    ),
    (
        "README.md",
        ".venv/bin/python manage.py generate_emails 1000000   # --providers a,b --seed N; COPY in chunks of 20,000",
    ): "a million emails take minutes",
}
READ_DEADLINE = 20.0
COMMAND_TIMEOUT = 30.0

ANY = "\u2063any"  # what `…` outside a JSON string becomes while the expected JSON is parsed
ELLIPSIS = "…"
# `<id>`, `<order_id>`, `<cursor>` right after / " = or a line's start; `Bearer <key>` and `"<p>"` are text.
PLACEHOLDER = re.compile(r'(?<![^/"=\n])<((?:[a-z0-9]+_)*(?:id|cursor))>')
WRITES = re.compile(r"(?:^|\s)(?:-d|--data\S*|-X|--request|-F|--form|-T|--upload-file|--json)(?:\s|$)")


@dataclass
class Step:
    command: str
    expected: list[str]
    line: int  # in the document, for messages


@dataclass
class Block:
    info: str
    line: int
    indent: int  # a block in a list item is indented as the item's text
    lines: list[str] = field(default_factory=list)


def fenced_blocks(text: str) -> list[Block]:
    blocks, current = [], None
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"( *)```(.*)$", line)
        if current is None and fence:
            current = Block(info=fence.group(2).strip(), line=number, indent=len(fence.group(1)))
        elif current is not None and fence and not fence.group(2).strip():
            blocks.append(current)
            current = None
        elif current is not None:
            current.lines.append(line[current.indent :] if line[: current.indent].isspace() else line)
    assert current is None, f"a fence opened at line {current.line} is never closed"
    return blocks


def _complete(command: str) -> bool:
    """Whether bash reads `command` as whole commands (no open quote, continuation or bracket)."""
    return subprocess.run(["bash", "-n"], input=command, capture_output=True, text=True).returncode == 0


def steps(block: Block) -> list[Step]:
    """The block's commands, each with the answer shown right after it."""
    result, pending, start = [], [], 0
    lines = block.lines
    index = 0
    while index < len(lines):
        line = lines[index]
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            index += 1  # a blank line or a comment between commands
            continue
        if not pending:
            start = block.line + 1 + index
        pending.append(line)
        index += 1
        command = "\n".join(pending)
        if command.endswith("\\") or not _complete(command):
            continue
        expected = []
        while index < len(lines) and (lines[index].startswith("# ") or lines[index] == "#"):
            expected.append(lines[index][2:])
            index += 1
        result.append(Step(command=command, expected=expected, line=start))
        pending = []
    assert not pending, f"line {start}: a command that never ends: {' '.join(pending)[:200]}"
    return result


# --- matching answers -------------------------------------------------------------------------------------------


class Mismatch(AssertionError):
    pass


def _pattern(expected: str, bindings: dict[str, str]) -> re.Pattern:
    """`expected` as a regular expression: `…` anything, a placeholder its value or a new group."""
    parts, seen = [], set()
    position = 0
    tokens = re.compile(rf"{ELLIPSIS}|{PLACEHOLDER.pattern}")
    for match in tokens.finditer(expected):
        parts.append(re.escape(expected[position : match.start()]))
        name = match.group(1)
        if name is None:
            parts.append(".*?")
        elif name in bindings:
            parts.append(re.escape(bindings[name]))
        elif name in seen:
            parts.append(f"(?P={name})")
        else:
            seen.add(name)
            parts.append(rf"(?P<{name}>[^\s/\"?&#<>]+?)")
        position = match.end()
    parts.append(re.escape(expected[position:]))
    return re.compile("".join(parts), re.DOTALL)


def match_text(expected: str, actual: str, bindings: dict[str, str], where: str) -> None:
    found = _pattern(expected, bindings).fullmatch(actual)
    if found is None:
        raise Mismatch(f"{where}: expected {expected!r}, got {actual!r}")
    bindings.update({name: value for name, value in found.groupdict().items() if value is not None})


def expected_json(text: str):
    """The JSON shown, `…` (outside strings) turned into ANY; `…` as the last member of an object dropped."""
    out, in_string, escaped = [], False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            out.append(char)
        elif char == '"':
            in_string = True
            out.append(char)
        elif char == ELLIPSIS:
            out.append(json.dumps(ANY))
        else:
            out.append(char)
    source = "".join(out)
    any_json = re.escape(json.dumps(ANY))
    source = re.sub(r",\s*" + any_json + r"\s*(?=\})", "", source)  # {"a": 1, …}
    source = re.sub(r"\{\s*" + any_json + r"\s*,?", "{", source)  # {…} and {…, "a": 1}
    try:
        return json.loads(source)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"the answer shown is not JSON (with …): {text!r}: {exc}") from None


def match_json(expected, actual, bindings: dict[str, str], where: str) -> None:
    if expected == ANY:
        return
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            raise Mismatch(f"{where}: expected an object, got {actual!r}")
        for key, value in expected.items():
            if key not in actual:
                raise Mismatch(f"{where}: no {key!r} in {actual!r}")
            match_json(value, actual[key], bindings, f"{where}.{key}")
    elif isinstance(expected, list):
        if not isinstance(actual, list):
            raise Mismatch(f"{where}: expected a list, got {actual!r}")
        open_ended = bool(expected) and expected[-1] == ANY
        items = expected[:-1] if open_ended else expected
        if len(actual) < len(items) or (not open_ended and len(actual) != len(items)):
            raise Mismatch(f"{where}: expected {len(items)} items{' or more' if open_ended else ''}, got {actual!r}")
        for index, item in enumerate(items):
            match_json(item, actual[index], bindings, f"{where}[{index}]")
    elif isinstance(expected, str):
        if not isinstance(actual, str):
            raise Mismatch(f"{where}: expected a string like {expected!r}, got {actual!r}")
        match_text(expected, actual, bindings, where)
    elif expected != actual or type(expected) is not type(actual):
        raise Mismatch(f"{where}: expected {expected!r}, got {actual!r}")


def match_body(expected: list[str], body: str, bindings: dict[str, str]) -> None:
    if not expected:
        return
    text = "\n".join(expected)
    if text.lstrip().startswith(("{", "[")):
        try:
            actual = json.loads(body)
        except json.JSONDecodeError:
            raise Mismatch(f"expected JSON, got {body[:500]!r}") from None
        match_json(expected_json(text), actual, bindings, "body")
    else:
        match_text(text, body.strip("\n"), bindings, "output")


HEADER = re.compile(r"([A-Za-z0-9-]+): (.*)")


def match_http(expected: list[str], output: str, bindings: dict[str, str]) -> None:
    """curl -i's output: the status line, each header shown (by name, any case), then the body."""
    head, _, body = output.replace("\r\n", "\n").partition("\n\n")
    status, *header_lines = head.split("\n")
    match_text(expected[0], status, bindings, "status line")
    headers = [(name.lower(), value) for name, value in (line.split(": ", 1) for line in header_lines if ": " in line)]
    rest = expected[1:]
    while rest and (shown := HEADER.fullmatch(rest[0])) and not rest[0].startswith(("{", "[")):
        name, value = shown.group(1).lower(), shown.group(2)
        values = [actual for actual_name, actual in headers if actual_name == name]
        for actual in values:
            try:
                trial = dict(bindings)
                match_text(value, actual, trial, f"header {name}")
            except Mismatch:
                continue
            bindings.update(trial)
            break
        else:
            raise Mismatch(f"header {shown.group(1)}: expected {value!r}, got {values or 'none'}")
        rest = rest[1:]
    match_body([line for line in rest if line], body, bindings)


def match_answer(expected: list[str], output: str, bindings: dict[str, str]) -> None:
    """Raises Mismatch; binds new placeholders only when the whole answer matches."""
    trial = dict(bindings)
    if expected[0].startswith("HTTP/"):
        match_http(expected, output, trial)
    else:
        match_body(expected, output, trial)
    bindings.update(trial)


# --- running ----------------------------------------------------------------------------------------------------


class Shell:
    """One bash for a document's examples, as a reader's terminal: each command's output goes to files."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.workdir = workdir
        self.count = 0
        self.bash = subprocess.Popen(
            ["bash", "--noprofile", "--norc"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, cwd=ROOT, env=env, text=True, start_new_session=True,
        )  # fmt: skip
        self._send("set -uo pipefail")

    def _send(self, line: str) -> None:
        self.bash.stdin.write(line + "\n")
        self.bash.stdin.flush()

    def run(self, command: str) -> tuple[int, str, str]:
        self.count += 1
        files = {part: self.workdir / f"{self.count}.{part}" for part in ("sh", "out", "err", "rc")}
        files["sh"].write_text(command + "\n")
        # Sourced, so that variables carry over; stdin closed, so that no command reads the next ones.
        self._send(
            f"source {shlex.quote(str(files['sh']))} >{shlex.quote(str(files['out']))} "
            f"2>{shlex.quote(str(files['err']))} </dev/null; echo $? >{shlex.quote(str(files['rc']))}.tmp; "
            f"mv {shlex.quote(str(files['rc']))}.tmp {shlex.quote(str(files['rc']))}"
        )
        wait_for(
            lambda: files["rc"].exists() or self.bash.poll() is not None,
            timeout=COMMAND_TIMEOUT,
            what=f"the command to end: {command}",
            interval=0.01,
        )
        assert files["rc"].exists(), f"bash exited ({self.bash.returncode}) running: {command}"
        output, errors = (files[part].read_text(encoding="utf-8", errors="replace") for part in ("out", "err"))
        return int(files["rc"].read_text()), output, errors

    def close(self) -> None:
        """Ends the bash and whatever it still runs (a command that overran its time)."""
        self.bash.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.bash.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.bash.pid, signal.SIGKILL)
        self.bash.wait()


def _substituted(command: str, bindings: dict[str, str], base_url: str) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1)
        assert name in bindings, f"<{name}> in a command, but no answer shown before it gave a value: {command}"
        return bindings[name]

    command = PLACEHOLDER.sub(value, command.replace(DOCUMENTED_URL, base_url))
    if not (ROOT / ".venv" / "bin" / "python").exists():  # a checkout whose virtualenv lives elsewhere
        command = command.replace(".venv/bin/python", sys.executable)
    return command


def run_document(document: str, shell: Shell, base_url: str) -> tuple[int, dict[str, str]]:
    """Runs every ```sh block of `document`; returns how many answers were checked, and the placeholders'
    values."""
    bindings: dict[str, str] = {}
    checked = 0
    blocks = fenced_blocks((ROOT / document).read_text(encoding="utf-8"))
    for step in (step for block in blocks if block.info == RUN for step in steps(block)):
        where = f"{document}:{step.line}"
        command = _substituted(step.command, bindings, base_url)
        expected = [line.replace(DOCUMENTED_URL, base_url) for line in step.expected]
        repeat_until = time.monotonic() + (READ_DEADLINE if _reads_only(command) else 0)
        while True:
            code, out, err = shell.run(command)
            try:
                assert code == 0, f"exit status {code}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}"
                if expected:
                    match_answer(expected, out, bindings)
                break
            except AssertionError as exc:
                if time.monotonic() >= repeat_until:
                    raise AssertionError(f"{where}: {step.command}\n{exc}") from None
                time.sleep(0.2)
        checked += bool(expected)
    return checked, bindings


def _reads_only(command: str) -> bool:
    return command.lstrip().startswith("curl ") and not WRITES.search(command)


# --- the tests --------------------------------------------------------------------------------------------------


def test_every_block_of_the_documents_runs_or_says_why_not():
    not_run, unnamed = set(), []
    for document in DOCUMENTS:
        for block in fenced_blocks((ROOT / document).read_text(encoding="utf-8")):
            if block.info == NOT_RUN_INFO:
                not_run.add((document, block.lines[0].strip()))
            elif block.info == RUN:
                assert steps(block), f"{document}:{block.line}: a sh block without a command"
            elif block.info not in OTHER_INFO:
                unnamed.append(f"{document}:{block.line} ```{block.info}")
    assert not unnamed, f"name each fence sh, sh norun, json, text or python: {unnamed}"
    assert not_run == set(NOT_RUN), "a sh norun block is listed in NOT_RUN, with why, and only those are"


def test_the_checker_tells_a_wrong_answer_from_a_right_one():
    bindings: dict[str, str] = {}
    match_answer(
        ["HTTP/1.1 202 Accepted", "Location: /api/v1/emails/<id>", '{"id": "<id>", "to": ["…"], …}'],
        'HTTP/1.1 202 Accepted\r\nLocation: /api/v1/emails/abc-1\r\n\r\n{"id": "abc-1", "to": ["a@b.org"], "x": 1}',
        bindings,
    )
    assert bindings == {"id": "abc-1"}
    with pytest.raises(Mismatch):
        match_answer(['{"id": "<id>"}'], '{"id": "other"}', bindings)
    with pytest.raises(Mismatch):
        match_answer(['{"events": [{"type": "sent"}]}'], '{"events": []}', bindings)
    match_answer(['{"detail": "…Bearer <key>…"}'], '{"detail": "Send Authorization: Bearer <key>."}', bindings)
    with pytest.raises(Mismatch):  # `<key>` after a space is text, not a placeholder
        match_answer(['{"detail": "…Bearer <key>…"}'], '{"detail": "Send Authorization: Bearer ms_1."}', bindings)
    sent = 'mailservice_emails_sent_total{provider="outbox"}'
    match_answer([f"{sent} …"], f"{sent} 2.0\n", bindings)


@pytest.mark.worker
@pytest.mark.parametrize("document", DOCUMENTS)
def test_the_documents_examples_answer_as_shown(document, services, tmp_path):
    # What the README assumes of `make run`: no MAIL_PROVIDERS, so every email goes to the outbox provider, which
    # writes .eml files (here into tmp_path rather than var/outbox); counters of this service only.
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    outbox = tmp_path / "outbox"
    env = {
        "MAIL_PROVIDERS": json.dumps([{"name": "outbox", "backend": "file", "options": {"file_path": str(outbox)}}]),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    base_url = services.web(**env)
    services.worker(concurrency=1, **env)
    services.stream(**env)
    shell_dir = tmp_path / "shell"
    shell_dir.mkdir()
    shell = Shell({**services.env, **env}, shell_dir)
    try:
        checked, values = run_document(document, shell, base_url)
    finally:
        shell.close()
    assert checked, f"{document} shows no answer to check"
    if document == "README.md":  # "A moment later the email is SENT (written to var/outbox/<id>.eml)"
        assert (outbox / f"{values['id']}.eml").is_file()
