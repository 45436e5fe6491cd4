"""The device-resident loader: full coverage per epoch, reproducible epochs, exact mid-epoch skip, augmentation."""

import torch

from workbench.data import DeviceLoader, load_raw
from workbench.data import augment


def make_loader(**kw):
    x, y = load_raw("digits", "train")
    return DeviceLoader(x, y, batch_size=100, **kw), x, y


def test_epoch_covers_every_sample_once():
    loader, x, y = make_loader()
    g = torch.Generator().manual_seed(0)
    ys = torch.cat([yb for _, yb in loader.epoch(g)])
    assert len(ys) == len(y) and len(loader) == (len(y) + 99) // 100
    assert torch.equal(torch.bincount(ys, minlength=10), torch.bincount(y, minlength=10))
    xb, _ = next(loader.epoch(torch.Generator().manual_seed(0)))
    assert xb.dtype == torch.float32 and 0 <= xb.min() and xb.max() <= 1


def test_same_generator_state_same_epoch_and_skip():
    loader, _, _ = make_loader(augment="crop_flip", pad=2)
    state = torch.Generator().manual_seed(5).get_state()
    g1 = torch.Generator(); g1.set_state(state)
    full = list(loader.epoch(g1))
    g2 = torch.Generator(); g2.set_state(state)
    tail = list(loader.epoch(g2, start=3))
    assert len(tail) == len(full) - 3
    for (xa, ya), (xb, yb) in zip(full[3:], tail):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    g3 = torch.Generator().manual_seed(6)
    other = next(loader.epoch(g3))
    assert not torch.equal(other[1], full[0][1])


def test_crop_and_flip_match_a_per_sample_reference():
    x = torch.rand(6, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    params = augment.draw_params(6, "crop_flip", 2, g)
    out = augment.apply(x, params, 2)
    for i in range(6):
        padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        dy, dx = int(params["dy"][i]), int(params["dx"][i])
        ref = padded[:, dy:dy + 8, dx:dx + 8]
        if params["flip"][i]:
            ref = ref.flip(2)
        assert torch.equal(out[i], ref)
