"""FID and Inception Score for PyTorch Lightning GAN training."""

__version__ = "0.1.0"
