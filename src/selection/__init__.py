"""Selection math: scorers, ranking, pivot, diversity, budgets and modes. Pure tensors and numpy."""
