"""al-select: data selection with active learning (Hydra + PyTorch Lightning)."""
