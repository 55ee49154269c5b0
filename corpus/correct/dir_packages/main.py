# %%
# main.py: runs the course's tests against my packages (mlp/, convs/, resnet/) and does the training.
import sys
import json
from dataclasses import dataclass
from pathlib import Path

import torch as t
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, models, transforms
from tqdm.auto import tqdm

exercises_dir = Path.home() / "ARENA_3.0" / "chapter0_fundamentals" / "exercises"
if str(exercises_dir) not in sys.path:
    sys.path.append(str(exercises_dir))

import part2_cnns.tests as tests
from part2_cnns.utils import print_param_count

from mlp.layers import Linear, ReLU, Flatten, SimpleMLP
from convs.functional import (
    as_strided_trace,
    as_strided_mv,
    as_strided_mm,
    conv1d_minimal_simple,
    conv1d_minimal,
    conv2d_minimal,
    pad1d,
    pad2d,
    conv1d,
    conv2d,
    maxpool2d,
    force_pair,
)
from resnet.blocks import Conv2d, MaxPool2d, BatchNorm2d, AveragePool, Sequential, ResidualBlock, BlockGroup
from resnet.model import ResNet34, copy_weights, get_resnet_for_feature_extraction, ResNetTrainingArgs, train

MAIN = __name__ == "__main__"
device = t.device("cuda" if t.cuda.is_available() else "cpu")

# %%
tests.test_relu(ReLU)
tests.test_linear_parameters(Linear, bias=False)
tests.test_linear_parameters(Linear, bias=True)
tests.test_linear_forward(Linear, bias=False)
tests.test_linear_forward(Linear, bias=True)
tests.test_flatten(Flatten)
tests.test_mlp_module(SimpleMLP)
tests.test_mlp_forward(SimpleMLP)

# %%
MNIST_TRANSFORM = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])


def get_mnist(trainset_size: int = 10_000, testset_size: int = 1_000) -> tuple[Subset, Subset]:
    """Returns a subset of MNIST training data."""
    mnist_trainset = datasets.MNIST(root="data", train=True, download=True, transform=MNIST_TRANSFORM)
    mnist_testset = datasets.MNIST(root="data", train=False, download=True, transform=MNIST_TRANSFORM)
    return Subset(mnist_trainset, indices=range(trainset_size)), Subset(mnist_testset, indices=range(testset_size))


@dataclass
class SimpleMLPTrainingArgs:
    batch_size: int = 64
    epochs: int = 3
    learning_rate: float = 1e-3


def train_mlp(args: SimpleMLPTrainingArgs) -> tuple[list[float], list[float], SimpleMLP]:
    model = SimpleMLP().to(device)
    trainset, testset = get_mnist()
    trainloader = DataLoader(trainset, batch_size=args.batch_size, shuffle=True)
    testloader = DataLoader(testset, batch_size=args.batch_size, shuffle=False)
    optimizer = t.optim.Adam(model.parameters(), lr=args.learning_rate)
    loss_list, accuracy_list = [], []
    for epoch in range(args.epochs):
        model.train()
        for imgs, labels in tqdm(trainloader):
            imgs, labels = imgs.to(device), labels.to(device)
            loss = F.cross_entropy(model(imgs), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            loss_list.append(loss.item())
        model.eval()
        n_correct = 0
        with t.inference_mode():
            for imgs, labels in testloader:
                imgs, labels = imgs.to(device), labels.to(device)
                n_correct += (model(imgs).argmax(-1) == labels).sum().item()
        accuracy_list.append(n_correct / len(testset))
    return loss_list, accuracy_list, model


if MAIN:
    loss_list, accuracy_list, mlp = train_mlp(SimpleMLPTrainingArgs())
    print(f"MLP accuracy per epoch: {accuracy_list}")

# %%
tests.test_trace(as_strided_trace)
tests.test_mv(as_strided_mv)
tests.test_mv2(as_strided_mv)
tests.test_mm(as_strided_mm)
tests.test_mm2(as_strided_mm)
tests.test_conv1d_minimal_simple(conv1d_minimal_simple)
tests.test_conv1d_minimal(conv1d_minimal)
tests.test_conv2d_minimal(conv2d_minimal)
tests.test_pad1d(pad1d)
tests.test_pad1d_multi_channel(pad1d)
tests.test_pad2d(pad2d)
tests.test_pad2d_multi_channel(pad2d)
tests.test_conv1d(conv1d)
tests.test_conv2d(conv2d)
tests.test_maxpool2d(maxpool2d)

# %%
tests.test_conv2d_module(Conv2d)
print(Conv2d(in_channels=24, out_channels=12, kernel_size=3, stride=2, padding=1))
tests.test_batchnorm2d_module(BatchNorm2d)
tests.test_batchnorm2d_forward(BatchNorm2d)
tests.test_batchnorm2d_running_mean(BatchNorm2d)
tests.test_averagepool(AveragePool)
tests.test_residual_block(ResidualBlock)
tests.test_block_group(BlockGroup)

# %%
my_resnet = ResNet34()
pretrained_resnet = models.resnet34(weights=models.ResNet34_Weights.IMAGENET1K_V1)
my_resnet = copy_weights(my_resnet, pretrained_resnet)
print_param_count(my_resnet, pretrained_resnet)

# %%
tests.test_get_resnet_for_feature_extraction(get_resnet_for_feature_extraction)

if MAIN:
    loss_list, accuracy_list, model = train(ResNetTrainingArgs())
    print(f"feature extraction accuracy per epoch: {accuracy_list}")
