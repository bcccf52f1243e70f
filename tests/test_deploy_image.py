"""The server image's Dockerfile (deploy/Dockerfile), read with dockerfile-parse and checked
against pyproject.toml and the rendered manifests, with no Docker engine."""

import json
import shlex

from dockerfile_parse import DockerfileParser

from deploy_support import DEPLOY, K8S, ROOT, container_env, render, server_container, workload

DOCKERFILE = DEPLOY / "Dockerfile"


def dockerfile():
    return DockerfileParser(str(DOCKERFILE))


def dockerfile_stages():
    """[(base image, [(INSTRUCTION, arguments)])] per FROM, continuations joined."""
    stages = []
    for entry in dockerfile().structure:
        if entry["instruction"] == "FROM":
            stages.append((entry["value"].split()[0], []))
        elif entry["instruction"] != "COMMENT":
            stages[-1][1].append((entry["instruction"], entry["value"]))
    return stages


def instructions(stage, name):
    return [arguments for instruction, arguments in stage[1] if instruction == name]


def test_dockerfile_runs_nnserve_serve_as_non_root():
    """The final stage is python:3.11-slim, runs as a numeric non-root user (the pod's
    runAsUser) and has `nnserve serve` as its exec-form entry point."""
    final = dockerfile_stages()[-1]
    assert final[0] == "python:3.11-slim"
    (user,) = instructions(final, "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or int(gid) > 0)
    pod = workload(render(K8S / "base"))["spec"]["template"]["spec"]
    assert int(uid) == pod["securityContext"]["runAsUser"]
    (entrypoint,) = instructions(final, "ENTRYPOINT")
    assert json.loads(entrypoint) == ["nnserve", "serve"]
    assert [json.loads(cmd) for cmd in instructions(final, "CMD")] in ([], [[]])


def test_dockerfile_installs_server_extra_from_project_files():
    """The build stage copies pyproject.toml, the README and every package folder pyproject
    maps, and pip-installs `.[server]` from them (the default of its EXTRAS argument, every
    name of which is an extra of pyproject)."""
    import tomllib

    build = dockerfile_stages()[0]
    copied = set()
    for arguments in instructions(build, "COPY"):
        copied |= {part.rstrip("/") for part in shlex.split(arguments)[:-1]}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_dirs = pyproject["tool"]["setuptools"]["package-dir"].values()
    folders = {folder.split("/")[0] for folder in package_dirs}
    assert {"pyproject.toml", "README.md"} | folders <= copied
    arguments = dict(argument.split("=", 1) for argument in instructions(build, "ARG"))
    assert arguments["EXTRAS"] == "server"
    assert set(pyproject["project"]["optional-dependencies"]) >= {"server", "s3"}
    installs = [shlex.split(run.replace("${EXTRAS}", arguments["EXTRAS"]))
                for run in instructions(build, "RUN") if "pip" in run and "install" in run]
    assert any(words[-1] == ".[server]" and words[-2] == "install" for words in installs), installs


def test_dockerfile_cache_path_and_ports_match_manifests():
    """NUMBA_CACHE_DIR, the health port and EXPOSEd ports in the image are those the manifests
    mount and name."""
    final = dockerfile_stages()[-1]
    env = dockerfile().envs  # the final stage's
    resources = render(K8S / "base")
    assert env["NUMBA_CACHE_DIR"] == container_env(resources)["NUMBA_CACHE_DIR"]
    # A plain `docker run` listens where the image says: the health port too.
    assert env["NNSERVE_HEALTH_PORT"] == container_env(resources)["NNSERVE_HEALTH_PORT"]
    exposed = {int(port) for arguments in instructions(final, "EXPOSE")
               for port in arguments.split()}
    assert exposed == {p["containerPort"] for p in server_container(resources)["ports"]}




def test_every_package_folder_is_installed():
    """Every folder with an __init__.py under a mapped package is in pyproject's explicit
    package list: an editable install finds a missing one, `pip install .` (the image) does
    not, and the installed server would fail on import (cluster mode did)."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for package, folder in setuptools["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *parts)))
    assert found == set(setuptools["packages"])
