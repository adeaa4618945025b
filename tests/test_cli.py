"""The command line (``python -m lightning_ganeval``) against torch-fidelity, pytorch-fid and the callbacks.

The folders hold seeded random 32 x 32 PNGs: A (6 images) is the evaluated set, B (8 images) the reference;
B_read holds B's first 6 files, which is what ``--num-samples 6`` reads of B, so that torch-fidelity (which reads
whole folders) sees the same images. Every Inception run uses the session's random-weight file, which
torch-fidelity loads too.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_ganeval import cli
from lightning_ganeval.cli.messages import translate
from lightning_ganeval.cli.program import format_result
from lightning_ganeval.frechet import frechet_distance
from lightning_ganeval.metrics import FID
from lightning_ganeval.real_images import same_size_groups
from lightning_ganeval.real_pass import network_provenance, prepare_real_data
from lightning_ganeval.stats_files import load_stats

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
# Few images (the counts are not the subject): every Inception forward at 299 x 299 costs ~0.1 s of CPU, and the
# parity runs make ~150 of them. k = 3 neighbours for precision/recall need 4 images per side at least.
NUM_A, NUM_B = 6, 8

# Against torch-fidelity: the same network and math, but its float32 features differ from ours by up to ~1e-4
# relative (max|Δ|/max|ref| of pool3 on these noise images; logits 5e-5), which sets these bounds. Measured on 6
# and 6 images: FID 1.8e-6 and IS 6.5e-6 relative, the IS std by 4.9e-6 of the IS, KID by 4.5e-7 absolute (of
# 2.2e-4; 1.3e-7 of -8.9e-4 on 10 and 10). The IS math alone agrees to 1e-16 on the same logits. Against our own
# extractor run directly, the command line agrees to float64 rounding.
FID_RTOL = 1e-4
IS_RTOL = 1e-4
IS_STD_ATOL = 5e-4  # times the IS mean: two splits of 3 images make the std the most rounding-sensitive value
KID_ATOL = 1e-6  # one subset of every row on both sides: the same unbiased MMD² of (nearly) the same features
DIRECT_RTOL = 1e-9  # the command line vs the extractor + math in this process: float64 accumulation order only
# torchrun vs one process. Each process's batches hold other images (files rank, rank + 2, ...) and other counts.
# The pool3 features come out bit for bit the same on this CPU (convolutions and pooling do not depend on the batch)
# so FID differs by the float64 merge order only (passes at 1e-9 relative). The logits are one float32
# GEMM, whose rows change in the last bits with the batch's row count, so IS differs at float32 level (measured
# 3.9e-7 relative on 10 images, 6e-16 on 6). Same thread count on both sides: the features change with it at 2e-5
# relative.
DDP_FID_RTOL = 1e-9
DDP_IS_RTOL = 1e-5


def _write_images(folder: Path, count: int, seed: int, size: tuple[int, int] = (SIZE, SIZE)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return folder


def run_cli(*argv: Any) -> tuple[int, str, str]:
    """``main(argv)`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def run_json(*argv: Any) -> dict[str, Any]:
    status, out, err = run_cli(*argv, "--json", "--no-progress")
    assert status == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-images")
    a = _write_images(root / "A", NUM_A, seed=1)
    b = _write_images(root / "B", NUM_B, seed=2)
    b_read = root / "B_read"
    b_read.mkdir()
    for path in cli.list_images(b, limit=NUM_A):
        shutil.copy(path, b_read / path.name)
    return {"A": a, "B": b, "B_read": b_read, "root": root}


def _single_line_error(status: int, out: str, err: str) -> str:
    assert status == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------------------------- files (fast)


def test_list_images_recursive_sorted_and_filtered(tmp_path: Path) -> None:
    for name in ["b.png", "a.JPG", "sub/c.jpeg", "sub/deeper/a.png", "a0.png", "notes.txt", ".hidden.png"]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "x.png").write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in cli.list_images(tmp_path)]
    # Sorted as strings of the relative path (torch-fidelity sorts path strings too).
    assert found == ["a.JPG", "a0.png", "b.png", "sub/c.jpeg", "sub/deeper/a.png"]
    assert [p.name for p in cli.list_images(tmp_path, limit=2)] == ["a.JPG", "a0.png"]


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_symlinked_folders_are_followed_once_and_skips_counted(tmp_path: Path) -> None:
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    _touch(data, "a.png", "real/b.png", "notes.txt", ".hidden.png", ".git/c.png")
    _touch(elsewhere, "c.png", "inner/d.png")
    (data / "linked").symlink_to(elsewhere)  # a folder kept elsewhere: its 2 images count
    (data / "again").symlink_to(elsewhere)  # a second link to it: searched once, not read twice
    (data / "real" / "loop").symlink_to(data)  # a link back to an ancestor: must not loop
    (data / "inner_again").symlink_to(elsewhere / "inner")  # searched already, through "again"
    (data / "dangling.png").symlink_to(tmp_path / "gone.png")
    (data / "file_link.png").symlink_to(elsewhere / "c.png")  # a link to a file is a file
    listing = cli.scan_images(data)
    found = [p.relative_to(data).as_posix() for p in listing.files]
    # "again" sorts before "linked": the first link met leads to the folder, later ones are skipped.
    assert found == ["a.png", "again/c.png", "again/inner/d.png", "file_link.png", "real/b.png"]
    assert listing.skipped == {
        "hidden": 2,  # .hidden.png and the folder .git (not searched)
        "not_image": 1,
        "broken_link": 1,
        "repeated_folder": 3,  # linked, inner_again, real/loop
    }


def test_listing_without_links_is_unchanged(tmp_path: Path) -> None:
    # The order and contents for a plain tree are os.walk's sorted ones, as before links were followed.
    _touch(tmp_path, "z/a.png", "a-b.png", "a/b.png", "a.png", "A.png", "x/y/z.JPEG")
    expected = sorted(Path(d, f).relative_to(tmp_path).as_posix() for d, _, files in os.walk(tmp_path) for f in files)
    assert [p.relative_to(tmp_path).as_posix() for p in cli.scan_images(tmp_path).files] == expected
    assert cli.scan_images(tmp_path).skipped == {}


def test_images_behind_a_linked_folder_count_from_the_command_line(tmp_path: Path) -> None:
    # From the user's side, without a network: the image count of the folder is in the message. On main, the 3
    # images behind the link were skipped without a word ("has 1").
    data = _write_images(tmp_path / "data", 1, seed=0, size=(8, 8))
    _write_images(tmp_path / "kept_elsewhere", 3, seed=1, size=(8, 8))
    (data / "more").symlink_to(tmp_path / "kept_elsewhere")
    line = _single_line_error(*run_cli("is", data, "--splits", 10))
    assert "needs at least 10 images, folder" in line
    assert line.endswith("has 4.")


def test_read_image_converts_like_pil_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    rgba = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    cases = {
        "rgb.png": Image.fromarray(rgb),
        "gray.png": Image.fromarray(gray),
        "rgba.png": Image.fromarray(rgba, "RGBA"),
        "palette.png": Image.fromarray(rgb).convert("P"),
        "photo.jpg": Image.fromarray(rgb),
    }
    for name, image in cases.items():
        image.save(tmp_path / name)
        with Image.open(tmp_path / name) as reread:
            expected = torch.from_numpy(np.array(reread.convert("RGB"))).permute(2, 0, 1)
        got = cli.read_image(tmp_path / name)
        assert got.dtype == torch.uint8
        assert got.shape == (3, 5, 7)
        assert torch.equal(got, expected), name
    assert torch.equal(cli.read_image(tmp_path / "gray.png")[0], torch.from_numpy(gray))


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    got = cli.read_image(tmp_path / "deep.png")
    assert got.shape == (3, 1, 4)
    assert got[0, 0].tolist() == [0, 1, 128, 255]  # round(v / 257); Pillow's convert("RGB") gives 0, 255, 255, 255
    assert torch.equal(got[0], got[1])
    assert torch.equal(got[0], got[2])


def test_same_size_groups_keep_global_indices() -> None:
    items = [torch.full((3, 2, 2), 0), torch.full((3, 4, 2), 1), torch.full((3, 2, 2), 2), torch.full((3, 4, 2), 3)]
    indices = torch.tensor([10, 12, 14, 16])
    groups = list(same_size_groups(items, indices))
    assert [tuple(images.shape) for images, _ in groups] == [(2, 3, 2, 2), (2, 3, 4, 2)]
    assert [rows.tolist() for _, rows in groups] == [[10, 14], [12, 16]]
    assert [images[:, 0, 0, 0].tolist() for images, _ in groups] == [[0, 2], [1, 3]]


def test_dataset_reports_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"not a png")
    message = cli.ImageFolderDataset([tmp_path / "bad.png"])[0]
    assert isinstance(message, str)
    assert "bad.png" in message
    assert "cannot read image" in message


# --------------------------------------------------------------------------------------------- bad input (fast)


@pytest.fixture
def tiny(tmp_path: Path) -> dict[str, Path]:
    a = _write_images(tmp_path / "A", 3, seed=0, size=(8, 8))
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.txt").write_text("no images")
    stats = tmp_path / "s.npz"
    np.savez(stats, mu=np.zeros(3), sigma=np.eye(3))
    text = tmp_path / "x.txt"
    text.write_text("x")
    (tmp_path / "w0").write_bytes(b"")
    torch.save(torch.zeros(3), tmp_path / "t.pth")  # a tensor, not a state dict
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "fc.pth")  # a state dict of another network
    (tmp_path / "bad.npz").write_bytes(b"PK not a zip")
    np.savez(tmp_path / "nokeys.npz", m=np.zeros(3))
    np.savez(tmp_path / "s4.npz", mu=np.zeros(4), sigma=np.eye(4))
    return {
        "A": a,
        "empty": empty,
        "npz": stats,
        "txt": text,
        "missing": tmp_path / "missing",
        "empty_file": tmp_path / "w0",
        "tensor": tmp_path / "t.pth",
        "wrong": tmp_path / "fc.pth",
        "bad_npz": tmp_path / "bad.npz",
        "nokeys": tmp_path / "nokeys.npz",
        "npz4": tmp_path / "s4.npz",
    }


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["fid", "{missing}", "{A}"], "A: '.*missing' does not exist"),
        (["fid", "{A}", "{empty}"], r"B: no images in folder '.*empty' \(searched recursively for .png, .jpg, .jpeg"),
        (["fid", "{txt}", "{A}"], "A: '.*x.txt' is a file, not an image folder or a .npz statistics file"),
        (["kid", "{A}", "{npz}"], "B: '.*s.npz' is a statistics file, but `kid` compares per-sample features"),
        (["pr", "{npz}", "{A}"], "A: '.*s.npz' is a statistics file, but `pr` compares per-sample features"),
        (["is", "{npz}"], "A: '.*s.npz' is a statistics file, but `is` compares per-sample features"),
        (["is", "{A}"], r"A: --splits 10 \(one image per split at least\) needs at least 10 images, .* has 3"),
        (["pr", "{A}", "{A}", "--k", "3"], r"A: --k 3 .* needs at least 4 images, folder .* has 3"),
        (
            ["kid", "{A}", "{A}", "--subset-size", "4"],
            r"--subset-size 4 is more than the 3 images of A .* pass --subset-size 3",
        ),
        # The default is KIDCallback's 1000, refused as KIDCallback refuses it (no silent cap to the folder size).
        (["kid", "{A}", "{A}"], r"--subset-size 1000 \(the default, as KIDCallback's\) is more than the 3 images of A"),
        (["kid", "{A}", "{A}", "--subset-size", "1"], r"--subset-size 1: a subset needs at least 2 images per side"),
        (["fid", "{A}", "{A}", "--inception-weights", "{missing}"], r"--inception-weights: '.*missing' does not exist"),
        (["fid", "{A}", "{A}", "--inception-weights", "{A}"], r"--inception-weights: '.*A' is not a file"),
        (
            ["fid", "{A}", "{A}", "--inception-weights", "{empty_file}"],
            r"--inception-weights: '.*w0' is empty \(0 bytes\)",
        ),
        (["fid", "{A}", "{A}", "--dinov2-weights", "{txt}"], "--dinov2-weights does not apply to --network inception"),
        (["fid", "{A}", "{A}", "--network", "dinov2", "--inception-weights", "{txt}"], "--inception-weights does not"),
        (
            ["fid", "{A}", "{A}", "--network", "dinov2", "--dinov2-weights", "{empty_file}"],
            "--dinov2-weights: .* empty",
        ),
        (
            ["fid", "{A}", "{A}", "--inception-weights", "{txt}"],
            "--inception-weights .*x.txt: cannot load the weights: not a",
        ),
        (
            ["fid", "{A}", "{A}", "--inception-weights", "{tensor}"],
            "--inception-weights .*t.pth: cannot load the weights",
        ),
        (
            ["fid", "{A}", "{A}", "--inception-weights", "{wrong}"],
            "--inception-weights .*fc.pth: cannot load the weights: does not hold the FID Inception v3",
        ),
        (["fid", "{A}", "{bad_npz}"], r"B: Statistics file '.*bad.npz': cannot be read as .npz"),
        (["fid", "{npz}", "{nokeys}"], r"B: Statistics file '.*nokeys.npz': missing key\(s\) \['mu', 'sigma'\]"),
        (["fid", "{npz}", "{npz4}"], "A has 3 features per sample and B has 4"),
        (["stats", "{A}", "--batch-size", "x"], "argument --batch-size: expected a positive integer, got 'x'"),
        (["stats", "{A}", "--workers", "-1"], "argument --workers: expected an integer >= 0, got '-1'"),
        (["kid", "{A}", "{A}", "--subsets", "0"], "argument --subsets: expected a positive integer, got '0'"),
        (["fid", "{A}", "{A}", "--num-samples", "0"], "argument --num-samples: expected a positive integer, got '0'"),
        (["fid", "{A}"], "the following arguments are required: B"),
        (["fid", "{A}", "{A}", "--bogus"], "unrecognized arguments: --bogus"),
        (["fid", "{A}", "{A}", "--num-samples", "1"], r"A: FID \(a covariance\) needs at least 2 images"),
        (["fid", "{A}", "{A}", "--batch-size", "0"], "argument --batch-size: expected a positive integer, got '0'"),
        (["fid", "{A}", "{A}", "--network", "vgg"], "argument --network: invalid choice: 'vgg'"),
        (["fid", "{A}", "{A}", "--resize", "pil"], "--resize pil does not apply to --network inception"),
        (["fid", "{A}", "{A}", "--device", "gpu0"], "--device: 'gpu0' is not a device"),
        (["is", "{A}", "--network", "dinov2", "--splits", "2"], "is: the Inception Score reads Inception's class"),
        (["frechet", "{A}"], "argument COMMAND: invalid choice: 'frechet'"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(tiny: dict[str, Path], argv: list[str], match: str) -> None:
    import re

    line = _single_line_error(*run_cli(*(a.format(**tiny) for a in argv)))
    assert re.search(match, line), line


def test_device_cuda_without_cuda_is_refused(tiny: dict[str, Path]) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    line = _single_line_error(*run_cli("fid", tiny["A"], tiny["A"], "--device", "cuda"))
    assert "CUDA is not available" in line


def test_unreadable_image_is_one_line(tiny: dict[str, Path], inception_weights_path: Path, extractor: Any) -> None:
    # "000-bad.png" sorts first and is in A's first batch: the error comes before any forward pass of A (B, the
    # reference, is read first).
    good = _write_images(tiny["A"].parent / "good", 3, seed=1, size=(8, 8))
    (tiny["A"] / "000-bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    argv = ("fid", tiny["A"], good, "--inception-weights", inception_weights_path, "--workers", 0, "--no-progress")
    line = _single_line_error(*run_cli(*argv))
    assert "A: cannot read image" in line
    assert "000-bad.png" in line


@pytest.mark.slow
def test_files_line_and_json_counts(tmp_path: Path, inception_weights_path: Path, extractor: Any) -> None:
    data = _write_images(tmp_path / "data", 2, seed=0, size=(8, 8))
    _write_images(tmp_path / "elsewhere", 2, seed=1, size=(8, 8))
    (data / "linked").symlink_to(tmp_path / "elsewhere")
    (data / "loop").symlink_to(data)
    (data / "notes.txt").write_text("not an image")
    (data / ".DS_Store").write_bytes(b"")
    result = run_json("stats", data, "--inception-weights", inception_weights_path, "--workers", 0, "--num-samples", 3)
    assert result["num_samples"] == 3
    assert result["files"] == {
        "SRC": {
            "read": 3,
            "found": 4,
            "skipped": 3,
            "skipped_by_reason": {"hidden": 1, "not_image": 1, "repeated_folder": 1},
        }
    }
    # The text output (without --json) formats the same result.
    files = [line for line in format_result(result).splitlines() if line.startswith("files")]
    assert files == [
        "files         SRC: read 3 of 4 (--num-samples), skipped 3 (1 hidden (name starts with a dot; a hidden "
        "folder is not searched), 1 not .png/.jpg/.jpeg, 1 folder link to a folder searched already (a loop or a "
        "second link))"
    ]


@pytest.mark.slow
def test_kid_subset_size_rule_is_kid_callbacks(tmp_path: Path, inception_weights_path: Path, extractor: Any) -> None:
    from lightning_ganeval import KIDCallback

    a = _write_images(tmp_path / "A", 3, seed=0, size=(8, 8))
    b = _write_images(tmp_path / "B", 4, seed=1, size=(8, 8))
    w = ("--inception-weights", inception_weights_path, "--workers", 0)
    # More than there are images: refused by both (the command line capped it silently to 3 before).
    with pytest.raises(ValueError, match=r"`subset_size` \(4\) must not exceed `num_samples` \(3\)"):
        KIDCallback(num_samples=3, subset_size=4)
    line = _single_line_error(*run_cli("kid", a, b, "--subset-size", 4, *w))
    assert "--subset-size 4 is more than the 3 images of A" in line
    # As many as the smaller folder holds: accepted by both, and the output says what it means for kid_std.
    KIDCallback(num_samples=3, subset_size=3)
    result = run_json("kid", a, b, "--subset-size", 3, "--subsets", 5, *w)
    assert result["kid_subset_size"] == 3
    assert result["kid_subsets"] == 5
    assert "note" not in result  # B has 4 images: its subsets differ
    result = run_json("kid", a, a, "--subset-size", 3, "--subsets", 5, *w)
    assert result["kid_std"] == pytest.approx(0.0, abs=1e-12)  # 5 identical subsets
    assert "the 5 subsets are the same and kid_std is 0 by construction" in result["note"]


def test_library_messages_name_the_flags(tmp_path: Path) -> None:
    from lightning_ganeval.dinov2 import resolve_dinov2_weights
    from lightning_ganeval.weights import WeightsError, resolve_weights

    messages = []
    for call in (
        lambda: resolve_weights(tmp_path / "missing.pth"),
        lambda: resolve_weights(None, url=None, cache_dir=tmp_path),  # "... pass the path as <argument>."
        lambda: resolve_dinov2_weights(tmp_path / "missing.pth"),
    ):
        with pytest.raises(WeightsError) as caught:
            call()
        messages.append(translate(str(caught.value)))
    assert "(from --inception-weights) does not exist" in messages[0]
    assert messages[1].endswith("- pass the path as --inception-weights.")
    assert "(from --dinov2-weights) does not exist" in messages[2]
    for message in messages:
        assert "\n" not in message
        assert "weights=" not in message
    assert translate("lower `subset_size` or feed more samples") == "lower --subset-size or feed more samples"
    assert translate("was made with resize='tf1', but resize='antialias' is expected") == (
        "was made with --resize tf1, but --resize antialias is expected"
    )


def test_console_script_and_module_entry_point() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"lightning-ganeval": "lightning_ganeval.cli:main"}
    import lightning_ganeval.__main__ as entry

    assert entry.main is cli.main


@pytest.mark.slow
def test_python_dash_m_exits_2_without_traceback(tiny: dict[str, Path]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "lightning_ganeval", "fid", str(tiny["missing"]), str(tiny["A"])],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    line = _single_line_error(proc.returncode, proc.stdout, proc.stderr)
    assert line.startswith("lightning-ganeval fid: error: A:")


# --------------------------------------------------------------------------------------------- parity (slow)


@pytest.fixture(scope="module")
def ours(folders: dict[str, Path], inception_weights_path: Path, extractor: Any) -> dict[str, Any]:
    """Every command once on the parity folders (about 90 Inception forwards)."""
    a, b = folders["A"], folders["B"]
    w = ("--inception-weights", inception_weights_path, "--workers", "0", "--batch-size", "4")
    stats_a = folders["root"] / "a.npz"
    return {
        "fid": run_json("fid", a, b, "--num-samples", NUM_A, *w),
        "is": run_json("is", a, "--splits", 2, *w),
        "kid": run_json("kid", a, b, "--num-samples", NUM_A, "--subsets", 1, "--subset-size", NUM_A, *w),
        "pr": run_json("pr", a, b, "--num-samples", NUM_A, *w),
        # One worker process: the decoding path of a real run (the dataset and collate_fn pickle).
        "stats": run_json("stats", a, "-o", stats_a, "--inception-weights", inception_weights_path, "--workers", 1),
        "fid_npz": run_json("fid", stats_a, b, "--num-samples", NUM_A, *w),
        "stats_path": stats_a,
    }


@pytest.fixture(scope="module")
def fidelity(folders: dict[str, Path], inception_weights_path: Path) -> dict[str, float]:
    from torch_fidelity import calculate_metrics

    return calculate_metrics(
        input1=str(folders["A"]),
        input2=str(folders["B_read"]),
        cuda=False,
        fid=True,
        isc=True,
        kid=True,
        prc=True,
        feature_extractor="inception-v3-compat",
        feature_extractor_weights_path=str(inception_weights_path),
        isc_splits=2,
        samples_shuffle=False,
        kid_subsets=1,
        kid_subset_size=NUM_A,
        cache=False,
        verbose=False,
    )


@pytest.fixture(scope="module")
def direct(folders: dict[str, Path], extractor: Any) -> dict[str, Any]:
    """Our extractor on the same files, called directly (one batch per folder)."""
    out = {}
    for key in ("A", "B_read"):
        images = torch.stack([cli.read_image(p) for p in cli.list_images(folders[key])])
        out[key] = extractor(images)
    return out


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


@pytest.mark.slow
def test_fid_equals_torch_fidelity(ours: dict[str, Any], fidelity: dict[str, float]) -> None:
    theirs = fidelity["frechet_inception_distance"]
    assert ours["fid"]["num_samples_a"] == NUM_A
    assert ours["fid"]["num_samples_b"] == NUM_A
    assert ours["fid"]["network"].startswith("inception-2015-12-05/")
    assert _rel(ours["fid"]["fid"], theirs) <= FID_RTOL, (ours["fid"]["fid"], theirs)


@pytest.mark.slow
def test_inception_score_equals_torch_fidelity(ours: dict[str, Any], fidelity: dict[str, float]) -> None:
    assert ours["is"]["num_samples"] == NUM_A
    assert _rel(ours["is"]["is"], fidelity["inception_score_mean"]) <= IS_RTOL
    assert abs(ours["is"]["is_std"] - fidelity["inception_score_std"]) <= IS_STD_ATOL * fidelity["inception_score_mean"]


@pytest.mark.slow
def test_kid_equals_torch_fidelity(ours: dict[str, Any], fidelity: dict[str, float]) -> None:
    theirs = fidelity["kernel_inception_distance_mean"]
    # KID is a difference of kernel means of order 1 that cancel to ~1e-3, and torch-fidelity returns it rounded
    # to float32: compare on the scale of the kernel terms.
    assert abs(ours["kid"]["kid"] - theirs) <= KID_ATOL, (ours["kid"]["kid"], theirs)
    assert ours["kid"]["kid_std"] == 0.0
    assert ours["kid"]["kid_subset_size"] == NUM_A


@pytest.mark.slow
def test_precision_recall_equal_torch_fidelity(ours: dict[str, Any], fidelity: dict[str, float]) -> None:
    # Decisions on k-NN balls: equal unless a distance lies within float32 rounding of a radius.
    # torch-fidelity returns float32 fractions of NUM_A samples.
    assert ours["pr"]["precision"] == pytest.approx(fidelity["precision"], abs=1e-6)
    assert ours["pr"]["recall"] == pytest.approx(fidelity["recall"], abs=1e-6)
    for key in ("density", "coverage"):
        assert 0.0 <= ours["pr"][key] <= NUM_A / 3


@pytest.mark.slow
def test_every_command_equals_the_extractor_and_math_run_directly(ours: dict[str, Any], direct: dict[str, Any]) -> None:
    from lightning_ganeval.inception_score_math import inception_score
    from lightning_ganeval.metrics.kid import mmd2_unbiased
    from lightning_ganeval.metrics.precision_recall import precision_recall_density_coverage

    fake, real = direct["A"].pool.double(), direct["B_read"].pool.double()
    fid = frechet_distance(fake.mean(0), fake.T.cov(), real.mean(0), real.T.cov())
    assert _rel(ours["fid"]["fid"], fid) <= DIRECT_RTOL
    mean, std = inception_score(direct["A"].logits, splits=2)
    assert _rel(ours["is"]["is"], mean) <= DIRECT_RTOL
    assert _rel(ours["is"]["is_std"], std) <= 1e-6  # a difference of two close split scores
    # KID's float32 products (the default) agree with float64 within 1e-5 of the kernel scale (mean k(x, y)).
    kernel_scale = float(((real @ fake.T) / real.shape[1] + 1).pow(3).mean())
    assert abs(ours["kid"]["kid"] - mmd2_unbiased(real, fake, dtype=torch.float64)) <= 1e-5 * kernel_scale
    expected = precision_recall_density_coverage(direct["B_read"].pool, direct["A"].pool, k=3)
    assert {k: ours["pr"][k] for k in expected} == expected


@pytest.mark.slow
def test_stats_file_gives_the_same_fid(ours: dict[str, Any]) -> None:
    assert ours["stats"]["num_samples"] == NUM_A
    assert ours["stats"]["num_features"] == 2048
    assert ours["fid_npz"]["num_samples_a"] == NUM_A
    # The file holds the float64 moments the folder run computes: the same FID up to the file's float64 copy.
    assert _rel(ours["fid_npz"]["fid"], ours["fid"]["fid"]) <= 1e-12


@pytest.mark.slow
def test_stats_file_is_read_by_pytorch_fid_and_the_callbacks(ours: dict[str, Any], extractor: Any) -> None:
    from pytorch_fid.fid_score import calculate_frechet_distance, compute_statistics_of_path

    path = ours["stats_path"]
    stats, provenance = load_stats(path, expect=network_provenance(extractor, "pool"))
    assert provenance["count"] == NUM_A
    assert stats.n == NUM_A
    mu, sigma = compute_statistics_of_path(str(path), None, 1, 2048, "cpu")
    assert np.array_equal(mu, stats.mean.numpy())
    assert np.array_equal(sigma, stats.cov.numpy())
    # pytorch-fid's scipy sqrtm of a singular product vs our eigendecomposition: close, not equal. On the file's
    # first 256 features (a covariance's principal block is a covariance, as singular): scipy's sqrtm of the whole
    # 2048 x 2048 product takes ~30 s of CPU.
    mu, sigma = mu[:256], sigma[:256, :256]
    other = mu + 0.01
    theirs = calculate_frechet_distance(mu, sigma, other, sigma)
    ours_fd = frechet_distance(
        torch.from_numpy(mu), torch.from_numpy(sigma), torch.from_numpy(other), torch.from_numpy(sigma)
    )
    assert _rel(ours_fd, theirs) <= 1e-3, (ours_fd, theirs)
    # The callbacks' path for FIDCallback(real="a.npz"): checked against the extractor's provenance.
    metric = FID()
    real = prepare_real_data(os.fspath(path), [(extractor, metric)])[metric]
    assert real.stats is not None
    assert torch.equal(real.stats.mean, stats.mean)
    with pytest.raises(ValueError, match="resize='tf1', but resize='antialias' is expected"):
        load_stats(path, expect={**network_provenance(extractor, "pool"), "resize": "antialias"})


@pytest.mark.slow
def test_fid_callback_runs_on_a_cli_stats_file(ours: dict[str, Any], inception_weights_path: Path, tmp_path) -> None:
    import lightning.pytorch as pl
    from torch import nn

    from lightning_ganeval import FIDCallback

    class Generator(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.save_hyperparameters({"latent_dim": 4})
            self.net = nn.Linear(4, 3 * 8 * 8)

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.net(z)).view(-1, 3, 8, 8)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self.net.weight.sum() * 0

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.0)

    fid = FIDCallback(
        real=ours["stats_path"], num_samples=2, batch_size=2, inception_weights=inception_weights_path,
        value_range=(-1, 1), progress=False, log_images=0,
    )  # fmt: skip
    trainer = pl.Trainer(
        default_root_dir=tmp_path, max_epochs=1, callbacks=[fid], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(2, 1)), batch_size=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random weights are not the reference; Lightning's tips
        trainer.fit(Generator(), train_dataloaders=loader)
    assert math.isfinite(fid.last_score)
    assert fid.last_score > 0


@pytest.mark.slow
def test_two_statistics_files_need_no_network(ours: dict[str, Any], tmp_path: Path) -> None:
    path = ours["stats_path"]
    result = run_json("fid", path, path)  # no weights given, none resolved: no network is built
    assert result["fid"] == pytest.approx(0.0, abs=1e-6)
    stats, provenance = load_stats(path)
    other = tmp_path / "other.npz"
    np.savez(other, mu=stats.mean.numpy(), sigma=stats.cov.numpy(), provenance=np.asarray(json.dumps(
        {**provenance, "resize": "antialias"})))  # fmt: skip
    line = _single_line_error(*run_cli("fid", path, other))
    assert "B: Statistics file" in line
    assert "was made with --resize antialias, but --resize tf1 is expected" in line  # in the flags' terms


@pytest.mark.slow
def test_mixed_sizes_in_one_folder(tmp_path: Path, inception_weights_path: Path, extractor: Any) -> None:
    folder = tmp_path / "mixed"
    _write_images(folder / "small", 2, seed=5, size=(16, 16))
    _write_images(folder / "wide", 2, seed=6, size=(24, 40))
    out = tmp_path / "mixed.npz"
    run_json("stats", folder, "-o", out, "--inception-weights", inception_weights_path, "--workers", 0)
    stats, _ = load_stats(out)
    images = [cli.read_image(p) for p in cli.list_images(folder)]
    features = torch.cat([extractor(image[None]).pool for image in images]).double()
    assert stats.n == 4
    torch.testing.assert_close(stats.mean, features.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats.cov, features.T.cov(), rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_dinov2_network(folders: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("timm")
    dinov2 = pytest.importorskip("lightning_ganeval.dinov2")
    from lightning_ganeval.testing import write_random_dinov2_weights

    weights = write_random_dinov2_weights(tmp_path / "dinov2_vits14_pretrain.pth", size="vits14")
    options = ("--network", "dinov2", "--dinov2-model", "vits14", "--dinov2-weights", weights, "--workers", 0)
    result = run_json("fid", folders["A"], folders["B"], "--num-samples", 3, *options)
    network = dinov2.DINOv2Extractor(weights, model="vits14", device="cpu")
    assert result["network"] == network.identity
    feats = [
        torch.cat([network(cli.read_image(p)[None]) for p in cli.list_images(folders[k], limit=3)]).double()
        for k in ("A", "B")
    ]
    expected = frechet_distance(feats[0].mean(0), feats[0].T.cov(), feats[1].mean(0), feats[1].T.cov())
    assert _rel(result["fid"], expected) <= 1e-6


# --------------------------------------------------------------------------------------------- torchrun (slow)


# Runs `main` once per command line given (JSON lists on argv) in each torchrun process, as `torchrun -m
# lightning_ganeval` would, and exits with the worst status. Every call joins and leaves its own process group:
# the first through torchrun's store, the next ones through a fresh store at a port of their own.
_TORCHRUN_DRIVER = """
import json, os, sys
from lightning_ganeval.cli import main

statuses = []
for index, argv in enumerate(json.loads(arg) for arg in sys.argv[2:]):
    if index:  # rank 0 hosts the store: torchrun's agent serves only its own port
        os.environ.update(MASTER_PORT=json.loads(sys.argv[1])[index - 1], TORCHELASTIC_USE_AGENT_STORE="False")
    statuses.append(main(argv))
sys.exit(max(statuses))
"""
TORCHRUN_COMMANDS = ("fid", "is", "pr")


@pytest.fixture(scope="module")
def torchrun(folders: dict[str, Path], inception_weights_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One ``torchrun --nproc-per-node=2`` launch that runs fid, is and pr (a launch costs 3 torch imports)."""
    from conftest import free_port

    a, b = str(folders["A"]), str(folders["B"])
    common = ["--device", "cpu", "--inception-weights", str(inception_weights_path), "--workers", "0",
              "--batch-size", "3", "--json", "--no-progress"]  # fmt: skip
    argvs = {
        "fid": ["fid", a, b, "--num-samples", str(NUM_A), *common],
        "is": ["is", a, "--splits", "2", *common],
        "pr": ["pr", a, b, "--num-samples", str(NUM_A), *common],
    }
    driver = tmp_path_factory.mktemp("torchrun") / "driver.py"
    driver.write_text(_TORCHRUN_DRIVER)
    ports = json.dumps([str(free_port()) for _ in TORCHRUN_COMMANDS[1:]])
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        # The network's float32 results depend on the thread count (not on the batch): use this process's.
        "OMP_NUM_THREADS": str(torch.get_num_threads()),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(driver), ports,
         *(json.dumps(argvs[command]) for command in TORCHRUN_COMMANDS)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == len(TORCHRUN_COMMANDS), proc.stdout  # rank 0 only, one result per command
    return dict(zip(TORCHRUN_COMMANDS, map(json.loads, printed), strict=True))


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.parametrize("command", TORCHRUN_COMMANDS)
def test_torchrun_two_processes_equal_one(command: str, ours: dict[str, Any], torchrun: dict[str, Any]) -> None:
    result, single = torchrun[command], ours[command]
    if command == "fid":
        assert _rel(result["fid"], single["fid"]) <= DDP_FID_RTOL
    elif command == "is":
        assert _rel(result["is"], single["is"]) <= DDP_IS_RTOL
        assert abs(result["is_std"] - single["is_std"]) <= DDP_IS_RTOL * single["is"]
    else:
        assert {k: result[k] for k in ("precision", "recall", "density", "coverage")} == {
            k: single[k] for k in ("precision", "recall", "density", "coverage")
        }
