"""The metric registry: one list of metrics by name, read by the Evaluator and by the command line's parser."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
import torch
from fakes import FakeExtractor

from lightning_ganeval.cli.arguments import build_parser
from lightning_ganeval.evaluator import Evaluator
from lightning_ganeval.metrics import (
    CMMD,
    FID,
    KID,
    GenerativeMetric,
    InceptionScore,
    Memorization,
    PrecisionRecall,
    VendiScore,
    build_metric,
    metric_entry,
    metric_names,
    register_metric,
)
from lightning_ganeval.metrics import registry as registry_module


def test_every_metric_unit_is_registered_under_its_key_prefix() -> None:
    expected = {
        "fid": FID,
        "kid": KID,
        "is": InceptionScore,
        "pr": PrecisionRecall,
        "cmmd": CMMD,
        "vendi": VendiScore,
        "memorization": Memorization,
    }
    assert metric_names() == list(expected)
    for name, cls in expected.items():
        metric = build_metric(name)
        assert type(metric) is cls
        assert metric.name == name  # the registered name is the metric's default name
        entry = metric_entry(name)
        needs = metric.real_request()
        assert entry.real == (None if needs is None else "moments" if needs.moments else "features"), name


@pytest.mark.parametrize("name", ["fid", "kid", "is", "pr", "cmmd", "vendi", "memorization"])
def test_options_are_the_constructor_keywords_with_their_defaults(name: str) -> None:
    entry = metric_entry(name)
    parameters = inspect.signature(entry.load()).parameters
    for option in entry.options:
        assert option.name in parameters, (name, option.name)
        assert parameters[option.name].default == option.default, (name, option.name)


def test_build_metric_refuses_unknown_names_and_options() -> None:
    with pytest.raises(KeyError, match=r"No metric named 'fd'; registered: fid, kid, is"):
        build_metric("fd")
    with pytest.raises(TypeError, match=r"Metric 'kid' \(KID\) takes no option 'subset'; it takes name, .*subset_size"):
        build_metric("kid", subset=4)
    with pytest.raises(ValueError, match="subset_size"):  # the constructor's own check
        build_metric("kid", subset_size=1)
    assert build_metric("kid", subset_size=4, subsets=3).subset_size == 4


def test_evaluator_takes_names_and_units() -> None:
    network = FakeExtractor()
    evaluator = Evaluator(["fid", "is", build_metric("kid", subset_size=4)], num_samples=10, latent_shape=2,
                          inception=network)  # fmt: skip
    assert [type(m) for m in evaluator.metrics] == [FID, InceptionScore, KID]
    assert evaluator.metrics[2].subset_size == 4
    with pytest.raises(KeyError, match="No metric named 'bogus'"):
        Evaluator(["bogus"], num_samples=10, latent_shape=2, inception=network)


def test_a_registered_metric_is_an_evaluator_metric_and_a_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding a metric: one class and one registration; the Evaluator and the command line know it."""

    class MeanBrightness(GenerativeMetric):
        def __init__(self, *, name: str = "brightness", scale: int = 1) -> None:
            super().__init__(name=name)
            self.scale = scale

        def reset(self, num_samples: int, device: torch.device) -> None:
            self.total = torch.zeros((), dtype=torch.float64)
            self.count = 0

        def update(self, features: torch.Tensor, indices: torch.Tensor) -> None:
            self.total += features.double().sum()
            self.count += features.numel()

        def compute(self) -> dict[str, float]:
            return {self.name: self.scale * float(self.total) / self.count}

    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    register_metric(
        "brightness",
        MeanBrightness,
        summary="mean feature value of A",
        options=(registry_module.Option("scale", "positive", 1, "multiply by this"),),
    )
    evaluator = Evaluator(["brightness"], num_samples=4, latent_shape=2, batch_size=2, inception=FakeExtractor())
    values = evaluator.evaluate(lambda z: torch.zeros(len(z), 3, 8, 8)).values
    assert "brightness" in values
    parser = build_parser()
    args = parser.parse_args(["brightness", "some/folder", "--scale", "3"])
    assert (args.command, args.a, args.scale) == ("brightness", "some/folder", 3)
    with pytest.raises(ValueError, match="registered already"):
        register_metric("brightness", MeanBrightness, summary="again")


def test_the_registry_imports_no_torch() -> None:
    code = (
        "import sys\nfrom lightning_ganeval.metrics.registry import metric_names\nassert metric_names()\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
