"""Pinning: the digests file (what a publish records) and the one resolution of a run's step images."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from clusterflow import cli, pinning, spec

REGISTRY = "127.0.0.1:5000"
NAMES = ("core", "base", "prepare", "cluster", "evaluate", "report", "assign")  # what a publish pushes
DIGESTS = {name: "sha256:" + f"{i}" * 64 for i, name in enumerate(NAMES, start=1)}
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def document(registry: str = REGISTRY, **changes) -> dict:
    found = {"registry": registry, "version": "0.1.0", "commit": COMMIT,
             "images": {name: f"{registry}/clusterflow/{name}@{digest}" for name, digest in DIGESTS.items()}}
    return {**found, **changes}


def write(path, value) -> str:
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return str(path)


def test_a_digests_file_pins_every_step_by_its_digest_in_its_registry(tmp_path):
    images = pinning.resolve({pinning.DIGESTS_ENV: write(tmp_path / "d.json", document())}, "9.9.9")
    assert images.mode == "digests" and images.pinned
    assert dict(images.refs) == {
        "prepare": f"{REGISTRY}/clusterflow/prepare@{DIGESTS['prepare']}",
        "cluster": f"{REGISTRY}/clusterflow/cluster@{DIGESTS['cluster']}",
        "evaluate": f"{REGISTRY}/clusterflow/evaluate@{DIGESTS['evaluate']}",
        "report": f"{REGISTRY}/clusterflow/report@{DIGESTS['report']}"}
    assert pinning.pinned_digest(images.refs["cluster"]) == DIGESTS["cluster"]


def test_the_same_registry_beside_the_file_is_fine(tmp_path):
    path = write(tmp_path / "d.json", document("registry.example.org/acme"))
    images = pinning.resolve({pinning.DIGESTS_ENV: path, pinning.REGISTRY_ENV: "registry.example.org/acme"}, "x")
    assert images.refs["report"] == f"registry.example.org/acme/clusterflow/report@{DIGESTS['report']}"


def test_a_registry_alone_is_resolved_once_per_step_from_the_tag_and_then_only_digests(tmp_path):
    asked = []

    def engine(ref: str) -> str:
        asked.append(ref)
        return DIGESTS[ref.split("/")[-1].split(":")[0]]

    images = pinning.resolve({pinning.REGISTRY_ENV: REGISTRY}, "0.1.0", engine)
    assert asked == [f"{REGISTRY}/clusterflow/{step}:0.1.0" for step in ("prepare", "cluster", "evaluate", "report")]
    assert images.mode == "registry"
    assert images.refs["evaluate"] == f"{REGISTRY}/clusterflow/evaluate@{DIGESTS['evaluate']}"
    assert all("@sha256:" in ref and ":0.1.0" not in ref for ref in images.refs.values())


def test_neither_is_the_local_builds_by_tag_and_needs_no_engine():
    images = pinning.resolve({}, "1.2.3")
    assert images.mode == "local" and not images.pinned
    assert dict(images.refs) == {step: f"clusterflow/{step}:1.2.3"
                                 for step in ("prepare", "cluster", "evaluate", "report")}
    assert all(pinning.pinned_digest(ref) is None for ref in images.refs.values())


def test_a_plan_record_reads_back_and_refuses_a_tag_where_a_digest_belongs(tmp_path):
    images = pinning.resolve({pinning.DIGESTS_ENV: write(tmp_path / "d.json", document())}, "x")
    assert pinning.from_json(json.loads(json.dumps(images.as_json()))) == images
    tagged = {**images.as_json(), "refs": {**images.refs, "cluster": f"{REGISTRY}/clusterflow/cluster:0.1.0"}}
    with pytest.raises(ValueError, match="not a record of resolved step images"):
        pinning.from_json(tagged)


def images_of(registry: str, **refs: str) -> dict:
    return {**document(registry)["images"], **refs}


@pytest.mark.parametrize("value, reason", [
    (document(images=images_of(REGISTRY, cluster=f"evil.example.org/clusterflow/cluster@{DIGESTS['cluster']}")),
     "images.cluster: 'evil.example.org/clusterflow/cluster@sha256:"),
    (document(images=images_of(REGISTRY, cluster=f"{REGISTRY}/clusterflow/prepare@{DIGESTS['cluster']}")),
     "is not 127.0.0.1:5000/clusterflow/cluster@sha256:..."),
    (document(images=images_of(REGISTRY, prepare=f"{REGISTRY}/clusterflow/prepare:0.1.0")), "images.prepare"),
    (document(images=images_of(REGISTRY, prepare=f"{REGISTRY}/clusterflow/prepare@sha256:abc")),
     "image prepare: 'sha256:abc' is not a sha256:<64 hex> digest"),
    (document(images=images_of(REGISTRY, prepare=f"{REGISTRY}/clusterflow/prepare@sha256:{'A' * 64}")),
     "is not a sha256:<64 hex> digest"),
    (document(images={k: v for k, v in images_of(REGISTRY).items() if k != "report"}), "a publish pins exactly"),
    (document(images={**images_of(REGISTRY), "shell": f"{REGISTRY}/clusterflow/shell@{DIGESTS['core']}"}),
     "a publish pins exactly"),
    ({**document(), "signature": "x"}, 'expected {"registry", "version", "commit", "images"'),
    (document(commit="HEAD"), "commit 'HEAD': give the full 40-character commit id"),
    (document(registry="http://127.0.0.1:5000"), "without a scheme"),
    ("[1, 2]", "expected {"), ("{", "not JSON"), ("x" * (pinning.MAX_FILE_BYTES + 1), "larger than 65536 bytes"),
    (b"\xff\xfe".decode("latin-1"), "not JSON"),
])
def test_a_malformed_digests_file_is_refused_in_one_line(tmp_path, value, reason):
    path = write(tmp_path / "d.json", value)
    with pytest.raises(ValueError) as caught:
        pinning.resolve({pinning.DIGESTS_ENV: path}, "0.1.0")
    message = str(caught.value)
    assert message.startswith(f"digests file {path}: ") and reason in message, message
    assert message.endswith("give the file `make publish` wrote (images/digests.json)") and "\n" not in message


def test_a_symlinked_digests_file_is_read_as_its_target_a_missing_one_is_refused(tmp_path):
    """A symlink is the operator's own choice (e.g. a release's file): only its content is checked."""
    target = write(tmp_path / "release.json", document())
    (tmp_path / "current.json").symlink_to(target)
    assert pinning.resolve({pinning.DIGESTS_ENV: str(tmp_path / "current.json")}, "x").mode == "digests"
    (tmp_path / "dangling.json").symlink_to(tmp_path / "gone.json")
    with pytest.raises(ValueError, match=r"dangling.json: No such file or directory: give the file"):
        pinning.resolve({pinning.DIGESTS_ENV: str(tmp_path / "dangling.json")}, "x")
    with pytest.raises(ValueError, match=r"digests file .*: Is a directory"):
        pinning.resolve({pinning.DIGESTS_ENV: str(tmp_path)}, "x")


def test_a_registry_other_than_the_files_is_refused(tmp_path):
    path = write(tmp_path / "d.json", document())
    with pytest.raises(ValueError, match=r"^CLUSTERFLOW_REGISTRY=127.0.0.1:6000 but the digests file .* pins images "
                                         r"in 127.0.0.1:5000: unset one, or give the file of a publish to"):
        pinning.resolve({pinning.DIGESTS_ENV: path, pinning.REGISTRY_ENV: "127.0.0.1:6000"}, "0.1.0")


@pytest.mark.parametrize("registry", ["http://127.0.0.1:5000", "Registry:5000", "127.0.0.1:5000/", "plainname"])
def test_an_unusable_registry_is_refused_before_any_engine_is_asked(registry):
    def engine(ref: str) -> str:
        raise AssertionError("asked the engine")

    with pytest.raises(ValueError, match=r"^CLUSTERFLOW_REGISTRY: registry .*: give HOST:PORT or a domain"):
        pinning.resolve({pinning.REGISTRY_ENV: registry}, "0.1.0", engine)


@pytest.mark.parametrize("answer", ["sha256:abc", "latest", None, "sha512:" + "0" * 128])
def test_an_engine_answer_that_is_not_a_manifest_digest_is_refused(answer):
    with pytest.raises(ValueError,
                       match=r"^127.0.0.1:5000/clusterflow/prepare:0.1.0: the engine gave .*, not a sha256"):
        pinning.resolve({pinning.REGISTRY_ENV: REGISTRY}, "0.1.0", lambda ref: answer)


def test_a_registry_alone_without_an_engine_says_it_needs_one():
    with pytest.raises(ValueError, match="resolving its tags needs a Docker engine"):
        pinning.resolve({pinning.REGISTRY_ENV: REGISTRY}, "0.1.0")


def test_the_engines_refusal_to_resolve_a_tag_names_the_reference():
    import docker.errors

    class Engine:
        def inspect_distribution(self, ref):
            raise docker.errors.APIError("404", explanation=f"manifest unknown: {ref}")

    with pytest.raises(ValueError, match=r"^127.0.0.1:5000/clusterflow/prepare:0.1.0: the engine cannot resolve it "
                                         r"\(manifest unknown: .*\): publish it, or check CLUSTERFLOW_REGISTRY"):
        pinning.resolve({pinning.REGISTRY_ENV: REGISTRY}, "0.1.0", pinning.engine_digests(Engine()))


def test_stages_need_an_image_for_every_step():
    with pytest.raises(ValueError, match="no image for step report"):
        spec.stages("r", spec.PipelineParams(), {s: f"clusterflow/{s}:1" for s in ("prepare", "cluster", "evaluate")})


class FakeClient:
    api = None

    def ping(self):
        return True


def test_run_takes_digests_over_the_environment_and_refuses_a_bad_file_with_exit_2(tmp_path, monkeypatch):
    seen = {}

    class Runner:
        def __init__(self, client, data_dir, limits=None, jobs=None):
            pass

        def run(self, run_id, params, images):
            seen["images"] = images
            return tmp_path / "report.html"

    monkeypatch.setattr(cli, "LocalRunner", Runner)
    monkeypatch.setattr(cli.docker, "from_env", FakeClient)
    other = write(tmp_path / "other.json", document("127.0.0.1:7000"))
    chosen = write(tmp_path / "chosen.json", document())
    env = {**os.environ, pinning.DIGESTS_ENV: other}
    env.pop(pinning.REGISTRY_ENV, None)
    result = CliRunner().invoke(cli.main, ["run", "--run-id", "r", "--digests", chosen], env=env)
    assert result.exit_code == 0, result.output
    assert seen["images"].refs["prepare"] == f"{REGISTRY}/clusterflow/prepare@{DIGESTS['prepare']}"
    broken = write(tmp_path / "broken.json", document(commit="main"))
    result = CliRunner().invoke(cli.main, ["run", "--run-id", "r", "--digests", broken], env=env)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"clusterflow: digests file {broken}: commit 'main': give the full 40-character commit id: "
        "give the file `make publish` wrote (images/digests.json)"]


@pytest.mark.parametrize("ref, step", [
    (f"{REGISTRY}/clusterflow/cluster@{DIGESTS['cluster']}", "cluster"),
    (f"{REGISTRY}/clusterflow/report@sha256:{'a' * 64}", "report"),  # any digest: registry mode
    (f"{REGISTRY}/clusterflow/cluster:0.1.0", None),  # a tag, not a digest
    (f"{REGISTRY}/clusterflow/base@{DIGESTS['base']}", None),  # published, but no step
    (f"127.0.0.1:6000/clusterflow/cluster@{DIGESTS['cluster']}", None),  # another registry
    (f"evil.example/{REGISTRY}/clusterflow/cluster@{DIGESTS['cluster']}", None),
])
def test_a_step_pinned_in_a_registry_is_named_by_its_digest_there(ref, step):
    assert pinning.pinned_step(ref, REGISTRY) == step
    assert step is None or pinning.pinned_ref(REGISTRY, step, ref.rpartition("@")[2]) == ref


@pytest.mark.parametrize("ref, parts", [
    ("clusterflow/prepare:0.1.0", (None, "prepare", "0.1.0", None)),
    (f"{REGISTRY}/clusterflow/cluster@{DIGESTS['cluster']}", (REGISTRY, "cluster", None, DIGESTS["cluster"])),
    ("localhost/clusterflow/report", ("localhost", "report", None, None)),
    ("registry.example.org/acme/clusterflow/prepare:1", None),  # a registry path: no engine host
    ("clusterflow/train:1", None), ("clusterflow/prepare:-x", None), ("Clusterflow/prepare:1", None),
])
def test_a_step_image_reference_splits_into_host_step_tag_and_digest(ref, parts):
    found = pinning.STEP_IMAGE.fullmatch(ref)
    assert (found and (found["host"], found["step"], found["tag"], found["digest"])) == parts
