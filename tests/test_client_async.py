"""AsyncClient against a real server: the sync client's surface, awaitable, with equal results."""

import asyncio

import grpc
import numpy as np
import pytest

from client_support import batches, live_server, same_arrays
from nnserve.clients import AsyncClient, AsyncRemoteModel, Client, ModelInfo, NNServeError

SPEC = dict(layers=[6, 16, 4], activations=["relu", "softmax"], loss="cross_entropy",
            optimizer="adam", learning_rate=0.01, seed=11)


@pytest.fixture(scope="module")
def live():
    with live_server() as running:
        yield running


@pytest.fixture(scope="module")
def client(live):
    with Client(live.target) as client:
        yield client


def test_async_lifecycle_and_pagination(live):
    """create/get/list (every page)/delete work awaited and return async handles."""
    async def scenario():
        async with AsyncClient(live.target) as client:
            created = [await client.create_model(**SPEC, name=f"async-{i}") for i in range(3)]
            assert all(isinstance(m, AsyncRemoteModel) for m in created)
            fetched = await client.get_model("async-1")
            assert fetched.info == created[1].info and fetched.spec == created[1].spec
            listed = await client.list_models(page_size=1)
            assert [m.id for m in listed if m.name.startswith("async-")] == [m.id for m in created]
            deleted = [await client.delete_model(created[0]), await created[1].delete(),
                       await client.delete_model("async-2")]
            assert all(isinstance(info, ModelInfo) for info in deleted)
            assert not [m for m in await client.list_models() if m.name.startswith("async-")]

    asyncio.run(scenario())


def test_32_concurrent_predicts_agree_with_the_sync_client(live, client):
    """32 predicts in flight at once on one channel all complete and equal the sync results."""
    model = client.create_model(**SPEC)
    try:
        for x, y in batches(0, 3, 32, 6, 4):
            model.train_step(x, y)
        inputs = [x for x, _ in batches(1, 32, 8, 6, 4)]
        expected = [model.predict(x) for x in inputs]

        async def predict_all():
            async with AsyncClient(live.target) as aclient:
                remote = await aclient.get_model(model.id)
                outputs = await asyncio.gather(*(remote.predict(x) for x in inputs))
                return outputs, remote.version

        outputs, version = asyncio.run(predict_all())
        assert len(outputs) == 32 and version == 3
        assert all(same_arrays(got, want) for got, want in zip(outputs, expected))
    finally:
        model.delete()


def test_async_training_and_state_equal_the_sync_client(live, client):
    """fit, train_step, evaluate, get/set_state and set_weights give what the sync client gives."""
    x = np.random.default_rng(3).normal(size=(40, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0)
    sync_model = client.create_model(**SPEC)
    sync_history = sync_model.fit(x, y, epochs=2, batch_size=8, seed=4, validation_data=(x, y))

    async def scenario():
        async with AsyncClient(live.target) as aclient:
            model = await aclient.create_model(**SPEC)
            history = await model.fit(x, y, epochs=2, batch_size=8, seed=4, validation_data=(x, y))
            outputs = await model.predict(x)
            metrics = await model.evaluate(x, y)
            loss = await model.train_step(x[:8], y[:8])
            state = await model.get_state()
            twin = await aclient.create_model(**SPEC)
            await twin.set_state(state)
            twin_outputs = await twin.predict(x)
            await twin.set_weights(await model.get_weights())
            results = (history, outputs, metrics, loss, model.step, twin.step, twin_outputs,
                       (await twin.refresh()).version)
            await model.delete()
            await twin.delete()
            return results

    history, outputs, metrics, loss, step, twin_step, twin_outputs, twin_version = asyncio.run(scenario())
    try:
        assert history == sync_history
        assert same_arrays(outputs, sync_model.predict(x))
        assert metrics == sync_model.evaluate(x, y)
        assert loss == sync_model.train_step(x[:8], y[:8])
        assert step == twin_step == 11 and twin_version == 2
        assert same_arrays(twin_outputs, sync_model.predict(x))
    finally:
        sync_model.delete()


def test_async_errors_are_nnserve_errors(live):
    """Server and client-side failures raise NNServeError from the coroutines too."""
    async def scenario():
        codes = []
        client = AsyncClient(live.target)
        for call in (lambda: client.get_model("missing"),
                     lambda: client.create_model([2, 2], ["relu"], "bogus_loss"),
                     lambda: client.list_models(page_size=-3)):
            try:
                await call()
            except NNServeError as error:
                codes.append((error.code, error.method))
        await client.close()
        try:
            await client.get_model("missing")
        except NNServeError as error:
            codes.append((error.code, error.method))
        return codes

    assert asyncio.run(scenario()) == [
        (grpc.StatusCode.NOT_FOUND, "GetModel"), (grpc.StatusCode.INVALID_ARGUMENT, "CreateModel"),
        (grpc.StatusCode.INVALID_ARGUMENT, "ListModels"), (grpc.StatusCode.CANCELLED, "GetModel")]
