"""LightningModules (classification, SSD detection), their networks, and weights from files."""
