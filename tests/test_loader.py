import numpy as np
import pytest

from lra.errors import LraError
from lra.loader import BatchLoader


def arrays(n=103, length=5):
    inputs = np.arange(n * length, dtype=np.int32).reshape(n, length)
    return {"inputs": inputs, "labels": np.arange(n, dtype=np.int32)}


def take(loader, count):
    it = iter(loader)
    return [next(it) for _ in range(count)]


def test_train_epochs_are_seeded_permutations():
    loader = BatchLoader(arrays(), 10, train=True, seed=3)
    batches = take(loader, 20)  # 10 full batches per epoch: exactly two epochs
    first = np.concatenate([b["labels"] for b in batches[:10]])
    second = np.concatenate([b["labels"] for b in batches[10:]])
    assert len(set(first)) == 100 and len(set(second)) == 100
    assert not np.array_equal(first, second)  # reshuffled each epoch
    again = np.concatenate([b["labels"] for b in take(BatchLoader(arrays(), 10, train=True, seed=3), 10)])
    assert np.array_equal(first, again)
    other = np.concatenate([b["labels"] for b in take(BatchLoader(arrays(), 10, train=True, seed=4), 10)])
    assert not np.array_equal(first, other)


def test_inputs_follow_labels():
    for batch in take(BatchLoader(arrays(), 8, train=True, seed=0), 5):
        assert np.array_equal(batch["inputs"][:, 0], batch["labels"] * 5)
        assert batch["inputs"].dtype == np.int32


def test_eval_pass_covers_every_example_once_with_padding_weights():
    loader = BatchLoader(arrays(), 10, train=False)
    batches = list(loader)
    assert len(batches) == 11
    assert all(b["inputs"].shape == (10, 5) for b in batches)
    weights = np.concatenate([b["weights"] for b in batches])
    labels = np.concatenate([b["labels"] for b in batches])[weights > 0]
    assert weights.sum() == 103
    assert sorted(labels.tolist()) == list(range(103))
    assert len(list(loader)) == 11  # a second pass starts over


def test_resume_from_state_continues_identically():
    full = take(BatchLoader(arrays(), 10, train=True, seed=7), 25)
    first = BatchLoader(arrays(), 10, train=True, seed=7)
    take(first, 13)
    resumed = BatchLoader(arrays(), 10, train=True, seed=7, state=first.state())
    rest = take(resumed, 12)
    for a, b in zip(full[13:], rest):
        assert np.array_equal(a["labels"], b["labels"])


def test_process_shards_partition_the_global_batch():
    whole = take(BatchLoader(arrays(), 8, train=True, seed=1), 3)
    parts = [take(BatchLoader(arrays(), 8, train=True, seed=1, process_index=i, process_count=2), 3)
             for i in range(2)]
    for step in range(3):
        joined = np.concatenate([parts[0][step]["labels"], parts[1][step]["labels"]])
        assert sorted(joined.tolist()) == sorted(whole[step]["labels"].tolist())
        assert len(parts[0][step]["labels"]) == 4


@pytest.mark.parametrize("batch", [0, -3])
def test_bad_batch_size_is_a_clear_error(batch):
    with pytest.raises(LraError, match="batch size"):
        BatchLoader(arrays(), batch, train=True)


def test_split_smaller_than_a_batch_is_a_clear_error():
    with pytest.raises(LraError, match="fewer than one batch"):
        BatchLoader(arrays(5), 8, train=True)
