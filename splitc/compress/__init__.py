"""Post-training compression rewrites of the edge half, fitted on calibration data (see ``base``)."""

from splitc.compress.bottleneck import CutBottleneck
from splitc.compress.lowrank import LowRank
from splitc.compress.lowrank import variants as lowrank_variants
from splitc.compress.int8 import ToInt8Edge, int8_edge
from splitc.compress.prune import ChannelPrune
from splitc.compress.prune import variants as prune_variants
