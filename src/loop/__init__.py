"""The outer active-learning loop: rounds, a fresh Trainer each, pool scoring, durable run files."""
