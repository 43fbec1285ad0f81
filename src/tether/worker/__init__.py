"""The subprocess tier's worker process (`python -m tether.worker`) and its wire protocol."""
