"""A user's own architecture, as slimkit takes it: `--model examples/my_net.py:build` (any function or class in a
Python file that returns an nn.Module; slimkit passes num_classes and in_chans when it accepts them)."""

from torch import nn


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class MyNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_chans: int = 3, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(_block(in_chans, width, 1), _block(width, width, 1),
                                      _block(width, 2 * width, 2), _block(2 * width, 2 * width, 1),
                                      _block(2 * width, 4 * width, 2), _block(4 * width, 4 * width, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def build(num_classes: int = 10, in_chans: int = 3, width: int = 32) -> MyNet:
    return MyNet(num_classes, in_chans, width)
