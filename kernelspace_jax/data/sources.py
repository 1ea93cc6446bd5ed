"""Random-access train and eval sources from a config's `data` section (see configs/common.py)."""

from __future__ import annotations

import ml_collections

from kernelspace_jax.data import synthetic

HELD_OUT_SPLIT = {"gopro": "test", "reds": "val", "paired_folders": "test"}


def _synthetic(data: ml_collections.ConfigDict, seed: int):
    options = data.synthetic
    base = dict(
        crop_size=tuple(options.image_size),
        kernel_size_range=tuple(options.kernel_size_range),
        nonuniform_prob=options.get("nonuniform_prob", synthetic.SyntheticBlurConfig.nonuniform_prob),
        seed=seed,
    )
    train = synthetic.SyntheticPairs(synthetic.SyntheticBlurConfig(**base), "train", options.num_train)
    held_out = synthetic.SyntheticPairs(synthetic.SyntheticBlurConfig(**base), "test", options.num_eval)
    return train, held_out


def _tfds(data: ml_collections.ConfigDict):
    from kernelspace_jax.data import tfds_builders

    names = tuple(data.names)

    def split_source(split: str, repeats=None):
        parts = [
            tfds_builders.data_source(n, split or HELD_OUT_SPLIT[n.partition("/")[0]], data.data_dir) for n in names
        ]
        return parts[0] if len(parts) == 1 else tfds_builders.MixedSource(parts, repeats)

    # Repeats weight the training mix; every held-out pair is evaluated once.
    return split_source(data.train_split, tuple(data.repeats) or None), split_source(data.eval_split)


def build(data: ml_collections.ConfigDict, seed: int = 0):
    """(train source, held-out source): objects with len() and [i] -> {"sharp", "blurry", ...}."""
    if data.kind == "synthetic":
        return _synthetic(data, seed)
    if data.kind == "tfds":
        return _tfds(data)
    raise ValueError(f"data.kind must be 'synthetic' or 'tfds', got {data.kind!r}")
