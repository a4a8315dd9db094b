"""docker-compose.yml and the Dockerfile, read as Docker would (Docker itself does not run in the tests): every
volume is writable by the image's user, web, worker and beat count into one metrics directory, and the
services start as `make run` does (migrated, static files collected)."""

from __future__ import annotations

import re
import shlex
from pathlib import PurePosixPath

import yaml

from tests.processes import ROOT

APP_SERVICES = ("web", "worker", "beat")


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # resolves the x-app anchor and merges


class Image:
    """What the Dockerfile's instructions say, in order: its working directory, its user and what ran as root."""

    def __init__(self, text: str) -> None:
        self.workdir = PurePosixPath("/")
        self.user = "root"
        self.root_commands: list[list[str]] = []  # each RUN's commands (split at &&), run before USER
        self.uid: int | None = None
        for instruction, argument in self._instructions(text):
            if instruction == "WORKDIR":
                self.workdir = self.workdir / argument
            elif instruction == "USER":
                self.user = argument
            elif instruction == "RUN" and self.user == "root":
                self.root_commands += [shlex.split(command) for command in argument.split("&&")]

    @staticmethod
    def _instructions(text: str) -> list[tuple[str, str]]:
        lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
        joined = re.sub(r"\\\n", " ", "\n".join(lines))  # continuation lines
        return [tuple(line.strip().split(None, 1)) for line in joined.splitlines() if line.strip()]

    def path(self, name: str) -> PurePosixPath:
        return self.workdir / name

    def made_directories(self) -> set[PurePosixPath]:
        return {self.path(arg) for cmd in self.root_commands if cmd[0] == "mkdir" for arg in cmd[1:] if arg[0] != "-"}

    def owner_of(self, directory: PurePosixPath) -> str | None:
        """Who the image's root commands last made `directory`'s owner (chown, -R included), or None."""
        owner = None
        for command in self.root_commands:
            if command[0] != "chown":
                continue
            recursive = "-R" in command
            user, *paths = [arg for arg in command[1:] if arg[0] != "-"]
            for path in map(self.path, paths):
                if path == directory or (recursive and path in directory.parents):
                    owner = user.split(":")[0]
        return owner

    def created_user_id(self, name: str) -> int | None:
        for command in self.root_commands:
            if command[0] == "useradd" and command[-1] == name and "--uid" in command:
                return int(command[command.index("--uid") + 1])
        return None


def _image() -> Image:
    return Image((ROOT / "Dockerfile").read_text())


def _mounts(service: dict) -> dict[str, str]:
    """{target directory: named volume}"""
    return {target: source for source, target in (volume.split(":")[:2] for volume in service.get("volumes", []))}


def test_every_volume_of_the_app_services_exists_in_the_image_owned_by_its_user():
    compose, image = _compose(), _image()
    assert image.user not in ("root", "0")

    for name in APP_SERVICES:
        service = compose["services"][name]
        assert service["build"] == "."
        for target, volume in _mounts(service).items():
            assert volume in compose["volumes"], f"{name}: {volume} is not a named volume"
            directory = PurePosixPath(target)
            assert directory in image.made_directories(), f"{target} is not made in the image"
            assert image.owner_of(directory) == image.user, f"{target} is not {image.user}'s in the image"


def test_a_tmpfs_volume_is_mounted_owned_by_the_image_user():
    compose, image = _compose(), _image()
    uid = image.created_user_id(image.user)

    tmpfs_volumes = {
        n: v for n, v in compose["volumes"].items() if (v or {}).get("driver_opts", {}).get("type") == "tmpfs"
    }
    assert tmpfs_volumes
    for volume in tmpfs_volumes.values():
        options = dict(option.split("=") for option in volume["driver_opts"]["o"].split(","))
        assert int(options["uid"]) == uid


def test_web_worker_and_beat_count_into_one_shared_metrics_directory_emptied_with_the_last_of_them():
    compose = _compose()
    services = [compose["services"][name] for name in APP_SERVICES]

    [directory] = {service["environment"]["PROMETHEUS_MULTIPROC_DIR"] for service in services}
    [volume] = {_mounts(service).get(directory) for service in services}
    assert volume is not None, f"{directory} is not on a volume"
    # A tmpfs: Docker mounts it with the first container using it and drops it with the last.
    assert compose["volumes"][volume]["driver_opts"]["type"] == "tmpfs"


def test_the_services_start_as_make_run_does_migrated_with_static_files_collected():
    compose, image = _compose(), _image()
    web, worker, beat = (compose["services"][name] for name in APP_SERVICES)

    # The image holds the collected static files; web migrates, then gunicorn takes its shell's place (so that
    # it gets docker stop's SIGTERM); worker and beat start once web is healthy, so migrated.
    assert any("collectstatic" in command for command in image.root_commands)
    shell, option, script = shlex.split(web["command"])
    assert (shell, option) == ("sh", "-c")
    migrate, serve = script.split(" && ")
    assert migrate == "python manage.py migrate --no-input"
    assert serve.startswith("exec gunicorn mailservice.wsgi ")
    assert worker["command"].startswith("celery -A mailservice worker ")
    assert beat["command"].startswith("celery -A mailservice beat ")
    for service in (worker, beat):
        assert service["depends_on"] == {"web": {"condition": "service_healthy"}}


def test_the_web_healthcheck_asks_for_a_host_that_is_always_allowed():
    web = _compose()["services"]["web"]

    host = re.search(r"http://([^:/]+)", " ".join(web["healthcheck"]["test"])).group(1)
    allowed = web["environment"]["ALLOWED_HOSTS"]
    assert allowed.endswith(f",{host}")  # whatever ${ALLOWED_HOSTS} says
