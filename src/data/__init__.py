"""Classification data: sources (embedded, ImageNet, folders), the thesis recipes, caching, the datamodule."""
