import numpy as np
import pytest
import torch

from snnbackdoor.data import Split, load_dataset, stratified_split


def test_digits_split_is_fixed_stratified_and_disjoint(digits):
    again = load_dataset("digits")
    assert torch.equal(digits.test.x, again.test.x)
    sizes = (len(digits.train), len(digits.val), len(digits.test))
    assert sum(sizes) == 1797
    assert digits.train.x.shape[1:] == (1, 16, 16)
    assert 0.0 <= float(digits.train.x.min()) and float(digits.train.x.max()) <= 1.0
    for split in (digits.train, digits.val, digits.test):
        counts = torch.bincount(split.y, minlength=10).float()
        assert counts.min() / counts.max() > 0.85  # every class in every split, balanced
    flat = lambda s: {tuple(r) for r in s.x.flatten(1).numpy().round(5)}  # noqa: E731
    assert not flat(digits.test) & flat(digits.val)


def test_batches_cover_each_sample_once_and_keep_device():
    split = Split(torch.arange(10).float().view(10, 1), torch.arange(10))
    gen = torch.Generator().manual_seed(0)
    seen = torch.cat([y for _, y in split.batches(3, shuffle=True, generator=gen)])
    assert sorted(seen.tolist()) == list(range(10))
    index, x, y = next(split.indexed_batches(4))
    assert torch.equal(split.y[index], y)


def test_uint8_samples_are_scaled_to_unit_range():
    split = Split(torch.tensor([[0, 255]], dtype=torch.uint8), torch.tensor([1]))
    assert torch.equal(split.floats(), torch.tensor([[0.0, 1.0]]))


def test_stratified_split_holds_out_each_class():
    y = np.repeat(np.arange(4), 20)
    rest, held = stratified_split(y, 0.25, seed=3)
    assert len(held) == 20 and np.all(np.bincount(y[held]) == 5)
    assert not set(rest) & set(held)


def test_unknown_dataset_and_option_fail_clearly():
    with pytest.raises(KeyError, match="Did you mean 'digits'"):
        load_dataset("digit")
    with pytest.raises(KeyError, match="has no option"):
        load_dataset("digits", colour=True)
