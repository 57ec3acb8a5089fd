"""The export pipeline's steps, one module each (see export/pipeline.py for their order)."""
