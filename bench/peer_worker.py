"""BasicSR side of the peer benchmark; runs in bench/.peer-venv (never in sr-cli's environment).

Builds BasicSR's own ``SRModel`` for EDSR-baseline x4 with an L1 loss and Adam, the way a BasicSR
training option file would, then reads a number ``n`` per line on stdin, runs ``n`` training
iterations (``feed_data`` + ``optimize_parameters``) and prints the seconds per iteration.

    python bench/peer_worker.py BATCH PATCH THREADS
"""

# BasicSR 1.4.2 imports torchvision.transforms.functional_tensor, which torchvision 0.17 removed:
# the venv's bench_peer_compat.pth answers that name (bench/peer_compat.py).
import sys
import time

import basicsr
import torch
from basicsr.models.sr_model import SRModel


def main() -> None:
    batch, patch, threads = (int(a) for a in sys.argv[1:4])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    opt = {
        "name": "bench", "model_type": "SRModel", "scale": 4, "num_gpu": 0, "is_train": True,
        "dist": False, "rank": 0, "world_size": 1,
        "network_g": {"type": "EDSR", "num_in_ch": 3, "num_out_ch": 3, "num_feat": 64,
                      "num_block": 16, "upscale": 4, "res_scale": 1, "img_range": 255.0,
                      "rgb_mean": [0.4488, 0.4371, 0.4040]},
        "path": {"pretrain_network_g": None, "strict_load_g": True, "resume_state": None,
                 "param_key_g": "params", "models": "/tmp", "training_states": "/tmp"},
        "train": {"ema_decay": 0, "optim_g": {"type": "Adam", "lr": 2e-4, "betas": [0.9, 0.99],
                                               "weight_decay": 0},
                  "scheduler": {"type": "MultiStepLR", "milestones": [200000], "gamma": 0.5},
                  "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"}},
        "val": None, "logger": {"print_freq": 100},
    }  # fmt: skip
    model = SRModel(opt)
    gts = [torch.rand(batch, 3, patch, patch) for _ in range(4)]
    lqs = [torch.nn.functional.interpolate(g, scale_factor=0.25, mode="bicubic", antialias=True)
           for g in gts]  # fmt: skip
    print(f"BasicSR {basicsr.__version__}", flush=True)
    it = 0
    for line in sys.stdin:
        n = int(line)
        t0 = time.perf_counter()
        for _ in range(n):
            k = it % len(gts)
            it += 1
            model.feed_data({"lq": lqs[k], "gt": gts[k]})
            model.optimize_parameters(it)
        print((time.perf_counter() - t0) / n, flush=True)


if __name__ == "__main__":
    main()
