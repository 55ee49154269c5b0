"""Section 4: ResNet34, weight copying, and the feature-extraction bonus."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import einops
import torch as t
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from jaxtyping import Float, Int
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, models, transforms
from tqdm.auto import tqdm

from mlp.layers import Linear, ReLU
from resnet.blocks import AveragePool, BatchNorm2d, BlockGroup, Conv2d, MaxPool2d, Sequential

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
device = t.device("cuda" if t.cuda.is_available() else "cpu")


class ResNet34(nn.Module):
    def __init__(
        self,
        n_blocks_per_group=[3, 4, 6, 3],
        out_features_per_group=[64, 128, 256, 512],
        first_strides_per_group=[1, 2, 2, 2],
        n_classes=1000,
    ):
        super().__init__()
        self.n_blocks_per_group = n_blocks_per_group
        self.out_features_per_group = out_features_per_group
        self.first_strides_per_group = first_strides_per_group
        self.n_classes = n_classes

        in_feats0 = 64
        self.in_layers = Sequential(
            Conv2d(3, in_feats0, kernel_size=7, stride=2, padding=3),
            BatchNorm2d(in_feats0),
            ReLU(),
            MaxPool2d(kernel_size=3, stride=2, padding=1),
        )

        all_in_feats = [in_feats0] + list(out_features_per_group[:-1])
        groups = []
        for n_blocks, in_feats, out_feats, first_stride in zip(
            n_blocks_per_group, all_in_feats, out_features_per_group, first_strides_per_group
        ):
            groups.append(BlockGroup(n_blocks, in_feats, out_feats, first_stride))
        self.residual_layers = Sequential(*groups)

        self.out_layers = Sequential(
            AveragePool(),
            Linear(out_features_per_group[-1], n_classes),
        )

    def forward(self, x: Float[Tensor, "batch channels height width"]) -> Float[Tensor, "batch n_classes"]:
        """
        x: shape (batch, channels, height, width)
        Return: shape (batch, n_classes)
        """
        x = self.in_layers(x)
        x = self.residual_layers(x)
        return self.out_layers(x)


def copy_weights(my_resnet: ResNet34, pretrained_resnet: models.resnet.ResNet) -> ResNet34:
    """Copy over the weights of `pretrained_resnet` to your resnet."""

    # Get the state dictionaries for each model, check they have the same number of parameters & buffers
    mydict = my_resnet.state_dict()
    pretraineddict = pretrained_resnet.state_dict()
    assert len(mydict) == len(pretraineddict), "Mismatching state dictionaries."

    # Define a dictionary mapping the names of your parameters / buffers to their values in the pretrained model
    state_dict_to_load = {}
    for (mykey, myvalue), (pretrainedkey, pretrainedvalue) in zip(mydict.items(), pretraineddict.items()):
        assert myvalue.shape == pretrainedvalue.shape, f"{mykey} {tuple(myvalue.shape)} vs {pretrainedkey} {tuple(pretrainedvalue.shape)}"
        state_dict_to_load[mykey] = pretrainedvalue

    # Load in this dictionary to your model
    my_resnet.load_state_dict(state_dict_to_load)

    return my_resnet


IMAGENET_TRANSFORM = transforms.Compose(
    [
        transforms.ToTensor(),
        transforms.Resize((IMAGE_SIZE, IMAGE_SIZE)),
        transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ]
)


def get_resnet_for_feature_extraction(n_classes: int) -> ResNet34:
    """
    Creates a ResNet34 instance, replaces its final linear layer with a classifier for `n_classes` classes, and freezes
    all weights except the ones in this layer.

    Returns the ResNet model.
    """
    # create model & load in pretrained weights
    my_resnet = ResNet34()
    pretrained_resnet = models.resnet34(weights=models.ResNet34_Weights.IMAGENET1K_V1)
    my_resnet = copy_weights(my_resnet, pretrained_resnet)

    # freeze everything
    my_resnet.requires_grad_(False)

    # new (trainable) head
    my_resnet.out_layers[-1] = Linear(my_resnet.out_features_per_group[-1], n_classes)

    return my_resnet


def get_cifar() -> tuple[datasets.CIFAR10, datasets.CIFAR10]:
    """Returns CIFAR-10 train and test sets."""
    cifar_trainset = datasets.CIFAR10(DATA_DIR, train=True, download=True, transform=IMAGENET_TRANSFORM)
    cifar_testset = datasets.CIFAR10(DATA_DIR, train=False, download=True, transform=IMAGENET_TRANSFORM)
    return cifar_trainset, cifar_testset


def get_cifar_subset(trainset_size: int = 10_000, testset_size: int = 1_000) -> tuple[Subset, Subset]:
    """Returns a subset of CIFAR-10 train & test sets (first n items)."""
    cifar_trainset, cifar_testset = get_cifar()
    return Subset(cifar_trainset, range(trainset_size)), Subset(cifar_testset, range(testset_size))


@dataclass
class ResNetTrainingArgs:
    batch_size: int = 64
    epochs: int = 3
    learning_rate: float = 1e-3
    n_classes: int = 10


def train(args: ResNetTrainingArgs) -> tuple[list[float], list[float], ResNet34]:
    """
    Performs feature extraction on ResNet34: only the final linear layer is trained, on a subset of CIFAR10.
    Returns (loss_list, accuracy_list, model).
    """
    model = get_resnet_for_feature_extraction(args.n_classes).to(device)

    trainset, testset = get_cifar_subset()
    trainloader = DataLoader(trainset, batch_size=args.batch_size, shuffle=True)
    testloader = DataLoader(testset, batch_size=args.batch_size, shuffle=False)

    # only the head is optimised (everything else has requires_grad=False anyway)
    optimizer = t.optim.Adam(model.out_layers[-1].parameters(), lr=args.learning_rate)

    loss_list = []
    accuracy_list = []

    for epoch in range(args.epochs):
        # training
        model.train()
        pbar = tqdm(trainloader)
        for imgs, labels in pbar:
            imgs, labels = imgs.to(device), labels.to(device)
            logits = model(imgs)
            loss = F.cross_entropy(logits, labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            loss_list.append(loss.item())
            pbar.set_postfix(epoch=f"{epoch + 1}/{args.epochs}", loss=f"{loss.item():.3f}")

        # validation
        model.eval()
        n_correct = 0
        with t.inference_mode():
            for imgs, labels in testloader:
                imgs, labels = imgs.to(device), labels.to(device)
                preds = model(imgs).argmax(dim=-1)
                n_correct += (preds == labels).sum().item()
        accuracy_list.append(n_correct / len(testset))
        print(f"epoch {epoch + 1}: accuracy {accuracy_list[-1]:.2%}")

    return loss_list, accuracy_list, model
