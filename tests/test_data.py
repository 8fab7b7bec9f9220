import pytest
import torch

from nestopt.data import BatchStream, concat_batches, digits, mnist1d


def test_embedded_data_sets_load_without_download():
    d = digits(n_train=300, n_val=200)
    assert d.train[0].shape == (300, 64) and d.val[0].shape == (200, 64)
    assert d.test[0].shape == (1797 - 500, 64) and d.n_classes == 10
    assert torch.isfinite(d.test[0]).all()
    m = mnist1d(n_samples=1000, n_train=600, n_val=200)
    assert m.train[0].shape == (600, 40) and m.n_features == 40


def test_too_large_splits_are_refused():
    with pytest.raises(ValueError, match="leaves no test data"):
        digits(n_train=1000, n_val=797)


def test_batch_stream_covers_every_example_once_per_epoch_and_resumes():
    x = torch.arange(10.0)
    stream = BatchStream(x, batch_size=3, seed=4)
    first_epoch = torch.cat([stream.take(1)[0][0] for _ in range(3)])
    assert sorted(first_epoch.tolist()) == sorted(set(first_epoch.tolist()))  # no repeats
    state = stream.state_dict()
    expected = stream.take(5)
    other = BatchStream(x, batch_size=3, seed=4)
    other.load_state_dict(state)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(expected, other.take(5), strict=True))


def test_batches_carry_their_indices_and_concatenate():
    x, y = torch.randn(8, 2), torch.arange(8)
    a, b = BatchStream(x, y, batch_size=4, shuffle=False).take(2)
    assert torch.equal(a[2], torch.arange(4)) and torch.equal(a[1], y[a[2]])
    both = concat_batches([a, b])
    assert both[0].shape == (8, 2)
