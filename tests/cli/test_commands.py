"""Every command follows one convention: --help exits 0, bad usage exits 2 and bad input exits 1, each
with one line on stderr and no traceback; the console scripts name these commands."""

import importlib
import importlib.metadata
import os
import subprocess
import sys

import pytest

from kernelspace_jax.cli import common

COMMANDS = {
    "kernelspace-train": "kernelspace_jax.cli.train",
    "kernelspace-deblur": "kernelspace_jax.cli.deblur",
    "kernelspace-evaluate": "kernelspace_jax.cli.evaluate",
    "kernelspace-synthesize": "kernelspace_jax.cli.synthesize",
    "kernelspace-convert": "kernelspace_jax.cli.convert",
    "kernelspace-build-data": "kernelspace_jax.cli.build_data",
}
# (command, argv, exit status, words of the one-line message)
BAD = [
    ("kernelspace-convert", ["only_one_argument"], 2, "expected PTH OUT_DIR"),
    ("kernelspace-convert", ["a.pth", "out", "--no_such_flag"], 2, "Unknown command line flag"),
    ("kernelspace-convert", ["missing.pth", "out"], 1, "no checkpoint at"),
    ("kernelspace-build-data", ["gopro"], 2, "--manual_dir is required"),
    ("kernelspace-build-data", ["gopro", "--manual_dir", "/nonexistent/gopro"], 1, "/nonexistent/gopro"),
    ("kernelspace-train", ["--config", "synthetic_tiny"], 2, "--config and --workdir are required"),
    ("kernelspace-train", ["--config", "no_such_recipe", "--workdir", "w"], 2, "no_such_recipe"),
    ("kernelspace-train", ["--config", "synthetic_tiny:tpu", "--workdir", "w"], 2, "unknown synthetic_tiny variant"),
    # config values a run cannot use: refused before anything is built or compiled (nothing in w/)
    *[
        ("kernelspace-train", ["--config", "synthetic_tiny", "--workdir", "w", setting], 1, says)
        for setting, says in [
            ("--config.data.batch_size=0", "data.batch_size must be a positive integer, got 0"),
            ("--config.data.batch_size=-8", "data.batch_size must be a positive integer, got -8"),
            ("--config.data.kind=folders", "data.kind must be 'synthetic' or 'tfds', got 'folders'"),
            ("--config.data.worker_count=-1", "data.worker_count must be an integer >= 0, got -1"),
            ("--config.model.kernel_dim=100", "model fields describe no architecture: kernel_dim must equal 8 * nf"),
            ("--config.model.nf=0", "model fields describe no architecture: nf, image_channels and hr_width"),
            ("--config.model.front_blocks=-1", "model fields describe no architecture: block counts must be >= 0"),
            ("--config.eval_every=0", "eval_every must be a positive integer, got 0"),
        ]
    ],
    ("kernelspace-deblur", ["--no_such_flag"], 2, "Unknown command line flag"),
    ("kernelspace-evaluate", [], 2, "--checkpoint is required"),
    ("kernelspace-evaluate", ["--checkpoint", "c", "--crop", "20"], 2, "--crop=20: 20 is not integer >= 32"),
    ("kernelspace-evaluate", ["--checkpoint", "missing_ckpt"], 1, "no checkpoint at"),
    ("kernelspace-evaluate", ["--checkpoint", "c", "--data", "nowhere:x"], 1, "--data"),
    ("kernelspace-synthesize", [], 2, "the first argument must be a command"),
    ("kernelspace-synthesize", ["transfer", "--out", "o"], 2, "transfer needs --target"),
    ("kernelspace-synthesize", ["sample", "--out", "o", "--target", "t", "--per_image", "0"], 2, "--per_image=0"),
    ("kernelspace-deblur", ["--output", "out"], 1, "no --input given"),
]


def test_console_scripts_are_the_commands():
    scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
    for name, module in COMMANDS.items():
        assert scripts.get(name) == f"{module}:main"
        assert callable(importlib.import_module(module).main)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help(command, capsys):
    assert importlib.import_module(COMMANDS[command]).main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {command}") and ("flags:" in out or "commands:" in out)


@pytest.mark.parametrize(("command", "argv", "status", "says"), BAD, ids=[f"{c} {' '.join(a)}" for c, a, *_ in BAD])
def test_bad_command_lines(command, argv, status, says, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert importlib.import_module(COMMANDS[command]).main(argv) == status
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    if command == "kernelspace-train":
        assert not (tmp_path / "w").exists()  # refused before the workdir was made


def test_train_refuses_a_workdir_that_is_a_file(tmp_path, capsys):
    from kernelspace_jax.cli import train

    (tmp_path / "w").write_text("not a folder")
    assert train.main(["--config", "synthetic_tiny", "--workdir", str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"error: workdir {tmp_path / 'w'} is a file; give a folder (created if missing)"
    assert (tmp_path / "w").read_text() == "not a folder"


def test_train_resuming_with_another_worker_count_names_the_saved_one(tmp_path, capsys, monkeypatch):
    """A checkpoint written with data.worker_count=0, resumed with 2: one line naming the saved count
    (grain itself fails with a KeyError deep in its state), before the train step is compiled."""
    import jax

    from kernelspace_jax import configs
    from kernelspace_jax.cli import train
    from kernelspace_jax.data import pipeline, sources
    from kernelspace_jax.kernel_space.model import init_params
    from kernelspace_jax.training import loop
    from kernelspace_jax.training import step as training

    config = configs.get("synthetic_tiny")
    config.data.worker_count = 0
    config.data.synthetic.num_train = 16
    workdir = tmp_path / "run"
    train_source, _ = sources.build(config.data, config.seed)
    data = pipeline.make_train_iterator(train_source, crop_size=(128, 128), batch_size=8, seed=0, worker_count=0)
    model_config, tx = training.model_config(config), training.make_optimizer(config)
    manager = loop._checkpoint_manager(str(workdir), config)
    state = training.create_state(init_params(jax.random.key(0), model_config), tx)
    loop._save(manager, state, data, config, model_config)
    manager.wait_until_finished()
    manager.close()
    saved = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))

    compiled = []
    monkeypatch.setattr(training, "compile_train_step", lambda *a, **k: compiled.append(1))
    argv = ["--config", "synthetic_tiny", "--workdir", str(workdir), "--config.data.synthetic.num_train=16"]
    code = train.main([*argv, "--config.data.worker_count=2"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "step 0 in this workdir was written with data.worker_count=0, but the config asks for 2" in err
    assert "--config.data.worker_count=0" in err
    assert compiled == []
    assert sorted(p.relative_to(workdir) for p in workdir.rglob("*")) == saved


CACHE_CHECK = """
import jax, jax.numpy as jnp
from kernelspace_jax.cli import common
folder = common.enable_compilation_cache()
jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((64, 64))).block_until_ready()
print(folder)
"""


@pytest.mark.parametrize("setting", ["default", "off"])
def test_commands_cache_their_compilations(setting, tmp_path):
    """A second run starts at once: the commands turn on jax's persistent cache under the user's cache
    folder, unless KERNELSPACE_JAX_CACHE=0 or jax already has a cache folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "KERNELSPACE_JAX"))}
    env.update(XDG_CACHE_HOME=str(tmp_path), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    if setting == "off":
        env[common.CACHE_ENV] = "0"
    result = subprocess.run([sys.executable, "-c", CACHE_CHECK], env=env, capture_output=True, text=True, check=True)
    folder = tmp_path / "kernelspace_jax" / "xla"
    if setting == "off":
        assert result.stdout.strip() == "None" and not folder.exists()
    else:
        assert result.stdout.strip() == str(folder) and any(folder.iterdir())
