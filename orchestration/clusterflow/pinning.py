"""Which bytes every step runs: published images pinned by digest, recorded once by a publish.

``scripts/publish.sh`` pushes core, base and the step images to a registry and records their
manifest digests in a *digests file* (``images/digests.json``)::

    {"registry": "127.0.0.1:5000", "version": "0.1.0", "commit": "<40 hex>",
     "images": {"prepare": "127.0.0.1:5000/clusterflow/prepare@sha256:<64 hex>", ...}}

Runners given that file (``CLUSTERFLOW_DIGESTS``) refer to every step image by its digest, never by
a mutable tag. The file is data from whoever published: :func:`load` refuses anything but this
shape, and a reference must name its own image in its own registry.

:func:`resolve` decides a run's step images once, when it starts (see :class:`Images`).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors

from clusterflow import spec
from clusterflow_steps.launch import DIGEST

DIGESTS_ENV = "CLUSTERFLOW_DIGESTS"
REGISTRY_ENV = "CLUSTERFLOW_REGISTRY"
DIGESTS_FILE = "images/digests.json"  # where publish writes it, relative to the checkout
PUBLISHED = ("core", "base", *spec.IMAGES)  # what a publish pushes, in build order
MAX_FILE_BYTES = 64 << 10
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # an image tag, as Docker spells one
COMMIT = re.compile(r"[0-9a-f]{40}")
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")
# host[:port][/path]: a registry as Docker names one (lower case, no scheme, no trailing slash)
REGISTRY = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?::\d{1,5})?"
                      r"(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*")
# Any reference to a step image an engine holds: [host[:port]/]clusterflow/<step>[:<tag>][@<digest>]
# (a local build's tag, a pinned or a pulled image; a host, not a registry path).
STEP_IMAGE = re.compile(
    r"(?:(?P<host>(?:[a-z0-9-]+\.)+[a-z0-9-]+(?::\d{1,5})?|[a-z0-9-]+:\d{1,5}|localhost)/)?"
    rf"{re.escape(spec.IMAGE_REPOSITORY)}/(?P<step>{'|'.join(spec.IMAGES)})"
    rf"(?::(?P<tag>{TAG.pattern}))?(?:@(?P<digest>{DIGEST.pattern}))?")


def registry_problem(registry: str) -> str | None:
    """One line saying why ``registry`` is not a registry address, or ``None``."""
    if not REGISTRY.fullmatch(registry) or ("." not in registry.split("/")[0]
                                            and ":" not in registry.split("/")[0]
                                            and registry.split("/")[0] != "localhost"):
        return (f"registry {registry!r}: give HOST:PORT or a domain, optionally with a path "
                "(e.g. 127.0.0.1:5000 or ghcr.io/acme), without a scheme")
    return None


def repository(registry: str, name: str) -> str:
    """Where image ``name`` (core, base or a step) lives in ``registry``."""
    return f"{registry}/{spec.IMAGE_REPOSITORY}/{name}"


def pinned_ref(registry: str, name: str, digest: str) -> str:
    """The immutable reference of image ``name`` in ``registry``: ``<registry>/clusterflow/<name>@sha256:...``."""
    return f"{repository(registry, name)}@{digest}"


def pinned_step(ref: str, registry: str) -> str | None:
    """The step whose image ``ref`` names by a digest (any one) in ``registry``, or ``None``."""
    digest = pinned_digest(ref)
    return next((step for step in spec.IMAGES if digest and ref == pinned_ref(registry, step, digest)), None)


@dataclass(frozen=True)
class Pins:
    """The digests of one publish: image name -> ``sha256:...`` (the registry manifest digest)."""

    registry: str
    version: str
    commit: str
    digests: Mapping[str, str]

    def ref(self, name: str) -> str:
        """The immutable reference of image ``name`` (:func:`pinned_ref`)."""
        return pinned_ref(self.registry, name, self.digests[name])

    def as_json(self) -> dict[str, Any]:
        return {"registry": self.registry, "version": self.version, "commit": self.commit,
                "images": {name: self.ref(name) for name in PUBLISHED}}


def pins(registry: str, version: str, commit: str, digests: Mapping[str, str]) -> Pins:
    """Checked :class:`Pins` (ValueError with a one-line reason)."""
    problem = registry_problem(registry) if isinstance(registry, str) else "registry: give a string"
    if problem:
        raise ValueError(problem)
    if not isinstance(version, str) or not VERSION.fullmatch(version):
        raise ValueError(f"version {version!r}: give the project version, e.g. 0.1.0")
    if not isinstance(commit, str) or not COMMIT.fullmatch(commit):
        raise ValueError(f"commit {commit!r}: give the full 40-character commit id")
    if set(digests) != set(PUBLISHED):
        raise ValueError(f"images {sorted(digests)}: a publish pins exactly {', '.join(PUBLISHED)}")
    for name, digest in digests.items():
        if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
            raise ValueError(f"image {name}: {digest!r} is not a sha256:<64 hex> digest")
    return Pins(registry, version, commit, {name: digests[name] for name in PUBLISHED})


def parse(text: str) -> Pins:
    """A digests file's text as :class:`Pins`; ValueError naming the first thing wrong."""
    try:
        found = json.loads(text)
    except ValueError:
        raise ValueError("not JSON") from None
    if not isinstance(found, dict) or set(found) != {"registry", "version", "commit", "images"} \
            or not isinstance(found["images"], dict):
        raise ValueError('expected {"registry", "version", "commit", "images": {name: reference}}')
    registry = found["registry"]
    digests = {}
    for name, ref in found["images"].items():
        expected = repository(registry, name) + "@" if isinstance(registry, str) else None
        if not isinstance(ref, str) or expected is None or not ref.startswith(expected):
            raise ValueError(f"images.{name}: {ref!r} is not {repository(str(registry), name)}@sha256:...")
        digests[name] = ref[len(expected):]
    return pins(registry, found["version"], found["commit"], digests)


def load(path: str | Path) -> Pins:
    """The digests file at ``path``; ValueError ``digests file PATH: <what is wrong>``."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
        return parse(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"digests file {path}: {reason}: give the file `make publish` wrote "
                         f"({DIGESTS_FILE})") from None


LOCAL, DIGESTS, REGISTRY_ONLY = "local", "digests", "registry"  # the modes of :func:`resolve`


@dataclass(frozen=True)
class Images:
    """A run's step images, decided once: step -> reference, and how they were decided.

    ``digests`` (a digests file) and ``registry`` (tags resolved by the engine once) give only
    ``<registry>/clusterflow/<step>@sha256:...``; ``local`` gives ``clusterflow/<step>:<tag>``,
    the images this engine built.
    """

    mode: str
    refs: Mapping[str, str]

    @property
    def pinned(self) -> bool:
        return self.mode != LOCAL

    def as_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "refs": dict(self.refs)}


def local(tag: str, steps: tuple[str, ...] = spec.STEPS) -> Images:
    """The local builds ``clusterflow/<step>:<tag>`` (no registry): what a run gets without pins."""
    return Images(LOCAL, spec.local_images(tag, steps))


def pinned_digest(ref: str) -> str | None:
    """The manifest digest ``sha256:...`` a reference pins, or ``None`` for a tag."""
    _, at, digest = ref.rpartition("@")
    return digest if at and DIGEST.fullmatch(digest) else None


def from_json(found: Mapping[str, Any], steps: tuple[str, ...] = spec.STEPS) -> Images:
    """:meth:`Images.as_json` back (a plan's record of the images of ``steps``, no more, no fewer);
    ValueError when it is not one."""
    mode, refs = found.get("mode"), found.get("refs")
    if mode not in (LOCAL, DIGESTS, REGISTRY_ONLY) or not isinstance(refs, dict) or set(refs) != set(steps) \
            or mode != LOCAL and not all(isinstance(r, str) and pinned_digest(r) for r in refs.values()):
        raise ValueError(f"images {dict(found)!r}: not a record of resolved step images")
    return Images(mode, dict(refs))


def configured(environ: Mapping[str, str]) -> tuple[Pins | None, str | None]:
    """The pins of ``CLUSTERFLOW_DIGESTS`` (if set) and the registry: the file's, or
    ``CLUSTERFLOW_REGISTRY``; ValueError when either is unusable or they disagree."""
    path = (environ.get(DIGESTS_ENV) or "").strip()
    registry = (environ.get(REGISTRY_ENV) or "").strip()
    problem = registry_problem(registry) if registry else None
    if problem:
        raise ValueError(f"{REGISTRY_ENV}: {problem}")
    found = load(path) if path else None
    if found and registry and registry != found.registry:
        raise ValueError(f"{REGISTRY_ENV}={registry} but the digests file {path} pins images in "
                         f"{found.registry}: unset one, or give the file of a publish to {registry}")
    return found, found.registry if found else registry or None


def resolve(environ: Mapping[str, str], tag: str, registry_digest: Callable[[str], str] | None = None,
            steps: tuple[str, ...] = spec.STEPS) -> Images:
    """The images of ``steps`` (a training run's; ``(contract.ASSIGN,)`` for scoring new data), from
    ``CLUSTERFLOW_DIGESTS`` and/or ``CLUSTERFLOW_REGISTRY``.

    With only a registry, ``registry_digest(ref)`` (the engine's ``GET /distribution``, which
    knows the registries the engine trusts) turns each ``<registry>/clusterflow/<step>:<tag>``
    into its manifest digest, once. ValueError with a one-line fix for anything off.
    """
    found, registry = configured(environ)
    if found:
        return Images(DIGESTS, {step: found.ref(step) for step in steps})
    if not registry:
        return local(tag, steps)
    if registry_digest is None:
        raise ValueError(f"{REGISTRY_ENV}={registry}: resolving its tags needs a Docker engine")
    refs = {}
    for step in steps:
        tagged = f"{repository(registry, step)}:{tag}"
        digest = registry_digest(tagged)
        if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
            raise ValueError(f"{tagged}: the engine gave {digest!r}, not a sha256:<64 hex> manifest digest")
        refs[step] = pinned_ref(registry, step, digest)
    return Images(REGISTRY_ONLY, refs)


def engine_digests(api: Any) -> Callable[[str], str]:
    """What :func:`resolve` asks in registry mode: the manifest digest of a tagged reference, from
    the engine at ``api`` (a docker ``APIClient``); ValueError naming the reference otherwise."""
    def digest(ref: str) -> str:
        try:
            return api.inspect_distribution(ref)["Descriptor"]["digest"]
        except docker.errors.DockerException as exc:
            reason = " ".join(str(getattr(exc, "explanation", None) or exc).split())[:200]
            raise ValueError(f"{ref}: the engine cannot resolve it ({reason}): publish it, or check "
                             f"{REGISTRY_ENV} and the tag") from None
    return digest


def main(argv: list[str]) -> int:
    """``python -m clusterflow.pinning REGISTRY VERSION COMMIT NAME=DIGEST...``: print a digests
    file (what ``scripts/publish.sh`` writes), or one line and exit 2 when something is off."""
    if len(argv) < 3:
        print("usage: python -m clusterflow.pinning REGISTRY VERSION COMMIT NAME=sha256:... ...", file=sys.stderr)
        return 2
    registry, version, commit, *pairs = argv
    try:
        bad = [pair for pair in pairs if "=" not in pair]
        if bad:
            raise ValueError(f"{bad[0]!r}: give NAME=sha256:<digest>")
        digests = dict(pair.split("=", 1) for pair in pairs)
        if len(digests) != len(pairs):
            raise ValueError("an image is named twice")
        found = pins(registry, version, commit, digests)
    except ValueError as exc:
        print(f"clusterflow.pinning: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(found.as_json(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
