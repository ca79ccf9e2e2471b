"""Copied into BasicSR's venv (``bench/.peer-venv``) and imported there at start-up by a ``.pth``
line; never imported by sr-cli.

BasicSR 1.4.2, the latest release on PyPI, imports ``torchvision.transforms.functional_tensor``
(``basicsr/data/degradations.py``). torchvision 0.17 removed that public module; its functions
(``rgb_to_grayscale`` is the one BasicSR calls) live on in the private
``torchvision.transforms._functional_tensor``. This finder answers the old name with a module
that re-exports them, and only when the real module does not exist (it sits last on
``sys.meta_path``). BasicSR's own files are not modified.
"""

import importlib.abc
import importlib.util
import sys

OLD = "torchvision.transforms.functional_tensor"


class _FunctionalTensorAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname == OLD else None

    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module) -> None:
        try:
            from torchvision.transforms import _functional_tensor as new
        except ImportError:  # older layouts
            from torchvision.transforms import functional as new
        module.__dict__.update({k: v for k, v in vars(new).items() if not k.startswith("__")})


if not any(isinstance(f, _FunctionalTensorAlias) for f in sys.meta_path):
    sys.meta_path.append(_FunctionalTensorAlias())
