"""Networks, one family per file. They know nothing of training or losses.

A generator is an ``nn.Module`` with an integer ``scale`` attribute whose ``forward(lq)``
returns the SR image, or a list of images from coarse to fine (progressive models); the last
element is the full-resolution output. Config files in ``conf/model/`` name a factory through
``_target_``; there is no separate registry to keep in sync.
"""

# Only classes are re-exported. A factory named like its module (``rrdbnet`` in ``rrdbnet.py``)
# would shadow the submodule on this package and break ``_target_: sr_cli.models.rrdbnet.rrdbnet``.
from sr_cli.models.common import count_parameters, final_output
from sr_cli.models.discriminators import VGGStyleDiscriminator
from sr_cli.models.edsr import EDSR
from sr_cli.models.rrdbnet import RRDBNet

__all__ = ["EDSR", "RRDBNet", "VGGStyleDiscriminator", "count_parameters", "final_output"]
