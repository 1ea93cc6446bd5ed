"""TFDS datasets of sharp/blurry pairs (GoPro, REDS, paired folders), built and read without TensorFlow.

    build("gopro", manual_dir="datasets/GOPRO_Large", data_dir="datasets/tfds")   # once
    train = data_source("gopro", "train", "datasets/tfds")      # random access, what grain wraps
    train[0]   # dict(sharp=(720, 1280, 3) uint8, blurry=(720, 1280, 3) uint8,
               #      id=b'GOPR0372_07_00/000047', sequence=b'GOPR0372_07_00')
    mix = data_source(["reds", "gopro"], "train", "datasets/tfds", repeats=[1, 10])  # the reference's mix

Datasets and splits (`name` is '<builder>[/<config>]'):
  gopro, gopro/blur_gamma: train, test, from GOPRO_Large (config 'blur' is the default);
  reds: train, val, from the folders train_blur, train_sharp, val_blur, val_sharp;
  paired_folders[/<config>]: the reference README's custom layout; `PairedFoldersConfig.splits` maps
    each split to its (blurry, sharp) folders inside the manual dir (default: train/{blur,sharp} and
    test/{blur,sharp}, e.g. two trees written by `synthetic.write_paired_folders`).
Files are scanned and validated by `paired_folders` before anything is written: bad pairs stop the
build with a `BadPairsError` unless the builder is made with `skip_bad=True`. Records are stored
sorted by id (shuffling disabled), so index i of a split is always the same pair.
The reference's REDS training set ('train_sharp_wval') is REDS train plus val renamed to sequences
240-269, minus the REDS4 sequences 000, 011, 015, 020; here the splits are kept as published.

Mixing: `data_source` given several names returns a `MixedSource`, a view that concatenates the
built datasets (nothing is copied), each repeated an integer number of times like the reference's
`dataset_weights`; the shuffling is left to the input pipeline.

TensorFlow-free (checked with tensorflow-datasets 4.9.10, TensorFlow not installed):
  - writing: the builders replace TFDS's writer (`_generate_splits`): it passes each split through a
    shuffler that spills past 1 GB to temporary files opened with tf.io.gfile, so any real dataset
    would need TensorFlow. Here serialized records go straight to array_record shards (about
    SHARD_BYTES of PNG data each) in id order, and TFDS writes dataset_info.json and features.json
    as usual. Images reach the Image feature as file paths or PNG bytes
    (`paired_folders.png_for_tfds`), which it stores as is: numpy arrays would be encoded by
    TensorFlow. `_info` builds `DatasetInfo` directly (`dataset_info_from_configs` would look for
    metadata files next to this module), and `code_path` is overridden (see there). Nothing is
    downloaded: the data comes from the manual dir and TFDS's GCS look-ups are off by default.
  - reading: `tfds.data_source` decodes with numpy (images with OpenCV if installed, else PIL);
    Text features come back as bytes. It works in processes that never imported this module too
    (TFDS rebuilds a read-only builder from the dataset's features.json). `tfds.load` and
    `as_dataset` are tf.data and need TensorFlow.
"""

from __future__ import annotations

import abc
import bisect
import dataclasses
import inspect
import itertools
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from kernelspace_jax.data.paired_folders import (
    GOPRO_BLUR_VARIANTS,
    GOPRO_SPLITS,
    PairRecord,
    ScanReport,
    png_for_tfds,
    scan_gopro,
    scan_paired_folders,
)

FILE_FORMAT = "array_record"
SHARD_BYTES = 1 << 30  # about this much PNG data per shard
DEFAULT_FOLDER_SPLITS = {split: (f"{split}/blur", f"{split}/sharp") for split in ("train", "test")}
REDS_FOLDER_SPLITS = {split: (f"{split}_blur", f"{split}_sharp") for split in ("train", "val")}

_PAIRED_FOLDERS_INSTRUCTIONS = """\
Put the pairs in the manual dir as <blurry folder>/<seq>/<name>.png and <sharp folder>/<seq>/<name>.png,
the same relative paths on both sides, with one (blurry folder, sharp folder) per split as set by the
config's `splits` (default: train/blur + train/sharp and test/blur + test/sharp).
"""


class _PairsBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared by the pair builders: features, validation, generation. Subclasses say where the pairs are."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS's own lookup, for classes in packages, touches `importlib_resources` (a backport for
        # Python < 3.9 that TFDS does not install) and fails without it; its fallback is this.
        return epath.Path(inspect.getfile(cls))

    def __init__(self, *, skip_bad: bool = False, **kwargs: Any):
        """skip_bad: drop bad pairs (logging the report) instead of failing; other kwargs go to TFDS
        (file_format defaults to array_record).

        After a generation, `scan_reports` holds {split: ScanReport}.
        """
        self.skip_bad = skip_bad
        self.scan_reports: dict[str, ScanReport] = {}
        super().__init__(**{"file_format": FILE_FORMAT, **kwargs})

    def _info(self) -> tfds.core.DatasetInfo:
        image = tfds.features.Image(shape=(None, None, 3), dtype=np.uint8, encoding_format="png")
        return tfds.core.DatasetInfo(
            builder=self,
            description="Sharp/blurry image pairs: (H, W, 3) uint8 RGB each, one size per pair.",
            features=tfds.features.FeaturesDict(
                {
                    "sharp": image,
                    "blurry": image,
                    "id": tfds.features.Text(),
                    "sequence": tfds.features.Text(),
                }
            ),
            disable_shuffling=True,
        )

    @abc.abstractmethod
    def _scan(self, manual_dir: Path) -> dict[str, tuple[list[PairRecord], ScanReport]]:
        """{split: (validated pairs, report)} found in the manual dir."""

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, list[PairRecord]]:
        """{split: pairs}, every split scanned before anything is written (a bad tree fails fast)."""
        scans = self._scan(Path(dl_manager.manual_dir))
        self.scan_reports = {split: report for split, (_, report) in scans.items()}
        return {split: pairs for split, (pairs, _) in scans.items()}

    def _generate_examples(self, pairs: list[PairRecord]) -> Iterator[tuple[str, dict[str, Any]]]:
        for pair in pairs:
            yield (
                pair.id,
                {
                    "sharp": png_for_tfds(pair.sharp),
                    "blurry": png_for_tfds(pair.blurry),
                    "id": pair.id,
                    "sequence": pair.sequence,
                },
            )

    def _generate_splits(
        self, dl_manager: tfds.download.DownloadManager, download_config: tfds.download.DownloadConfig
    ) -> list[tfds.core.SplitInfo]:
        # TFDS's writer would need TensorFlow for splits over 1 GB (module doc); records go straight
        # to the shards instead, in id order (what disable_shuffling asks for anyway).
        return [self._write_split(split, pairs) for split, pairs in self._split_generators(dl_manager).items()]

    def _write_split(self, split: str, pairs: list[PairRecord]) -> tfds.core.SplitInfo:
        features = self.info.features
        serializer = tfds.core.example_serializer.ExampleSerializer(features.get_serialized_info())
        template = self._get_filename_template(split_name=split)
        file_bytes = sum(pair.sharp.stat().st_size + pair.blurry.stat().st_size for pair in pairs)
        num_shards = min(len(pairs), max(1, math.ceil(file_bytes / SHARD_BYTES)))
        bounds = [len(pairs) * shard // num_shards for shard in range(num_shards + 1)]
        num_bytes = 0

        def records(shard_pairs: list[PairRecord]) -> Iterator[tuple[str, bytes]]:
            nonlocal num_bytes
            for key, example in self._generate_examples(shard_pairs):
                record = serializer.serialize_example(features.encode_example(example))
                num_bytes += len(record)
                yield key, record

        shard_lengths = []
        for shard, (start, stop) in enumerate(itertools.pairwise(bounds)):
            path = template.sharded_filepath(shard_index=shard, num_shards=num_shards)
            self._example_writer().write(path, records(pairs[start:stop]))
            shard_lengths.append(stop - start)
        return tfds.core.SplitInfo(split, shard_lengths, num_bytes, filename_template=template)


@dataclasses.dataclass(eq=False)
class GoProConfig(tfds.core.BuilderConfig):
    """blur: 'blur' (linear frame average, the reference's choice) or 'blur_gamma'."""

    blur: str = "blur"


class GoPro(_PairsBuilder):
    """GoPro (Nah et al., CVPR 2017) from GOPRO_Large: ids '<seq>/<frame>', splits train and test."""

    name = "gopro"
    BUILDER_CONFIGS: ClassVar[list[GoProConfig]] = [GoProConfig(name=b, blur=b) for b in GOPRO_BLUR_VARIANTS]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Unzip GOPRO_Large.zip (https://seungjunnah.github.io/Datasets/gopro) and use the folder that holds
train/ and test/ as the manual dir: <split>/<seq>/{blur,blur_gamma,sharp}/<frame>.png.
"""

    def _scan(self, manual_dir: Path) -> dict[str, tuple[list[PairRecord], ScanReport]]:
        blur = self.builder_config.blur
        return {split: scan_gopro(manual_dir, split, blur, skip_bad=self.skip_bad) for split in GOPRO_SPLITS}


@dataclasses.dataclass(eq=False)
class PairedFoldersConfig(tfds.core.BuilderConfig):
    """splits: {split: (blurry folder, sharp folder)}, both relative to the manual dir."""

    splits: Mapping[str, tuple[str, str]] = dataclasses.field(default_factory=lambda: dict(DEFAULT_FOLDER_SPLITS))


class PairedFolders(_PairsBuilder):
    """Generic paired folders (the reference README's custom-dataset layout); ids '<seq>/<name>'."""

    name = "paired_folders"
    BUILDER_CONFIGS: ClassVar[list[PairedFoldersConfig]] = [PairedFoldersConfig(name="default")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = _PAIRED_FOLDERS_INSTRUCTIONS

    def _scan(self, manual_dir: Path) -> dict[str, tuple[list[PairRecord], ScanReport]]:
        return {
            split: scan_paired_folders(manual_dir / blurry, manual_dir / sharp, skip_bad=self.skip_bad)
            for split, (blurry, sharp) in self.builder_config.splits.items()
        }


class Reds(PairedFolders):
    """REDS (Nah et al., CVPRW 2019), its blur (not blur_comp) pairs: splits train and val."""

    name = "reds"
    BUILDER_CONFIGS: ClassVar[list[PairedFoldersConfig]] = [
        PairedFoldersConfig(name="default", splits=REDS_FOLDER_SPLITS)
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Unzip train_blur.zip, train_sharp.zip, val_blur.zip and val_sharp.zip
(https://seungjunnah.github.io/Datasets/reds) into the manual dir:
{train,val}_{blur,sharp}/<seq>/<frame>.png.
"""


BUILDERS: dict[str, type[_PairsBuilder]] = {"gopro": GoPro, "reds": Reds, "paired_folders": PairedFolders}


def build(
    name: str,
    manual_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    *,
    skip_bad: bool = False,
    splits: Mapping[str, tuple[str, str]] | None = None,
) -> tfds.core.DatasetBuilder:
    """Generates dataset `name` from manual_dir into data_dir (array_record); reuses one already there.

    name: 'gopro', 'gopro/blur_gamma', 'reds', 'paired_folders' or 'paired_folders/<config>'.
    splits: paired_folders only, {split: (blurry folder, sharp folder)} relative to manual_dir
      (default DEFAULT_FOLDER_SPLITS); with splits other than the default, name the config.
    Raises BadPairsError (see `paired_folders`) when the files have problems and not skip_bad.
    """
    builder_name, _, config_name = name.partition("/")
    if builder_name not in BUILDERS:
        raise ValueError(f"unknown dataset {builder_name!r} in {name!r}; expected one of {sorted(BUILDERS)}")
    if not Path(manual_dir).is_dir():
        raise FileNotFoundError(f"manual dir {manual_dir} of dataset {name!r} does not exist (or is not a folder)")
    config: str | PairedFoldersConfig | None = config_name or None
    if builder_name == "paired_folders":
        if config_name in ("", "default") and splits is not None and dict(splits) != DEFAULT_FOLDER_SPLITS:
            raise ValueError(f"custom splits {dict(splits)} need a config name: 'paired_folders/<name>'")
        if config_name in ("", "default"):
            config = "default"  # the builder's own config: TFDS refuses a new one of the same name
        else:
            config = PairedFoldersConfig(name=config_name, splits=dict(splits or DEFAULT_FOLDER_SPLITS))
    elif splits is not None:
        raise ValueError(f"splits is for paired_folders only; {builder_name!r} has fixed folders")
    builder = BUILDERS[builder_name](data_dir=os.fspath(data_dir), config=config, skip_bad=skip_bad)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
    return builder


class MixedSource:
    """Random-access concatenation of sources, source i repeated repeats[i] times (default once each).

    Index order is source by source (repeats of one source adjacent); records are the sources' own.
    """

    def __init__(self, sources: Sequence[Sequence[dict[str, Any]]], repeats: Sequence[int] | None = None):
        repeats = [1] * len(sources) if repeats is None else [int(r) for r in repeats]
        if not sources or len(repeats) != len(sources) or min(repeats) < 1:
            raise ValueError(
                f"need at least one source and one repeat count >= 1 per source, got {len(sources)} "
                f"sources and repeats {repeats}"
            )
        self.sources, self.repeats = list(sources), repeats
        self._ends = np.cumsum([len(s) * r for s, r in zip(self.sources, repeats, strict=True)]).tolist()

    def __len__(self) -> int:
        return self._ends[-1]

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} records")
        which = bisect.bisect_right(self._ends, index)
        start = self._ends[which - 1] if which else 0
        source = self.sources[which]
        return source[(index - start) % len(source)]


def data_source(
    name: str | Sequence[str],
    split: str,
    data_dir: str | os.PathLike,
    repeats: Sequence[int] | None = None,
) -> Sequence[dict[str, Any]]:
    """Random-access records of a built dataset's split: len(src), src[i] -> dict (see module doc).

    Several names give a `MixedSource` of their splits, each repeated repeats[i] times.
    """
    if isinstance(name, str):
        if repeats is not None:
            raise ValueError("repeats is for a mix of several datasets; got a single name")
        not_built = f"dataset {name!r} is not built in {data_dir}; run build({name!r}, manual_dir, data_dir)"
        try:
            builder = tfds.builder(name, data_dir=os.fspath(data_dir))
        except tfds.core.registered.DatasetNotFoundError:  # keeps TFDS's message, which lists known names
            raise
        except ValueError as error:  # TFDS's answer for a custom config that is not on disk
            raise FileNotFoundError(not_built) from error
        if not builder.is_prepared():
            raise FileNotFoundError(not_built)
        return builder.as_data_source(split)
    return MixedSource([data_source(n, split, data_dir) for n in name], repeats)
