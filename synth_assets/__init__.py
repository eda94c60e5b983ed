"""synth-assets: phi-1 style training data as a Dagster asset graph."""
