"""Sharp/blurry pairs: synthetic (camera-shake blur), TFDS builders of image folders, grain pipelines.

synthetic.py       seeded synthetic pairs from scikit-image's photographs
paired_folders.py  scanning and validating GoPro / REDS / paired-folder trees
tfds_builders.py   TFDS builders (array_record, no TensorFlow) and random-access data sources
pipeline.py        grain: augmented training crops, deterministic evaluation batches
sources.py         the sources a training config asks for
pairs.py           pair specs (open_pairs) read as float images: what the kernel bank and evaluation read

The builders are run by `kernelspace-build-data` (kernelspace_jax/cli/build_data.py).
"""
