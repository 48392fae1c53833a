"""`check_trainer_settings`: trainer settings Lightning refuses late (or not at all) are refused up front, naming
the setting at fault; valid ones pass untouched."""

from __future__ import annotations

import pytest
from lightning.pytorch.strategies import SingleDeviceStrategy

from cdflow.errors import ConfigError
from cdflow.training.trainer_settings import RANGES, check_trainer_settings, usable_accelerators


@pytest.mark.parametrize("cfg", [
    {}, {"accelerator": "cpu", "devices": 1, "precision": "64-true"}, {"max_epochs": 3, "val_check_interval": 0.5},
    {"accumulate_grad_batches": 2, "check_val_every_n_epoch": None, "gradient_clip_val": 0.5,
     "max_time": "00:00:01:00"},
    {"num_sanity_val_steps": -1, "log_every_n_steps": 1, "limit_train_batches": 0.25, "strategy": "ddp"},
])
def test_valid_settings_pass(cfg):
    check_trainer_settings(cfg)


@pytest.mark.parametrize(("cfg", "message"), [
    ({"max_epochs": -2}, "--trainer.max_epochs -2: `max_epochs` must be a non-negative integer"),
    ({"accumulate_grad_batches": 0}, "--trainer.accumulate_grad_batches 0: takes an int ≥ 1"),
    ({"check_val_every_n_epoch": 0}, "--trainer.check_val_every_n_epoch 0: takes an int ≥ 1 or null"),
    ({"val_check_interval": 0}, "--trainer.val_check_interval 0: takes a fraction"),
    ({"gradient_clip_val": -1.0}, "--trainer.gradient_clip_val -1.0: takes a number ≥ 0 or null"),
    ({"limit_val_batches": 1.5}, "--trainer.limit_val_batches 1.5: You have passed invalid value 1.5"),
    ({"accelerator": "gpux"}, "--trainer.accelerator gpux: You selected an invalid accelerator name"),
])
def test_bad_settings_are_refused_with_the_flag(cfg, message):
    with pytest.raises(ConfigError) as info:
        check_trainer_settings(cfg)
    assert str(info.value).startswith(message)


def test_only_the_setting_at_fault_is_named():
    with pytest.raises(ConfigError) as info:
        check_trainer_settings({"accelerator": "cpu", "devices": 0, "precision": "bf16-mixed", "max_epochs": 2})
    assert str(info.value).startswith("--trainer.devices 0: ")
    assert "accelerator" not in str(info.value).split(":")[0] and "precision" not in str(info.value).split(":")[0]


def test_a_strategy_object_is_not_built_into_a_throwaway_trainer():
    strategy = SingleDeviceStrategy(device="cpu")
    check_trainer_settings({"strategy": strategy, "max_epochs": 1})
    assert strategy.accelerator is None  # untouched: the real trainer sets it up


def test_every_range_refuses_a_bool():
    for key, (ok, _) in RANGES.items():
        assert not ok(True), key


def test_a_refused_accelerator_names_the_usable_ones():
    with pytest.raises(ConfigError) as info:
        check_trainer_settings({"accelerator": "gpux", "max_epochs": 2})
    assert str(info.value).startswith("--trainer.accelerator gpux: ")
    assert str(info.value).endswith(f"(accelerators on this machine: {', '.join(usable_accelerators())})")
    assert "cpu" in usable_accelerators()


def test_every_setting_out_of_range_is_named_at_once():
    with pytest.raises(ConfigError) as info:
        check_trainer_settings({"log_every_n_steps": 0, "gradient_clip_val": -1.0, "accumulate_grad_batches": 2})
    assert str(info.value) == ("--trainer.log_every_n_steps 0: takes an int ≥ 1 or null; "
                               "--trainer.gradient_clip_val -1.0: takes a number ≥ 0 or null")
