"""Data contracts: engine-neutral declarations, pandera schemas built from them, and their enforcement.

Contracts arrive with the data-contracts issue; the scoring job has no contract step until then.
"""
