"""Privacy-utility sweeps: many federations, one results table and curve."""
