"""How every step container is launched, in every rendering: the runner, the DAG, the launch gate,
and the ``docker run`` line a report gives for re-running a step on a laptop.

Plain data (docker SDK keyword names) so that the orchestration, which launches, and the report
step, which only shows the command, read the same definition.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from typing import Any

from clusterflow_steps.contract import CACHE, IMAGE_DIGEST_ENV, IMAGE_ENV
from clusterflow_steps.params import OPTIONS

DATA_MOUNT = "/data"
INPUT_MOUNT = "/input"
# The step cache store (clusterflow_steps.cache): its own mount over /data/cache, read-only in every
# step container; only a task's commit container (the step's own command + --commit-cache)
# mounts it read-write, with the data root read-only. So no step can plant an entry.
CACHE_MOUNT = f"{DATA_MOUNT}/{CACHE}"
STEP_UID = STEP_GID = 10001  # the images' user (and group): what a step runs as when the orchestrator is root
STEP_USER = f"{STEP_UID}:{STEP_GID}"

# Steps need no network, no privileges and no writable root filesystem; only /data (the mount) and
# /tmp (a tmpfs) are writable.
CONTAINER_POLICY: dict[str, Any] = {
    "network_mode": "none",
    "read_only": True,
    "tmpfs": {"/tmp": "rw,nosuid,nodev,noexec,size=512m"},
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "pids_limit": 256,
}

# The "reproduce this step" line is for someone else's machine: the data root and the user are
# placeholders their shell expands (said once, in LAPTOP_NOTE); everything else is quoted.
LAPTOP_DATA_ROOT = '"$PWD/data"'
LAPTOP_USER = '"$(id -u):$(id -g)"'
LAPTOP_NOTE = ("Run it in a directory whose data/ holds the run's inputs under data/runs/<run id>/ and an "
               "empty data/cache/ (replace \"$PWD/data\" to use another one).")
# An image's content digest: a registry manifest's (what a pinned reference names) or a local image's ID.
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# What a rendered line takes from a manifest (which a step wrote) is checked first: an image
# reference that is no option (``--privileged``), a dataset file name that cannot add mount fields.
IMAGE_REFERENCE = re.compile(rf"[a-z0-9][A-Za-z0-9._/:-]*(?:@{DIGEST.pattern})?")
_FILE_NAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,254}")
_OPTION = {"network_mode": "--network", "read_only": "--read-only", "tmpfs": "--tmpfs", "cap_drop": "--cap-drop",
           "security_opt": "--security-opt", "pids_limit": "--pids-limit"}


def policy_options() -> list[str]:
    """:data:`CONTAINER_POLICY` as the docker CLI spells it."""
    words: list[str] = []
    for key, value in CONTAINER_POLICY.items():
        if value is True:
            words.append(_OPTION[key])
        elif isinstance(value, dict):
            words += [w for target, options in value.items() for w in (_OPTION[key], f"{target}:{options}")]
        elif isinstance(value, list):
            words += [w for item in value for w in (_OPTION[key], item)]
        else:
            words += [_OPTION[key], str(value)]
    return words


def _words(image: str, args: list[str], digest: str | None, dataset: str | None, *, data_root: str, user: str,
           dataset_source: str, quote: Callable[[str], str]) -> list[str]:
    """``docker run`` and its arguments; ``data_root``, ``user`` and ``dataset_source`` are given as
    the result spells them (shell syntax for display), every other value goes through ``quote``."""
    def mount(source: str, target: str, read_only: bool) -> list[str]:
        return ["--mount", quote("type=bind,src=") + source + quote(f",dst={target}{',readonly' if read_only else ''}")]

    words = ["docker", "run", "--rm", "--user", user, *policy_options(),
             *mount(data_root, DATA_MOUNT, False), *mount(data_root + quote(f"/{CACHE}"), CACHE_MOUNT, True)]
    if dataset:
        words += mount(dataset_source, dataset, True)
    words += ["--env", quote(f"{IMAGE_ENV}={image}")]
    if digest:
        words += ["--env", quote(f"{IMAGE_DIGEST_ENV}={digest}")]
    return words + [quote(image), *(quote(a) for a in args)]


def user_dataset(args: list[str]) -> str | None:
    """The ``/input/<name>`` file a step's arguments read (a user dataset), if any; ValueError
    for a name a mount cannot carry (``,`` and ``=`` would add mount fields)."""
    dataset = next((b for a, b in zip(args, args[1:], strict=False)
                    if a == OPTIONS["dataset"].flag and b.startswith(INPUT_MOUNT + "/")), None)
    if dataset and not _FILE_NAME.fullmatch(dataset[len(INPUT_MOUNT) + 1:]):
        raise ValueError(f"dataset {dataset!r}: only a plain file name (letters, digits, '._+-') can be mounted")
    return dataset


def _checked(image: str, *paths: str) -> str:
    if not IMAGE_REFERENCE.fullmatch(image):
        raise ValueError(f"{image!r} is not an image reference")
    odd = next((p for p in paths if "," in p or not p.startswith("/")), None)
    if odd is not None:
        raise ValueError(f"{odd!r}: give an absolute path without ','")
    return image


def docker_run(image: str, args: list[str], *, data_root: str, user: str, digest: str | None = None,
               dataset_source: str | None = None) -> list[str]:
    """The argv of ``docker run`` that launches a step as the orchestrators do (for executing)."""
    dataset = user_dataset(args)
    if dataset and not dataset_source:
        raise ValueError(f"the arguments read {dataset}: give the host file it is")
    _checked(image, data_root, *([dataset_source] if dataset and dataset_source else []))
    return _words(image, args, digest, dataset, data_root=data_root, user=user, dataset_source=dataset_source or "",
                  quote=lambda word: word)


def reproduce_line(image: str, args: list[str], digest: str | None = None) -> str:
    """The ``docker run`` line, for a shell on a laptop, that re-runs a step (see :data:`LAPTOP_NOTE`);
    a user dataset ``/input/<name>`` is expected as ``./<name>``."""
    _checked(image)
    dataset = user_dataset(args)
    source = '"$PWD"/' + shlex.quote(dataset.rsplit("/", 1)[1]) if dataset else ""
    return " ".join(_words(image, args, digest, dataset, data_root=LAPTOP_DATA_ROOT, user=LAPTOP_USER,
                           dataset_source=source, quote=shlex.quote))


def recorded_launch(manifest: Mapping[str, Any]) -> tuple[str, list[str], str | None] | None:
    """``(image, args, digest)`` a step's manifest recorded, or ``None`` when it lacks them: the
    reference the step was launched by (``<registry>/clusterflow/<step>@sha256:...`` when pinned, a
    local build's tag otherwise), its arguments and the digest it recorded."""
    image, args = manifest.get("image"), manifest.get("argv")
    if not isinstance(image, Mapping) or not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        return None
    name, digest = image.get("name"), image.get("digest")
    digest = digest if isinstance(digest, str) and digest else None
    return (name, list(args), digest) if isinstance(name, str) and name else None


def manifest_line(manifest: Mapping[str, Any]) -> str | None:
    """:func:`reproduce_line` of what a step's manifest recorded (``None``: it recorded no arguments,
    or ones no line can carry)."""
    launch = recorded_launch(manifest)
    try:
        return reproduce_line(*launch) if launch else None
    except ValueError:
        return None
