from part2_cnns.solutions import Linear, Conv2d, BatchNorm2d  # use the reference blocks so a bug in mine can't break the resnet

# %%
# part2_resnet.py: residual blocks, ResNet34, weight copying, feature extraction
import os
import sys
import json
from pathlib import Path
from dataclasses import dataclass

import numpy as np
import einops
import torch as t
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Subset
from jaxtyping import Float, Int
from tqdm.notebook import tqdm
from torchvision import datasets, transforms, models

root = next(p for p in Path.cwd().parents if (p / "chapter0_fundamentals").exists())
exercises_dir = root / "chapter0_fundamentals" / "exercises"
section_dir = exercises_dir / "part2_cnns"
if str(exercises_dir) not in sys.path:
    sys.path.append(str(exercises_dir))

from plotly_utils import imshow, line, bar
import part2_cnns.tests as tests
from part2_cnns.utils import print_param_count
from part1_modules import ReLU, Sequential, MaxPool2d, AveragePool

MAIN = __name__ == "__main__"

device = t.device("mps" if t.backends.mps.is_available() else "cuda" if t.cuda.is_available() else "cpu")

# %% [markdown]
# ## ResNet34

# %%
class ResidualBlock(nn.Module):
    def __init__(self, in_feats: int, out_feats: int, first_stride=1):
        """
        A single residual block with optional downsampling.

        For compatibility with the pretrained model, declare the left side branch first using a `Sequential`.

        If first_stride is > 1, this means the optional (conv + bn) should be present on the right branch. Declare it second using another `Sequential`.
        """
        super().__init__()
        self.left = Sequential(
            Conv2d(in_feats, out_feats, kernel_size=3, stride=first_stride, padding=1),
            BatchNorm2d(out_feats),
            ReLU(),
            Conv2d(out_feats, out_feats, kernel_size=3, stride=1, padding=1),
            BatchNorm2d(out_feats),
        )

        if first_stride == 1 and in_feats == out_feats:
            self.right = nn.Identity()
        else:
            self.right = Sequential(
                Conv2d(in_feats, out_feats, kernel_size=1, stride=first_stride),
                BatchNorm2d(out_feats),
            )

        self.relu = ReLU()

    def forward(self, x: Float[Tensor, "batch in_feats height width"]) -> Float[Tensor, "batch out_feats height width"]:
        """
        Compute the forward pass.

        x: shape (batch, in_feats, height, width)

        Return: shape (batch, out_feats, height / stride, width / stride)

        If no downsampling block is present, the addition should just add the left branch's output to the input.
        """
        x_left = self.left(x)
        x_right = self.right(x)
        return self.relu(x_left + x_right)


tests.test_residual_block(ResidualBlock)

# %%
class BlockGroup(nn.Module):
    def __init__(self, n_blocks: int, in_feats: int, out_feats: int, first_stride=1):
        """An n_blocks-long sequence of ResidualBlock where only the first block uses the provided stride."""
        super().__init__()
        blocks = [ResidualBlock(in_feats, out_feats, first_stride)]
        for _ in range(n_blocks - 1):
            blocks.append(ResidualBlock(out_feats, out_feats))
        self.blocks = Sequential(*blocks)

    def forward(self, x: Float[Tensor, "batch in_feats height width"]) -> Float[Tensor, "batch out_feats height width"]:
        """
        Compute the forward pass.

        x: shape (batch, in_feats, height, width)

        Return: shape (batch, out_feats, height / first_stride, width / first_stride)
        """
        return self.blocks(x)


tests.test_block_group(BlockGroup)

# %%
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


my_resnet = ResNet34()

# (running the cell below will print nothing if the test passes)
tests.test_resnet34(ResNet34)

# %%
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


if MAIN:
    pretrained_resnet = models.resnet34(weights=models.ResNet34_Weights.IMAGENET1K_V1).to(device)
    my_resnet = copy_weights(my_resnet.to(device), pretrained_resnet)
    print_param_count(my_resnet, pretrained_resnet)

# %%
!mkdir -p resnet_inputs
!wget -q -P resnet_inputs https://upload.wikimedia.org/wikipedia/commons/thumb/4/4d/Cat_November_2010-1a.jpg/1200px-Cat_November_2010-1a.jpg

IMAGE_SIZE = 224
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

IMAGENET_TRANSFORM = transforms.Compose(
    [
        transforms.ToTensor(),
        transforms.Resize((IMAGE_SIZE, IMAGE_SIZE)),
        transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ]
)


def predict(model: nn.Module, images: Float[Tensor, "batch rgb h w"]) -> tuple[Float[Tensor, "batch"], Int[Tensor, "batch"]]:
    """
    Returns the maximum probability and predicted class for each image, as a tensor of floats and ints respectively.
    """
    model.eval()
    with t.inference_mode():
        logits = model(images)
    probs = logits.softmax(dim=-1)
    max_probs, preds = probs.max(dim=-1)
    return max_probs, preds


if MAIN:
    from PIL import Image

    image_names = sorted(os.listdir(section_dir / "resnet_inputs"))
    images = [Image.open(section_dir / "resnet_inputs" / f) for f in image_names]
    prepared_images = t.stack([IMAGENET_TRANSFORM(img) for img in images], dim=0).to(device)

    with open(section_dir / "imagenet_labels.json") as f:
        imagenet_labels = list(json.load(f).values())

    my_probs, my_preds = predict(my_resnet, prepared_images)
    pretrained_probs, pretrained_preds = predict(pretrained_resnet, prepared_images)
    assert (my_preds == pretrained_preds).all()
    for name, p, c in zip(image_names, my_probs, my_preds):
        print(f"{name}: {imagenet_labels[c]} ({p.item():.1%})")

# %% [markdown]
# ## Feature extraction on CIFAR10

# %%
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


tests.test_get_resnet_for_feature_extraction(get_resnet_for_feature_extraction)

# %%
def get_cifar() -> tuple[datasets.CIFAR10, datasets.CIFAR10]:
    """Returns CIFAR-10 train and test sets."""
    cifar_trainset = datasets.CIFAR10(section_dir / "data", train=True, download=True, transform=IMAGENET_TRANSFORM)
    cifar_testset = datasets.CIFAR10(section_dir / "data", train=False, download=True, transform=IMAGENET_TRANSFORM)
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


# %%
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


if MAIN:
    args = ResNetTrainingArgs()
    loss_list, accuracy_list, model = train(args)

    line(
        loss_list,
        yaxis_range=[0, max(loss_list) + 0.1],
        labels={"x": "Num batches seen", "y": "Cross entropy loss"},
        title="Feature extraction with ResNet34",
        width=700,
    )
    line(accuracy_list, yaxis_range=[0, 1], labels={"x": "Epoch", "y": "Accuracy"}, title="Test accuracy", width=700)
