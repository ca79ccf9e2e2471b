"""The registry's Y metrics share one Y conversion per image (sr-eval speed) and stay bit-exact."""

import torch

from sr_cli.metrics.protocol import psnr_y, ssim_y
from sr_cli.metrics.registry import MetricInputs, compute_metrics


def test_shared_y_planes_give_the_protocol_values_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(1, 3, 40, 36, generator=g)
    srs = [
        gt + 0.05 * torch.randn(1, 3, 40, 36, generator=g),
        torch.rand(1, 3, 40, 36, generator=g),
    ]
    for protocol in ("paper", "matlab"):
        cache: dict = {}
        for sr in srs:
            x = MetricInputs(sr.clamp(0, 1), gt, gt[..., ::2, ::2], 2, protocol, gt_cache=cache)
            got = compute_metrics(["psnr_y", "ssim_y"], x)[0]
            assert got[0].item() == psnr_y(sr.clamp(0, 1), gt, 2, protocol).item()
            assert got[1].item() == ssim_y(sr.clamp(0, 1), gt, 2, protocol).item()
        assert list(cache) == [("gt_y", protocol, 2, 8)]  # GT converted once (8-bit source)
