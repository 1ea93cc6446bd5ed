"""deblur.py end to end, in-process, on a saved micro kernel space: outputs, resume, evaluation, demo,
bad inputs. Every search here runs batches of two images padded to 128x128 with the TINY settings of
test_search.py, so the whole file compiles one search chunk."""

import json
import sys

import dm_pix as pix
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import kernelspace_jax as ksj
from kernelspace_jax.cli import deblur
from kernelspace_jax.data import synthetic
from kernelspace_jax.deblurring import dip as search
from kernelspace_jax.deblurring import engine, files
from kernelspace_jax.io.images import png_text, read_image, to_uint8
from tests.deblurring.test_dip_search import tiny_model

# ml_collections loads config files with importlib's deprecated load_module().
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")
TINY = [
    "--config=deblur_generic:local",  # an installed recipe, by name
    "--config.image_dip.channels_down=(4,)",
    "--config.image_dip.channels_up=(4,)",
    "--config.image_dip.channels_skip=(2,)",
    "--config.kernel_dip.nf=2",
    "--config.kernel_dip.n_blocks=0",
    "--config.num_warmup_iters=4",
    "--config.num_iters=8",
    "--config.chunk_size=1",
    "--config.x_lr=0.01",
    "--config.k_lr=0.01",
    "--batch-size=2",
    "--noprogress",
]


def save_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A checkpoint, four held-out synthetic 64x48 pairs (blur/<name>.png, sharp/<name>.png), and a
    first run over two of them into out/."""
    root = tmp_path_factory.mktemp("cli")
    ckpt = ksj.save(tiny_model(), root / "ckpt")
    pairs = synthetic.SyntheticPairs(
        synthetic.SyntheticBlurConfig(crop_size=(48, 64), kernel_size_range=(5, 9)), split="test", num=4
    )
    names = ["a", "b", "sub/c", "sub/d"]
    for name, index in zip(names, range(4), strict=True):
        for kind, folder in (("blurry", "blur"), ("sharp", "sharp")):
            save_png(root / folder / f"{name}.png", to_uint8(pairs[index][kind]))
    args = ["--checkpoint", ckpt, "--output", str(root / "out"), *TINY]
    code = deblur.main(
        [*args, "--compare", "--input", str(root / "blur" / "a.png"), "--input", str(root / "blur" / "b.png")]
    )
    assert code == 0
    return {"root": root, "args": args, "names": names}


def log_lines(out):
    return [json.loads(line) for line in (out / "deblur_log.jsonl").read_text().splitlines()]


def test_outputs_and_their_record(workspace):
    out = workspace["root"] / "out"
    for name in ("a", "b"):
        sharp, reblurred = read_image(out / f"{name}.png"), read_image(out / f"{name}_reblurred.png")
        assert sharp.shape == reblurred.shape == (48, 64, 3)
        assert read_image(out / f"{name}_compare.png").shape == (48, 3 * 64 + 2 * 4, 3)
        text = png_text(out / f"{name}.png")
        assert text["objective"] == "fallback" and text["status"] == "ok" and text["num_iters"] == "8"
    assert [r["name"] for r in log_lines(out)] == ["a", "b"]


def test_resume_skips_done_images_and_other_iters_do_not_recompile(workspace, capsys):
    root, out = workspace["root"], workspace["root"] / "out"
    before = {name: (out / f"{name}.png").stat().st_mtime_ns for name in ("a", "b")}
    traces = engine.trace_count(search.TRACE_NAME)
    assert deblur.main([*workspace["args"], "--input", str(root / "blur")]) == 0
    assert "2 of 4 images already done" in capsys.readouterr().out
    assert {name: (out / f"{name}.png").stat().st_mtime_ns for name in ("a", "b")} == before
    assert [r["name"] for r in log_lines(out)] == ["a", "b", "sub/c", "sub/d"]
    assert (out / "sub" / "c_reblurred.png").is_file()
    # Another iteration count, another output folder: same compiled chunk.
    other = [
        "--output",
        str(root / "out_iters"),
        "--iters",
        "5",
        "--input",
        str(root / "blur" / "a.png"),
        "--input",
        str(root / "blur" / "b.png"),
    ]
    assert deblur.main([*workspace["args"], *other]) == 0
    assert png_text(root / "out_iters" / "a.png")["num_iters"] == "5"
    assert engine.trace_count(search.TRACE_NAME) == traces


def test_evaluation_mode(workspace, capsys):
    root, out = workspace["root"], workspace["root"] / "out"
    args = [*workspace["args"], "--input", str(root / "blur"), "--sharp", str(root / "sharp")]
    assert deblur.main(args) == 0  # all done already: evaluates only
    printed = capsys.readouterr().out
    report = json.loads((out / "metrics.json").read_text())
    assert [row["name"] for row in report["images"]] == workspace["names"]
    for row in report["images"]:
        truth = jnp.asarray(read_image(root / "sharp" / f"{row['name']}.png"))
        for key, image in (("psnr", out / f"{row['name']}.png"), ("blurry_psnr", root / "blur" / f"{row['name']}.png")):
            expected = float(pix.psnr(jnp.asarray(read_image(image)), truth))
            assert row[key] == pytest.approx(expected, abs=1e-4)
        assert f"| {row['name']} | {row['psnr']:.2f} | {row['blurry_psnr']:.2f} |" in printed
    assert report["mean"]["psnr"] == pytest.approx(np.mean([r["psnr"] for r in report["images"]]))
    assert f"| mean (4) | {report['mean']['psnr']:.2f} |" in printed
    (root / "sharp" / "b.png").unlink()
    assert deblur.main(args) == 1
    assert "no ground truth" in capsys.readouterr().err


def test_converted_inputs(workspace, capsys):
    root = workspace["root"]
    rng = np.random.default_rng(0)
    save_png(root / "odd" / "gray.png", rng.integers(0, 256, (48, 64), np.uint8))
    save_png(root / "odd" / "rgba.png", rng.integers(0, 256, (48, 64, 4), np.uint8))
    save_png(root / "odd" / "gray16.png", rng.integers(0, 65536, (48, 64), dtype=np.uint16))
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), np.uint8)).save(root / "odd" / "rgb.jpg")
    out = root / "out_odd"
    assert deblur.main([*workspace["args"], "--output", str(out), "--input", str(root / "odd")]) == 0
    printed = capsys.readouterr().out
    for name, what in (("gray", "8-bit grayscale"), ("rgba", "8-bit RGBA"), ("gray16", "16-bit grayscale")):
        assert f"{name}.png: {what}, converted to 8-bit RGB" in printed
    for name in ("gray", "rgba", "gray16", "rgb"):
        assert read_image(out / f"{name}.png").shape == (48, 64, 3)


def test_bad_inputs(workspace, capsys, monkeypatch):
    root, args = workspace["root"], workspace["args"]
    (root / "bad").mkdir()
    (root / "bad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    save_png(root / "bad" / "tiny.png", np.zeros((20, 64, 3), np.uint8))
    assert deblur.main([*args, "--input", str(root / "bad")]) == 1
    err = capsys.readouterr().err
    assert "2 of 2 inputs cannot be used" in err and "broken.png: cannot read" in err
    assert "tiny.png is 64x20 (WxH); both sides must be at least 32" in err

    # --skip-bad goes on with the rest (here: already done, so nothing to search).
    both = ["--input", str(root / "bad"), "--input", str(root / "blur" / "a.png")]
    assert deblur.main([*args, *both, "--skip-bad"]) == 0
    assert "skipped:" in capsys.readouterr().out

    assert deblur.main([*args, "--input", str(root / "blur" / "a.png"), "--config.max_pixels=1000"]) == 1
    assert "above max_pixels" in capsys.readouterr().err
    assert deblur.main([*args, "--input", str(root / "nothing_here_*.png")]) == 1
    assert "matches no image" in capsys.readouterr().err
    assert deblur.main([*args, "--input", str(root / "blur"), "--config.no_such_field=1"]) == 2
    assert "no_such_field" in capsys.readouterr().err
    assert deblur.main([*args, "--input", str(root / "blur"), "--config.objective=reference"]) == 1
    assert "needs VGG19 weights" in capsys.readouterr().err

    monkeypatch.setitem(sys.modules, "kernelspace_jax.assets", None)  # no shipped checkpoint
    no_ckpt = [a for a in args if a != "--checkpoint" and not a.endswith("ckpt")]
    assert deblur.main([*no_ckpt, "--input", str(root / "blur")]) == 1
    assert "--checkpoint" in capsys.readouterr().err


def _snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("inputs", "output", "says"),
    [
        (["blur"], "blur", "is the input folder"),  # --input X --output X
        (["blur"], "blur/results", "lies inside the input folder"),  # re-read by the next run
        (["blur/sub"], "blur", "contains the input folder"),
        (["blur/a.png"], "blur", "contains the input"),  # would write blur/a.png over the input
        (["blur/sub/c.png"], ".", "contains the input"),
        ([f"blur{'/'}**/*.png"], "blur/sub/out", "lies inside the input folder"),
    ],
)
def test_output_that_overlaps_the_inputs_is_refused_before_anything_is_written(workspace, capsys, inputs, output, says):
    root = workspace["root"]
    before = _snapshot(root / "blur")
    args = [a for a in workspace["args"] if a not in ("--output", str(root / "out"))]
    flags_ = [f for spec in inputs for f in ("--input", str(root / spec))]
    assert deblur.main([*args, *flags_, "--output", str(root / output)]) == 1
    err = capsys.readouterr().err
    assert says in err and "choose an output folder outside the inputs" in err and "Traceback" not in err
    assert _snapshot(root / "blur") == before
    assert not (root / "blur" / "results").exists() and not (root / "blur" / "sub" / "out").exists()


def test_results_of_an_earlier_run_are_never_inputs(workspace, capsys):
    """A copy of a results folder given as input: its PNGs are recognised by their text and skipped."""
    root, out = workspace["root"], workspace["root"] / "out"
    copied = root / "copied_results"
    copied.mkdir()
    for name in ("a.png", "a_reblurred.png", "a_compare.png"):
        (copied / name).write_bytes((out / name).read_bytes())
    for name in ("a", "b"):  # two new images: a batch of two, the compiled search of this file
        save_png(copied / f"fresh_{name}.png", np.asarray(Image.open(root / "blur" / f"{name}.png")))
    out2 = root / "out_fresh"
    assert deblur.main([*workspace["args"], "--input", str(copied), "--output", str(out2)]) == 0
    assert "skipped 3 result(s) of an earlier deblur.py run" in capsys.readouterr().out
    written = ["fresh_a.png", "fresh_a_reblurred.png", "fresh_b.png", "fresh_b_reblurred.png"]
    assert sorted(p.name for p in out2.glob("*.png")) == written
    assert png_text(out2 / "fresh_a.png")["output"] == "sharp"
    assert png_text(out2 / "fresh_a_reblurred.png")["output"] == "reblurred"


def test_a_second_run_on_the_same_output_folder_stops_at_once(workspace, capsys):
    import fcntl

    root = workspace["root"]
    out = root / "out_locked"
    out.mkdir()
    with open(out / files.LOCK_NAME, "w") as held:
        held.write("4242")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code = deblur.main([*workspace["args"], "--input", str(root / "blur" / "a.png"), "--output", str(out)])
    assert code == 1
    assert "another deblur.py run (pid 4242) is writing to" in capsys.readouterr().err
    assert not (out / "a.png").exists()


def test_demo(workspace, capsys):
    out = workspace["root"] / "demo"
    args = [*workspace["args"], "--output", str(out), "--demo", "--demo-num=2", "--demo-size=64"]
    assert deblur.main(args) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("recipe: deblur_generic:local (--config)\n")
    assert "| mean (2) |" in printed
    picture = read_image(out / "demo_comparison.png")
    assert picture.shape == (2 * 64 + 4, 3 * 64 + 2 * 4, 3)


def test_without_a_config_a_cpu_runs_the_fast_recipe_and_says_so():
    from kernelspace_jax.configs.deblur_generic import get_config

    argv = ["deblur.py", "--input", "in", "--output", "out"]
    assert deblur._flags(argv).config.to_dict() == get_config("fast").to_dict()
    assert deblur.recipe_line(argv, "generic").startswith("recipe: deblur_generic:fast (the default on CPUs")
    reference = ksj.configs.resolve_argv([*argv, "--config", "deblur_generic:reference"])
    assert deblur._flags(reference).config.to_dict() == get_config("reference").to_dict()
    assert deblur.recipe_line(reference, "generic") == "recipe: deblur_generic:reference (--config)"
    assert deblur.recipe_line([*argv, "--config=my.py:x"], "generic") == "recipe: my.py:x (--config)"


def test_demo_blur_is_the_blur_the_shipped_model_was_trained_on():
    from kernelspace_jax.assets import SHIPPED_KERNEL_SIZE_RANGE
    from kernelspace_jax.configs import synthetic_tiny

    assert tuple(synthetic_tiny.get_config().data.synthetic.kernel_size_range) == SHIPPED_KERNEL_SIZE_RANGE


def test_a_non_finite_result_is_never_written(workspace, capsys, monkeypatch):
    """A NaN kernel for one image of a batch of two: F(x, k) is NaN, so that image gets no PNG, a
    "failed" log line, stays to do, and the command exits 1 after writing the other image."""
    root = workspace["root"]
    real = files.deblur

    def nan_kernel_for_the_second(model, keys, blurry, **kwargs):
        result = real(model, keys, blurry, **kwargs)
        kernel = result.kernel.at[1].set(jnp.nan)
        return result._replace(kernel=kernel, reblurred=model.blur(result.sharp, kernel))

    monkeypatch.setattr(files, "deblur", nan_kernel_for_the_second)
    inputs = root / "nan_inputs"
    for name in ("a", "b"):
        save_png(inputs / f"{name}.png", np.asarray(Image.open(root / "blur" / f"{name}.png")))
    out = root / "out_nan"
    assert deblur.main([*workspace["args"], "--input", str(inputs), "--output", str(out)]) == 1
    captured = capsys.readouterr()
    assert "b: the result is not finite (NaN/inf); nothing written" in captured.out
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: 1 image(s) had a non-finite result") and err[0].endswith(": b")
    assert "Traceback" not in captured.err
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "a_reblurred.png"]
    assert files.is_done(out, "a") and not files.is_done(out, "b")
    assert [(r["name"], r["status"]) for r in log_lines(out)] == [("a", "ok"), ("b", "failed: non-finite result")]


def _no_work(monkeypatch):
    """Records calls of the checkpoint loader and of the search, which a refused run must not reach."""
    from kernelspace_jax.kernel_space import checkpoints

    calls = []
    monkeypatch.setattr(checkpoints, "load", lambda *a, **k: calls.append("load"))
    monkeypatch.setattr(files, "deblur", lambda *a, **k: calls.append("search"))
    return calls


def _refused(code, capsys, status, says):
    err = capsys.readouterr().err
    assert code == status, err
    assert says in err and "Traceback" not in err
    return err


def test_a_truncated_image_is_found_before_any_search(workspace, capsys, monkeypatch):
    root = workspace["root"]
    folder = root / "truncated"
    save_png(folder / "whole.png", np.asarray(Image.open(root / "blur" / "a.png")))
    save_png(folder / "cut.png", np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8))
    data = (folder / "cut.png").read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])  # a valid header, half the pixels
    calls = _no_work(monkeypatch)
    out = root / "out_truncated"
    code = deblur.main([*workspace["args"], "--input", str(folder), "--output", str(out)])
    err = _refused(code, capsys, 1, "1 of 2 inputs cannot be used (--skip-bad skips them)")
    assert "cut.png: cannot read the image" in err and "whole.png" not in err
    assert calls == [] and not out.exists()

    # --skip-bad skips it; the other image is searched (here: the search is a recorder).
    monkeypatch.setattr(files, "deblur_files", lambda *a, **k: calls.append(k["inspected"]) or [])
    assert deblur.main([*workspace["args"], "--input", str(folder), "--output", str(out), "--skip-bad"]) == 0
    assert "skipped: " in capsys.readouterr().out
    assert [image.name for image in calls[-1]] == ["whole"]


def test_ground_truth_is_checked_before_any_search(workspace, capsys, monkeypatch):
    root = workspace["root"]
    truth = root / "truth_wrong_size"
    save_png(truth / "a.png", np.asarray(Image.open(root / "sharp" / "a.png")))
    save_png(truth / "b.png", np.zeros((40, 64, 3), np.uint8))  # its blurry image is 64x48
    calls = _no_work(monkeypatch)
    out = root / "out_truth"
    flags_ = ["--input", str(root / "blur" / "a.png"), "--input", str(root / "blur" / "b.png")]
    code = deblur.main([*workspace["args"], *flags_, "--output", str(out), "--sharp", str(truth)])
    err = _refused(code, capsys, 1, "1 ground-truth image(s) cannot be used for evaluation")
    assert f"{truth / 'b.png'} is 64x40 but its blurry image {root / 'blur' / 'b.png'} is 64x48 (WxH)" in err
    assert calls == [] and not out.exists()
    (truth / "b.png").unlink()
    code = deblur.main([*workspace["args"], *flags_, "--output", str(out), "--sharp", str(truth)])
    _refused(code, capsys, 1, "no ground truth in")
    assert calls == [] and not out.exists()


@pytest.mark.parametrize(
    ("setting", "status", "says"),
    [
        ("--iters=0", 2, "--iters=0"),
        ("--batch-size=0", 2, "--batch-size=0"),
        ("--config.num_iters=0", 1, "need num_iters >= 1"),
        ("--config.num_warmup_iters=-1", 1, "num_warmup_iters >= 0"),
        ("--config.num_iters=20000000", 1, "20000004 search steps in all, above the limit of 10000000"),
        ("--config.compute_dtype=float64", 1, "compute_dtype must be one of float32, bfloat16, float16"),
        ("--config.compute_dtype=no_such_type", 1, "compute_dtype must be one of"),
        ("--config.lr_decays=0", 1, "lr_decays must be >= 1"),
        ("--config.chunk_size=-1", 1, "need chunk_size >= 0"),
        ("--config.update_mode=sideways", 1, "update must be one of"),
        ("--config.warmup_kernel=sharpend", 1, "warm-up kernel 'sharpend' is neither one of"),
    ],
)
def test_search_settings_are_checked_before_anything_is_loaded(workspace, capsys, monkeypatch, setting, status, says):
    root = workspace["root"]
    calls = _no_work(monkeypatch)
    out = root / "out_settings"
    code = deblur.main([*workspace["args"], "--input", str(root / "blur"), "--output", str(out), setting])
    err = _refused(code, capsys, status, says)
    assert len(err.strip().splitlines()) == 1, err
    assert calls == [] and not out.exists()
