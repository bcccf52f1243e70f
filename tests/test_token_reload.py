"""Bearer-token files followed without a restart: added, removed and moved tokens, a bad
replacement that keeps the old tokens, and a Kubernetes-style symlink swap.

Every server is a real `create_server` on 127.0.0.1 spoken to over gRPC. The interval
between two looks at the files is set to 0, so each call looks and no test waits.
"""

import contextlib
import logging
import os
import re
import secrets

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nnserve.service import Settings, auth, create_server
from nnserve.v1 import nnserve_pb2_grpc as pb_grpc
from service_support import classifier_spec, pb

OK, UNAUTHENTICATED, DENIED = (grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED,
                               grpc.StatusCode.PERMISSION_DENIED)


def _token():
    return secrets.token_urlsafe(32)  # 43 characters: same-size files differ only in content


@pytest.fixture(autouse=True)
def look_at_every_call(monkeypatch, caplog):
    monkeypatch.setattr(auth, "RELOAD_INTERVAL", 0.0)
    caplog.set_level(logging.INFO, logger=auth.__name__)


@contextlib.contextmanager
def serving(**files):
    """A started server with these tokens files; yields a ModelService stub and its channel."""
    server, port = create_server(Settings(host="127.0.0.1", port=0, metrics_port=0, http_port=0,
                                          **{name: str(path) for name, path in files.items()}))
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield pb_grpc.ModelServiceStub(channel), channel
    finally:
        server.stop(0).wait(10)


def _replace(path, text):
    """Write `text` to `path` the way deploy tools do: a new file renamed over the old one."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text)
    os.replace(temporary, path)


def _code(stub, token, method="ListModels"):
    request = pb.ListModelsRequest() if method == "ListModels" else pb.CreateModelRequest(spec=classifier_spec())
    try:
        getattr(stub, method)(request, timeout=10, metadata=(("authorization", f"Bearer {token}"),))
    except grpc.RpcError as error:
        return error.code()
    return OK


def _events(caplog, event):
    return [record for record in caplog.records if getattr(record, "event", None) == event]


def _no_token_logged(caplog, *tokens):
    logged = "\n".join(f"{record.getMessage()} {vars(record)}" for record in caplog.records)
    return not any(token in logged for token in tokens)


def test_a_token_added_to_the_write_file_works_without_a_restart(tmp_path, caplog):
    """Appending a token to the write file lets it write at once; the models made before stay."""
    old, new = _token(), _token()
    write = tmp_path / "write"
    write.write_text(f"{old}\n")
    with serving(write_tokens_file=write) as (stub, _):
        assert _code(stub, old, "CreateModel") == OK
        assert _code(stub, new) == UNAUTHENTICATED
        with write.open("a") as file:  # edited in place: the size changes, the inode does not
            file.write(f"{new}\n")
        assert _code(stub, new, "CreateModel") == OK
        assert _code(stub, old) == OK
        models = stub.ListModels(pb.ListModelsRequest(), timeout=10,
                                 metadata=(("authorization", f"Bearer {new}"),)).models
        assert len(models) == 2  # no restart: the first model is still held
    reloaded = _events(caplog, "auth_reloaded")
    assert [(r.read_tokens, r.write_tokens) for r in reloaded] == [(0, 2)]
    assert _no_token_logged(caplog, old, new)


def test_a_removed_token_is_unauthenticated_after_the_reload(tmp_path, caplog):
    """A token taken out of the write file is refused from the next call on; the others still work."""
    kept, removed = _token(), _token()
    write = tmp_path / "write"
    write.write_text(f"{kept}\n{removed}\n")
    with serving(write_tokens_file=write) as (stub, _):
        assert _code(stub, removed, "CreateModel") == OK
        _replace(write, f"# {removed[:3]}... revoked\n{kept}\n")
        assert _code(stub, removed) == UNAUTHENTICATED
        assert _code(stub, removed, "CreateModel") == UNAUTHENTICATED
        assert _code(stub, kept, "CreateModel") == OK
    assert [(r.read_tokens, r.write_tokens) for r in _events(caplog, "auth_reloaded")] == [(0, 1)]
    assert _no_token_logged(caplog, kept, removed)


def test_a_read_token_moved_to_the_write_file_gains_write_scope(tmp_path, caplog):
    """A token moved from the read file to the write file may write after the reload; one moved
    the other way loses write scope."""
    reader, writer, other_reader = _token(), _token(), _token()
    read, write = tmp_path / "read", tmp_path / "write"
    read.write_text(f"{reader}\n{other_reader}\n")
    write.write_text(f"{writer}\n")
    with serving(read_tokens_file=read, write_tokens_file=write) as (stub, _):
        assert _code(stub, reader, "CreateModel") == DENIED
        assert _code(stub, reader) == OK
        _replace(read, f"{other_reader}\n")
        _replace(write, f"{writer}\n{reader}\n")
        assert _code(stub, reader, "CreateModel") == OK
        assert _code(stub, other_reader, "CreateModel") == DENIED
        # And back: the write scope goes with it.
        _replace(write, f"{writer}\n")
        _replace(read, f"{other_reader}\n{reader}\n")
        assert _code(stub, reader, "CreateModel") == DENIED
        assert _code(stub, reader) == OK
        assert _code(stub, writer, "CreateModel") == OK
    assert _no_token_logged(caplog, reader, writer, other_reader)


@pytest.mark.parametrize("bad, message", [
    ("{new}\nshort-token\n", "write_tokens_file .* line 2: got a token of 11 characters"),
    ("# all revoked?\n\n", "got no token, expected at least one"),
    ("{new}\nwith a space in it, long enough\n", "line 2: got a token of 31 characters"),
    (None, "write_tokens_file: cannot read"),
])
def test_an_invalid_file_keeps_the_old_tokens_and_a_later_valid_one_is_picked_up(tmp_path, caplog, bad, message):
    """A malformed, empty or missing replacement is logged once (naming the file and line, not a
    token), the previous tokens keep working and the server keeps serving; the next valid file
    is loaded."""
    old, new, reader = _token(), _token(), _token()
    read, write = tmp_path / "read", tmp_path / "write"
    read.write_text(f"{reader}\n")
    write.write_text(f"{old}\n")
    with serving(read_tokens_file=read, write_tokens_file=write) as (stub, channel):
        assert _code(stub, old, "CreateModel") == OK
        if bad is None:
            write.unlink()
        else:
            _replace(write, bad.format(new=new))
        for _ in range(3):  # every call looks; the bad state is logged once all the same
            assert _code(stub, old, "CreateModel") == OK
            assert _code(stub, new) == UNAUTHENTICATED  # not half a file either
            assert _code(stub, reader) == OK
            assert _code(stub, reader, "CreateModel") == DENIED
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        failed = _events(caplog, "auth_reload_failed")
        assert len(failed) == 1 and failed[0].levelno == logging.ERROR
        assert str(write) in failed[0].getMessage()
        assert re.search(message, failed[0].getMessage()), failed[0].getMessage()
        assert _events(caplog, "auth_reloaded") == []

        _replace(write, f"{new}\n")
        assert _code(stub, new, "CreateModel") == OK
        assert _code(stub, old) == UNAUTHENTICATED
        assert _code(stub, reader) == OK
    assert [(r.read_tokens, r.write_tokens) for r in _events(caplog, "auth_reloaded")] == [(1, 1)]
    assert len(_events(caplog, "auth_reload_failed")) == 1
    assert _no_token_logged(caplog, old, new, reader)


def test_a_kubernetes_symlink_swap_is_picked_up(tmp_path, caplog):
    """A mounted Secret changes by re-pointing `..data` at a new directory (write the files, make a
    temporary symlink, rename it over `..data`); the tokens file path, a symlink through
    `..data`, then reaches a new inode with a same-size file, and the new tokens apply."""
    mount = tmp_path / "secret"
    mount.mkdir()
    old, new = _token(), _token()

    def publish(version, token):
        folder = mount / f"..{version}"
        folder.mkdir()
        (folder / "write-tokens").write_text(f"{token}\n")
        link = mount / "..data_tmp"
        link.symlink_to(folder.name)
        os.replace(link, mount / "..data")

    publish("2025_01_01_00_00_00.1", old)
    write = mount / "write-tokens"
    write.symlink_to(os.path.join("..data", "write-tokens"))
    with serving(write_tokens_file=write) as (stub, _):
        assert _code(stub, old, "CreateModel") == OK
        assert _code(stub, new) == UNAUTHENTICATED
        publish("2025_01_01_00_00_00.2", new)
        assert (write.stat().st_size, os.readlink(mount / "..data")) == (44, "..2025_01_01_00_00_00.2")
        assert _code(stub, new, "CreateModel") == OK
        assert _code(stub, old) == UNAUTHENTICATED
    assert [(r.read_tokens, r.write_tokens) for r in _events(caplog, "auth_reloaded")] == [(0, 1)]
    assert _no_token_logged(caplog, old, new)
