"""The demo lake and demo models: seeded synthetic data and two registered models."""
