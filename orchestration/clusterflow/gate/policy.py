"""What the launch gate forwards: pure functions from a request (method, path, query, body) to
a decision. No I/O: the server asks the engine and the file system, this module only judges.

A step container is admitted only in the shape the two renderings send (the local runner's
``containers.create`` and DockerOperator, both captured against a recording engine): every
default they add is dropped, every value that matters is checked, and the body the engine gets
is rebuilt from the checked values, with the host config rendered by docker-py from
:data:`spec.CONTAINER_POLICY` (the one definition of the hardening).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import docker.types

from clusterflow import pinning, spec

MAX_BODY = 64 << 10
MAX_ARGS, MAX_ARG = 64, 4096
DEFAULT_API = "1.41"  # Engine 20.10's; a request without a /v1.xx prefix gets the engine's own
MIN_API = (1, 24)  # older versions still apply a host config sent with `start` (a second create)
PREFIX = "clusterflow launch gate: "
REQUIRED_LABELS = frozenset(spec.labels("", "", spec.Task("", "", ())))
_NAME = re.compile(r"clusterflow\.[A-Za-z0-9_.-]{1,200}")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_ENV_NAMES = frozenset({spec.IMAGE_ENV, spec.IMAGE_DIGEST_ENV})

# The engine's spelling of every field of a create body (API 1.41), by object. The engine
# matches names case-insensitively: a key spelled otherwise is refused, never guessed.
CONFIG_KEYS = frozenset(
    "Hostname Domainname User AttachStdin AttachStdout AttachStderr ExposedPorts Tty OpenStdin StdinOnce "
    "Env Cmd Healthcheck ArgsEscaped Image Volumes WorkingDir Entrypoint NetworkDisabled MacAddress OnBuild "
    "Labels StopSignal StopTimeout Shell HostConfig NetworkingConfig".split())
HOST_CONFIG_KEYS = frozenset(
    "Binds ContainerIDFile LogConfig NetworkMode PortBindings RestartPolicy AutoRemove VolumeDriver "
    "VolumesFrom CapAdd CapDrop CgroupnsMode Dns DnsOptions DnsSearch ExtraHosts GroupAdd IpcMode Cgroup "
    "Links OomScoreAdj PidMode Privileged PublishAllPorts ReadonlyRootfs SecurityOpt StorageOpt Tmpfs "
    "UTSMode UsernsMode ShmSize Sysctls Runtime ConsoleSize Isolation CpuShares Memory NanoCpus "
    "CgroupParent BlkioWeight BlkioWeightDevice BlkioDeviceReadBps BlkioDeviceWriteBps "
    "BlkioDeviceReadIOps BlkioDeviceWriteIOps CpuPeriod CpuQuota CpuRealtimePeriod CpuRealtimeRuntime "
    "CpusetCpus CpusetMems Devices DeviceCgroupRules DeviceRequests KernelMemory KernelMemoryTCP "
    "MemoryReservation MemorySwap MemorySwappiness OomKillDisable Init PidsLimit Ulimits CpuCount "
    "CpuPercent IOMaximumIOps IOMaximumBandwidth Mounts MaskedPaths ReadonlyPaths".split())
MOUNT_KEYS = frozenset("Target Source Type ReadOnly Consistency BindOptions VolumeOptions TmpfsOptions".split())
# Present at all, even empty, they change the default: an empty MaskedPaths unmasks /proc.
_NEVER = frozenset({"MaskedPaths", "ReadonlyPaths"})
# The relative CPU weight DockerOperator always sends (its cpus=1.0): the engine's default too.
_DEFAULT_WEIGHTS = {"CpuShares": (0, 1024)}
_ATTACH = ("AttachStdout", "AttachStderr")
_CHECKED = frozenset({"Memory", "NanoCpus", "Mounts"})  # by _limit and _mounts


class Refusal(Exception):
    """A request the gate does not forward: ``rule`` is the one-line reason the client gets."""

    def __init__(self, rule: str, status: int = 403):
        super().__init__(rule)
        self.rule, self.status = rule, status

    def body(self) -> bytes:
        return json.dumps({"message": PREFIX + self.rule}).encode()


@dataclass(frozen=True)
class Settings:
    """What the operator configured (see :mod:`clusterflow.gate.config`)."""

    data_source: str
    cache_source: str
    limits: spec.StepLimits
    image_tag: str | None = None
    input_dirs: tuple[str, ...] = ()
    # From CLUSTERFLOW_DIGESTS (step -> its pinned ref) and/or CLUSTERFLOW_REGISTRY (the file's
    # when both): then steps run only by digest, and only those digests are pulled.
    pins: Mapping[str, str] | None = None
    registry: str | None = None

    def by_digest(self, ref: str) -> str | None:
        """The step ``ref`` names by digest in this registry (any digest: registry mode), or None."""
        return pinning.pinned_step(ref, self.registry) if self.registry and isinstance(ref, str) else None


@dataclass(frozen=True)
class Route:
    """An admitted endpoint: ``kind`` (ping, version, create, container, image, images) and, for
    a container call, the container as named in the path and the path after it."""

    kind: str
    api: str
    container: str | None = None  # a container call: the container; distribution: the image
    action: str | None = None
    query: tuple[tuple[str, str], ...] = ()


# Per-container calls: method, action (after /containers/<id>) -> the query parameters allowed.
CONTAINER_CALLS: dict[tuple[str, str], frozenset[str]] = {
    ("POST", "/start"): frozenset({"detachKeys"}),
    ("POST", "/attach"): frozenset({"logs", "stream", "stdin", "stdout", "stderr", "detachKeys"}),
    ("POST", "/wait"): frozenset({"condition"}),
    ("GET", "/logs"): frozenset({"follow", "stdout", "stderr", "since", "until", "timestamps", "tail"}),
    ("GET", "/json"): frozenset({"size"}),
    ("POST", "/stop"): frozenset({"t", "signal"}),
    ("POST", "/kill"): frozenset({"signal"}),
    ("DELETE", ""): frozenset({"v", "force", "link"}),
}
_CONTAINER_PATH = re.compile(r"/containers/([^/]+)(/[a-z]+)?")


def route(method: str, target: str) -> Route:
    """The endpoint a request is for, or :class:`Refusal` naming the rule it breaks."""
    url = urllib.parse.urlsplit(target)
    version = re.match(r"/v(\d)\.(\d{1,3})(?=/)", url.path)
    path = url.path[version.end():] if version else url.path
    api = f"{version.group(1)}.{version.group(2)}" if version else DEFAULT_API
    if version and (int(version.group(1)), int(version.group(2))) < MIN_API:
        raise Refusal(f"API version {api} is older than {MIN_API[0]}.{MIN_API[1]}: use a current client")
    query = _query(url.query)
    if path == "/_ping" and method in ("GET", "HEAD") or path == "/version" and method == "GET":
        return Route(path.lstrip("/_"), api)
    if path == "/containers/create" and method == "POST":
        names = [v for k, v in query if k == "name"]
        if {k for k, _ in query} - {"name"} or names and not _NAME.fullmatch(names[0]):
            raise Refusal("create takes only a name query, clusterflow.<safe characters>")
        return Route("create", api, query=query)
    found = _CONTAINER_PATH.fullmatch(path)
    if found and path != "/containers/json":
        action = found.group(2) or ""
        allowed = CONTAINER_CALLS.get((method, action))
        if allowed is None:
            raise Refusal(f"{method} /containers/<id>{action} is not a step container call")
        if not _ID.fullmatch(found.group(1)):
            raise Refusal("a container is named by its id or a plain name")
        extra = sorted({k for k, _ in query} - allowed)
        if extra or action == "" and any(k == "link" and _truthy(v) for k, v in query):
            raise Refusal(f"{method} /containers/<id>{action}: query parameter {(extra or ['link'])[0]} not allowed")
        return Route("container", api, found.group(1), action, query)
    if method == "GET" and path == "/images/json":
        _image_filter(query)
        return Route("images", api, query=query)
    if method == "GET" and path.startswith("/images/") and path.endswith("/json"):
        name = urllib.parse.unquote(path[len("/images/"):-len("/json")])
        if not pinning.STEP_IMAGE.fullmatch(name):
            raise Refusal(f"image {name!r} is not a clusterflow step image")
        return Route("image", api)
    if method == "POST" and path == "/images/create":
        return Route("pull", api, query=query)  # judged by :func:`pull`, which knows the pins
    if method == "GET" and path.startswith("/distribution/") and path.endswith("/json"):
        return Route("distribution", api, urllib.parse.unquote(path[len("/distribution/"):-len("/json")]))
    raise Refusal(f"{method} {path} is not a step container call")


def pull(found: Route, settings: Settings) -> str:
    """The engine's target for an admitted pull: a step image of the configured registry by its
    digest (with a digests file: exactly a pinned one), in the two query keys docker-py sends."""
    if not settings.registry:
        raise Refusal("POST /images/create: pulling images is not allowed (the gate has neither "
                      f"{pinning.DIGESTS_ENV} nor {pinning.REGISTRY_ENV})")
    params = dict(found.query)
    if set(params) != {"fromImage", "tag"}:
        raise Refusal("POST /images/create takes exactly fromImage=<registry>/clusterflow/<step> and "
                      "tag=sha256:<digest>")
    ref = f"{params['fromImage']}@{params['tag']}"
    if settings.pins and ref not in settings.pins.values():
        raise Refusal(f"pull of {ref!r}: only the step images pinned by {pinning.DIGESTS_ENV}, by their digests")
    if settings.by_digest(ref) is None:
        raise Refusal(f"pull of {ref!r}: only {settings.registry}/clusterflow/<step>@sha256:<digest>")
    query = urllib.parse.urlencode({"fromImage": params["fromImage"], "tag": params["tag"]})
    return f"/v{found.api}/images/create?{query}"


def distribution(found: Route, settings: Settings) -> str:
    """The engine's target for ``GET /distribution/<ref>/json`` (a registry's tag -> its digest,
    what the DAG's plan asks once per run): only with a registry and no digests file, only a
    step image of that registry by its tag (the gate's tag when it has one)."""
    name = found.container or ""
    if not settings.registry or settings.pins:
        raise Refusal("GET /distribution: only with CLUSTERFLOW_REGISTRY and no digests file "
                      "(the pins are the digests)")
    repo, _, tag = name.rpartition(":")
    if not any(repo == pinning.repository(settings.registry, step) for step in spec.IMAGES) \
            or not pinning.TAG.fullmatch(tag) \
            or settings.image_tag and tag != settings.image_tag:
        raise Refusal(f"GET /distribution of {name!r}: only {settings.registry}/clusterflow/<step>:"
                      f"{settings.image_tag or '<tag>'}")
    return f"/v{found.api}/distribution/{urllib.parse.quote(name, safe='/:')}/json"


def credentials(header_names: Iterable[bytes]) -> None:
    """Registry credentials never pass: the gate forwards none, so a client that sends them would
    get an anonymous pull it did not ask for. The registry of the pins needs none (loopback)."""
    if b"x-registry-auth" in {name.lower() for name in header_names}:
        raise Refusal("X-Registry-Auth: the gate passes no registry credentials: pull from a registry "
                      "that needs none, or pull on the engine's host")


def _query(text: str) -> tuple[tuple[str, str], ...]:
    try:
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except ValueError:
        raise Refusal("malformed query string", 400) from None
    if len({k for k, _ in pairs}) != len(pairs):
        raise Refusal("a query parameter is given twice", 400)
    return tuple(pairs)


def _truthy(value: str) -> bool:
    return value.lower() not in ("", "0", "false")


def _image_filter(query: Iterable[tuple[str, str]]) -> None:
    """``GET /images/json`` lists only clusterflow step images: a ``reference`` filter naming them."""
    params = dict(query)
    if set(params) - {"filters", "filter", "all", "only_ids", "digests"}:
        raise Refusal("GET /images/json takes only filters, all, only_ids, digests")
    try:
        filters = json.loads(params.get("filters") or "{}")
    except ValueError:
        raise Refusal("GET /images/json: filters is not JSON", 400) from None
    names = [params["filter"]] if "filter" in params else []
    if not isinstance(filters, dict) or set(filters) - {"reference"}:
        raise Refusal("GET /images/json: only a reference filter naming a clusterflow step image")
    refs = filters.get("reference", [])
    names += list(refs) if isinstance(refs, (list, dict)) else [refs]
    if not names or not all(isinstance(n, str) and pinning.STEP_IMAGE.fullmatch(n) for n in names):
        raise Refusal("GET /images/json: only a reference filter naming a clusterflow step image")


def parse_json(body: bytes) -> Any:
    """The body as JSON, refusing duplicate keys at any level (the engine keeps the last one)."""
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for key, value in pairs:
            if key in found:
                raise Refusal(f"duplicate key {key!r}", 400)
            found[key] = value
        return found

    def no_constant(name: str) -> Any:
        raise Refusal(f"{name} is not JSON", 400)

    try:
        return json.loads(body.decode("utf-8"), object_pairs_hook=unique, parse_constant=no_constant)
    except (UnicodeDecodeError, ValueError):
        raise Refusal("the body is not JSON", 400) from None


def _spelled(obj: Any, known: frozenset[str], where: str) -> dict[str, Any]:
    """``obj`` as a JSON object whose keys are all spelled as the engine spells them."""
    if not isinstance(obj, dict):
        raise Refusal(f"{where.rstrip('.[]') or 'the body'} must be a JSON object", 400)
    folded = {k.casefold(): k for k in known}
    for key in obj:
        if key not in known:
            if key.casefold() in folded:
                raise Refusal(f"{where}{key}: the engine spells it {folded[key.casefold()]!r}")
            raise Refusal(f"{where}{key}: unknown key")
    return obj


def _is_default(value: Any) -> bool:
    """The zero value of a field: what the engine assumes when the field is absent."""
    if isinstance(value, dict):
        return all(_is_default(v) for v in value.values())
    return value is None or value is False or value == "" or value == [] or (
        isinstance(value, int) and not isinstance(value, bool) and value == 0)


def image(value: Any, settings: Settings) -> str:
    if settings.pins:
        if value not in settings.pins.values():
            raise Refusal(f"Image {value!r}: only the step images pinned by {pinning.DIGESTS_ENV}, by digest")
        return value
    if settings.registry:
        if not isinstance(value, str) or settings.by_digest(value) is None:
            raise Refusal(f"Image {value!r}: only {settings.registry}/clusterflow/<step>@sha256:<digest>, "
                          "never a tag")
        return value
    found = pinning.STEP_IMAGE.fullmatch(value) if isinstance(value, str) else None
    if not found:
        raise Refusal(f"Image {value!r} is not a clusterflow step image ({spec.IMAGE_REPOSITORY}/<step>)")
    if not (found.group("tag") or found.group("digest")):
        raise Refusal(f"Image {value!r}: give a tag or a digest")
    if settings.image_tag and found.group("tag") != settings.image_tag:
        raise Refusal(f"Image {value!r}: only the tag {settings.image_tag} is allowed")
    return value


def _strings(value: Any, what: str, most: int = MAX_ARGS) -> list[str]:
    if not isinstance(value, list) or len(value) > most or not all(
            isinstance(v, str) and len(v) <= MAX_ARG and "\0" not in v for v in value):
        raise Refusal(f"{what} must be a list of at most {most} strings of at most {MAX_ARG} characters")
    return value


def _env(value: Any) -> list[str]:
    for item in _strings(value or [], "Env"):
        if item.partition("=")[0] not in _ENV_NAMES:
            raise Refusal(f"Env {item.partition('=')[0]!r}: only {', '.join(sorted(_ENV_NAMES))}")
    return value or []


def _labels(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) and len(v) <= MAX_ARG for v in value.values()):
        raise Refusal("Labels must be an object of strings")
    other = sorted(k for k in value if not k.startswith(spec.LABEL_PREFIX + "."))
    if other:
        raise Refusal(f"label {other[0]!r}: only {spec.LABEL_PREFIX}.* labels")
    missing = sorted(REQUIRED_LABELS - set(value))
    if missing:
        raise Refusal(f"label {missing[0]} missing: a step container carries the clusterflow labels")
    return value


def _limit(host: dict[str, Any], key: str, most: int, least: int = 1) -> int:
    value = host.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= most:
        raise Refusal(f"HostConfig.{key} {value!r}: give {least}..{most} (the step limits)")
    return value


def _mounts(host: dict[str, Any], settings: Settings, commit: bool,
            resolve_input: Callable[[str, tuple[str, ...]], str]) -> list[spec.Mount]:
    """The mounts :func:`spec.mounts` renders for the configured data root (data rw and cache ro
    for a step, the other way round for a commit container) and at most one read-only input."""
    expected = spec.mounts(settings.data_source, cache=settings.cache_source, commit=commit)
    rendered = [dict(_docker_mount(m)) for m in expected]
    received = host.get("Mounts")
    if not isinstance(received, list):
        raise Refusal("HostConfig.Mounts missing: the data root and the cache store")
    inputs: list[spec.Mount] = []
    for item in received:
        mount = _spelled(item, MOUNT_KEYS, "HostConfig.Mounts[].")
        extra = sorted(k for k, v in mount.items() if k not in ("Target", "Source", "Type", "ReadOnly")
                       and not _is_default(v))
        if extra:
            raise Refusal(f"HostConfig.Mounts: {extra[0]} not allowed")
        core = {"Target": mount.get("Target"), "Source": mount.get("Source"), "Type": mount.get("Type"),
                "ReadOnly": mount.get("ReadOnly", False)}
        if core in rendered:
            rendered.remove(core)
            continue
        target, source = core["Target"], core["Source"]
        if not (isinstance(target, str) and re.fullmatch(rf"{spec.INPUT_MOUNT}/[A-Za-z0-9_][A-Za-z0-9_.-]*", target)):
            raise Refusal(f"mount at {target!r}: only the data root, the cache store and one input under "
                          f"{spec.INPUT_MOUNT}")
        if core["Type"] != "bind" or core["ReadOnly"] is not True or not isinstance(source, str) or inputs:
            raise Refusal(f"mount at {target!r}: one read-only bind from CLUSTERFLOW_INPUT_DIRS")
        inputs.append(spec.Mount(resolve_input(source, settings.input_dirs), target, read_only=True))
    if rendered:
        raise Refusal(f"mount at {rendered[0]['Target']} missing or not as configured "
                      f"({rendered[0]['Source']}, read-only {rendered[0]['ReadOnly']})")
    return [*expected, *inputs]


def _docker_mount(m: spec.Mount) -> docker.types.Mount:
    return docker.types.Mount(m.target, m.source, type=m.kind, read_only=m.read_only)


def _host_config(host: Any, api: str, settings: Settings, commit: bool,
                 resolve_input: Callable[[str, tuple[str, ...]], str]) -> dict[str, Any]:
    """The host config to forward: docker-py's rendering of the policy, the checked limits and
    mounts; refused when ``host`` asks for anything else."""
    host = _spelled(host, HOST_CONFIG_KEYS, "HostConfig.")
    policy = dict(docker.types.HostConfig(api, **spec.CONTAINER_POLICY))
    granted = [k for k, v in host.items() if k not in policy and (k in _NEVER or k not in _CHECKED and not (
        _is_default(v) or v in _DEFAULT_WEIGHTS.get(k, ())))]
    if granted:  # what grants privilege first, so the answer names it
        raise Refusal(f"HostConfig.{granted[0]} not allowed")
    for key, expected in policy.items():
        if key not in host:
            raise Refusal(f"HostConfig.{key} missing: the step policy requires {expected!r}")
        if host[key] != expected or type(host[key]) is not type(expected):
            raise Refusal(f"HostConfig.{key} {host[key]!r}: the step policy is {expected!r}")
    memory = _limit(host, "Memory", settings.limits.memory, least=6 << 20)
    nano_cpus = _limit(host, "NanoCpus", settings.limits.nano_cpus)
    mounts = _mounts(host, settings, commit, resolve_input)
    return dict(docker.types.HostConfig(api, **spec.CONTAINER_POLICY, mem_limit=memory, nano_cpus=nano_cpus,
                                        mounts=[_docker_mount(m) for m in mounts]))


def create_body(body: bytes, api: str, settings: Settings,
                resolve_input: Callable[[str, tuple[str, ...]], str]) -> bytes:
    """The create body to forward, rebuilt from the checked values of ``body``; :class:`Refusal`
    naming the first rule it breaks."""
    config = _spelled(parse_json(body), CONFIG_KEYS, "")
    command = _strings(config.get("Cmd"), "Cmd")
    host = _host_config(config.get("HostConfig"), api, settings, spec.COMMIT_CACHE_FLAG in command, resolve_input)
    checked: dict[str, Any] = {"Image": image(config.get("Image"), settings)}
    if config.get("User") != spec.STEP_USER:
        raise Refusal(f"User {config.get('User')!r}: steps run as {spec.STEP_USER}")
    checked["User"] = spec.STEP_USER
    checked["Cmd"] = command
    checked["Env"] = _env(config.get("Env"))
    checked["Labels"] = _labels(config.get("Labels"))
    for key in _ATTACH:
        if not isinstance(config.get(key, False), bool):
            raise Refusal(f"{key} must be true or false", 400)
        checked[key] = config.get(key, False)
    others = sorted(k for k, v in config.items() if k not in checked and k != "HostConfig" and not _is_default(v))
    if others:
        why = " (the step image's entrypoint runs)" if others[0] == "Entrypoint" else ""
        raise Refusal(f"{others[0]} not allowed{why}")
    checked["HostConfig"] = host
    return json.dumps(checked, separators=(",", ":")).encode()


def clusterflow_container(inspected: Any) -> str:
    """The container's full id when the engine's inspect shows the clusterflow labels."""
    labels = ((inspected or {}).get("Config") or {}).get("Labels") or {}
    if not isinstance(labels, dict) or not REQUIRED_LABELS <= set(labels) or not isinstance(inspected.get("Id"), str):
        raise Refusal("not a clusterflow step container (it lacks the io.clusterflow labels)")
    return inspected["Id"]
