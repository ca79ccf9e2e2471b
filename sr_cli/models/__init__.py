"""Networks, one family per file. They know nothing of training or losses.

A generator is an ``nn.Module`` with an integer ``scale`` attribute whose ``forward(lq)``
returns the SR image, or a list of images from coarse to fine (progressive models); the last
element is the full-resolution output. Config files in ``conf/model/`` name a factory through
``_target_``; there is no separate registry to keep in sync.
"""

# Factories are not re-exported here: a function named like its module (``rrdbnet`` in
# ``rrdbnet.py``) would shadow the submodule on this package and break Hydra targets such as
# ``_target_: sr_cli.models.rrdbnet.rrdbnet``. Import them from their modules.
from sr_cli.models.common import count_parameters, final_output
from sr_cli.models.dbpn import DBPN
from sr_cli.models.discriminators import (
    PatchGANDiscriminator,
    UNetDiscriminatorSN,
    VGGStyleDiscriminator,
)
from sr_cli.models.edsr import EDSR
from sr_cli.models.espcn import ESPCN
from sr_cli.models.fsrcnn import FSRCNN
from sr_cli.models.lapsrn import LapSRN
from sr_cli.models.pretrained import load_pretrained
from sr_cli.models.rcan import RCAN
from sr_cli.models.rrdbnet import RRDBNet
from sr_cli.models.srcnn import SRCNN
from sr_cli.models.srresnet import MSRResNet
from sr_cli.models.swinir import SwinIR
from sr_cli.models.vdsr import VDSR

__all__ = [
    "DBPN",
    "EDSR",
    "ESPCN",
    "FSRCNN",
    "LapSRN",
    "MSRResNet",
    "PatchGANDiscriminator",
    "RCAN",
    "RRDBNet",
    "SRCNN",
    "SwinIR",
    "UNetDiscriminatorSN",
    "VDSR",
    "VGGStyleDiscriminator",
    "count_parameters",
    "final_output",
    "load_pretrained",
]
