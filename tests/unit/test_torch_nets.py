"""The torch engine's ResNets: the standard architecture (parameter counts), any input size, mirroring."""

import pytest

torch = pytest.importorskip("torch", reason="the torch engine is an extra: pip install -e .[torch]")

from engine.errors import UserError
from engine.train.torch import nets


@pytest.mark.parametrize(
    ("depth", "params"),
    # The published ImageNet ResNet sizes (1000 classes), which any standard implementation has.
    [(18, 11_689_512), (34, 21_797_672), (50, 25_557_032), (101, 44_549_160), (152, 60_192_808)],
)
def test_parameter_counts_are_the_standard_resnets(depth, params):
    model = nets.build("resnet", depth, 1000)
    assert sum(p.numel() for p in model.parameters()) == params


def test_small_images_and_narrow_width_give_one_score_per_class():
    torch.manual_seed(0)
    model = nets.build("resnet", 18, 5, width=8).eval()
    out = model(torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last))
    assert out.shape == (2, 5)


def test_mirroring_recomputes_activations_but_gives_the_same_gradients():
    torch.set_num_threads(1)
    x = torch.randn(4, 3, 32, 32)
    grads, calls = [], []
    for mirror in (False, True):
        torch.manual_seed(0)
        model = nets.build("resnet", 18, 3, width=8)
        nets.set_mirror(model, mirror)
        count, block = [], model.stages[1][0]
        block.forward = _counting(block.forward, count)
        model(x).square().sum().backward()
        grads.append(model.stem[0].weight.grad.clone())
        calls.append(len(count))
    assert calls == [1, 2]  # with mirroring the block's forward runs again during backward
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-5)
    assert grads[0].abs().sum() > 0


def _counting(forward, count):
    def counted(x):
        count.append(1)
        return forward(x)

    return counted


@pytest.mark.parametrize(
    ("network", "layers", "words"),
    [
        ("alexnet", 18, "--network alexnet"),
        ("resnet", 20, "--num-layers 20"),
        ("resnet", 18, "--num-classes"),
    ],
)
def test_unsupported_networks_name_the_flag(network, layers, words):
    classes = 1 if words == "--num-classes" else 10
    with pytest.raises(UserError, match=words):
        nets.build(network, layers, classes)
