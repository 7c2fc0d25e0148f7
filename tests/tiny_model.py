"""A tiny but real CNN for pipeline tests: seeded random weights, 16-d vectors, 32 px input.

Named on the command line as ``--model tests.tiny_model:TINY``, so every worker process
imports it itself (no registration needed in the launcher).
"""
import torch

from gridtsne.models import ModelSpec, load_weights_file, sha256_state_dict


class TinyCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x):
        return self.features(x)

    def classify(self, feats):
        return self.head(feats)


def build_tiny(weights=None):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = TinyCNN()
    if weights is None:
        return net, sha256_state_dict(net.state_dict()), "tests.tiny_model (seeded init)"
    state, sha = load_weights_file(weights)
    net.load_state_dict(state)
    return net, sha, str(weights)


TINY = ModelSpec(name="tiny_cnn", dim=16, input_size=32, mean=(0.5, 0.5, 0.5),
                 std=(0.25, 0.25, 0.25), build=build_tiny, description="test model")


class _FailingCNN(torch.nn.Module):
    """Loads fine (no batch norm to fold, so no check runs at load), fails every batch."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3)

    def forward(self, x):
        raise RuntimeError("simulated inference failure (e.g. out of GPU memory)")


def build_failing(weights=None):
    with torch.random.fork_rng():  # the same weights (and sha256) in every process
        torch.manual_seed(0)
        net = _FailingCNN()
    return net, sha256_state_dict(net.state_dict()), "tests.tiny_model (always fails)"


FAILING = ModelSpec(name="failing_cnn", dim=16, input_size=32, mean=(0.5, 0.5, 0.5),
                    std=(0.25, 0.25, 0.25), build=build_failing,
                    description="test model whose forward pass raises")
