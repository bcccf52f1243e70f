"""Datasets against a real server: UploadDataset, GetDataset, ListDatasets and DeleteDataset
through the generated stubs and through the SDK; every refused upload stores nothing; the
limits name their flags; the dataset gauges are exact."""

import re

import grpc
import numpy as np
import pytest

from job_support import chunk, classification_data, header, sha256_of, upload, upload_requests
from metrics_support import rpc, scrape, value
from nnserve.clients import Client, NNServeError
from nnserve.clients import RemoteDataset
from nnserve.clients import jobs as sdk_jobs
from service_support import call_error, pb, running_server, to_tensor

ID_FORM = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def live():
    with running_server() as running:
        yield running


def _listed(stub, page_size=0):
    """The ids of every dataset, following all pages."""
    ids, token = [], ""
    while True:
        reply = stub.ListDatasets(pb.ListDatasetsRequest(page_size=page_size, page_token=token), timeout=30)
        ids += [dataset.id for dataset in reply.datasets]
        token = reply.next_page_token
        if not token:
            return ids


def _delete_all(stub):
    for dataset_id in _listed(stub):
        stub.DeleteDataset(pb.DeleteDatasetRequest(dataset=dataset_id), timeout=30)


def _upload_error(stub, requests, code):
    """Send an UploadDataset stream that must fail with `code`; return the error's details."""
    with pytest.raises(grpc.RpcError) as caught:
        stub.UploadDataset(iter(requests), timeout=30)
    assert caught.value.code() == code, caught.value.details()
    return caught.value.details()


# -- upload, get, list, delete ----------------------------------------------------------------

def test_an_upload_is_described_exactly_and_found_by_id_and_name(live):
    """An upload of 10 rows (float32 x, int64 y) in 3 chunks reports its rows, shapes, dtypes,
    bytes and the SHA-256 of x's then y's bytes, and GetDataset finds it by id and by name."""
    x, y = classification_data(0, 10, n_in=4)
    stored = upload(live.stub, x, y, name="digits.v1", rows_per_chunk=4)
    try:
        assert ID_FORM.fullmatch(stored.id) and stored.name == "digits.v1"
        assert (stored.rows, list(stored.x_shape), list(stored.y_shape)) == (10, [10, 4], [10])
        assert (stored.x_dtype, stored.y_dtype) == (pb.DATA_TYPE_FLOAT32, pb.DATA_TYPE_INT64)
        assert stored.bytes == 10 * 4 * 4 + 10 * 8 == x.nbytes + y.nbytes
        assert stored.sha256 == sha256_of(x, y)
        assert stored.HasField("create_time") and stored.create_time.seconds > 0
        for ref in (stored.id, "digits.v1"):
            assert live.stub.GetDataset(pb.GetDatasetRequest(dataset=ref), timeout=30).dataset == stored
    finally:
        live.stub.DeleteDataset(pb.DeleteDatasetRequest(dataset=stored.id), timeout=30)


@pytest.mark.parametrize("x_dtype, y_dtype, y_width", [
    (np.float64, np.float64, 3), (np.float32, np.int32, 0), (np.float64, np.float32, 1)])
def test_every_allowed_dtype_and_target_shape_is_stored_bit_for_bit(live, x_dtype, y_dtype, y_width):
    """x of float32/float64 and y of float64 (rows, 3), int32 (rows,) or float32 (rows, 1),
    sent one row per chunk, give the shapes, dtypes, bytes and SHA-256 of the arrays sent."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 2)).astype(x_dtype)
    y = (rng.normal(size=(5, y_width)) if y_width else rng.integers(0, 4, size=5)).astype(y_dtype)
    stored = upload(live.stub, x, y, rows_per_chunk=1)
    try:
        assert list(stored.x_shape) == [5, 2] and list(stored.y_shape) == list(y.shape)
        assert stored.x_dtype == to_tensor(x).dtype and stored.y_dtype == to_tensor(y).dtype
        assert stored.bytes == x.nbytes + y.nbytes and stored.sha256 == sha256_of(x, y)
        assert stored.name == ""
    finally:
        live.stub.DeleteDataset(pb.DeleteDatasetRequest(dataset=stored.id), timeout=30)


def test_list_pages_in_upload_order_and_deletion_between_pages_skips_nothing(live):
    """Five uploads list in upload order in pages of 2 (tokens on all but the last page); a
    dataset deleted between pages does not shift the later ones; bad paging is refused."""
    _delete_all(live.stub)
    x, y = classification_data(2, 3)
    ids = [upload(live.stub, x, y, name=f"d{i}").id for i in range(5)]
    try:
        first = live.stub.ListDatasets(pb.ListDatasetsRequest(page_size=2), timeout=30)
        assert [d.id for d in first.datasets] == ids[:2] and first.next_page_token
        live.stub.DeleteDataset(pb.DeleteDatasetRequest(dataset=ids[1]), timeout=30)
        second = live.stub.ListDatasets(
            pb.ListDatasetsRequest(page_size=2, page_token=first.next_page_token), timeout=30)
        assert [d.id for d in second.datasets] == ids[2:4] and second.next_page_token
        third = live.stub.ListDatasets(
            pb.ListDatasetsRequest(page_size=2, page_token=second.next_page_token), timeout=30)
        assert [d.id for d in third.datasets] == ids[4:] and third.next_page_token == ""
        assert _listed(live.stub) == [ids[0]] + ids[2:]
        assert _listed(live.stub, page_size=1) == [ids[0]] + ids[2:]
        assert "page_size" in call_error(live.stub.ListDatasets, pb.ListDatasetsRequest(page_size=-1),
                                         grpc.StatusCode.INVALID_ARGUMENT)
        assert "page_token" in call_error(live.stub.ListDatasets, pb.ListDatasetsRequest(page_token="x"),
                                          grpc.StatusCode.INVALID_ARGUMENT)
    finally:
        _delete_all(live.stub)


def test_delete_returns_the_dataset_and_frees_its_name(live):
    """DeleteDataset (by name) returns the dataset as it was; afterwards Get and Delete are
    NOT_FOUND, it is no longer listed, and its name can be uploaded again."""
    x, y = classification_data(3, 4)
    stored = upload(live.stub, x, y, name="gone")
    deleted = live.stub.DeleteDataset(pb.DeleteDatasetRequest(dataset="gone"), timeout=30).dataset
    assert deleted == stored
    for method, request in ((live.stub.GetDataset, pb.GetDatasetRequest(dataset=stored.id)),
                            (live.stub.DeleteDataset, pb.DeleteDatasetRequest(dataset="gone"))):
        assert "expected the id or name of an existing dataset" in call_error(
            method, request, grpc.StatusCode.NOT_FOUND)
    assert stored.id not in _listed(live.stub)
    again = upload(live.stub, x, y, name="gone")
    assert again.id != stored.id and again.sha256 == stored.sha256
    live.stub.DeleteDataset(pb.DeleteDatasetRequest(dataset=again.id), timeout=30)


def test_an_empty_dataset_reference_is_invalid(live):
    """GetDataset and DeleteDataset with dataset '' are INVALID_ARGUMENT naming the field."""
    for method, request in ((live.stub.GetDataset, pb.GetDatasetRequest()),
                            (live.stub.DeleteDataset, pb.DeleteDatasetRequest())):
        assert "dataset: got ''" in call_error(method, request, grpc.StatusCode.INVALID_ARGUMENT)


# -- refused uploads ------------------------------------------------------------------------

X, Y = classification_data(4, 6)  # float32 (6, 4) and int64 (6,)
HEADER = pb.UploadDatasetRequest(header=header(X, Y))


def _with(x_dtype=None, y_dtype=None, rows=None, name=""):
    message = header(X, Y, name=name, rows=rows)
    if x_dtype is not None:
        message.x_dtype = x_dtype
    if y_dtype is not None:
        message.y_dtype = y_dtype
    return pb.UploadDatasetRequest(header=message)


def _short_bytes():
    request = chunk(X, Y)
    request.chunk.x.content = request.chunk.x.content[:-4]
    return request


def _only_x():
    return pb.UploadDatasetRequest(chunk=pb.DatasetChunk(x=to_tensor(X)))


def _with_value(x=X, y=Y, row=1, value=np.nan, target="x"):
    x, y = x.copy(), y.copy()
    (x if target == "x" else y)[row] = value
    return chunk(x, y)


Y_FLOAT = np.eye(3, dtype=np.float32)[Y]  # one-hot rows, (6, 3) float32

REFUSALS = [
    pytest.param(lambda: [], "message 0: got no message, expected the header", id="empty-stream"),
    pytest.param(lambda: [chunk(X, Y)], "message 0: got chunk, expected the header", id="no-header-first"),
    pytest.param(lambda: [HEADER, HEADER, chunk(X, Y)], "message 1: got header, expected a chunk",
                 id="header-twice"),
    pytest.param(lambda: [_with(rows=0), chunk(X, Y)], "header.rows: got 0, expected at least 1",
                 id="zero-rows"),
    pytest.param(lambda: [_with(x_dtype=pb.DATA_TYPE_INT32), chunk(X, Y)],
                 "header.x_dtype: got DATA_TYPE_INT32, expected one of DATA_TYPE_FLOAT32, DATA_TYPE_FLOAT64",
                 id="integer-x-dtype"),
    pytest.param(lambda: [_with(x_dtype=pb.DATA_TYPE_UNSPECIFIED), chunk(X, Y)],
                 "header.x_dtype: got DATA_TYPE_UNSPECIFIED", id="unspecified-x-dtype"),
    pytest.param(lambda: [_with(y_dtype=pb.DATA_TYPE_UNSPECIFIED), chunk(X, Y)],
                 "header.y_dtype: got DATA_TYPE_UNSPECIFIED", id="unspecified-y-dtype"),
    pytest.param(lambda: [_with(y_dtype=99), chunk(X, Y)], "header.y_dtype: got 99", id="unknown-y-dtype"),
    pytest.param(lambda: [HEADER, _short_bytes()], "chunk 1.x: got 92 bytes, expected 96",
                 id="byte-length-disagrees-with-shape"),
    pytest.param(lambda: [HEADER, chunk(X.astype(np.float64), Y)],
                 "chunk 1.x: got dtype float64, expected float32 (the header's)", id="x-of-another-dtype"),
    pytest.param(lambda: [HEADER, chunk(X, Y.astype(np.int32))],
                 "chunk 1.y: got dtype int32, expected int64 (the header's)", id="y-of-another-dtype"),
    pytest.param(lambda: [HEADER, chunk(X[:, :3], Y)],
                 "chunk 1.x: got shape (6, 3), expected (n >= 1, 4) (the header's width)", id="x-of-another-width"),
    pytest.param(lambda: [HEADER, chunk(X, Y[:, None])],
                 "chunk 1.y: got shape (6, 1), expected (n >= 1,) (the header's width)", id="y-of-another-width"),
    pytest.param(lambda: [HEADER, chunk(X, Y[:5])], "chunk 1: got 6 rows of x and 5 of y", id="rows-disagree"),
    pytest.param(lambda: [HEADER, _only_x()], "chunk 1: got x only, expected both x and y rows", id="x-only"),
    pytest.param(lambda: [HEADER, chunk(X[:3], Y[:3]), _with_value()],
                 "chunk 2.x: got a non-finite value, expected only finite numbers", id="nan-in-x"),
    pytest.param(lambda: [pb.UploadDatasetRequest(header=header(X, Y_FLOAT)),
                          _with_value(y=Y_FLOAT, value=np.inf, target="y")],
                 "chunk 1.y: got a non-finite value", id="inf-in-y"),
    pytest.param(lambda: [HEADER, chunk(X[:4], Y[:4]), chunk(X[:4], Y[:4])],
                 "chunk 2: got rows up to 8, expected at most the header's 6", id="more-rows-than-announced"),
    pytest.param(lambda: [HEADER, chunk(X[:4], Y[:4])], "chunks: got 4 rows, expected the header's 6",
                 id="fewer-rows-at-the-end"),
    pytest.param(lambda: [_with(name="0123456789abcdef0123456789ABCDEF"), chunk(X, Y)],
                 "not 32 hexadecimal digits (the form of ids)", id="name-in-id-form"),
    pytest.param(lambda: [_with(name="9lives"), chunk(X, Y)], "header.name: got '9lives'", id="bad-name"),
]


@pytest.mark.parametrize("requests, fragment", REFUSALS)
def test_a_malformed_upload_is_invalid_argument_and_stores_nothing(live, requests, fragment):
    """Each malformed stream fails with INVALID_ARGUMENT saying what was wrong, and
    ListDatasets lists exactly what it listed before."""
    before = live.stub.ListDatasets(pb.ListDatasetsRequest(), timeout=30)
    details = _upload_error(live.stub, requests(), grpc.StatusCode.INVALID_ARGUMENT)
    assert fragment in details
    assert live.stub.ListDatasets(pb.ListDatasetsRequest(), timeout=30) == before


def test_a_name_in_use_is_already_exists_and_stores_nothing(live):
    """An upload under a name in use is ALREADY_EXISTS naming it; the first dataset stays the
    only one of that name, and nothing else is listed."""
    first = upload(live.stub, X, Y, name="taken")
    try:
        before = live.stub.ListDatasets(pb.ListDatasetsRequest(), timeout=30)
        details = _upload_error(live.stub, [_with(name="taken"), chunk(X, Y)], grpc.StatusCode.ALREADY_EXISTS)
        assert "header.name: got 'taken', expected a dataset name not in use" in details
        assert live.stub.ListDatasets(pb.ListDatasetsRequest(), timeout=30) == before
        assert live.stub.GetDataset(pb.GetDatasetRequest(dataset="taken"), timeout=30).dataset == first
    finally:
        live.stub.DeleteDataset(pb.DeleteDatasetRequest(dataset=first.id), timeout=30)


def test_refused_uploads_release_their_reservation():
    """With room for exactly one dataset of the largest refused size (count and bytes), every
    refused upload gives back its reserved bytes, count and name: a valid upload of that size
    under the same name fits."""
    size = X.nbytes + Y_FLOAT.nbytes
    with running_server(max_datasets=1, max_dataset_bytes=size, max_total_dataset_bytes=size) as live:
        for param in REFUSALS:
            requests, _ = param.values
            messages = requests()
            if messages and messages[0].WhichOneof("part") == "header" and not messages[0].header.name:
                messages[0].header.name = "keep"
            _upload_error(live.stub, messages, grpc.StatusCode.INVALID_ARGUMENT)
        assert _listed(live.stub) == []
        stored = upload(live.stub, X, Y_FLOAT, name="keep")
        assert stored.bytes == size and _listed(live.stub) == [stored.id]


# -- limits ---------------------------------------------------------------------------------

def test_max_datasets_is_resource_exhausted_naming_the_flag():
    """With --max-datasets 2 a third upload is RESOURCE_EXHAUSTED naming --max-datasets and
    stores nothing; after a deletion it fits."""
    with running_server(max_datasets=2) as live:
        ids = [upload(live.stub, X, Y).id for _ in range(2)]
        details = _upload_error(live.stub, upload_requests(X, Y), grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert "--max-datasets" in details and "got dataset 3, expected at most 2 datasets" in details
        assert _listed(live.stub) == ids
        live.stub.DeleteDataset(pb.DeleteDatasetRequest(dataset=ids[0]), timeout=30)
        third = upload(live.stub, X, Y).id
        assert _listed(live.stub) == [ids[1], third]


def test_max_dataset_bytes_is_resource_exhausted_naming_the_flag():
    """A dataset one byte over --max-dataset-bytes is refused from its header, naming the flag
    and its size; one exactly at the limit is stored."""
    size = X.nbytes + Y.nbytes
    with running_server(max_dataset_bytes=size - 1) as live:
        details = _upload_error(live.stub, upload_requests(X, Y), grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert "--max-dataset-bytes" in details and f"got {size} bytes, expected at most {size - 1} bytes" in details
        assert _listed(live.stub) == []
        assert upload(live.stub, X[:5], Y[:5]).bytes == 5 * (4 * 4 + 8) < size
    with running_server(max_dataset_bytes=size) as live:
        assert upload(live.stub, X, Y).bytes == size


def test_max_total_dataset_bytes_is_resource_exhausted_naming_the_flag():
    """With room for one and a half datasets in --max-total-dataset-bytes, the second upload
    is refused naming the flag and the total; deleting the first makes room again."""
    size = X.nbytes + Y.nbytes
    with running_server(max_total_dataset_bytes=size + size // 2) as live:
        first = upload(live.stub, X, Y).id
        details = _upload_error(live.stub, upload_requests(X, Y), grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert "--max-total-dataset-bytes" in details and f"got {2 * size} bytes" in details
        assert _listed(live.stub) == [first]
        live.stub.DeleteDataset(pb.DeleteDatasetRequest(dataset=first), timeout=30)
        second = upload(live.stub, X, Y).id
        assert _listed(live.stub) == [second]


# -- metrics --------------------------------------------------------------------------------

def test_dataset_gauges_count_datasets_and_bytes_exactly():
    """nnserve_datasets and nnserve_dataset_bytes read 0, then 2 and the two datasets' bytes,
    unchanged by a refused upload, then 1 and the remaining bytes after a deletion."""
    x_big, y_big = classification_data(5, 30, n_in=7, dtype=np.float64)
    with running_server() as live:
        port = live.server.metrics_port
        samples = scrape(port)
        assert (value(samples, "nnserve_datasets"), value(samples, "nnserve_dataset_bytes")) == (0, 0)
        small = upload(live.stub, X, Y)
        upload(live.stub, x_big, y_big)
        _upload_error(live.stub, [HEADER, chunk(X[:4], Y[:4])], grpc.StatusCode.INVALID_ARGUMENT)
        samples = scrape(port)
        assert value(samples, "nnserve_datasets") == 2
        assert value(samples, "nnserve_dataset_bytes") == X.nbytes + Y.nbytes + x_big.nbytes + y_big.nbytes
        live.stub.DeleteDataset(pb.DeleteDatasetRequest(dataset=small.id), timeout=30)
        samples = scrape(port)
        assert value(samples, "nnserve_datasets") == 1
        assert value(samples, "nnserve_dataset_bytes") == x_big.nbytes + y_big.nbytes == 30 * 7 * 8 + 30 * 8


# -- the SDK --------------------------------------------------------------------------------

def test_the_sdk_uploads_gets_lists_and_deletes(live, monkeypatch):
    """Client.upload_dataset streams (x, y) in chunks (made small here) into a RemoteDataset
    with the server's description; get_dataset finds it by id, name or handle; list_datasets
    follows every page; delete_dataset removes it and a second delete is NOT_FOUND."""
    monkeypatch.setattr(sdk_jobs, "UPLOAD_CHUNK_BYTES", 100)  # 4 rows of 24 bytes per chunk
    _delete_all(live.stub)
    x, y = classification_data(6, 11)
    uploads = rpc("UploadDataset", grpc_type="CLIENT_STREAM")
    with Client(live.target, timeout=30) as client:
        before = scrape(live.server.metrics_port)
        remote = client.upload_dataset(x, y, name="sdk")
        received = scrape(live.server.metrics_port)
        assert (value(received, "grpc_server_msg_received_total", **uploads)
                - value(before, "grpc_server_msg_received_total", **uploads)) == 1 + 3  # header, 4 + 4 + 3 rows
        other = client.upload_dataset(x[:2], y[:2])
        assert isinstance(remote, RemoteDataset) and ID_FORM.fullmatch(remote.id)
        assert (remote.name, remote.rows, remote.x_shape, remote.y_shape) == ("sdk", 11, (11, 4), (11,))
        assert remote.bytes == x.nbytes + y.nbytes and remote.sha256 == sha256_of(x, y)
        assert remote.create_time.tzinfo is not None
        stored = live.stub.GetDataset(pb.GetDatasetRequest(dataset=remote.id), timeout=30).dataset
        assert remote == RemoteDataset.from_proto(stored)
        assert client.get_dataset(remote.id) == client.get_dataset("sdk") == client.get_dataset(remote) == remote
        assert client.list_datasets(page_size=1) == [remote, other]
        assert client.delete_dataset(remote) == remote
        with pytest.raises(NNServeError) as caught:
            client.delete_dataset("sdk")
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        assert client.list_datasets() == [other]
        client.delete_dataset(other.id)


def test_the_sdk_reports_a_refused_upload_as_nnserve_error(live):
    """An SDK upload under a name in use raises NNServeError ALREADY_EXISTS and stores nothing."""
    with Client(live.target, timeout=30) as client:
        first = client.upload_dataset(X, Y, name="twice")
        listed = client.list_datasets()
        try:
            with pytest.raises(NNServeError) as caught:
                client.upload_dataset(X, Y, name="twice")
            assert caught.value.code == grpc.StatusCode.ALREADY_EXISTS and "twice" in caught.value.message
            assert client.list_datasets() == listed
        finally:
            client.delete_dataset(first)
