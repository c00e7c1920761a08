"""Blocks any model may use. Never imports slimkit.models."""

from slimkit.layers.activations import HardSwish, SoftRootSign
from slimkit.layers.attention import CoordinateAttention
from slimkit.layers.dynamic import DynamicConv2d, DynamicReLU, annealed_temperature, set_dynamic_temperature
from slimkit.layers.fuse import fuse_conv_bn, fuse_model
from slimkit.layers.micro import ChannelShuffle, DynamicShiftMax, MicroDepthwiseConv, MicroPointwiseConv
from slimkit.layers.mobile_former import Former, FormerToMobile, MobileSubBlock, MobileToFormer, TokenDynamicReLU
from slimkit.layers.poolformer import PatchEmbed, PoolFormerBlock, PoolMixer
from slimkit.layers.sandglass import SandglassBlock, sandglass_hidden
from slimkit.layers.se import SqueezeExcite
from slimkit.layers.tokens import Attention, Block, Mlp, T2TModule, TokenAttention, TokenPerformer, soft_split

__all__ = [
    "Attention", "Block", "ChannelShuffle", "CoordinateAttention", "DynamicConv2d", "DynamicReLU", "DynamicShiftMax",
    "Former", "FormerToMobile", "HardSwish", "MicroDepthwiseConv", "MicroPointwiseConv", "Mlp", "MobileSubBlock",
    "MobileToFormer", "PatchEmbed", "PoolFormerBlock", "PoolMixer", "SandglassBlock", "SoftRootSign", "SqueezeExcite",
    "T2TModule", "TokenAttention", "TokenDynamicReLU", "TokenPerformer", "annealed_temperature", "fuse_conv_bn",
    "fuse_model", "sandglass_hidden", "set_dynamic_temperature", "soft_split",
]
