"""The networks as MXNet symbols: our own pre-activation ResNet, and Gluon model-zoo graphs for the rest."""

from __future__ import annotations

from typing import Any  # mxnet symbols: mxnet is imported lazily and ships no type hints

from engine.errors import UserError
from engine.train.launch.mxnet_engine import MIN_SIDE

RESNET_UNITS = {
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    50: [3, 4, 6, 3],
    101: [3, 4, 23, 3],
    152: [3, 8, 36, 3],
}
BN_MOM = 0.9
WORKSPACE_MB = 256


def get_symbol(
    network: str,
    num_classes: int,
    num_layers: int = 50,
    image_shape: tuple[int, ...] = (3, 224, 224),
    dtype: str = "float32",
) -> Any:
    """A training symbol ending in SoftmaxOutput named 'softmax' (label 'softmax_label')."""
    import mxnet as mx

    side = min(image_shape[1:])
    if side < MIN_SIDE.get(network, 1):
        raise UserError(
            f"--image-shape {','.join(map(str, image_shape))}: {network} needs sides of at least "
            f"{MIN_SIDE[network]} pixels"
        )
    data = mx.sym.var("data")
    if dtype == "float16":
        data = mx.sym.Cast(data, dtype="float16")
    if network == "resnet":
        logits = _resnet(data, num_classes, num_layers)
    else:
        logits = _gluon_logits(network, data, num_classes, num_layers, dtype)
    if dtype == "float16":
        logits = mx.sym.Cast(logits, dtype="float32")
    return mx.sym.SoftmaxOutput(logits, name="softmax")


def _bn(x: Any, name: str) -> Any:
    import mxnet as mx

    return mx.sym.BatchNorm(x, fix_gamma=False, eps=2e-5, momentum=BN_MOM, name=name)


def _conv(x: Any, filters: int, kernel: int, stride: int, name: str) -> Any:
    import mxnet as mx

    pad = (kernel // 2, kernel // 2)
    return mx.sym.Convolution(
        x,
        num_filter=filters,
        kernel=(kernel, kernel),
        stride=(stride, stride),
        pad=pad,
        no_bias=True,
        workspace=WORKSPACE_MB,
        name=name,
    )


def _relu(x: Any, name: str) -> Any:
    import mxnet as mx

    return mx.sym.Activation(x, act_type="relu", name=name)


def _residual_unit(
    x: Any, filters: int, stride: int, same_shape: bool, bottleneck: bool, name: str
) -> Any:
    """Pre-activation unit (He et al., Identity Mappings): BN-ReLU before each convolution."""
    act1 = _relu(_bn(x, f"{name}_bn1"), f"{name}_relu1")
    if bottleneck:
        mid = filters // 4
        y = _conv(act1, mid, 1, 1, f"{name}_conv1")
        y = _conv(_relu(_bn(y, f"{name}_bn2"), f"{name}_relu2"), mid, 3, stride, f"{name}_conv2")
        y = _conv(_relu(_bn(y, f"{name}_bn3"), f"{name}_relu3"), filters, 1, 1, f"{name}_conv3")
    else:
        y = _conv(act1, filters, 3, stride, f"{name}_conv1")
        y = _conv(_relu(_bn(y, f"{name}_bn2"), f"{name}_relu2"), filters, 3, 1, f"{name}_conv2")
    shortcut = x if same_shape else _conv(act1, filters, 1, stride, f"{name}_sc")
    return y + shortcut


def _resnet(data: Any, num_classes: int, num_layers: int) -> Any:
    """ResNet-v2 with the ImageNet stem (7x7/2 conv, 3x3/2 pool); small inputs just end with a small map."""
    import mxnet as mx

    units = RESNET_UNITS[num_layers]
    bottleneck = num_layers >= 50
    widths = [256, 512, 1024, 2048] if bottleneck else [64, 128, 256, 512]
    x = mx.sym.BatchNorm(data, fix_gamma=True, eps=2e-5, momentum=BN_MOM, name="bn_data")
    x = _conv(x, 64, 7, 2, "conv0")
    x = _relu(_bn(x, "bn0"), "relu0")
    x = mx.sym.Pooling(x, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max", name="pool0")
    for stage, (count, width) in enumerate(zip(units, widths)):
        for unit in range(count):
            stride = 2 if unit == 0 and stage > 0 else 1
            same = unit > 0 or (stage == 0 and not bottleneck)
            x = _residual_unit(
                x, width, stride, same, bottleneck, f"stage{stage + 1}_unit{unit + 1}"
            )
    x = _relu(_bn(x, "bn1"), "relu1")
    x = mx.sym.Pooling(x, global_pool=True, kernel=(7, 7), pool_type="avg", name="pool1")
    return mx.sym.FullyConnected(mx.sym.Flatten(x), num_hidden=num_classes, name="fc1")


def _gluon_logits(network: str, data: Any, num_classes: int, num_layers: int, dtype: str) -> Any:
    """Build a model-zoo network and call it on the symbol, which turns it into a graph."""
    from mxnet.gluon.model_zoo import vision

    if network == "alexnet":
        net = vision.alexnet(classes=num_classes, prefix="alexnet_")
    elif network == "inception-v3":
        net = vision.inception_v3(classes=num_classes, prefix="inception3_")
    elif network == "vgg":
        depth = num_layers if num_layers in (11, 13, 16, 19) else 16
        net = vision.get_vgg(depth, classes=num_classes, batch_norm=True, prefix=f"vgg{depth}_")
    elif network == "mobilenet":
        net = vision.mobilenet1_0(classes=num_classes, prefix="mobilenet_")
    else:
        raise UserError(
            f"--network {network}: unknown; choose resnet, alexnet, inception-v3, vgg or mobilenet"
        )
    if dtype == "float16":
        net.cast("float16")
    return net(data)
