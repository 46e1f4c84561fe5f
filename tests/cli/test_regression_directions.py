"""The CI gate knows which way the regression and denoising metrics improve (an error is not an accuracy)."""

import pytest

from cli.check import metric_direction


@pytest.mark.parametrize(
    ("metric", "direction"),
    [
        ("clean_mse", "lower"),
        ("clean_psnr", "higher"),
        ("input_psnr", "higher"),
        ("rollout_mse", "lower"),
        ("train_mse", "lower"),
        ("gaussian_mse@0.1", "lower"),
        ("gaussian_mse_std@0.1", "lower"),
        ("gaussian_psnr@0.1", "higher"),
        ("gaussian_psnr_std@0.1", "lower"),
        ("pgd_linf_mse@0.05", "lower"),
        ("pgd_l2_mse@0.5", "lower"),
        ("certified_l2_mse@0.1", "lower"),
        ("certified_linf_mse@0.1", "lower"),
        ("certified_l2_deviation_mse@0.1", "lower"),
        ("pnp_psnr@0.05", "higher"),
        ("pnp_residual@0.05", "lower"),
        ("pnp_monotone@0.05", "higher"),
        ("pnp_averaged", "higher"),
        ("pnp_denoiser_lipschitz", "lower"),
        # unchanged
        ("pgd_linf_acc@0.1", "higher"),
        ("gaussian_acc_std@0.3", "lower"),
        ("certified_radius_q@0.5", "higher"),
    ],
)
def test_regression_metric_directions(metric: str, direction: str) -> None:
    assert metric_direction(metric) == direction
