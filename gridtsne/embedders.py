"""The torch modules behind :mod:`gridtsne.models`' registry: a classifier split into its pooled
feature (``forward``, ``forward_pooled``) and its head (``classify``).

Apart from the registry so that importing :mod:`gridtsne.models` (as every worker process
that unpickles an embedding step's configuration does) does not import torch: the processes
that only list and read files never pay for it.
"""
import torch

from gridtsne.pooling import gem_pool


class TimmEmbedder(torch.nn.Module):
    """A timm classifier whose forward stops at the pooled pre-logits feature."""

    def __init__(self, net, pooling="avg"):
        super().__init__()
        self.net = net
        self.pooling = pooling

    def forward(self, x):
        return self.forward_pooled(x, self.pooling)

    def forward_pooled(self, x, pooling):
        fmap = self.net.forward_features(x)
        if pooling == "gem":
            return gem_pool(fmap)
        return self.net.forward_head(fmap, pre_logits=True)

    def classify(self, feats):
        return self.net.get_classifier()(feats)


class TorchvisionEmbedder(torch.nn.Module):
    """A torchvision classifier split into pooled feature (``forward``) and head (``classify``)."""

    def __init__(self, net, arch, pooling="avg"):
        super().__init__()
        if arch not in ("resnet50", "convnext_tiny", "efficientnet_v2_s"):
            raise ValueError(f"no feature split known for torchvision {arch!r}")
        self.net = net
        self.arch = arch
        self.pooling = pooling

    def forward(self, x):
        return self.forward_pooled(x, self.pooling)

    def forward_pooled(self, x, pooling):
        n = self.net
        if self.arch == "resnet50":
            x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
            x = n.layer4(n.layer3(n.layer2(n.layer1(x))))
        else:
            x = n.features(x)
        if pooling == "gem":  # not offered for convnext_tiny: its map is signed (LayerNorm next)
            return gem_pool(x)
        x = n.avgpool(x)
        if self.arch == "convnext_tiny":
            return n.classifier[1](n.classifier[0](x))  # LayerNorm2d, Flatten; Linear is the head
        return x.flatten(1)

    def classify(self, feats):
        n = self.net
        if self.arch == "resnet50":
            return n.fc(feats)
        if self.arch == "convnext_tiny":
            return n.classifier[2](feats)
        return n.classifier(feats)
