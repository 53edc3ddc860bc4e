"""Reading finished runs back: curves and AUC, statistics, plots, the report's pages, W&B offline files."""
