from .blocks import Conv2d, MaxPool2d, BatchNorm2d, AveragePool, Sequential, ResidualBlock, BlockGroup
from .model import ResNet34, copy_weights, get_resnet_for_feature_extraction
