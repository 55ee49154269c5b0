from .layers import ReLU, Linear, Flatten, SimpleMLP
