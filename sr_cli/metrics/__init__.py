"""Evaluation metrics with the published protocol fixed (Y channel, border crop, 8-bit rounding)."""

from sr_cli.metrics.protocol import (
    PROTOCOL_DESCRIPTIONS,
    PROTOCOLS,
    crop_border,
    protocol_metrics,
    psnr,
    psnr_rgb,
    psnr_y,
    rgb_to_y,
    ssim_y,
    to_uint8_range,
)

__all__ = [
    "PROTOCOLS",
    "PROTOCOL_DESCRIPTIONS",
    "crop_border",
    "protocol_metrics",
    "psnr",
    "psnr_rgb",
    "psnr_y",
    "rgb_to_y",
    "ssim_y",
    "to_uint8_range",
]
