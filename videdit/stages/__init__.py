"""Pipeline stages: one module per stage; each a function of (inputs, out_dir, settings) -> result record."""
