"""Trains the kernel space (F and G).

    python train.py --config configs/synthetic_tiny.py --workdir runs/tiny
    python train.py --config configs/gopro_wvae.py --workdir runs/gopro_wvae --config.data.batch_size=16

Re-running the same command resumes from the latest checkpoint in --workdir.
"""

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

from kernelspace_jax.trainer import train_and_evaluate

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "A configs/*.py file; override fields with --config.a.b=v.")
flags.DEFINE_string("workdir", None, "Folder for checkpoints and logs (created; reused to resume).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.getLogger("kernelspace_jax").setLevel(logging.INFO)
    train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    sys.path.insert(0, ".")  # configs/ import their shared recipe as a package
    app.run(main)
