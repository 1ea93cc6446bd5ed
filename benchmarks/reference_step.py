"""Times one step of the reference (PyTorch): its generic deblurring (`--what deblur`, for
`benchmarks/deblur.py --reference-step-s`) or its kernel-space training (`--what train`, for
`benchmarks/models.py`).

Needs PyTorch (not a dependency of this project) and a checkout of the authors' repository
(VinAIResearch/blur-kernel-space-exploring). Runs the body of `JointDeblur.deblur`'s first-half
step at 256x256 with the authors' `ImageDIP`, `KernelDIP`, `KernelWizard.adaptKernel` (released
woVAE config), `PerceptualLoss`, `SSIM` and `HyperLaplacianPenalty`, random weights:
torchvision's `vgg19` is replaced by the same layers built with `torch.nn` and `.cuda()` is a
no-op, so neither torchvision nor a GPU nor a download is needed.

    python benchmarks/reference_step.py --repo /path/to/blur-kernel-space-exploring --threads 2
    python benchmarks/reference_step.py --repo ... --threads 2 --what train --batch 2

`--what train` is `ImageBaseModel.optimize_parameters` of the released woVAE KernelWizard: G(x, y),
F(x, k), the Charbonnier sum, backward and an Adam step (lr 1e-4, betas 0.9, 0.99), as
benchmarks/models.py times ours; `--what G` and `--what F` are the KernelWizard's forward pass
(G(x, y)) and `adaptKernel` (F(x, k)) under `torch.no_grad()`. `--json` prints the step times as one
JSON line (benchmarks/models.py reads it to put the reference beside its own figures).
"""

import argparse
import json
import statistics
import sys
import time
import types

import torch
from torch import nn

VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


def _vgg19_features():
    layers, channels = [], 3
    for width in VGG19_LAYOUT:
        if width == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            channels = width
    return nn.Sequential(*layers)


def _install_stubs():
    """`torchvision.models.vgg19` without torchvision or weights; `.cuda()` does nothing."""
    tv = types.ModuleType("torchvision")
    tv.models = types.ModuleType("torchvision.models")
    tv.models.vgg19 = lambda pretrained=False: types.SimpleNamespace(features=_vgg19_features())
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.models"] = tv.models
    nn.Module.cuda = lambda self, *a, **k: self
    torch.Tensor.cuda = lambda self, *a, **k: self


def build(repo, size):
    sys.path.insert(0, repo)
    _install_stubs()
    from models.dips import ImageDIP, KernelDIP
    from models.kernel_encoding.kernel_wizard import KernelWizard
    from models.losses.hyper_laplacian_penalty import HyperLaplacianPenalty
    from models.losses.perceptual_loss import PerceptualLoss
    from models.losses.ssim_loss import SSIM

    wizard_opt = {
        "input_nc": 3,
        "nf": 64,
        "front_RBs": 10,
        "back_RBs": 20,
        "N_frames": 1,
        "kernel_dim": 512,
        "img_size": [size, size],
        "use_vae": False,
        "KernelExtractor": {
            "norm": "none",
            "use_sharp": True,
            "n_blocks": 4,
            "padding_type": "reflect",
            "use_dropout": False,
        },
        "Adapter": {"norm": "none", "use_dropout": False},
    }
    wizard = KernelWizard(wizard_opt)
    for p in wizard.parameters():
        p.requires_grad = False
    x_dip = ImageDIP({"input_nc": 8, "output_nc": 3, "nf": 64, "norm": "none", "padding_type": "reflect"})
    k_dip = KernelDIP(
        {"nf": 64, "n_blocks": 6, "padding_type": "reflect", "use_dropout": False, "kernel_dim": 512, "norm": "none"}
    )
    return dict(
        wizard=wizard,
        x_dip=x_dip,
        k_dip=k_dip,
        perceptual=PerceptualLoss(),
        ssim=SSIM(),
        laplace=HyperLaplacianPenalty(3, 0.66),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", required=True, help="checkout of the authors' repository")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after 2 untimed)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--what", choices=("deblur", "train", "G", "F"), default="deblur", help="which step")
    parser.add_argument("--batch", type=int, default=2, help="images per step (--what train, G, F)")
    parser.add_argument("--json", action="store_true", help="print the step times as one JSON line")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    m = build(args.repo, args.size)
    make = {"train": _train_step, "G": _extract_step, "F": _blur_step}.get(args.what)
    step = make(m["wizard"], args) if make else _deblur_step(m, args)
    for _ in range(2):
        step()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    if args.json:
        print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "times": times}))
        return
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.what} step, {args.size}x{args.size}: "
        f"median {statistics.median(times):.2f} s per step over {args.steps} "
        f"(min {min(times):.2f}, max {max(times):.2f})"
    )


def _train_step(wizard, args):
    for p in wizard.parameters():
        p.requires_grad = True
    optimizer = torch.optim.Adam(wizard.parameters(), lr=1e-4, betas=(0.9, 0.99))
    sharp = torch.rand(args.batch, 3, args.size, args.size)
    blurry = torch.rand(args.batch, 3, args.size, args.size)

    def step():
        optimizer.zero_grad()
        mean, sigma = wizard(sharp, blurry)
        fake = wizard.adaptKernel(sharp, mean + sigma * torch.randn_like(mean))
        torch.sum(torch.sqrt((fake - blurry) ** 2 + 1e-6)).backward()
        optimizer.step()

    return step


def _extract_step(wizard, args):
    sharp = torch.rand(args.batch, 3, args.size, args.size)
    blurry = torch.rand(args.batch, 3, args.size, args.size)

    @torch.no_grad()
    def step():
        wizard(sharp, blurry)

    return step


def _blur_step(wizard, args):
    sharp = torch.rand(args.batch, 3, args.size, args.size)
    with torch.no_grad():
        kernel = 0.01 * torch.randn_like(wizard(sharp, torch.rand_like(sharp))[0])

    @torch.no_grad()
    def step():
        wizard.adaptKernel(sharp, kernel)

    return step


def _deblur_step(m, args):
    x_opt = torch.optim.Adam(m["x_dip"].parameters(), lr=5e-4)
    k_opt = torch.optim.Adam(m["k_dip"].parameters(), lr=5e-4)
    zx = 0.1 * torch.rand(1, 8, args.size, args.size)
    zk = 0.1 * torch.rand(1, 64, 64, 64)
    y = torch.rand(1, 3, args.size, args.size)

    def step():
        x_opt.zero_grad()
        k_opt.zero_grad()
        x = m["x_dip"](zx + 1e-3 * torch.randn_like(zx))
        k = m["k_dip"](zk + 1e-3 * torch.randn_like(zk))
        fake_y = m["wizard"].adaptKernel(x, k)
        loss = 0.6 * m["perceptual"](fake_y, y) + 1 - m["ssim"](fake_y, y)
        loss = loss + 5e-5 * torch.norm(k) + 2e-2 * m["laplace"](x)
        loss.backward()
        x_opt.step()
        k_opt.step()

    return step


if __name__ == "__main__":
    main()
