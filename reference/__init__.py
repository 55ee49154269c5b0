"""Reference solutions for the ARENA "CNNs & ResNets" chapter.

* ``given``: helpers handed to learners (``force_pair``, ``Sequential``, ``Flatten``,
  ``MaxPool2d``, ``copy_weights``).
* ``modules``: ``ReLU``, ``Linear``, ``SimpleMLP``.
* ``strided``: convolutions and max pooling from scratch with ``as_strided``.
* ``conv``: ``Conv2d`` and ``AveragePool`` modules.
* ``batchnorm``: ``BatchNorm2d``.
* ``resnet``: ``ResidualBlock``, ``BlockGroup``, ``ResNet34`` and feature extraction.
"""

from .batchnorm import BatchNorm2d
from .conv import AveragePool, Conv2d
from .given import IntOrPair, Pair, Flatten, MaxPool2d, Sequential, copy_weights, force_pair
from .modules import Linear, ReLU, SimpleMLP
from .resnet import BlockGroup, ResidualBlock, ResNet34, get_resnet_for_feature_extraction
from .strided import (
    as_strided_mm,
    as_strided_mv,
    as_strided_trace,
    conv1d,
    conv1d_minimal,
    conv1d_minimal_simple,
    conv2d,
    conv2d_minimal,
    maxpool2d,
    pad1d,
    pad2d,
)

__all__ = [
    # given
    "IntOrPair",
    "Pair",
    "force_pair",
    "Sequential",
    "Flatten",
    "MaxPool2d",
    "copy_weights",
    # modules
    "ReLU",
    "Linear",
    "SimpleMLP",
    # strided
    "as_strided_trace",
    "as_strided_mv",
    "as_strided_mm",
    "conv1d_minimal_simple",
    "conv1d_minimal",
    "conv2d_minimal",
    "pad1d",
    "pad2d",
    "conv1d",
    "conv2d",
    "maxpool2d",
    # conv
    "Conv2d",
    "AveragePool",
    # batchnorm
    "BatchNorm2d",
    # resnet
    "ResidualBlock",
    "BlockGroup",
    "ResNet34",
    "get_resnet_for_feature_extraction",
]
